"""The CPU training step as fused numba kernels: the same math as torch_engine.TorchEngine.

How the engine is chosen (`loop.make_engine`): on CPU this one unless `cannot_train(model)` says
why not, else the torch engine (much slower on CPU, same result); never on a GPU. Both engines
have the same shape: `Engine(model, optimizer, reg_scale, batch_size, users, items, ratings)`,
then `epoch(order, catch_up_every) -> sum of squared errors`, `step(users, items, ratings)` for
one minibatch and `catch_up_all()`.

One step does a whole minibatch: gather its ratings from the epoch's order, find its distinct
users, movies and item features (stamp arrays, no sorting), bring the item features up to date
(the catch-up of lazy_adam.LazyAdam) and compute each distinct movie's (q_i, b_i) once; then walk
the ratings grouped by user, in parallel over threads: each user's row (v, Adam's m and s) is read
once, caught up, scored against the user's movies, given its gradient and its Adam update, and
written once, while the movies' gradients gather in one buffer per thread. A last parallel pass
sums those per item feature and updates the item features. Nothing of batch size x k is
allocated. The step is bound by the latency of random rows, so the next rows are prefetched.

The kernels share their state as NamedTuples of arrays (numba passes them like structs): `Rows`
(one side's feature rows), `Params` (the model's and Adam's arrays, views of their tensors),
`Scratch` (the step's reusable buffers) and `Step` (one step's constants). The formulas the model
states once in torch (model.score, model.apply_link, model.side_bias) are the small inlined
kernels `_score`, `_link` and `_pairwise`.

Measured on 2 cores (ml-latest-shaped synthetic data, k=120, batch 2^19): about 2.5M ratings/s,
against 4,400/s for the original notebook's DataLoader + dense Adam recipe
(benchmarks/train_speed.py).

The user side must be exclusive (each user feature in at most one user row, as the user-id field
is); `cannot_train` says when it is not.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
from numba import njit, prange

# SIGMOID_SCALE: a module-level float, so numba compiles it into the kernels as a constant.
from fmstore.serving import SIGMOID_SCALE

# Everything but "no NaNs / no infs": lets LLVM vectorise the k-wide loops and reductions.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def cannot_train(model) -> str | None:
    """Why the numba engine cannot train `model`, or None when it can."""
    if model.v.device.type != "cpu":
        return "the numba engine runs on CPU tensors only"
    if model.has_rated:
        return "the 'rated' field (a user-side feature of every movie) trains in the torch engine"
    index, weight = model.user_index.cpu().numpy(), model.user_weight.cpu().numpy()
    used = index[weight != 0]
    if len(np.unique(used)) != len(used):
        return "a user-side feature is shared by several user rows"
    return None


# ---- the state the kernels share --------------------------------------------------------------


class Rows(NamedTuple):
    """One side's feature rows in CSR form: row r has features feat[ptr[r]:ptr[r + 1]] with
    weights x[ptr[r]:ptr[r + 1]] (zero weights dropped); `width`: the most features of a row."""

    ptr: np.ndarray  # int64 [rows + 1]
    feat: np.ndarray  # int32
    x: np.ndarray  # float32
    width: int


def csr(index: np.ndarray, weight: np.ndarray) -> Rows:
    """Padded feature rows -> `Rows` without the zero-weight entries."""
    keep = weight != 0
    ptr = np.zeros(len(index) + 1, np.int64)
    np.cumsum(keep.sum(1), out=ptr[1:])
    width = max(int(np.diff(ptr).max(initial=0)), 1)
    return Rows(ptr, index[keep].astype(np.int32), weight[keep].astype(np.float32), width)


class Params(NamedTuple):
    """What training changes: the model's v and w, Adam's moments of each and the step each
    feature row was last updated at. Views of the tensors of the model and of LazyAdam, which
    the kernels update in place."""

    v: np.ndarray  # float32 [features, k]
    w: np.ndarray  # float32 [features]
    mv: np.ndarray  # Adam's first moment of v
    sv: np.ndarray  # its second moment
    mw: np.ndarray
    sw: np.ndarray
    last: np.ndarray  # int32 [features]


class Step(NamedTuple):
    """The constants of one step: Adam's for step t, the catch-up tables, and the loss's."""

    t: int
    step_size: np.float32  # lr / (1 - b1^t)
    bc2_sqrt: np.float32  # sqrt(1 - b2^t)
    b1: np.float32
    b2: np.float32
    eps: np.float32
    drift: np.ndarray  # float32, by lag: LazyAdam.drift, the catch-up of missed steps
    pow1: np.ndarray  # float32, by lag: b1^lag
    pow2: np.ndarray  # float32, by lag: b2^lag
    reg_a: np.float32  # 2 / batch size: the L2 penalty's factor in this batch's gradient
    reg_scale: np.ndarray  # float32 [features]: each feature's L2 coefficient (loop.feature_reg)
    w0: np.float32
    sigmoid: bool  # the output link: sigmoid(y) * SIGMOID_SCALE, else identity


class Scratch(NamedTuple):
    """The buffers a step reuses, sized once for the largest batch. "Slots" number the batch's
    distinct user rows, item rows and item features in the order they are met."""

    u_slot: np.ndarray  # user row -> its slot in the batch, -1 if absent (reset after each step)
    i_slot: np.ndarray  # item row -> slot, -1 if absent
    f_slot: np.ndarray  # item feature -> slot, -1 if absent
    du: np.ndarray  # user slot -> user row
    di: np.ndarray  # item slot -> item row
    u_start: np.ndarray  # ratings of user slot s: u_order[u_start[s]:u_start[s + 1]]
    u_order: np.ndarray  # batch positions grouped by user slot
    rating_uslot: np.ndarray  # batch position -> user slot
    rating_islot: np.ndarray  # batch position -> item slot
    cnt_i: np.ndarray  # item slot -> its ratings in the batch
    fi: np.ndarray  # feature slot -> item feature
    f_ptr: np.ndarray  # entries of feature slot fs: f_ptr[fs]:f_ptr[fs + 1]
    f_row: np.ndarray  # entry -> item slot
    f_x: np.ndarray  # entry -> the feature's weight in that item row
    VC: np.ndarray  # feature slot -> caught-up v row
    WC: np.ndarray  # feature slot -> caught-up w
    QI: np.ndarray  # item slot -> q_i; later H_i = G_i + Gb_i q_i
    BI: np.ndarray  # item slot -> b_i
    GQ: np.ndarray  # per thread, item slot -> gradient of q_i
    GBI: np.ndarray  # per thread, item slot -> gradient of b_i
    bounds: np.ndarray  # the threads' chunks of user slots
    sse: np.ndarray  # per chunk: sum of squared errors
    gsum: np.ndarray  # per chunk: sum of dLoss/dy


def new_scratch(users: Rows, items: Rows, n_features: int, k: int, batch_size: int) -> Scratch:
    """Buffers for batches of up to `batch_size` ratings, one gradient buffer per numba thread."""
    threads = numba.get_num_threads()
    n_urows, n_irows = len(users.ptr) - 1, len(items.ptr) - 1
    max_du, max_di = min(batch_size, n_urows), min(batch_size, n_irows)
    max_entries = max_di * items.width
    max_fi = min(n_features, max_entries)
    i32 = np.int32
    i64 = np.int64
    f32 = np.float32
    return Scratch(
        u_slot=np.full(n_urows, -1, i32),
        i_slot=np.full(n_irows, -1, i32),
        f_slot=np.full(n_features, -1, i32),
        du=np.zeros(max_du, i32),
        di=np.zeros(max_di, i32),
        u_start=np.zeros(max_du + 1, i64),
        u_order=np.zeros(batch_size, i32),
        rating_uslot=np.zeros(batch_size, i32),
        rating_islot=np.zeros(batch_size, i32),
        cnt_i=np.zeros(max_di, i32),
        fi=np.zeros(max_fi, i32),
        f_ptr=np.zeros(max_fi + 1, i64),
        f_row=np.zeros(max_entries, i32),
        f_x=np.zeros(max_entries, f32),
        VC=np.zeros((max_fi, k), f32),
        WC=np.zeros(max_fi, f32),
        QI=np.zeros((max_di, k), f32),
        BI=np.zeros(max_di, f32),
        GQ=np.zeros((threads, max_di, k), f32),
        GBI=np.zeros((threads, max_di), f32),
        bounds=np.zeros(threads + 1, i64),
        sse=np.zeros(threads, np.float64),
        gsum=np.zeros(threads, np.float64),
    )


class State(NamedTuple):
    """Everything a step reads besides its ratings and constants."""

    users: Rows
    items: Rows
    params: Params
    scratch: Scratch


# ---- the engine -------------------------------------------------------------------------------


class NumbaEngine:
    """Trains `model` in place on (users, items, ratings); see TorchEngine for the math."""

    def __init__(self, model, optimizer, reg_scale, batch_size: int, users, items, ratings):
        # reg_scale[j]: feature j's L2 coefficient per occurrence (loop.feature_reg)
        self.model, self.opt, self.batch_size = model, optimizer, batch_size
        self.reg_scale = reg_scale.numpy().astype(np.float32)
        self.users, self.items, self.ratings = users.numpy(), items.numpy(), ratings.numpy()
        user_rows = csr(model.user_index.numpy(), model.user_weight.numpy())
        item_rows = csr(model.item_index.numpy(), model.item_weight.numpy())
        n_features, k = model.v.shape
        batch_size = min(batch_size, max(len(self.ratings), 1))
        # the batch's ratings, gathered from the epoch's order at the start of each step
        self.batch = (
            np.empty(batch_size, np.int32),
            np.empty(batch_size, np.int32),
            np.empty(batch_size, np.float32),
        )
        o = optimizer
        params = Params(
            model.v.data.numpy(),
            model.w.data.numpy(),
            o.mv.numpy(),
            o.sv.numpy(),
            o.mw.numpy(),
            o.sw.numpy(),
            o.last.numpy(),
        )
        scratch = new_scratch(user_rows, item_rows, n_features, k, batch_size)
        self.state = State(user_rows, item_rows, params, scratch)
        lags = np.arange(len(o.drift) + 1)
        self.powers = (o.b1**lags).astype(np.float32), (o.b2**lags).astype(np.float32)

    def epoch(self, order, catch_up_every: int) -> float:
        """One pass over the ratings in `order`; returns the sum of squared errors."""
        order = order.numpy()
        sse = 0.0
        for s in range(0, len(order), self.batch_size):
            batch = order[s : s + self.batch_size]
            n = len(batch)
            bu, bi, br = (a[:n] for a in self.batch)
            _gather(batch, self.users, self.items, self.ratings, bu, bi, br)
            sse += self.step(bu, bi, br)
            if self.opt.t % catch_up_every == 0:
                self.catch_up_all()
        return sse

    def step(self, bu, bi, br) -> float:
        """One minibatch of (user row, item row, rating) through the fused kernels; returns its
        sum of squared errors."""
        opt = self.opt
        model = self.model
        t, step_size, bc2_sqrt = opt.begin_step()
        w0 = float(model.w0.detach())
        sse, gsum = _step(
            (bu, bi, br), self.state, self._constants(t, step_size, bc2_sqrt, w0, len(br))
        )
        # w0: plain Adam on a scalar
        m0 = opt.b1 * float(opt.m0) + (1 - opt.b1) * gsum
        s0 = opt.b2 * float(opt.s0) + (1 - opt.b2) * gsum * gsum
        opt.m0.fill_(m0)
        opt.s0.fill_(s0)
        model.w0.data.fill_(w0 - step_size * m0 / (math.sqrt(s0) / bc2_sqrt + opt.eps))
        opt.end_step()
        return sse

    def catch_up_all(self) -> None:
        """Bring every row up to the end of the current step (see LazyAdam.catch_up_all)."""
        # (only t, eps and the catch-up tables matter to the catch-up)
        _catch_up_all(self.state.params, self._constants(self.opt.t, 0.0, 1.0, 0.0, 1))

    def _constants(self, t: int, step_size: float, bc2_sqrt: float, w0: float, n: int) -> Step:
        """Step t's constants, for a batch of n ratings, as the kernels' float32."""
        opt = self.opt
        f32 = np.float32
        return Step(
            t=t,
            step_size=f32(step_size),
            bc2_sqrt=f32(bc2_sqrt),
            b1=f32(opt.b1),
            b2=f32(opt.b2),
            eps=f32(opt.eps),
            drift=opt.drift.astype(f32),
            pow1=self.powers[0],
            pow2=self.powers[1],
            reg_a=f32(2.0 / n),
            reg_scale=self.reg_scale,
            w0=f32(w0),
            sigmoid=self.model.link == "sigmoid",
        )


def _step(batch, state: State, step: Step) -> tuple[float, float]:
    """One minibatch (user rows, item rows, ratings); returns (sum of squared errors, sum of
    dLoss/dy). Four kernels: bookkeeping, the movies' sides, the users' pass, the item update."""
    bu, bi, br = batch
    scratch = state.scratch
    n_du, n_di, n_fi = _prologue(bu, bi, state.items, scratch)
    _item_sides(n_di, n_fi, state.items, state.params, step, scratch)
    _user_pass(br, n_di, state.users, state.params, step, scratch)
    _item_update(n_di, n_fi, state.params, step, scratch)
    return float(scratch.sse.sum()), float(scratch.gsum.sum())


# ---- kernels ----------------------------------------------------------------------------------


def _define_prefetch():
    """`prefetch(arr, i)`: ask for the cache lines of row i of a C-contiguous 2D array before
    it is needed (the step is bound by the latency of random rows: this hides some of it).
    Built from numba/llvmlite internals; when they do not fit, prefetch does nothing."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def prefetch(typingctx, arr, row):
        sig = types.void(arr, row)

        def codegen(context, builder, signature, args):
            aryty = signature.args[0]
            ary = context.make_array(aryty)(context, builder, args[0])
            i64 = ir.IntType(64)
            index = context.cast(builder, args[1], signature.args[1], types.intp)
            ptr = cgutils.get_item_pointer(
                context, builder, aryty, ary, [index, ir.Constant(i64, 0)], wraparound=False
            )
            i8p = ir.IntType(8).as_pointer()
            i32 = ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module,
                ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                "llvm.prefetch.p0i8",
            )
            base = builder.bitcast(ptr, i8p)
            width = cgutils.unpack_tuple(builder, ary.shape, aryty.ndim)[1]
            nbytes = builder.mul(width, ir.Constant(i64, aryty.dtype.bitwidth // 8))
            with cgutils.for_range_slice(
                builder, ir.Constant(i64, 0), nbytes, ir.Constant(i64, 64)
            ) as (off, _):
                # rw=1 (for writing), locality=3 (keep in all caches), data cache
                builder.call(
                    fn,
                    [
                        builder.gep(base, [off]),
                        ir.Constant(i32, 1),
                        ir.Constant(i32, 3),
                        ir.Constant(i32, 1),
                    ],
                )
            return context.get_dummy_value()

        return sig, codegen

    @njit
    def probe(a):
        prefetch(a, 0)

    try:
        probe(np.zeros((1, 4), np.float32))
    except Exception:  # pragma: no cover - a numba/llvmlite this was not written for

        @njit(inline="always")
        def prefetch(arr, row):  # noqa: F811
            pass

    return prefetch


_prefetch = _define_prefetch()


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
def _catch_up_all(params, st):  # pragma: no cover
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


@njit(parallel=True, cache=True)
def _gather(order, users, items, ratings, eu, ei, er):  # pragma: no cover
    """The batch's (user row, item row, rating), in the epoch's order."""
    for p in prange(len(order)):
        j = order[p]
        eu[p] = users[j]
        ei[p] = items[j]
        er[p] = ratings[j]


@njit(parallel=True, cache=True)
def _prologue(bu, bi, items, scratch):  # pragma: no cover
    """Bookkeeping: distinct rows and features of the batch, ratings grouped by user. The user
    side and the item side are independent: one thread each."""
    counts = np.zeros(3, np.int64)
    for task in prange(2):
        if task == 0:
            counts[0] = _user_slots(bu, scratch)
        else:
            counts[1], counts[2] = _item_slots(bi, items, scratch)
    return counts[0], counts[1], counts[2]


@njit(cache=True)
def _user_slots(bu, scratch):  # pragma: no cover
    """The batch's distinct user rows (slots), its ratings sorted by user slot, and the slots
    cut into one chunk per thread; returns the number of user slots."""
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
    return n_du


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
def _item_sides(n_di, n_fi, items, params, st, scratch):  # pragma: no cover
    """Steps 1-2: the batch's item features caught up (into VC/WC; written back with their
    update in `_item_update`), then each distinct movie's q_i and b_i (into QI/BI)."""
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
    k = v.shape[1]
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
def _user_pass(br, n_di, users, params, st, scratch):  # pragma: no cover
    """Step 3: the ratings grouped by user, one chunk of users per thread: each user's row is
    caught up, scored against its movies, given its gradient and its Adam update in one go;
    the movies' gradients gather in this thread's GQ/GBI."""
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
                d = drift[t - 1 - last[f]]
                _caught_up(cur, v[f], mv[f], sv[f], d, eps)
                sq = _add_feature(p_vec, sq, x, cur)
                wu[e - e0] = w[f] - d * mw[f] / (math.sqrt(sw[f]) + eps)
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
            # the user's features: gradient and Adam
            cnt = np.float32(u_start[s + 1] - u_start[s])
            for e in range(e0, e1):
                f = u_feat[e]
                x = u_x[e]
                cur = vu[e - e0]
                lag = t - 1 - last[f]
                d1, d2 = pow1[lag + 1], pow2[lag + 1]
                ra = reg_a * reg_scale[f]
                coef = x * x * (ra * cnt - gb)
                for c in range(k):
                    grad[c] = x * (gp[c] + gb * p_vec[c])
                for c in range(k):
                    grad[c] += coef * cur[c]
                _adam_row(v[f], cur, mv[f], sv[f], grad, d1, d2, st)
                gw = x * gb + ra * cnt * x * x * wu[e - e0]
                w[f], mw[f], sw[f] = _adam_scalar(wu[e - e0], mw[f], sw[f], gw, d1, d2, st)
                last[f] = t
        sse_out[ch] = sse
        gsum_out[ch] = gsum


@njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
def _item_update(n_di, n_fi, params, st, scratch):  # pragma: no cover
    """Steps 4-5: the threads' item gradients summed per movie, then per item feature, and the
    item features' Adam update."""
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
