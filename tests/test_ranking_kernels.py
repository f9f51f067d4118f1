"""The ranking model's row solver (fmstore/train/ranking_kernels.cg_rows) against a dense solve of
each row's normal equations: with an offset, fixed coordinates, rows short enough for the cache
buffer and a row longer than it; and its grouped path for long rows (ranking_blocks) against its
per-row one."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fmstore.train import ranking_blocks
from fmstore.train import ranking_kernels as kernels


def _problem(seed, n_rows=12, n_cols=700, d=9):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 30, n_rows)
    lengths[0] = 562  # one long row
    return _rows_of(rng, lengths, n_cols, d)


def _rows_of(rng, lengths, n_cols, d):
    """(csr, V, G, lam, X, offset): rows of these lengths over random columns of V."""
    n_rows = len(lengths)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    indices = np.concatenate([rng.choice(n_cols, n, replace=False) for n in lengths])
    weights = rng.uniform(1.0, 3.0, indptr[-1]).astype(np.float32)
    V = (rng.normal(size=(n_cols, d)) / np.sqrt(d)).astype(np.float32)
    G = kernels.gramian(V, 0.5)
    lam = rng.uniform(0.1, 1.0, n_rows).astype(np.float32)
    X = rng.normal(size=(n_rows, d)).astype(np.float32)
    offset = (0.3 * rng.normal(size=(n_rows, d))).astype(np.float32)
    return (indptr, indices.astype(np.int32), weights), V, G, lam, X, offset


def _exact(csr, V, G, lam, X, offset, n_free):
    """Row by row, the minimiser of sum_j w_j (<x + o, v_j> - 1)^2 + (x + o)^T G (x + o)
    + lam |x|^2 over x[:n_free], x[n_free:] as given."""
    indptr, indices, weights = csr
    V, G, out = V.astype(np.float64), G.astype(np.float64), X.astype(np.float64)
    free = slice(0, n_free)
    for r in range(len(X)):
        cols, w = indices[indptr[r] : indptr[r + 1]], weights[indptr[r] : indptr[r + 1]]
        Vr = V[cols]
        A = (Vr * w[:, None]).T @ Vr + G  # Hessian (halved) in z = x + o
        z_fixed = out[r] + offset[r]
        z_fixed[free] = 0.0  # the fixed part of z: the free part is what we solve for
        b = (w @ Vr) - A @ z_fixed - A[:, free] @ offset[r, free]
        H = A[free, free] + lam[r] * np.eye(n_free)
        out[r, free] = np.linalg.solve(H, b[free])
    return out


@pytest.mark.parametrize("n_free", [9, 8])
@pytest.mark.parametrize("with_offset", [False, True])
def test_enough_cg_steps_reach_the_dense_solve(n_free, with_offset):
    csr, V, G, lam, X, offset = _problem(seed=n_free + 2 * with_offset)
    offset = offset if with_offset else None
    expected = _exact(csr, V, G, lam, X, offset if with_offset else np.zeros_like(X), n_free)
    V_before = V.copy()
    kernels.cg_rows(csr, V, G, lam, X, offset, n_free, steps=30)
    np.testing.assert_allclose(X, expected, rtol=1e-4, atol=1e-5)
    # the columns' matrix is turned into G's eigenbasis and back: unchanged to rounding
    np.testing.assert_allclose(V, V_before, atol=1e-6)


@pytest.mark.parametrize("n_free", [9, 8])
@pytest.mark.parametrize("with_offset", [False, True])
def test_the_torch_twin_takes_the_same_cg_steps(n_free, with_offset):
    """ranking_torch.cg_rows (the GPU path, run here on CPU) against the numba kernels: three
    steps, far from converged, so the iterates themselves are compared; blocks of at most 100
    entries (the long row alone in one)."""
    import torch

    from fmstore.train import ranking_torch

    csr, V, G, lam, X, offset = _problem(seed=7 + n_free)
    offset = offset if with_offset else None
    expected, expected_residuals = X.copy(), np.empty_like(X)
    kernels.cg_rows(csr, V.copy(), G, lam, expected, offset, n_free, 3, expected_residuals)
    got, residuals = torch.from_numpy(X.copy()), torch.empty(X.shape)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in csr]
    ranking_torch.cg_rows(
        tensors,
        torch.from_numpy(V),
        torch.from_numpy(G),
        torch.from_numpy(lam),
        got,
        None if offset is None else torch.from_numpy(offset),
        n_free,
        steps=3,
        max_entries=100,
        residuals=residuals,
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(residuals.numpy(), expected_residuals, rtol=1e-3, atol=1e-5)


def _residual(csr, V, G, lam, X, offset, n_free):
    """b - A x of each row on its free coordinates (0 past them), in float64."""
    indptr, indices, weights = csr
    V, G = V.astype(np.float64), G.astype(np.float64)
    out = np.zeros(X.shape)
    for r in range(len(X)):
        cols, w = indices[indptr[r] : indptr[r + 1]], weights[indptr[r] : indptr[r + 1]]
        z = X[r].astype(np.float64) + offset[r]
        full = (w * (1.0 - V[cols] @ z)) @ V[cols] - G @ z - lam[r] * X[r]
        out[r, :n_free] = full[:n_free]
    return out


@pytest.mark.parametrize("n_free", [9, 8])
@pytest.mark.parametrize("given_basis", [False, True])
def test_residuals_are_each_rows_b_minus_a_x(n_free, given_basis):
    """cg_rows(residuals=) gives b - A x at the rows' new x (what the feature step's gradient is
    summed from), in the callers' coordinates, or in the given basis's when the rows are there."""
    csr, V, G, lam, X, offset = _problem(seed=20 + n_free)
    basis = kernels.eigenbasis(G, n_free) if given_basis else None
    if given_basis:  # the rows, columns and offsets in G's eigenbasis, as fit_ranking keeps them
        for A in (V, X, offset):
            kernels.rotate(A, basis[1].astype(np.float32))
    residuals = np.empty_like(X)
    kernels.cg_rows(csr, V, G, lam, X, offset, n_free, 3, residuals, basis=basis)
    if given_basis:
        for A in (V, X, offset, residuals):
            kernels.rotate(A, basis[1].T.astype(np.float32))
    expected = _residual(csr, V, G, lam, X, offset, n_free)
    # float32 CG updates r by recursion (r -= alpha A p): it drifts from b - A x by rounding of
    # the terms it sums, a few 1e-6 of b's size
    indptr, indices, weights = csr
    b = max(np.abs(weights[indptr[r] : indptr[r + 1]] @ V[indices[indptr[r] : indptr[r + 1]]]).max()
            for r in range(len(X)))  # fmt: skip
    np.testing.assert_allclose(residuals, expected, atol=2e-5 * b)


def _long_problem(seed, d=9, n_rows=40, n_cols=300):
    """Rows of all lengths (a few past the grouped path's threshold used below, some sharing
    most of their columns, as popular movies share their raters)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 20, n_rows)
    lengths[:14] = rng.integers(40, n_cols, 14)
    return _rows_of(rng, lengths, n_cols, d)


def _small_plan(csr, n_cols):
    """Groups of at most 5 rows and 900 entries: several at this size."""
    return ranking_blocks.plan_rows(csr, n_cols, long_row=30, group_rows=5, group_entries=900)


def test_the_plan_holds_each_long_rows_entry_once():
    csr, V, *_ = _long_problem(seed=1)
    indptr, indices, weights = csr
    plan = _small_plan(csr, len(V))
    lengths = np.diff(indptr)
    assert sorted(plan.rows) == list(np.flatnonzero(lengths > 30))
    assert sorted(plan.short) == list(np.flatnonzero(lengths <= 30))
    assert len(plan.group_rows) > 3  # several groups, cut by rows and by entries
    expected = {(r, indices[k]): weights[k] for r in plan.rows for k in range(*indptr[r : r + 2])}
    got = {}
    for g in range(len(plan.group_rows) - 1):
        rows = plan.rows[plan.group_rows[g] : plan.group_rows[g + 1]]
        first, end = plan.group_entries[g], plan.group_entries[g + 1]
        ends = plan.col_end[plan.group_cols[g] : plan.group_cols[g + 1]]
        starts = np.concatenate([[0], ends[:-1]])
        cols = plan.cols[plan.group_cols[g] : plan.group_cols[g + 1]]
        assert (np.diff(cols) > 0).all()  # each column once, in increasing order
        for j, a, b in zip(cols, starts, ends):
            for t in range(first + a, first + b):
                got[rows[plan.entry_row[t]], j] = plan.entry_weight[t]
        assert ends[-1] == end - first
    assert got == expected


@pytest.mark.parametrize("n_free", [9, 7])
@pytest.mark.parametrize("with_offset", [False, True])
def test_grouped_long_rows_take_the_per_row_steps(n_free, with_offset):
    """The grouped path (ranking_blocks) against the per-row one: three steps, far from
    converged, so the iterates themselves and the residuals are compared, to float32 summation
    order."""
    csr, V, G, lam, X, offset = _long_problem(seed=n_free + 2 * with_offset)
    offset = offset if with_offset else None
    plan = _small_plan(csr, len(V))
    expected, got = X.copy(), X.copy()
    expected_residuals, got_residuals = np.empty_like(X), np.full_like(X, np.nan)
    kernels.cg_rows(csr, V.copy(), G, lam, expected, offset, n_free, 3, expected_residuals)
    kernels.cg_rows(csr, V.copy(), G, lam, got, offset, n_free, 3, got_residuals, plan=plan)
    assert np.abs(got[plan.rows] - X[plan.rows]).max() > 0.1  # the long rows moved
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_residuals, expected_residuals, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("n_free", [9, 7])
def test_grouped_rows_reach_the_dense_solve_and_stop_there(n_free):
    """Enough steps that rows converge at different steps: a converged row stops while its
    group goes on, and every row ends at its dense solve."""
    csr, V, G, lam, X, offset = _long_problem(seed=20 + n_free)
    expected = _exact(csr, V, G, lam, X, offset, n_free)
    kernels.cg_rows(csr, V, G, lam, X, offset, n_free, 40, plan=_small_plan(csr, len(V)))
    np.testing.assert_allclose(X, expected, rtol=1e-4, atol=1e-5)


def test_grouped_rows_do_not_depend_on_the_thread_count():
    """The grouped kernel itself (cg_rows' basis turn is BLAS's, outside this test): a group is
    one thread's work, so one thread or many give the same bits."""
    csr, V, G, lam, X, offset = _long_problem(seed=5)
    plan = _small_plan(csr, len(V))
    n_free = 8
    eig = np.diag(G)[:n_free].copy()
    C = G[:n_free, n_free:].copy()
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS, 1):
        numba.set_num_threads(threads)
        try:
            out, residuals = X.copy(), np.zeros_like(X)
            with numba.parallel_chunksize(1):
                ranking_blocks.cg_groups(plan, V, eig, C, lam, out, offset, True, n_free, 3,
                                         residuals)  # fmt: skip
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        assert np.abs(out[plan.rows] - X[plan.rows]).max() > 0.1
        results.append((out, residuals))
    for out, residuals in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(residuals, results[0][1])
