"""Training loop: deterministic split, minibatch Adam on device-resident tensors, early stopping.

All ratings live on the training device as int32/float32 tensors; an epoch is one random
permutation and a loop over slices of it, so there is no DataLoader and no per-sample Python work.

Loss: mean squared error of the linked score, plus an L2 penalty on the (x-weighted) parameters of
the features each rating touches, with feature j's coefficient weight_decay + prior_reg / n_j
(`feature_reg`): weight_decay per occurrence, as in SGD matrix factorisation, and prior_reg per
epoch whatever the feature's frequency, a Gaussian prior that keeps a movie with one enthusiastic
rating from looking like the best movie there is.

The step does not use autograd. FM gradients have closed forms (see `_TorchEngine.step`), and the
optimizer is Adam applied row by row: only the rows of the features a batch touches are read and
written. Plain lazy Adam would change what is learned (dense Adam keeps moving a row on the
momentum it has while the row gets no gradient, which is most steps for most rows), so each row
is first caught up: the zero-gradient steps it missed are applied in closed form when it is next
touched (`_LazyAdam`). That is dense Adam, computed sparsely, up to Adam's epsilon inside the
missed steps: what the default model learns does not change.

Two engines run that step: a numba kernel that fuses it per user (CPU; `fmstore.kernels`) and
plain torch index ops (any device; the reference, and the GPU path).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from fmstore.config import TrainConfig
from fmstore.datasets import Dataset, Ratings
from fmstore.errors import ConfigError
from fmstore.features import EncodedRatings, Vocabulary, encode, item_rows, user_rows
from fmstore.model import SIGMOID_SCALE, FactorizationMachine

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
# Every this many steps all rows are caught up (a dense pass), which bounds the lag a row can
# have and so the length of the catch-up table.
CATCH_UP_EVERY = 256
ENGINES = ("auto", "numba", "torch")


@dataclass
class EpochStats:
    epoch: int
    train_rmse: float
    valid_rmse: float
    seconds: float  # the whole epoch: shuffle, training pass, catch-up, validation
    lr: float


@dataclass
class TrainResult:
    model: FactorizationMachine
    vocab: Vocabulary
    history: list[EpochStats]
    best_epoch: int
    metrics: dict  # valid_rmse, valid_mae, (test_rmse, test_mae), n_train, n_valid, seconds
    train_ratings: Ratings  # the ratings the model saw (needed to exclude seen movies later)
    valid_ratings: Ratings
    device: str


ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def split_indices(n: int, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random split: same (n, fraction, seed) -> same rows, on any machine."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"--valid-fraction {valid_fraction} must be in [0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = int(round(n * valid_fraction))
    valid = np.zeros(n, bool)  # (a mask instead of sorting: the same sorted rows, faster)
    valid[order[:n_valid]] = True
    return np.flatnonzero(~valid), np.flatnonzero(valid)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def _tensors(enc: EncodedRatings, device: torch.device):
    return (
        torch.as_tensor(enc.user, device=device),
        torch.as_tensor(enc.item, device=device),
        torch.as_tensor(enc.rating, device=device),
    )


@torch.no_grad()
def evaluate_rmse_mae(model: FactorizationMachine, users, items, ratings, chunk: int = 1 << 16) -> tuple[float, float]:
    """RMSE and MAE of `model.predict` on (user row, item row, rating) tensors. Each user's and
    movie's (vector, bias) is computed once, so a rating costs one dot product."""
    if len(ratings) == 0:
        return float("nan"), float("nan")
    p, b_u = model.sides("user")
    q, b_i = model.sides("item")
    lo, hi = model.rating_range
    if p.device.type == "cpu":
        from fmstore import kernels

        if kernels.numba is not None:
            f32 = np.float32
            sq, ab = kernels.errors(users.numpy(), items.numpy(), ratings.numpy(), p.numpy(), b_u.numpy(), q.numpy(),
                                    b_i.numpy(), f32(model.w0.detach()), model.link == "sigmoid", f32(lo), f32(hi),
                                    kernels.numba.get_num_threads())
            return math.sqrt(sq / len(ratings)), ab / len(ratings)
    sq, ab = 0.0, 0.0
    for s in range(0, len(ratings), chunk):
        u, i = users[s : s + chunk].long(), items[s : s + chunk].long()
        y = model.w0 + b_u[u] + b_i[i] + (p[u] * q[i]).sum(-1)
        err = (model.apply_link(y).clamp(lo, hi) - ratings[s : s + chunk]).double()
        sq += float(err.square().sum())
        ab += float(err.abs().sum())
    return math.sqrt(sq / len(ratings)), ab / len(ratings)


def train(
    dataset: Dataset,
    config: TrainConfig,
    *,
    test_ratings: Ratings | None = None,
    progress: ProgressFn | None = None,
    engine: str = "auto",
) -> TrainResult:
    """Train on `dataset`. `engine`: auto (numba on CPU when installed, else torch), numba or torch."""
    check_config(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    started = time.perf_counter()
    _release_parser_memory()

    train_idx, valid_idx = split_indices(len(dataset.ratings), config.valid_fraction, config.seed)
    train_ratings, valid_ratings = dataset.ratings.take(train_idx), dataset.ratings.take(valid_idx)
    del train_idx, valid_idx
    vocab = Vocabulary.build(train_ratings, dataset.movies, config.fields)
    model = FactorizationMachine(
        vocab.n_features,
        config.factors,
        user_rows(vocab),
        item_rows(vocab, dataset.movies),
        link=config.link,
        rating_range=(config.rating_min, config.rating_max),
        init_std=config.init_std,
    ).to(device)
    model.requires_grad_(False)  # gradients are computed in closed form, not by autograd
    with torch.no_grad():  # start from the mean rating so early epochs learn structure, not the offset
        mean = float(train_ratings.rating.mean())
        model.w0.fill_(_inverse_link(mean, config.link))

    tr_u, tr_i, tr_r = _tensors(encode(train_ratings, vocab, dataset.movies), device)
    va_u, va_i, va_r = _tensors(encode(valid_ratings, vocab, dataset.movies), device)

    optimizer = _LazyAdam(model, config.lr)
    runner = _make_engine(engine, model, optimizer, config, device, tr_u, tr_i, tr_r)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    history: list[EpochStats] = []
    pass_seconds: list[float] = []  # per epoch: shuffle + training pass, without validation
    best_rmse, best_epoch, best_state, stale = float("inf"), 0, None, 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        optimizer.lr = lr = _lr_at(config, epoch)
        # (int32 draws the same permutation as int64, in less memory)
        order = torch.randperm(len(tr_r), generator=generator, device=device,
                               dtype=torch.int32 if len(tr_r) < 2**31 else torch.int64)
        train_rmse = math.sqrt(runner.epoch(order, CATCH_UP_EVERY) / max(len(tr_r), 1))
        del order
        runner.catch_up_all()  # every row as dense Adam would have it now
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - t0
        valid_rmse, _ = evaluate_rmse_mae(model, va_u, va_i, va_r)
        pass_seconds.append(train_seconds)
        history.append(EpochStats(epoch, train_rmse, valid_rmse, time.perf_counter() - t0, lr))
        if progress:
            progress(f"epoch {epoch}: train {train_rmse:.4f} valid {valid_rmse:.4f}", epoch, config.epochs)
        if len(va_r) == 0 or valid_rmse < best_rmse:
            best_rmse, best_epoch, stale = valid_rmse, epoch, 0
            best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                break
    del optimizer, runner

    model.load_state_dict(best_state)
    del best_state
    valid_rmse, valid_mae = evaluate_rmse_mae(model, va_u, va_i, va_r)
    metrics = {
        "valid_rmse": valid_rmse,
        "valid_mae": valid_mae,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "n_train": len(train_ratings),
        "n_valid": len(valid_ratings),
        "epoch_train_seconds": [round(x, 3) for x in pass_seconds],
    }
    if test_ratings is not None:
        te_u, te_i, te_r = _tensors(encode(test_ratings, vocab, dataset.movies), device)
        metrics["test_rmse"], metrics["test_mae"] = evaluate_rmse_mae(model, te_u, te_i, te_r)
        metrics["n_test"] = len(test_ratings)
    metrics["train_seconds"] = time.perf_counter() - started
    return TrainResult(model.cpu(), vocab, history, best_epoch, metrics, train_ratings, valid_ratings, str(device))


def _release_parser_memory() -> None:
    """pyarrow's allocator keeps what the CSV parser freed (about 1.3 GB after reading ml-latest);
    hand it back to the OS before training allocates its own, so the two do not add up."""
    try:
        import pyarrow

        pyarrow.default_memory_pool().release_unused()
    except Exception:  # pragma: no cover - an allocator without it: nothing to release
        pass


def _lr_at(config: TrainConfig, epoch: int) -> float:
    """The lr of `epoch` (1-based): lr x gamma for each milestone already passed (MultiStepLR)."""
    passed = sum(1 for m in config.lr_milestones if m <= epoch - 1)
    return config.lr * config.lr_gamma**passed


# ------------------------------------------------------------------------------------------------
# Row-wise Adam with catch-up
# ------------------------------------------------------------------------------------------------


class _LazyAdam:
    """Adam state for v (rows), w and w0, updated only where a batch has gradients.

    Dense Adam (torch.optim.Adam, no weight decay) moves every parameter at every step: a row
    with zero gradient still takes  -lr_t c_t m / sqrt(s)  with m, s decaying by b1, b2, where
    c_t = sqrt(1 - b2^t) / (1 - b1^t). Here a row remembers the step it was last updated
    (`last`); when it is next touched (or at `catch_up_all`), the missed steps are applied at once:

        v -= drift[t - last] * m / (sqrt(s) + eps),  m *= b1^(t - last),  s *= b2^(t - last)

    drift[d] = sum_{j=1..d} lr c r^j over the missed steps (r = b1 / sqrt(b2)), kept for every
    lag d up to CATCH_UP_EVERY. It ignores eps inside the missed steps (exact when sqrt(s) >> eps).
    """

    def __init__(self, model: FactorizationMachine, lr: float, betas=ADAM_BETAS, eps: float = ADAM_EPS):
        self.model, self.lr, self.eps = model, lr, eps
        self.b1, self.b2 = betas
        v, w = model.v.data, model.w.data
        self.mv, self.sv = torch.zeros_like(v), torch.zeros_like(v)
        self.mw, self.sw = torch.zeros_like(w), torch.zeros_like(w)
        self.m0, self.s0 = torch.zeros_like(model.w0.data), torch.zeros_like(model.w0.data)
        self.last = torch.zeros(v.shape[0], dtype=torch.int32, device=v.device)
        self.t = 0  # steps done
        # drift[d]: catch-up factor for a row last updated d steps ago (as of the end of step t)
        self.drift = np.zeros(CATCH_UP_EVERY + 1, np.float64)
        self._drift_tensor = None
        self._r = self.b1 / math.sqrt(self.b2)
        self._powers = self._r ** np.arange(CATCH_UP_EVERY + 1, dtype=np.float64)

    # -- per step bookkeeping ---------------------------------------------------------------
    def begin_step(self) -> tuple[int, float, float]:
        """Start step t+1; returns (t, step size lr/bc1, sqrt(bc2)) of that step."""
        self.t += 1
        t = self.t
        bc1, bc2 = 1 - self.b1**t, 1 - self.b2**t
        return t, self.lr / bc1, math.sqrt(bc2)

    def end_step(self) -> None:
        """Step t is done: a row not updated in it has missed one more step."""
        t = self.t
        c = math.sqrt(1 - self.b2**t) / (1 - self.b1**t)
        d = self.drift
        d[1:] = d[:-1] + self.lr * c * self._powers[1:]
        d[0] = 0.0
        self._drift_tensor = None

    def drift_tensor(self) -> torch.Tensor:
        if self._drift_tensor is None:
            self._drift_tensor = torch.as_tensor(self.drift, dtype=torch.float32).to(self.last.device)
        return self._drift_tensor

    # -- dense catch-up -----------------------------------------------------------------------
    @torch.no_grad()
    def catch_up_all(self, chunk: int = 1 << 16) -> None:
        """Bring every row up to the end of step t (before evaluating, saving, or every
        CATCH_UP_EVERY steps so that no lag exceeds the drift table)."""
        v, w = self.model.v.data, self.model.w.data
        for s in range(0, v.shape[0], chunk):
            rows = slice(s, s + chunk)
            lag = (self.t - self.last[rows]).long()
            if lag.numel() == 0 or int(lag.max()) == 0:
                continue
            if int(lag.max()) > CATCH_UP_EVERY:
                raise AssertionError("a row lagged more steps than the catch-up table holds")
            self._catch_up(lag, v[rows], self.mv[rows], self.sv[rows], w[rows], self.mw[rows], self.sw[rows])
        self.last.fill_(self.t)

    def _catch_up(self, lag, v, mv, sv, w, mw, sw) -> None:
        """In place on the given (gathered or sliced) rows; lag = steps missed per row."""
        drift = self.drift_tensor()[lag]
        v.sub_(drift[:, None] * mv / (sv.sqrt() + self.eps))
        w.sub_(drift * mw / (sw.sqrt() + self.eps))
        lagf = lag.to(v.dtype)
        d1, d2 = torch.pow(self.b1, lagf), torch.pow(self.b2, lagf)
        mv.mul_(d1[:, None])
        sv.mul_(d2[:, None])
        mw.mul_(d1)
        sw.mul_(d2)

    # -- the rows of one batch (torch engine) ----------------------------------------------------
    def gather(self, feats: torch.Tensor):
        """Current (caught-up) v, w and their Adam state for rows `feats`, as new tensors."""
        v, w = self.model.v.data, self.model.w.data
        rows = [v.index_select(0, feats), self.mv.index_select(0, feats), self.sv.index_select(0, feats),
                w.index_select(0, feats), self.mw.index_select(0, feats), self.sw.index_select(0, feats)]
        lag = (self.t - 1 - self.last.index_select(0, feats)).long()  # steps missed before this one
        V, Mv, Sv, W, Mw, Sw = rows
        self._catch_up(lag, V, Mv, Sv, W, Mw, Sw)
        return rows

    def update(self, feats, rows, grad_v, grad_w, grad_w0, step_size, bc2_sqrt) -> None:
        V, Mv, Sv, W, Mw, Sw = rows
        b1, b2, eps = self.b1, self.b2, self.eps
        for p, m, s, g in ((V, Mv, Sv, grad_v), (W, Mw, Sw, grad_w), (self.model.w0.data, self.m0, self.s0, grad_w0)):
            m.mul_(b1).add_(g, alpha=1 - b1)
            s.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, s.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)
        v, w = self.model.v.data, self.model.w.data
        for full, part in ((v, V), (self.mv, Mv), (self.sv, Sv), (w, W), (self.mw, Mw), (self.sw, Sw)):
            full.index_copy_(0, feats, part)
        self.last.index_fill_(0, feats, self.t)


# ------------------------------------------------------------------------------------------------
# Engines: one training step on the batch order[s:e]; returns the batch's sum of squared errors
# ------------------------------------------------------------------------------------------------


def _make_engine(name: str, model, optimizer, config: TrainConfig, device: torch.device, users, items, ratings):
    reg_scale = feature_reg(model, users, items, config.weight_decay, config.prior_reg)
    if name not in ENGINES:
        raise ConfigError(f"engine {name!r}: use one of {', '.join(ENGINES)}")
    if name in ("auto", "numba") and device.type == "cpu":
        from fmstore import kernels

        reason = kernels.unavailable(model)
        if reason is None:
            return kernels.NumbaEngine(model, optimizer, reg_scale, config.batch_size, users, items, ratings)
        if name == "numba":
            raise ConfigError(f"the numba engine cannot run: {reason}")
    elif name == "numba":
        raise ConfigError("the numba engine runs on CPU only; use --device cpu or engine torch")
    return _TorchEngine(model, optimizer, reg_scale, config.batch_size, users, items, ratings)


def feature_reg(model: FactorizationMachine, users, items, weight_decay: float, prior_reg: float) -> torch.Tensor:
    """Each feature's L2 coefficient per occurrence: weight_decay + prior_reg / n_j.

    n_j is how many training ratings feature j takes part in. Penalising weight_decay per
    occurrence is the SGD-matrix-factorisation habit (a feature seen often is held back often);
    prior_reg / n_j per occurrence adds up to prior_reg |theta_j|^2 per epoch whatever n_j is: a
    Gaussian prior, which holds the id features of rarely rated movies and rarely rating users
    near zero instead of letting one enthusiastic rating make a movie "the best" (their genres and
    year still speak for them)."""
    n_features = model.v.shape[0]
    counts = torch.zeros(n_features, dtype=torch.float64)
    for index, weight, rows in ((model.user_index, model.user_weight, users), (model.item_index, model.item_weight, items)):
        per_row = torch.bincount(rows.long().cpu(), minlength=len(index)).double()  # ratings per row
        present = (weight.cpu() != 0).double() * per_row[:, None]
        counts.index_add_(0, index.cpu().reshape(-1).long(), present.reshape(-1))
    scale = weight_decay + prior_reg / counts.clamp(min=1.0)
    return scale.to(dtype=model.v.dtype, device=model.v.device)


class _TorchEngine:
    """The step in torch index ops, on any device.

    For a side (user or item) row d with features j, weights x_j: p_d = sum x_j v_j and
    b_d = sum x_j w_j + 1/2 (|p_d|^2 - sum x_j^2 |v_j|^2). With g = dLoss/dy per rating, G_d the
    sum of g * (other side's vector) over the batch's ratings of row d, Gb_d the sum of g, n_d
    their count and a = 2 reg_j / B (reg_j: feature j's coefficient, see feature_reg):

        dL/dv_j = sum_d [ x_j (G_d + Gb_d p_d) + x_j^2 (a n_d - Gb_d) v_j ]
        dL/dw_j = sum_d [ x_j Gb_d + a n_d x_j^2 w_j ]

    Each distinct row of the batch is computed once (torch.unique), each feature once.
    """

    def __init__(self, model: FactorizationMachine, optimizer: _LazyAdam, reg_scale: torch.Tensor, batch_size: int,
                 users, items, ratings):
        self.model, self.opt, self.reg_scale, self.batch_size = model, optimizer, reg_scale, batch_size
        self.users, self.items, self.ratings = users, items, ratings

    def epoch(self, order: torch.Tensor, catch_up_every: int) -> float:
        """One pass over the ratings in `order`; returns the sum of squared errors."""
        sse = torch.zeros((), dtype=torch.float64, device=order.device)
        for s in range(0, len(order), self.batch_size):
            batch = order[s : s + self.batch_size]
            sse += self.step(self.users[batch], self.items[batch], self.ratings[batch])
            if self.opt.t % catch_up_every == 0:
                self.catch_up_all()
        return float(sse)

    def catch_up_all(self) -> None:
        self.opt.catch_up_all()

    @torch.no_grad()
    def step(self, u, i, r) -> torch.Tensor:
        """One minibatch of (user row, item row, rating); returns its sum of squared errors."""
        model, opt = self.model, self.opt
        t, step_size, bc2_sqrt = opt.begin_step()
        n = len(r)
        du, inv_u, cnt_u = torch.unique(u, return_inverse=True, return_counts=True)
        di, inv_i, cnt_i = torch.unique(i, return_inverse=True, return_counts=True)
        iu, xu = model.user_index.index_select(0, du.long()), model.user_weight.index_select(0, du.long())
        ii, xi = model.item_index.index_select(0, di.long()), model.item_weight.index_select(0, di.long())
        feats, pos = torch.unique(torch.cat([iu.reshape(-1), ii.reshape(-1)]), return_inverse=True)
        fu, fi = pos[: iu.numel()].view(iu.shape), pos[iu.numel() :].view(ii.shape)

        rows = opt.gather(feats)
        V, W = rows[0], rows[3]
        p, b_u = _side(V, W, fu, xu)
        q, b_i = _side(V, W, fi, xi)
        p_n, q_n = p.index_select(0, inv_u), q.index_select(0, inv_i)
        y = model.w0 + b_u.index_select(0, inv_u) + b_i.index_select(0, inv_i) + (p_n * q_n).sum(-1)
        if model.link == "sigmoid":
            s = torch.sigmoid(y)
            pred, dpred = s * SIGMOID_SCALE, s * (1 - s) * SIGMOID_SCALE
        else:
            pred, dpred = y, 1.0
        err = pred - r
        g = 2.0 * err * dpred / n

        grad_v, grad_w = torch.zeros_like(V), torch.zeros_like(W)
        a_feat = (2.0 / n) * self.reg_scale.index_select(0, feats)
        for f, x, vec, inv, other, cnt, size in (
            (fu, xu, p, inv_u, q_n, cnt_u, len(du)),
            (fi, xi, q, inv_i, p_n, cnt_i, len(di)),
        ):
            G = torch.zeros(size, V.shape[1], dtype=V.dtype, device=V.device).index_add_(0, inv, other * g[:, None])
            Gb = torch.zeros(size, dtype=V.dtype, device=V.device).index_add_(0, inv, g)
            H = G + Gb[:, None] * vec  # x_j (G_d + Gb_d p_d): the pairwise part is Gb_d p_d
            x2 = x * x
            a = a_feat[f]  # [D, W]
            coef = x2 * (a * cnt[:, None] - Gb[:, None])  # [D, W]
            slot_v = x[..., None] * H[:, None, :] + coef[..., None] * V[f]
            slot_w = x * Gb[:, None] + a * cnt[:, None] * x2 * W[f]
            grad_v.index_add_(0, f.reshape(-1), slot_v.reshape(-1, V.shape[1]))
            grad_w.index_add_(0, f.reshape(-1), slot_w.reshape(-1))
        opt.update(feats, rows, grad_v, grad_w, g.sum(), step_size, bc2_sqrt)
        opt.end_step()
        return err.double().square().sum()


def _side(V, W, f, x):
    """(vector, bias) of side rows given their features' positions f [D, width] in V/W."""
    vx = V[f] * x[..., None]
    vector = vx.sum(1)
    bias = (W[f] * x).sum(1)
    if f.shape[1] > 1:
        bias = bias + 0.5 * (vector.square().sum(-1) - vx.square().sum((1, 2)))
    return vector, bias


def _inverse_link(rating: float, link: str) -> float:
    if link == "sigmoid":
        x = min(max(rating / SIGMOID_SCALE, 1e-4), 1 - 1e-4)
        return math.log(x / (1 - x))
    return rating


def check_config(config: TrainConfig) -> None:
    """Refuse a config that cannot work, with a message naming the flag."""
    checks = [
        (config.epochs >= 1, f"--epochs {config.epochs} must be at least 1"),
        (config.factors >= 1, f"--factors {config.factors} must be at least 1"),
        (config.lr > 0, f"--lr {config.lr} must be positive"),
        (config.batch_size >= 1, f"--batch-size {config.batch_size} must be at least 1"),
        (config.weight_decay >= 0, f"--weight-decay {config.weight_decay} must not be negative"),
        (config.prior_reg >= 0, f"--prior-reg {config.prior_reg} must not be negative"),
        (config.link in ("identity", "sigmoid"), f"--link {config.link!r}: use identity or sigmoid"),
        (0.0 <= config.valid_fraction < 1.0, f"--valid-fraction {config.valid_fraction} must be in [0, 1)"),
        (config.device in ("auto", "cpu", "cuda"), f"--device {config.device!r}: use auto, cpu or cuda"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


