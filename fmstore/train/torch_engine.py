"""The training step in plain torch index ops: runs on any device; the reference and the GPU path.

How the engine is chosen (`loop.make_engine`): on a GPU always this one; on CPU the numba engine
(numba_engine.py) when numba is installed and the model's user side is exclusive, else this one.
Both engines have the same shape: `Engine(model, optimizer, reg_scale, batch_size, users, items,
ratings)`, then `epoch(order, catch_up_every) -> sum of squared errors`, `step(users, items,
ratings)` for one minibatch and `catch_up_all()`; they learn the same model.
"""

from __future__ import annotations

import torch

from fmstore.model import FactorizationMachine
from fmstore.serving import SIGMOID_SCALE
from fmstore.train.lazy_adam import LazyAdam


class TorchEngine:
    """One training step on a minibatch, with closed-form FM gradients and `LazyAdam`.

    For a side (user or item) row d with features j, weights x_j: p_d = sum x_j v_j and
    b_d = sum x_j w_j + 1/2 (|p_d|^2 - sum x_j^2 |v_j|^2). With g = dLoss/dy per rating, G_d the
    sum of g * (other side's vector) over the batch's ratings of row d, Gb_d the sum of g, n_d
    their count and a = 2 reg_j / B (reg_j: feature j's coefficient, see loop.feature_reg):

        dL/dv_j = sum_d [ x_j (G_d + Gb_d p_d) + x_j^2 (a n_d - Gb_d) v_j ]
        dL/dw_j = sum_d [ x_j Gb_d + a n_d x_j^2 w_j ]

    Each distinct row of the batch is computed once (torch.unique), each feature once.
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
    ):
        self.model, self.opt, self.reg_scale = model, optimizer, reg_scale
        self.batch_size = batch_size
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
        """Bring every row up to the end of the current step (see LazyAdam.catch_up_all)."""
        self.opt.catch_up_all()

    @torch.no_grad()
    def step(self, u, i, r) -> torch.Tensor:
        """One minibatch of (user row, item row, rating); returns its sum of squared errors (a
        tensor on the device, so that an epoch synchronises once)."""
        model, opt = self.model, self.opt
        t, step_size, bc2_sqrt = opt.begin_step()
        n = len(r)
        du, inv_u, cnt_u = torch.unique(u, return_inverse=True, return_counts=True)
        di, inv_i, cnt_i = torch.unique(i, return_inverse=True, return_counts=True)
        iu = model.user_index.index_select(0, du.long())  # features and weights of the rows
        xu = model.user_weight.index_select(0, du.long())
        ii = model.item_index.index_select(0, di.long())
        xi = model.item_weight.index_select(0, di.long())
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
            G = torch.zeros(size, V.shape[1], dtype=V.dtype, device=V.device)
            G.index_add_(0, inv, other * g[:, None])
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
