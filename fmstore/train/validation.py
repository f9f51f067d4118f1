"""Validation: RMSE and MAE of a model's clamped predictions, from each user's and movie's side
computed once (model.sides): on CPU one fused numba pass (numba_kernels.error_sums), on any
other device torch ops in chunks (model.score and model.predict) with one synchronisation."""

from __future__ import annotations

import math

import torch

from fmstore.model import FactorizationMachine, predict, score


@torch.no_grad()
def evaluate_rmse_mae(
    model: FactorizationMachine, users, items, ratings, chunk: int = 1 << 16
) -> tuple[float, float]:
    """RMSE and MAE of `model.predict` on (user row, item row, rating) tensors. Each user's and
    movie's (vector, bias) is computed once, so a rating costs one dot product."""
    if len(ratings) == 0:
        return float("nan"), float("nan")
    sides = (*model.sides("user"), *model.sides("item"))
    rows = (users, items, ratings)
    if sides[0].device.type == "cpu":
        sq, ab = _error_sums_numba(model, rows, sides)
    else:
        sq, ab = _error_sums_torch(model, rows, sides, chunk)
    return math.sqrt(sq / len(ratings)), ab / len(ratings)


def _error_sums_numba(model: FactorizationMachine, rows, sides) -> tuple[float, float]:
    """(sum of squared errors, sum of absolute errors) on CPU: one fused pass over the ratings."""
    from fmstore.train import numba_kernels  # numba is slow to import: only when evaluating

    arrays = [t.numpy() for t in (*rows, *sides)]
    w0, sigmoid = float(model.w0.detach()), model.link == "sigmoid"
    return numba_kernels.error_sums(*arrays[:3], arrays[3:], w0, sigmoid, model.rating_range)


def _error_sums_torch(model: FactorizationMachine, rows, sides, chunk: int) -> tuple[float, float]:
    """The same sums on any device, `chunk` ratings at a time, synchronising once."""
    users, items, ratings = rows
    p, b_u, q, b_i = sides
    sums = torch.zeros(2, dtype=torch.float64, device=p.device)
    for s in range(0, len(ratings), chunk):
        u, i = users[s : s + chunk].long(), items[s : s + chunk].long()
        y = score(model.w0, b_u[u], b_i[i], p[u], q[i])
        err = (predict(y, model.link, model.rating_range) - ratings[s : s + chunk]).double()
        sums[0] += err.square().sum()
        sums[1] += err.abs().sum()
    sq, ab = sums.tolist()
    return sq, ab
