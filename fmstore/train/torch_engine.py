"""The training step in plain torch ops: runs on any device; the reference, the GPU path and the
data-parallel path (distributed.py).

How the engine is chosen (`loop.make_engine`): on a GPU and under torch.distributed always this
one; on CPU the numba engine (numba_engine.py) when it can train the model (no `rated` field),
else this one. Both engines have the same shape: `Engine(model,
optimizer, reg_scale, batch_size, users, items, ratings)`, then `epoch(order, catch_up_every) ->
sum of squared errors`, `step(users, items, ratings)` for one minibatch and `catch_up_all()`; they
learn the same model.

No host synchronisation inside a step: every buffer has a size fixed by the model (all user rows,
all item rows, all features), not by what the batch happens to touch, so there is no
torch.unique, no .item() and no data-dependent shape; a GPU runs an epoch's steps back to back
and the host waits once, for the epoch's error. The price is a dense Adam update of every feature
row per step, which is what LazyAdam emulates anyway (rows the batch did not touch take Adam's
zero-gradient step); with the large batches the defaults pick for large data most rows are
touched anyway.
"""

from __future__ import annotations

from typing import Callable

import torch

from fmstore.model import FactorizationMachine, apply_link, join_sides, link_slope, score
from fmstore.train.lazy_adam import LazyAdam

# Sums a flat float tensor over the processes of a data-parallel run, in place (distributed.py).
AllReduce = Callable[[torch.Tensor], None]


class TorchEngine:
    """One training step on a minibatch, with closed-form FM gradients and dense Adam.

    For a side (user or item) row d with features j, weights x_j: p_d = sum x_j v_j and
    b_d = sum x_j w_j + 1/2 (|p_d|^2 - sum x_j^2 |v_j|^2). With g = dLoss/dy per rating, G_d the
    sum of g * (other side's vector) over the batch's ratings of row d, Gb_d the sum of g, n_d
    their count and a = 2 reg_j / B (reg_j: feature j's coefficient, see loop.feature_reg):

        dL/dv_j = sum_d [ x_j (G_d + Gb_d p_d) + x_j^2 (a n_d - Gb_d) v_j ]
        dL/dw_j = sum_d [ x_j Gb_d + a n_d x_j^2 w_j ]

    The rows of a side are either all its rows (a row the batch did not touch has G_d = Gb_d =
    n_d = 0 and contributes nothing) or one row per rating (the sums over d are sums over
    ratings, so they add up the same), whichever is fewer (`_side_rows`); each feature once.

    Data-parallel (`shard=(rank, world_size)`, `all_reduce`): every process walks the same
    permutation in the same global batches of `batch_size` ratings and takes its contiguous part
    of each; the gradients are sums over ratings divided by the global batch size, so the sum of
    the processes' gradients (one all-reduce of one flat buffer per step) is the single-process
    gradient, and every process applies the same Adam update to the same state.
    """

    def __init__(
        self,
        model: FactorizationMachine,
        optimizer: LazyAdam,
        reg_scale: torch.Tensor,
        batch_size: int,
        users,
        items,
        ratings,
        *,
        shard: tuple[int, int] = (0, 1),
        all_reduce: AllReduce | None = None,
    ):
        self.model, self.opt, self.reg_scale = model, optimizer, reg_scale
        self.batch_size = batch_size
        self.users, self.items, self.ratings = users, items, ratings
        self.rank, self.world_size = shard
        self.all_reduce = all_reduce
        v = model.v.data
        n_feat, k = v.shape
        # One flat buffer: grad v, grad w, grad w0, sum of squared errors (one all-reduce).
        self.buffer = torch.zeros(n_feat * k + n_feat + 2, dtype=v.dtype, device=v.device)
        self.grad_v = self.buffer[: n_feat * k].view(n_feat, k)
        self.grad_w = self.buffer[n_feat * k : n_feat * k + n_feat]
        self.grad_w0 = self.buffer[-2:-1].view(())
        self.sse = self.buffer[-1:].view(())

    def epoch(self, order: torch.Tensor, catch_up_every: int) -> float:
        """One pass over the ratings in `order` (this process's share of each batch of it);
        returns the sum of squared errors over all processes. `catch_up_every` is not needed:
        every step updates every row."""
        self.opt.catch_up_all()  # (a no-op after this engine's steps; needed after another's)
        total = torch.zeros((), dtype=torch.float64, device=order.device)
        for s in range(0, len(order), self.batch_size):
            batch = order[s : s + self.batch_size]
            n = len(batch)
            mine = batch.tensor_split(self.world_size)[self.rank]
            total += self.step(self.users[mine], self.items[mine], self.ratings[mine], n)
        return float(total)  # the one synchronisation of the epoch

    def catch_up_all(self) -> None:
        """Bring every row up to the end of the current step (see LazyAdam.catch_up_all)."""
        self.opt.catch_up_all()

    @torch.no_grad()
    def step(self, u, i, r, n: int | None = None) -> torch.Tensor:
        """One minibatch of (user row, item row, rating); `n`: the global batch size (default
        len(r)). Returns the batch's sum of squared errors over all processes, as a tensor on the
        device (so that an epoch synchronises once)."""
        model, opt = self.model, self.opt
        n = len(r) if n is None else n
        _, step_size, bc2_sqrt = opt.begin_step()
        self.buffer.zero_()
        V, W = model.v.data, model.w.data
        fu, xu, at_u, user_rows = _side_rows(model.user_index, model.user_weight, u.long())
        fi, xi, at_i, _ = _side_rows(model.item_index, model.item_weight, i.long())
        p, b_u = model.side(fu, xu)
        if model.has_rated:  # p_u = v_user + z_u; the pairwise terms of the whole side in b_u
            z, b_z = (t.index_select(0, user_rows) for t in model.rated_terms())
            p, b_u = join_sides((p, b_u), (z, b_z))
        q, b_i = model.side(fi, xi)
        p_n, q_n = p.index_select(0, at_u), q.index_select(0, at_i)
        y = score(model.w0, b_u.index_select(0, at_u), b_i.index_select(0, at_i), p_n, q_n)
        pred = apply_link(y, model.link)
        dpred = link_slope(pred, model.link)
        err = pred - r
        g = 2.0 * err * dpred / n

        scale = 2.0 / n
        # (features, weights, side vectors, each rating's row, the other side, the user side?)
        sides = ((fu, xu, p, at_u, q_n, True), (fi, xi, q, at_i, p_n, False))
        for f, x, vec, rows, other, is_user_side in sides:
            size = len(f)
            G = torch.zeros(size, V.shape[1], dtype=V.dtype, device=V.device)
            G.index_add_(0, rows, other * g[:, None])
            Gb = torch.zeros(size, dtype=V.dtype, device=V.device).index_add_(0, rows, g)
            cnt = torch.zeros(size, dtype=V.dtype, device=V.device)
            cnt.index_add_(0, rows, torch.ones_like(g))
            H = G + Gb[:, None] * vec  # x_j (G_d + Gb_d p_d): the pairwise part is Gb_d p_d
            x2 = x * x
            a = scale * self.reg_scale[f]  # [rows, width]
            coef = x2 * (a * cnt[:, None] - Gb[:, None])
            slot_v = x[..., None] * H[:, None, :] + coef[..., None] * V[f]
            slot_w = x * Gb[:, None] + a * cnt[:, None] * x2 * W[f]
            self.grad_v.index_add_(0, f.reshape(-1), slot_v.reshape(-1, V.shape[1]))
            self.grad_w.index_add_(0, f.reshape(-1), slot_w.reshape(-1))
            if model.has_rated and is_user_side:
                self._rated_gradients(user_rows, H, Gb, cnt, scale)
        self.grad_w0.copy_(g.sum())
        self.sse.copy_(err.square().sum())
        if self.all_reduce is not None:
            self.all_reduce(self.buffer)
        opt.dense_update(self.grad_v, self.grad_w, self.grad_w0, step_size, bc2_sqrt)
        opt.end_step()
        return self.sse.double()

    def _rated_gradients(self, user_rows, H, Gb, cnt, scale: float) -> None:
        """The `rated` features' gradients, by the formula of the class docstring with the sums
        over user rows as sparse products: x_j (G_d + Gb_d p_d) summed is A^T H, and the x_j^2
        terms (A*A)^T of the rows' counts and Gb."""
        model, V, W = self.model, self.model.v.data, self.model.w.data
        _, _, a_t, a2_t = model.rated_matrices()
        first, size = model.rated_span
        n_rows = len(model.user_index)

        def per_user_row(values):  # the side rows' sums, onto every user row
            out = torch.zeros((n_rows,) + values.shape[1:], dtype=V.dtype, device=V.device)
            return out.index_add_(0, user_rows, values)

        H, Gb, cnt = per_user_row(H), per_user_row(Gb), per_user_row(cnt)
        reg = scale * self.reg_scale[first : first + size] * (a2_t @ cnt[:, None]).squeeze(1)
        gb2 = (a2_t @ Gb[:, None]).squeeze(1)
        y, w = V[first : first + size], W[first : first + size]
        self.grad_v[first : first + size] += a_t @ H + (reg - gb2)[:, None] * y
        self.grad_w[first : first + size] += (a_t @ Gb[:, None]).squeeze(1) + reg * w


def _side_rows(index: torch.Tensor, weight: torch.Tensor, of_ratings: torch.Tensor):
    """The rows a step computes for one side, as (features, weights, position of each rating's
    row among them, which side row each is): every row of the side when the batch has more
    ratings than the side has rows, else one row per rating (a row rated twice is then computed
    twice, and its gradients add up the same). Either way the sizes depend only on the batch size and the model, never
    on the values: nothing to synchronise."""
    if len(of_ratings) >= len(index):
        return index, weight, of_ratings, torch.arange(len(index), device=of_ratings.device)
    positions = torch.arange(len(of_ratings), device=of_ratings.device)
    rows = index.index_select(0, of_ratings), weight.index_select(0, of_ratings)
    return *rows, positions, of_ratings
