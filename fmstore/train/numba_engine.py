"""The CPU training engine: the same math as torch_engine.TorchEngine, as fused numba kernels
(numba_kernels.py).

How the engine is chosen (`loop.make_engine`): on CPU this one unless `cannot_train(model)` says
why not, else the torch engine (much slower on CPU, same result); never on a GPU. Both engines
have the same shape: `Engine(model, optimizer, reg_scale, batch_size, users, items, ratings)`,
then `epoch(order, catch_up_every) -> sum of squared errors`, `step(users, items, ratings)` for
one minibatch and `catch_up_all()`.

This module holds what the kernels share, as NamedTuples of arrays (numba passes them like
structs): `Rows` (one side's feature rows), `Params` (the model's and Adam's arrays, views of
their tensors), `Scratch` (the step's reusable buffers) and `Step` (one step's constants), and
the engine that builds them and runs the epochs; w0's Adam step is plain Python.

Measured on 2 cores (ml-latest-shaped synthetic data, k=120, batch 2^19): about 2.5M ratings/s,
against 4,400/s for the original notebook's DataLoader + dense Adam recipe
(benchmarks/train_speed.py).

Features shared by many rows (genres, years, side columns) are handled as the item side handles
all of its features: caught up once per batch, their gradients gathered over the batch's rows and
Adam applied once at the end of the step. On the user side only the features in more than one
user row (`Rows.shared`: user side columns) take that path; the user-id field, one row each,
is updated in the users' pass itself.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np

from fmstore.train import numba_kernels as kernels


def cannot_train(model) -> str | None:
    """Why the numba engine cannot train `model`, or None when it can."""
    if model.v.device.type != "cpu":
        return "the numba engine runs on CPU tensors only"
    if model.has_rated:
        return "the 'rated' field (a user-side feature of every movie) trains in the torch engine"
    return None


# ---- the state the kernels share --------------------------------------------------------------


class Rows(NamedTuple):
    """One side's feature rows in CSR form: row r has features feat[ptr[r]:ptr[r + 1]] with
    weights x[ptr[r]:ptr[r + 1]] (zero weights dropped); `width`: the most features of a row;
    `shared`: the features in more than one row (the user side's pass updates the others, each
    in its one row, on the spot)."""

    ptr: np.ndarray  # int64 [rows + 1]
    feat: np.ndarray  # int32
    x: np.ndarray  # float32
    width: int
    shared: np.ndarray  # bool [features]


def csr(index: np.ndarray, weight: np.ndarray, n_features: int) -> Rows:
    """Padded feature rows -> `Rows` without the zero-weight entries."""
    keep = weight != 0
    ptr = np.zeros(len(index) + 1, np.int64)
    np.cumsum(keep.sum(1), out=ptr[1:])
    width = max(int(np.diff(ptr).max(initial=0)), 1)
    feat = index[keep].astype(np.int32)
    shared = np.bincount(feat, minlength=n_features) > 1
    return Rows(ptr, feat, weight[keep].astype(np.float32), width, shared)


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
    distinct user rows, item rows, item features and shared user features in the order they are
    met."""

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
    g_slot: np.ndarray  # shared user feature -> its slot, -1 if absent (and for the others)
    gf: np.ndarray  # shared slot -> user feature
    UC: np.ndarray  # shared slot -> caught-up v row
    UWC: np.ndarray  # shared slot -> caught-up w
    GF: np.ndarray  # per thread, shared slot -> gradient of v
    GFW: np.ndarray  # per thread, shared slot -> gradient of w
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
    max_gf = max(min(int(users.shared.sum()), max_du * users.width), 1)
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
        g_slot=np.full(n_features, -1, i32),
        gf=np.zeros(max_gf, i32),
        UC=np.zeros((max_gf, k), f32),
        UWC=np.zeros(max_gf, f32),
        GF=np.zeros((threads, max_gf, k), f32),
        GFW=np.zeros((threads, max_gf), f32),
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
        n_features, k = model.v.shape
        user_rows = csr(model.user_index.numpy(), model.user_weight.numpy(), n_features)
        item_rows = csr(model.item_index.numpy(), model.item_weight.numpy(), n_features)
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
            kernels.gather(batch, self.users, self.items, self.ratings, bu, bi, br)
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
        sse, gsum = kernels.step(
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
        kernels.catch_up_all(self.state.params, self._constants(self.opt.t, 0.0, 1.0, 0.0, 1))

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
