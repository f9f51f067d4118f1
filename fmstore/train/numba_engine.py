"""The CPU training step as fused numba kernels: the same math as torch_engine.TorchEngine.

How the engine is chosen (`loop.make_engine`): on CPU this one when numba is installed and
`unavailable(model)` is None, else the torch engine (much slower on CPU, same result); never on a
GPU. Both engines have the same shape: `Engine(model, optimizer, reg_scale, batch_size, users,
items, ratings)`, then `epoch(order, catch_up_every) -> sum of squared errors`, `step(users,
items, ratings)` for one minibatch and `catch_up_all()`.

One step does a whole minibatch: gather its ratings from the epoch's order, find its distinct
users, movies and item features (stamp arrays, no sorting), bring the item features up to date
(the catch-up of lazy_adam.LazyAdam) and compute each distinct movie's (q_i, b_i) once; then walk
the ratings grouped by user, in parallel over threads: each user's row (v, Adam's m and s) is read
once, caught up, scored against the user's movies, given its gradient and its Adam update, and
written once, while the movies' gradients gather in one buffer per thread. A last parallel pass
sums those per item feature and updates the item features. Nothing of batch size x k is
allocated. The step is bound by the latency of random rows, so the next rows are prefetched.

Measured on 2 cores (ml-latest-shaped synthetic data, k=120, batch 2^19): about 2.5M ratings/s,
against 4,400/s for the original notebook's DataLoader + dense Adam recipe
(benchmarks/train_speed.py).

The user side must be exclusive (each user feature in at most one user row, as the user-id field
is); `unavailable` says when it is not.
"""

from __future__ import annotations

import math

import numpy as np

# SIGMOID_SCALE: a module-level float, so numba compiles it into the kernels as a constant.
from fmstore.serving import SIGMOID_SCALE

try:  # pragma: no cover - exercised by whether numba is installed
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    numba = None

# Everything but "no NaNs / no infs": lets LLVM vectorise the k-wide loops and reductions.
_FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}


def unavailable(model) -> str | None:
    """Why the numba engine cannot train `model`, or None when it can."""
    if numba is None:
        return "numba is not installed (pip install numba)"
    if model.v.device.type != "cpu":
        return "the numba engine runs on CPU tensors only"
    if model.has_rated:
        return "the 'rated' field (a user-side feature of every movie) trains in the torch engine"
    index, weight = model.user_index.cpu().numpy(), model.user_weight.cpu().numpy()
    used = index[weight != 0]
    if len(np.unique(used)) != len(used):
        return "a user-side feature is shared by several user rows"
    return None


def csr(index: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded feature rows -> (row pointer, feature, weight) without the zero-weight entries."""
    keep = weight != 0
    ptr = np.zeros(len(index) + 1, np.int64)
    np.cumsum(keep.sum(1), out=ptr[1:])
    return ptr, index[keep].astype(np.int32), weight[keep].astype(np.float32)


class NumbaEngine:
    """Trains `model` in place on (users, items, ratings); see TorchEngine for the math."""

    def __init__(self, model, optimizer, reg_scale, batch_size: int, users, items, ratings):
        # reg_scale[j]: feature j's L2 coefficient per occurrence (loop.feature_reg)
        self.model, self.opt, self.batch_size = model, optimizer, batch_size
        self.reg_scale = reg_scale.numpy().astype(np.float32)
        self.users, self.items, self.ratings = users.numpy(), items.numpy(), ratings.numpy()
        self.u_ptr, self.u_feat, self.u_x = csr(model.user_index.numpy(), model.user_weight.numpy())
        self.i_ptr, self.i_feat, self.i_x = csr(model.item_index.numpy(), model.item_weight.numpy())
        n_urows, n_irows = len(self.u_ptr) - 1, len(self.i_ptr) - 1
        n_feat, k = model.v.shape
        self.u_width = max(int(np.diff(self.u_ptr).max(initial=0)), 1)
        i_width = max(int(np.diff(self.i_ptr).max(initial=0)), 1)
        threads = numba.get_num_threads()
        n = len(self.ratings)
        batch_size = min(batch_size, max(n, 1))
        max_du, max_di = min(batch_size, n_urows), min(batch_size, n_irows)
        max_entries = max_di * i_width
        max_fi = min(n_feat, max_entries)
        i32, f32 = np.int32, np.float32
        # the batch's ratings, gathered from the epoch's order at the start of each step
        self.batch = (
            np.empty(batch_size, i32),
            np.empty(batch_size, i32),
            np.empty(batch_size, f32),
        )
        self.scratch = (
            np.full(n_urows, -1, i32),  # u_slot: user row -> slot in the batch, -1 if absent
            np.full(n_irows, -1, i32),  # i_slot
            np.full(n_feat, -1, i32),  # f_slot: item feature -> slot
            np.zeros(max_du, i32),  # du: slot -> user row
            np.zeros(max_di, i32),  # di
            np.zeros(
                max_du + 1, np.int64
            ),  # u_start: ratings of user slot s are u_order[u_start[s]:u_start[s+1]]
            np.zeros(batch_size, i32),  # u_order: batch positions grouped by user slot
            np.zeros(batch_size, i32),  # rating_uslot
            np.zeros(batch_size, i32),  # rating_islot
            np.zeros(max_di, i32),  # cnt_i
            np.zeros(max_fi, i32),  # fi: slot -> item feature
            np.zeros(max_fi + 1, np.int64),  # f_ptr: entries of feature slot
            np.zeros(max_entries, i32),  # f_row: entry -> item slot
            np.zeros(max_entries, f32),  # f_x
            np.zeros((max_fi, k), f32),  # VC: caught-up item feature vectors
            np.zeros(max_fi, f32),  # WC
            np.zeros((max_di, k), f32),  # QI: q_i of each item slot; later H_i
            np.zeros(max_di, f32),  # BI
            np.zeros((threads, max_di, k), f32),  # GQ: per thread, item vector gradients
            np.zeros((threads, max_di), f32),  # GBI
            np.zeros(threads + 1, np.int64),  # chunk bounds (user slots)
            np.zeros(threads, np.float64),  # sse per chunk
            np.zeros(threads, np.float64),  # sum of g per chunk
        )
        o = optimizer
        self.params = (
            model.v.data.numpy(),
            model.w.data.numpy(),
            o.mv.numpy(),
            o.sv.numpy(),
            o.mw.numpy(),
            o.sw.numpy(),
            o.last.numpy(),
        )
        lags = np.arange(len(o.drift) + 1)
        self.powers = (o.b1**lags).astype(f32), (o.b2**lags).astype(f32)  # b^lag, for the catch-up

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
        """One minibatch of (user row, item row, rating) through the fused kernel; returns its sum of
        squared errors."""
        opt, model = self.opt, self.model
        t, step_size, bc2_sqrt = opt.begin_step()
        w0 = float(model.w0.detach())
        f32 = np.float32
        sse, gsum = _step(
            bu,
            bi,
            br,
            self.u_ptr,
            self.u_feat,
            self.u_x,
            self.i_ptr,
            self.i_feat,
            self.i_x,
            *self.params,
            opt.drift.astype(f32),
            *self.powers,
            t,
            f32(step_size),
            f32(bc2_sqrt),
            f32(opt.b1),
            f32(opt.b2),
            f32(opt.eps),
            f32(2.0 / len(br)),
            self.reg_scale,
            f32(w0),
            model.link == "sigmoid",
            self.u_width,
            *self.scratch,
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
        opt = self.opt
        _catch_up_all(
            *self.params, opt.drift.astype(np.float32), *self.powers, opt.t, np.float32(opt.eps)
        )


if numba is not None:

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

    # Row helpers: each loop touches few arrays, so LLVM vectorises it (numba cannot promise
    # that arrays do not alias, and LLVM gives up when too many overlap checks would be needed).

    @njit(parallel=True, cache=True)
    def _gather(order, users, items, ratings, eu, ei, er):  # pragma: no cover
        for p in prange(len(order)):
            j = order[p]
            eu[p] = users[j]
            ei[p] = items[j]
            er[p] = ratings[j]

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
    def _adam_row(
        out, cur, m, s, grad, d1, d2, b1, b2, step_size, bc2_sqrt, eps
    ):  # pragma: no cover
        """One Adam step from the caught-up value `cur` (m, s not yet decayed: d1 = b1^(missed+1))."""
        one = np.float32(1.0)
        for c in range(m.shape[0]):
            m[c] = d1 * m[c] + (one - b1) * grad[c]
        for c in range(s.shape[0]):
            s[c] = d2 * s[c] + (one - b2) * grad[c] * grad[c]
        for c in range(out.shape[0]):
            out[c] = cur[c] - step_size * m[c] / (math.sqrt(s[c]) / bc2_sqrt + eps)

    @njit(fastmath=_FASTMATH, error_model="numpy", cache=True, inline="always")
    def _adam_scalar(cur, m, s, grad, d1, d2, b1, b2, step_size, bc2_sqrt, eps):  # pragma: no cover
        one = np.float32(1.0)
        m = d1 * m + (one - b1) * grad
        s = d2 * s + (one - b2) * grad * grad
        return cur - step_size * m / (math.sqrt(s) / bc2_sqrt + eps), m, s

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def _catch_up_all(v, w, mv, sv, mw, sw, last, drift, pow1, pow2, t, eps):  # pragma: no cover
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

    @njit(parallel=True, cache=True)
    def _prologue(
        bu,
        bi,
        u_ptr,
        i_ptr,
        i_feat,
        i_x,
        u_slot,
        i_slot,
        f_slot,
        du,
        di,
        u_start,
        u_order,
        rating_uslot,
        rating_islot,
        cnt_i,
        fi,
        f_ptr,
        f_row,
        f_x,
        bounds,
    ):  # pragma: no cover
        """Bookkeeping: distinct rows and features of the batch, ratings grouped by user. The user
        side and the item side are independent: one thread each."""
        counts = np.zeros(3, np.int64)
        for task in prange(2):
            if task == 0:
                counts[0] = _user_slots(bu, u_slot, du, u_start, u_order, rating_uslot, bounds)
            else:
                counts[1], counts[2] = _item_slots(
                    bi,
                    i_ptr,
                    i_feat,
                    i_x,
                    i_slot,
                    f_slot,
                    di,
                    rating_islot,
                    cnt_i,
                    fi,
                    f_ptr,
                    f_row,
                    f_x,
                )
        return counts[0], counts[1], counts[2]

    @njit(cache=True)
    def _user_slots(bu, u_slot, du, u_start, u_order, rating_uslot, bounds):  # pragma: no cover
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
    def _item_slots(
        bi, i_ptr, i_feat, i_x, i_slot, f_slot, di, rating_islot, cnt_i, fi, f_ptr, f_row, f_x
    ):  # pragma: no cover
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

    def _step(
        bu,
        bi,
        br,
        u_ptr,
        u_feat,
        u_x,
        i_ptr,
        i_feat,
        i_x,
        v,
        w,
        mv,
        sv,
        mw,
        sw,
        last,
        drift,
        pow1,
        pow2,
        t,
        step_size,
        bc2_sqrt,
        b1,
        b2,
        eps,
        reg_a,
        reg_scale,
        w0,
        sigmoid,
        u_width,
        u_slot,
        i_slot,
        f_slot,
        du,
        di,
        u_start,
        u_order,
        rating_uslot,
        rating_islot,
        cnt_i,
        fi,
        f_ptr,
        f_row,
        f_x,
        VC,
        WC,
        QI,
        BI,
        GQ,
        GBI,
        bounds,
        sse_out,
        gsum_out,
    ):
        """One minibatch; returns (sum of squared errors, sum of dLoss/dy)."""
        n_du, n_di, n_fi = _prologue(
            bu,
            bi,
            u_ptr,
            i_ptr,
            i_feat,
            i_x,
            u_slot,
            i_slot,
            f_slot,
            du,
            di,
            u_start,
            u_order,
            rating_uslot,
            rating_islot,
            cnt_i,
            fi,
            f_ptr,
            f_row,
            f_x,
            bounds,
        )
        _item_rows(
            n_di,
            n_fi,
            i_ptr,
            i_feat,
            i_x,
            v,
            w,
            mv,
            sv,
            mw,
            sw,
            last,
            drift,
            t,
            eps,
            f_slot,
            di,
            fi,
            VC,
            WC,
            QI,
            BI,
        )
        _user_pass(
            len(br),
            n_di,
            br,
            u_ptr,
            u_feat,
            u_x,
            v,
            w,
            mv,
            sv,
            mw,
            sw,
            last,
            drift,
            pow1,
            pow2,
            t,
            step_size,
            bc2_sqrt,
            b1,
            b2,
            eps,
            reg_a,
            reg_scale,
            w0,
            sigmoid,
            u_width,
            du,
            u_start,
            u_order,
            rating_islot,
            QI,
            BI,
            GQ,
            GBI,
            bounds,
            sse_out,
            gsum_out,
        )
        _item_update(
            n_di,
            n_fi,
            v,
            w,
            mv,
            sv,
            mw,
            sw,
            last,
            pow1,
            pow2,
            t,
            step_size,
            bc2_sqrt,
            b1,
            b2,
            eps,
            reg_a,
            reg_scale,
            f_slot,
            fi,
            f_ptr,
            f_row,
            f_x,
            cnt_i,
            VC,
            WC,
            QI,
            GQ,
            GBI,
        )
        return float(sse_out.sum()), float(gsum_out.sum())

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def _item_rows(
        n_di,
        n_fi,
        i_ptr,
        i_feat,
        i_x,
        v,
        w,
        mv,
        sv,
        mw,
        sw,
        last,
        drift,
        t,
        eps,
        f_slot,
        di,
        fi,
        VC,
        WC,
        QI,
        BI,
    ):  # pragma: no cover
        k = v.shape[1]
        half = np.float32(0.5)
        # 1. item features caught up (into VC/WC; written back with their update in step 5)
        for fs in prange(n_fi):
            if fs + 1 < n_fi:
                _prefetch(v, fi[fs + 1])
                _prefetch(mv, fi[fs + 1])
                _prefetch(sv, fi[fs + 1])
            f = fi[fs]
            d = drift[t - 1 - last[f]]
            _caught_up(VC[fs], v[f], mv[f], sv[f], d, eps)
            WC[fs] = w[f] - d * mw[f] / (math.sqrt(sw[f]) + eps)

        # 2. each distinct movie's q_i and b_i
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
                vc = VC[fs]
                for c in range(k):
                    q[c] += x * vc[c]
                for c in range(k):
                    sq += x * x * vc[c] * vc[c]
            if i_ptr[row + 1] - i_ptr[row] > 1:
                norm = np.float32(0.0)
                for c in range(k):
                    norm += q[c] * q[c]
                bias += half * (norm - sq)
            BI[s2] = bias

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def _user_pass(
        n,
        n_di,
        br,
        u_ptr,
        u_feat,
        u_x,
        v,
        w,
        mv,
        sv,
        mw,
        sw,
        last,
        drift,
        pow1,
        pow2,
        t,
        step_size,
        bc2_sqrt,
        b1,
        b2,
        eps,
        reg_a,
        reg_scale,
        w0,
        sigmoid,
        u_width,
        du,
        u_start,
        u_order,
        rating_islot,
        QI,
        BI,
        GQ,
        GBI,
        bounds,
        sse_out,
        gsum_out,
    ):  # pragma: no cover
        """3. The ratings grouped by user, one chunk of users per thread: each user's row is
        caught up, scored against its movies, given its gradient and its Adam update in one go;
        the movies' gradients gather in this thread's GQ/GBI."""
        k = v.shape[1]
        inv_n = np.float32(1.0 / n)
        one = np.float32(1.0)
        half = np.float32(0.5)
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
            vu = np.empty((u_width, k), np.float32)
            wu = np.empty(u_width, np.float32)
            sse = 0.0
            gsum = 0.0
            for s in range(bounds[ch], bounds[ch + 1]):
                if s + 1 < bounds[ch + 1]:
                    nxt = du[s + 1]
                    for e in range(u_ptr[nxt], u_ptr[nxt + 1]):
                        _prefetch(v, u_feat[e])
                        _prefetch(mv, u_feat[e])
                        _prefetch(sv, u_feat[e])
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
                    for c in range(k):
                        p_vec[c] += x * cur[c]
                    for c in range(k):
                        sq += x * x * cur[c] * cur[c]
                    wu[e - e0] = w[f] - d * mw[f] / (math.sqrt(sw[f]) + eps)
                    b_u += x * wu[e - e0]
                if e1 - e0 > 1:
                    norm = np.float32(0.0)
                    for c in range(k):
                        norm += p_vec[c] * p_vec[c]
                    b_u += half * (norm - sq)
                gb = np.float32(0.0)
                for q in range(u_start[s], u_start[s + 1]):
                    if q + 1 < u_start[s + 1]:
                        s2_next = rating_islot[u_order[q + 1]]
                        _prefetch(QI, s2_next)
                        _prefetch(gq, s2_next)
                    pos = u_order[q]
                    s2 = rating_islot[pos]
                    q_row = QI[s2]
                    dot = np.float32(0.0)
                    for c in range(k):
                        dot += p_vec[c] * q_row[c]
                    y = w0 + b_u + BI[s2] + dot
                    if sigmoid:
                        sg = one / (one + math.exp(-y))
                        pred = sg * np.float32(SIGMOID_SCALE)
                        dpred = pred * (one - sg)
                    else:
                        pred = y
                        dpred = one
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
                    _adam_row(
                        v[f], cur, mv[f], sv[f], grad, d1, d2, b1, b2, step_size, bc2_sqrt, eps
                    )
                    gw = x * gb + ra * cnt * x * x * wu[e - e0]
                    w[f], mw[f], sw[f] = _adam_scalar(
                        wu[e - e0], mw[f], sw[f], gw, d1, d2, b1, b2, step_size, bc2_sqrt, eps
                    )
                    last[f] = t
            sse_out[ch] = sse
            gsum_out[ch] = gsum

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def _item_update(
        n_di,
        n_fi,
        v,
        w,
        mv,
        sv,
        mw,
        sw,
        last,
        pow1,
        pow2,
        t,
        step_size,
        bc2_sqrt,
        b1,
        b2,
        eps,
        reg_a,
        reg_scale,
        f_slot,
        fi,
        f_ptr,
        f_row,
        f_x,
        cnt_i,
        VC,
        WC,
        QI,
        GQ,
        GBI,
    ):  # pragma: no cover
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
                _adam_row(v[f], cur, mv[f], sv[f], grad, d1, d2, b1, b2, step_size, bc2_sqrt, eps)
                w[f], mw[f], sw[f] = _adam_scalar(
                    WC[fs], mw[f], sw[f], gw, d1, d2, b1, b2, step_size, bc2_sqrt, eps
                )
                last[f] = t
                f_slot[f] = -1

    @njit(parallel=True, fastmath=_FASTMATH, error_model="numpy", cache=True)
    def errors(
        users, items, ratings, p, b_u, q, b_i, w0, sigmoid, lo, hi, chunks
    ):  # pragma: no cover
        """(sum of squared errors, sum of absolute errors) of the clamped, linked predictions."""
        n = len(ratings)
        sq = np.zeros(chunks)
        ab = np.zeros(chunks)
        for ch in prange(chunks):
            for j in range(n * ch // chunks, n * (ch + 1) // chunks):
                u, i = users[j], items[j]
                pu, qi = p[u], q[i]
                dot = np.float32(0.0)
                for c in range(pu.shape[0]):
                    dot += pu[c] * qi[c]
                y = w0 + b_u[u] + b_i[i] + dot
                if sigmoid:
                    y = np.float32(SIGMOID_SCALE) / (np.float32(1.0) + math.exp(-y))
                err = float(min(max(y, lo), hi)) - float(ratings[j])
                sq[ch] += err * err
                ab[ch] += abs(err)
        return sq.sum(), ab.sum()
