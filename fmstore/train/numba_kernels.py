"""The numba kernels of numba_engine.NumbaEngine's step: the same math as
torch_engine.TorchEngine.

One step (`step`) does a whole minibatch: gather its ratings from the epoch's order, find its
distinct users, movies and item features (stamp arrays, no sorting), bring the item features up
to date (the catch-up of lazy_adam.LazyAdam) and compute each distinct movie's (q_i, b_i) once;
then walk the ratings grouped by user, in parallel over threads: each user's row (v, Adam's m and
s) is read once, caught up, scored against the user's movies, given its gradient and its Adam
update, and written once, while the movies' gradients gather in one buffer per thread. A last
parallel pass sums those per item feature and updates the item features. User features shared
by several user rows (side columns such as age or gender) are treated like item features: caught
up once before the users' pass, their gradients gathered per thread during it, and their Adam
update applied once after it. Nothing of batch size x
k is allocated. The step is bound by the latency of random rows, so the next rows are prefetched.

The kernels take numba_engine's NamedTuples (`Rows`, `Params`, `Step`, `Scratch`). The formulas
that model.py states once in torch (`score`, `apply_link`, `side_bias`) are here once each too,
as small inlined kernels (`_score`, `_link`, `_pairwise`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numba
import numpy as np
from numba import njit, prange

# SIGMOID_SCALE: a module-level float, so numba compiles it into the kernels as a constant.
from fmstore.serving import SIGMOID_SCALE
from fmstore.train.numba_prefetch import prefetch as _prefetch

if TYPE_CHECKING:
    from fmstore.train.numba_engine import State, Step

# Everything but "no NaNs / no infs": lets LLVM vectorise the k-wide loops and reductions.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


# ---- the formulas, as inlined numba twins of model.py's ---------------------------------------


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
def _score(w0, b_u, b_i, p, q):  # pragma: no cover
    """The FM's raw score w0 + b_u + b_i + <p_u, q_i> (model.score)."""
    dot = np.float32(0.0)
    for c in range(p.shape[0]):
        dot += p[c] * q[c]
    return w0 + b_u + b_i + dot


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
def _link(y, sigmoid):  # pragma: no cover
    """(prediction, d prediction / dy) of raw score y: sigmoid(y) * SIGMOID_SCALE or identity
    (model.apply_link and model.link_slope)."""
    one = np.float32(1.0)
    if sigmoid:
        sg = one / (one + math.exp(-y))
        pred = sg * np.float32(SIGMOID_SCALE)
        return pred, pred * (one - sg)
    return y, one


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
def _add_feature(vector, squares, x, row):  # pragma: no cover
    """A side's feature of weight x and vector `row`: vector += x row; returns squares +
    x^2 |row|^2, the sum that `_pairwise` needs."""
    for c in range(vector.shape[0]):
        vector[c] += x * row[c]
    for c in range(vector.shape[0]):
        squares += x * x * row[c] * row[c]
    return squares


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
def _pairwise(vector, squares):  # pragma: no cover
    """The pairwise terms inside a side, 1/2 (|sum_j x_j v_j|^2 - sum_j x_j^2 |v_j|^2): what
    model.side_bias adds to the linear terms."""
    norm = np.float32(0.0)
    for c in range(vector.shape[0]):
        norm += vector[c] * vector[c]
    return np.float32(0.5) * (norm - squares)


# ---- Adam, row by row -------------------------------------------------------------------------
# Row helpers: each loop touches few arrays, so LLVM vectorises it (numba cannot promise that
# arrays do not alias, and LLVM gives up when too many overlap checks would be needed).


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
def _caught_up(dst, v, m, s, d, eps):  # pragma: no cover
    """dst = v after the missed zero-gradient steps: v - d m / (sqrt(s) + eps)."""
    if d == 0:
        for c in range(dst.shape[0]):
            dst[c] = v[c]
    else:
        for c in range(dst.shape[0]):
            dst[c] = v[c] - d * m[c] / (math.sqrt(s[c]) + eps)


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
def _adam_row(out, cur, m, s, grad, d1, d2, st):  # pragma: no cover
    """One Adam step from the caught-up value `cur` (m, s not yet decayed: d1 = b1^(missed+1));
    `st`: the Step."""
    one = np.float32(1.0)
    b1 = st.b1
    b2 = st.b2
    for c in range(m.shape[0]):
        m[c] = d1 * m[c] + (one - b1) * grad[c]
    for c in range(s.shape[0]):
        s[c] = d2 * s[c] + (one - b2) * grad[c] * grad[c]
    step_size = st.step_size
    bc2_sqrt = st.bc2_sqrt
    eps = st.eps
    for c in range(out.shape[0]):
        out[c] = cur[c] - step_size * m[c] / (math.sqrt(s[c]) / bc2_sqrt + eps)


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
def _adam_scalar(cur, m, s, grad, d1, d2, st):  # pragma: no cover
    """`_adam_row` of a scalar: returns the new (value, m, s)."""
    one = np.float32(1.0)
    m = d1 * m + (one - st.b1) * grad
    s = d2 * s + (one - st.b2) * grad * grad
    return cur - st.step_size * m / (math.sqrt(s) / st.bc2_sqrt + st.eps), m, s


@njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def catch_up_all(params, st):  # pragma: no cover
    """Every feature row brought up to the end of step st.t."""
    v = params.v
    w = params.w
    mv = params.mv
    sv = params.sv
    mw = params.mw
    sw = params.sw
    last = params.last
    drift = st.drift
    pow1 = st.pow1
    pow2 = st.pow2
    t = st.t
    eps = st.eps
    for f in prange(v.shape[0]):
        lag = t - last[f]
        if lag == 0:
            continue
        d = drift[lag]
        d1, d2 = pow1[lag], pow2[lag]
        _caught_up(v[f], v[f], mv[f], sv[f], d, eps)
        mf, sf = mv[f], sv[f]
        for c in range(mf.shape[0]):
            mf[c] *= d1
        for c in range(sf.shape[0]):
            sf[c] *= d2
        w[f] -= d * mw[f] / (math.sqrt(sw[f]) + eps)
        mw[f] *= d1
        sw[f] *= d2
        last[f] = t


# ---- the step's four kernels ------------------------------------------------------------------
# Each kernel names the fields it uses one assignment per line: numba's parfor pass loses the
# writes to arrays unpacked from a tuple in one statement (`a, b = s.a, s.b`), silently.


def step(batch, state: State, st: Step) -> tuple[float, float]:
    """One minibatch (user rows, item rows, ratings); returns (sum of squared errors, sum of
    dLoss/dy). Four kernels: bookkeeping, the movies' sides, the users' pass, the item update
    (the last three also catch up, then update, the user features the batch's users share)."""
    bu, bi, br = batch
    scratch = state.scratch
    n_du, n_di, n_fi, n_gf = _prologue(bu, bi, state.users, state.items, scratch)
    _item_sides(n_di, n_fi, n_gf, state.items, state.params, st, scratch)
    _user_pass(br, n_di, n_gf, state.users, state.params, st, scratch)
    _item_update(n_di, n_fi, n_gf, state.params, st, scratch)
    return float(scratch.sse.sum()), float(scratch.gsum.sum())


@njit(parallel=True, cache=True)
def gather(order, users, items, ratings, eu, ei, er):  # pragma: no cover
    """The batch's (user row, item row, rating), in the epoch's order."""
    for p in prange(len(order)):
        j = order[p]
        eu[p] = users[j]
        ei[p] = items[j]
        er[p] = ratings[j]


@njit(parallel=True, cache=True)
def _prologue(bu, bi, users, items, scratch):  # pragma: no cover
    """Bookkeeping: distinct rows and features of the batch, ratings grouped by user. The user
    side and the item side are independent: one thread each."""
    counts = np.zeros(4, np.int64)
    for task in prange(2):
        if task == 0:
            counts[0], counts[3] = _user_slots(bu, users, scratch)
        else:
            counts[1], counts[2] = _item_slots(bi, items, scratch)
    return counts[0], counts[1], counts[2], counts[3]


@njit(cache=True)
def _user_slots(bu, users, scratch):  # pragma: no cover
    """The batch's distinct user rows (slots), its ratings sorted by user slot, the slots cut
    into one chunk per thread, and the slots of the shared user features those rows hold;
    returns the numbers of user slots and of shared feature slots."""
    u_ptr = users.ptr
    u_feat = users.feat
    shared = users.shared
    g_slot = scratch.g_slot
    gf = scratch.gf
    u_slot = scratch.u_slot
    du = scratch.du
    u_start = scratch.u_start
    u_order = scratch.u_order
    rating_uslot = scratch.rating_uslot
    bounds = scratch.bounds
    n = len(bu)
    n_du = 0
    for p in range(n):
        uu = bu[p]
        s = u_slot[uu]
        if s < 0:
            s = n_du
            u_slot[uu] = s
            du[s] = uu
            u_start[s + 1] = 0
            n_du += 1
        u_start[s + 1] += 1
        rating_uslot[p] = s
    # counting sort of the batch by user slot
    u_start[0] = 0
    for s in range(n_du):
        u_start[s + 1] += u_start[s]
    for p in range(n):
        s = rating_uslot[p]
        u_order[u_start[s]] = p
        u_start[s] += 1
    for s in range(n_du, 0, -1):
        u_start[s] = u_start[s - 1]
    u_start[0] = 0
    # user slots split into len(bounds) - 1 chunks of about equal cost (a user's row update
    # costs about two ratings)
    chunks = len(bounds) - 1
    total = n + 2 * n_du
    bounds[0] = 0
    s = 0
    for c in range(1, chunks):
        target = total * c // chunks
        while s < n_du and u_start[s] + 2 * s < target:
            s += 1
        bounds[c] = s
    bounds[chunks] = n_du
    for s in range(n_du):  # reset the stamps for the next batch
        u_slot[du[s]] = -1
    # shared user features (g_slot is reset in _item_update)
    n_gf = 0
    for s in range(n_du):
        row = du[s]
        for e in range(u_ptr[row], u_ptr[row + 1]):
            f = u_feat[e]
            if shared[f] and g_slot[f] < 0:
                g_slot[f] = n_gf
                gf[n_gf] = f
                n_gf += 1
    return n_du, n_gf


@njit(cache=True)
def _item_slots(bi, items, scratch):  # pragma: no cover
    """The batch's distinct item rows and item features (slots), each feature slot's entries
    (item slot, weight); returns the numbers of item slots and feature slots."""
    i_ptr = items.ptr
    i_feat = items.feat
    i_x = items.x
    i_slot = scratch.i_slot
    f_slot = scratch.f_slot
    di = scratch.di
    cnt_i = scratch.cnt_i
    rating_islot = scratch.rating_islot
    fi = scratch.fi
    f_ptr = scratch.f_ptr
    f_row = scratch.f_row
    f_x = scratch.f_x
    n_di = 0
    for p in range(len(bi)):
        ii = bi[p]
        s2 = i_slot[ii]
        if s2 < 0:
            s2 = n_di
            i_slot[ii] = s2
            di[s2] = ii
            cnt_i[s2] = 0
            n_di += 1
        cnt_i[s2] += 1
        rating_islot[p] = s2
    # item features: slots and, per slot, the (item slot, weight) entries that use it
    n_fi = 0
    for s2 in range(n_di):
        row = di[s2]
        for e in range(i_ptr[row], i_ptr[row + 1]):
            f = i_feat[e]
            fs = f_slot[f]
            if fs < 0:
                fs = n_fi
                f_slot[f] = fs
                fi[fs] = f
                f_ptr[fs + 1] = 0
                n_fi += 1
            f_ptr[fs + 1] += 1
    f_ptr[0] = 0
    for fs in range(n_fi):
        f_ptr[fs + 1] += f_ptr[fs]
    for s2 in range(n_di):
        row = di[s2]
        for e in range(i_ptr[row], i_ptr[row + 1]):
            fs = f_slot[i_feat[e]]
            q = f_ptr[fs]
            f_row[q] = s2
            f_x[q] = i_x[e]
            f_ptr[fs] = q + 1
    for fs in range(n_fi, 0, -1):
        f_ptr[fs] = f_ptr[fs - 1]
    f_ptr[0] = 0
    for s2 in range(n_di):  # reset the stamps for the next batch (f_slot: in _item_update)
        i_slot[di[s2]] = -1
    return n_di, n_fi


@njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def _item_sides(n_di, n_fi, n_gf, items, params, st, scratch):  # pragma: no cover
    """Steps 1-2: the batch's item features caught up (into VC/WC; written back with their
    update in `_item_update`), then each distinct movie's q_i and b_i (into QI/BI); the shared
    user features caught up too (into UC/UWC), before the users' pass reads them."""
    i_ptr = items.ptr
    i_feat = items.feat
    i_x = items.x
    v = params.v
    w = params.w
    mv = params.mv
    sv = params.sv
    mw = params.mw
    sw = params.sw
    last = params.last
    drift = st.drift
    t = st.t
    eps = st.eps
    f_slot = scratch.f_slot
    di = scratch.di
    fi = scratch.fi
    VC = scratch.VC
    WC = scratch.WC
    QI = scratch.QI
    BI = scratch.BI
    gf = scratch.gf
    UC = scratch.UC
    UWC = scratch.UWC
    k = v.shape[1]
    for gs in prange(n_gf):
        f = gf[gs]
        d = drift[t - 1 - last[f]]
        _caught_up(UC[gs], v[f], mv[f], sv[f], d, eps)
        UWC[gs] = w[f] - d * mw[f] / (math.sqrt(sw[f]) + eps)

    for fs in prange(n_fi):
        if fs + 1 < n_fi:
            _prefetch(v, fi[fs + 1])
            _prefetch(mv, fi[fs + 1])
            _prefetch(sv, fi[fs + 1])
        f = fi[fs]
        d = drift[t - 1 - last[f]]
        _caught_up(VC[fs], v[f], mv[f], sv[f], d, eps)
        WC[fs] = w[f] - d * mw[f] / (math.sqrt(sw[f]) + eps)

    for s2 in prange(n_di):
        row = di[s2]
        q = QI[s2]
        sq = np.float32(0.0)
        bias = np.float32(0.0)
        for c in range(k):
            q[c] = 0.0
        for e in range(i_ptr[row], i_ptr[row + 1]):
            fs = f_slot[i_feat[e]]
            x = i_x[e]
            bias += x * WC[fs]
            sq = _add_feature(q, sq, x, VC[fs])
        if i_ptr[row + 1] - i_ptr[row] > 1:
            bias += _pairwise(q, sq)
        BI[s2] = bias


@njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def _user_pass(br, n_di, n_gf, users, params, st, scratch):  # pragma: no cover
    """Step 3: the ratings grouped by user, one chunk of users per thread: each user's row is
    caught up, scored against its movies, given its gradient and its Adam update in one go;
    the movies' gradients gather in this thread's GQ/GBI, the shared user features' (caught up
    in UC/UWC) in its GF/GFW."""
    u_ptr = users.ptr
    u_feat = users.feat
    u_x = users.x
    v = params.v
    w = params.w
    mv = params.mv
    sv = params.sv
    mw = params.mw
    sw = params.sw
    last = params.last
    drift = st.drift
    pow1 = st.pow1
    pow2 = st.pow2
    t = st.t
    eps = st.eps
    reg_a = st.reg_a
    reg_scale = st.reg_scale
    w0 = st.w0
    sigmoid = st.sigmoid
    du = scratch.du
    u_start = scratch.u_start
    u_order = scratch.u_order
    rating_islot = scratch.rating_islot
    QI = scratch.QI
    BI = scratch.BI
    GQ = scratch.GQ
    GBI = scratch.GBI
    g_slot = scratch.g_slot
    UC = scratch.UC
    UWC = scratch.UWC
    GF = scratch.GF
    GFW = scratch.GFW
    bounds = scratch.bounds
    sse_out = scratch.sse
    gsum_out = scratch.gsum
    k = v.shape[1]
    inv_n = np.float32(1.0 / len(br))
    chunks = len(bounds) - 1
    for ch in prange(chunks):
        gq, gbi = GQ[ch], GBI[ch]
        for s2 in range(n_di):
            gbi[s2] = 0.0
            row_q = gq[s2]
            for c in range(k):
                row_q[c] = 0.0
        gf_v, gf_w = GF[ch], GFW[ch]
        for gs in range(n_gf):
            gf_w[gs] = 0.0
            row_f = gf_v[gs]
            for c in range(k):
                row_f[c] = 0.0
        p_vec = np.empty(k, np.float32)
        gp = np.empty(k, np.float32)
        grad = np.empty(k, np.float32)
        vu = np.empty((users.width, k), np.float32)
        wu = np.empty(users.width, np.float32)
        sse = 0.0
        gsum = 0.0
        for s in range(bounds[ch], bounds[ch + 1]):
            if s + 1 < bounds[ch + 1]:
                nxt = du[s + 1]
                for e in range(u_ptr[nxt], u_ptr[nxt + 1]):
                    _prefetch(v, u_feat[e])
                    _prefetch(mv, u_feat[e])
                    _prefetch(sv, u_feat[e])
            # the user's side (p_u, b_u) from its caught-up features
            row = du[s]
            e0, e1 = u_ptr[row], u_ptr[row + 1]
            for c in range(k):
                p_vec[c] = 0.0
            for c in range(k):
                gp[c] = 0.0
            b_u = np.float32(0.0)
            sq = np.float32(0.0)
            for e in range(e0, e1):
                f = u_feat[e]
                x = u_x[e]
                cur = vu[e - e0]
                gs = g_slot[f] if n_gf > 0 else -1  # (no extra read without side columns)
                if gs >= 0:  # shared: caught up once for the batch
                    uc = UC[gs]
                    for c in range(k):
                        cur[c] = uc[c]
                    wu[e - e0] = UWC[gs]
                else:
                    d = drift[t - 1 - last[f]]
                    _caught_up(cur, v[f], mv[f], sv[f], d, eps)
                    wu[e - e0] = w[f] - d * mw[f] / (math.sqrt(sw[f]) + eps)
                sq = _add_feature(p_vec, sq, x, cur)
                b_u += x * wu[e - e0]
            if e1 - e0 > 1:
                b_u += _pairwise(p_vec, sq)
            # its ratings: errors, and the gradients of both sides
            gb = np.float32(0.0)
            for q in range(u_start[s], u_start[s + 1]):
                if q + 1 < u_start[s + 1]:
                    s2_next = rating_islot[u_order[q + 1]]
                    _prefetch(QI, s2_next)
                    _prefetch(gq, s2_next)
                pos = u_order[q]
                s2 = rating_islot[pos]
                q_row = QI[s2]
                pred, dpred = _link(_score(w0, b_u, BI[s2], p_vec, q_row), sigmoid)
                err = pred - br[pos]
                g = np.float32(2.0) * err * dpred * inv_n
                sse += float(err) * float(err)
                gsum += float(g)
                gb += g
                for c in range(k):
                    gp[c] += g * q_row[c]
                g_row = gq[s2]
                for c in range(k):
                    g_row[c] += g * p_vec[c]
                gbi[s2] += g
            # the user's features: gradient, and Adam (shared ones: gathered for later)
            cnt = np.float32(u_start[s + 1] - u_start[s])
            for e in range(e0, e1):
                f = u_feat[e]
                x = u_x[e]
                cur = vu[e - e0]
                ra = reg_a * reg_scale[f]
                coef = x * x * (ra * cnt - gb)
                for c in range(k):
                    grad[c] = x * (gp[c] + gb * p_vec[c])
                for c in range(k):
                    grad[c] += coef * cur[c]
                gw = x * gb + ra * cnt * x * x * wu[e - e0]
                gs = g_slot[f] if n_gf > 0 else -1
                if gs >= 0:
                    row_f = gf_v[gs]
                    for c in range(k):
                        row_f[c] += grad[c]
                    gf_w[gs] += gw
                    continue
                lag = t - 1 - last[f]
                d1, d2 = pow1[lag + 1], pow2[lag + 1]
                _adam_row(v[f], cur, mv[f], sv[f], grad, d1, d2, st)
                w[f], mw[f], sw[f] = _adam_scalar(wu[e - e0], mw[f], sw[f], gw, d1, d2, st)
                last[f] = t
        sse_out[ch] = sse
        gsum_out[ch] = gsum


@njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def _item_update(n_di, n_fi, n_gf, params, st, scratch):  # pragma: no cover
    """Steps 4-6: the threads' item gradients summed per movie, then per item feature, and the
    item features' Adam update; the shared user features' gradients summed over the threads (in
    thread order: the same sums for the same thread count), and their Adam update."""
    v = params.v
    w = params.w
    mv = params.mv
    sv = params.sv
    mw = params.mw
    sw = params.sw
    last = params.last
    pow1 = st.pow1
    pow2 = st.pow2
    t = st.t
    reg_a = st.reg_a
    reg_scale = st.reg_scale
    f_slot = scratch.f_slot
    fi = scratch.fi
    f_ptr = scratch.f_ptr
    f_row = scratch.f_row
    f_x = scratch.f_x
    cnt_i = scratch.cnt_i
    VC = scratch.VC
    WC = scratch.WC
    QI = scratch.QI
    GQ = scratch.GQ
    GBI = scratch.GBI
    g_slot = scratch.g_slot
    gf = scratch.gf
    UC = scratch.UC
    UWC = scratch.UWC
    GF = scratch.GF
    GFW = scratch.GFW
    k = v.shape[1]
    chunks = GQ.shape[0]
    # 4. per movie: H_i = G_i + Gb_i q_i (into QI), Gb_i (into GBI[0])
    for s2 in prange(n_di):
        gb = GBI[0, s2]
        for ch in range(1, chunks):
            gb += GBI[ch, s2]
        GBI[0, s2] = gb
        h = QI[s2]
        for c in range(k):
            h[c] *= gb
        for ch in range(chunks):
            g_row = GQ[ch, s2]
            for c in range(k):
                h[c] += g_row[c]

    # 5. item features: gradient summed over their movies, then Adam. Slots are dealt to the
    #    threads in turn (the shared, heavy genre/year features come first).
    for ch in prange(chunks):
        grad = np.empty(k, np.float32)
        for fs in range(ch, n_fi, chunks):
            if fs + chunks < n_fi:
                _prefetch(v, fi[fs + chunks])
                _prefetch(mv, fi[fs + chunks])
                _prefetch(sv, fi[fs + chunks])
            f = fi[fs]
            for c in range(k):
                grad[c] = 0.0
            coef = np.float32(0.0)
            gw = np.float32(0.0)
            ra = reg_a * reg_scale[f]
            for q in range(f_ptr[fs], f_ptr[fs + 1]):
                s2 = f_row[q]
                x = f_x[q]
                gb = GBI[0, s2]
                cnt = np.float32(cnt_i[s2])
                h = QI[s2]
                for c in range(k):
                    grad[c] += x * h[c]
                coef += x * x * (ra * cnt - gb)
                gw += x * gb + ra * cnt * x * x * WC[fs]
            cur = VC[fs]
            for c in range(k):
                grad[c] += coef * cur[c]
            lag = t - 1 - last[f]
            d1, d2 = pow1[lag + 1], pow2[lag + 1]
            _adam_row(v[f], cur, mv[f], sv[f], grad, d1, d2, st)
            w[f], mw[f], sw[f] = _adam_scalar(WC[fs], mw[f], sw[f], gw, d1, d2, st)
            last[f] = t
            f_slot[f] = -1

    # 6. shared user features: the threads' gradients summed, then Adam
    for gs in prange(n_gf):
        f = gf[gs]
        grad = np.empty(k, np.float32)
        row = GF[0, gs]
        for c in range(k):
            grad[c] = row[c]
        gw = GFW[0, gs]
        for ch in range(1, chunks):
            row = GF[ch, gs]
            for c in range(k):
                grad[c] += row[c]
            gw += GFW[ch, gs]
        lag = t - 1 - last[f]
        d1, d2 = pow1[lag + 1], pow2[lag + 1]
        _adam_row(v[f], UC[gs], mv[f], sv[f], grad, d1, d2, st)
        w[f], mw[f], sw[f] = _adam_scalar(UWC[gs], mw[f], sw[f], gw, d1, d2, st)
        last[f] = t
        g_slot[f] = -1


# ---- evaluation -------------------------------------------------------------------------------


def error_sums(users, items, ratings, sides, w0, sigmoid, rating_range) -> tuple[float, float]:
    """(sum of squared errors, sum of absolute errors) of the clamped, linked predictions of
    (user row, item row, rating) arrays from the sides (p, b_u, q, b_i), in parallel."""
    lo, hi = (np.float32(x) for x in rating_range)
    threads = numba.get_num_threads()
    return _errors(users, items, ratings, *sides, np.float32(w0), sigmoid, lo, hi, threads)


@njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def _errors(users, items, ratings, p, b_u, q, b_i, w0, sigmoid, lo, hi, chunks):  # pragma: no cover
    """`error_sums`, one chunk of ratings per thread."""
    n = len(ratings)
    sq = np.zeros(chunks)
    ab = np.zeros(chunks)
    for ch in prange(chunks):
        for j in range(n * ch // chunks, n * (ch + 1) // chunks):
            u = users[j]
            i = items[j]
            y, _ = _link(_score(w0, b_u[u], b_i[i], p[u], q[i]), sigmoid)
            err = float(min(max(y, lo), hi)) - float(ratings[j])
            sq[ch] += err * err
            ab[ch] += abs(err)
    return sq.sum(), ab.sum()
