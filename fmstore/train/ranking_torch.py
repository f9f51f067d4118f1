"""The ranking model's row solver in torch float32, for a CUDA device: the same CG half step as
`ranking_kernels.cg_rows` (tests/test_ranking_kernels.py holds the two to the same iterates on
CPU). `fit_ranking(..., torch_device="cuda")` runs its row half steps here (`TorchRows`: the
ratings' CSR copies stay on the device, the factor matrices go there and back each half step);
the genre/year step stays on the CPU's numba kernels.

A GPU has no per-row cache to keep a row in, so the rows of a block run their CG steps in
lockstep: `G p` for the whole block is one matrix product (k^2 per row is cheap there), and the
data part gathers the block's rated vectors once ([entries, d], bounded by max_entries) and
reuses them at every step.
"""

from __future__ import annotations

import torch

# Rated entries per block: their gathered vectors are [entries, d] float32 (1 GB at d = 257).
MAX_ENTRIES = 1 << 20


def cg_rows(
    csr,
    V,
    G,
    lam,
    X,
    offset,
    n_free: int,
    steps: int,
    max_entries: int = MAX_ENTRIES,
    residuals=None,
):
    """`steps` CG steps for every row of X (float32 tensor, updated in place) on

        min_x  sum_{j in row r} w_rj (<x + o_r, v_j> - 1)^2 + (x + o_r)^T G (x + o_r) + lam_r |x|^2

    over its first n_free coordinates (the others stay fixed); o_r = offset[r] (None: 0).
    csr = (indptr int64, indices, weights) tensors on X's device, as in ranking_kernels.cg_rows;
    `residuals` (float32, X's shape): each row's final residual b - A x (0 past n_free)."""
    indptr = csr[0]
    n_rows = X.shape[0]
    ends = indptr.cpu()  # one copy to plan the blocks; the work stays on the device
    first = 0
    while first < n_rows:
        # the longest run of rows whose entries fit max_entries (at least one row)
        limit = int(ends[first]) + max_entries
        last = int(torch.searchsorted(ends, limit, right=True)) - 1
        last = min(max(last, first + 1), n_rows)
        _cg_block(csr, V, G, lam, X, offset, n_free, steps, first, last, residuals)
        first = last


def _cg_block(csr, V, G, lam, X, offset, n_free, steps, first, last, residuals):
    indptr, indices, weights = csr
    start, end = int(indptr[first]), int(indptr[last])
    lengths = indptr[first + 1 : last + 1] - indptr[first:last]
    owner = torch.repeat_interleave(torch.arange(last - first, device=X.device), lengths)
    rated = V[indices[start:end].long()]  # [entries, d]: gathered once for every step
    w = weights[start:end]
    lam_b = lam[first:last, None]
    x = X[first:last]
    z = x + offset[first:last] if offset is not None else x

    def data_sum(coef):  # sum_j coef_j v_j for each row of the block
        out = torch.zeros_like(x)
        return out.index_add_(0, owner, rated * coef[:, None])

    def dots(y):  # <v_j, y_row(j)> for each entry
        return (rated * y[owner]).sum(1)

    r = data_sum(w * (1.0 - dots(z))) - z @ G - lam_b * x
    r[:, n_free:] = 0.0
    p = r.clone()
    rs = (r * r).sum(1)
    tiny = torch.tensor(1e-30, device=X.device)
    for _ in range(steps):
        ap = p @ G + lam_b * p + data_sum(w * dots(p))
        ap[:, n_free:] = 0.0
        pap = (p * ap).sum(1)
        alpha = torch.where(pap > tiny, rs / pap.clamp_min(tiny), torch.zeros_like(rs))
        x += alpha[:, None] * p
        r -= alpha[:, None] * ap
        rs_new = (r * r).sum(1)
        beta = torch.where(rs > tiny, rs_new / rs.clamp_min(tiny), torch.zeros_like(rs))
        p = r + beta[:, None] * p
        rs = rs_new
    if residuals is not None:
        residuals[first:last] = r


class TorchRows:
    """`ranking_kernels.cg_rows`'s signature on numpy arrays, run by `cg_rows` on `device`: each
    CSR (by identity) is copied there once, the factor matrices at every half step (hundreds of
    MB at ml-latest size: milliseconds against a half step's seconds)."""

    def __init__(self, device):
        self.device = torch.device(device)
        self._csr: dict[int, tuple] = {}

    def _tensor(self, a):
        return None if a is None else torch.from_numpy(a).to(self.device)

    def __call__(self, csr, V, G, lam, X, offset, n_free: int, steps: int, residuals=None) -> None:
        key = id(csr[0])
        if key not in self._csr:
            self._csr[key] = tuple(self._tensor(a) for a in csr)
        X_t = self._tensor(X)
        residuals_t = None if residuals is None else torch.empty_like(X_t)
        cg_rows(
            self._csr[key],
            self._tensor(V),
            self._tensor(G),
            self._tensor(lam),
            X_t,
            self._tensor(offset),
            n_free,
            steps,
            residuals=residuals_t,
        )
        X[:] = X_t.cpu().numpy()
        if residuals is not None:
            residuals[:] = residuals_t.cpu().numpy()
