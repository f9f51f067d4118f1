"""The inner loops of the ranking model's fit (ranking.py), as float32 numba kernels.

- `cg_rows`: for every row (a user, or a movie) a few conjugate-gradient steps on its own least
  squares system, done while the row is in cache (as implicit's `_als.pyx`, after Takacs et al.
  2011): the residual r = b - A x is built from the Gramian G and the row's rated columns, then
  each step is one Hessian-vector product over the same rated columns. Rows run in parallel
  (`prange`) with a few d-sized scratch vectors per block of rows: no [n_rows, d] temporaries.
- `gramian`: alpha0 * X^T X, summed in float64 over float32 blocks (one BLAS call each).
- `each_block`: row blocks of a matrix product on Python threads, one BLAS thread each.

numba is a required dependency: there is no NumPy twin to keep in step.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, prange

from fmstore.threads import one_blas_thread
from fmstore.train import ranking_blocks

# Rows per scratch block: enough blocks that threads stay busy when row lengths differ a lot or
# when one thread is descheduled on a shared machine: blocks are handed out as threads come free
# (numba.parallel_chunksize(1)) rather than split evenly up front, as implicit's OpenMP loops do.
_BLOCKS_PER_THREAD = 16
# Rows per BLAS block in `gramian`: 16k x 257 floats = 16 MB.
_BLOCK_ROWS = 1 << 14


# The helpers index 2-D arrays by (row, column) rather than taking row views: numba vectorises
# these loops, where a view per row (V[j]) made the same kernel several times slower.


@njit(inline="always", fastmath=True)
def _dot_row(A, i, b, n):
    """<A[i, :n], b[:n]> in float32."""
    s = np.float32(0.0)
    for c in range(n):
        s += A[i, c] * b[c]
    return s


@njit(inline="always", fastmath=True)
def _add_row(out, coef, A, i, n):
    """out[:n] += coef * A[i, :n]."""
    for c in range(n):
        out[c] += coef * A[i, c]


@njit(inline="always", fastmath=True)
def _residual_pass(V, indices, start, n, weights, z, n_free, r):
    """r[:n_free] += sum_t w_t (1 - <z, v_t>) v_t over the row's n rated vectors
    v_t = V[indices[start + t]] (all d coordinates in the dot). Four rows at a time: four
    gathers in flight from all over V, and z and r read once for four."""
    d = V.shape[1]
    t = 0
    while t + 4 <= n:
        j0, j1 = indices[start + t], indices[start + t + 1]
        j2, j3 = indices[start + t + 2], indices[start + t + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for c in range(d):
            zc = z[c]
            s0 += V[j0, c] * zc
            s1 += V[j1, c] * zc
            s2 += V[j2, c] * zc
            s3 += V[j3, c] * zc
        one = np.float32(1.0)
        c0, c1 = weights[start + t] * (one - s0), weights[start + t + 1] * (one - s1)
        c2, c3 = weights[start + t + 2] * (one - s2), weights[start + t + 3] * (one - s3)
        for c in range(n_free):
            r[c] += c0 * V[j0, c] + c1 * V[j1, c] + c2 * V[j2, c] + c3 * V[j3, c]
        t += 4
    while t < n:
        j = indices[start + t]
        _add_row(r, weights[start + t] * (np.float32(1.0) - _dot_row(V, j, z, d)), V, j, n_free)
        t += 1


@njit(inline="always", fastmath=True)
def _hessian_pass(V, indices, start, n, weights, p, n_free, ap):
    """ap[:n_free] += sum_t w_t <p, v_t> v_t over the row's n rated vectors. Four at a time: p
    and ap are read once for four rated vectors (SIMD over the coordinates)."""
    t = 0
    while t + 4 <= n:
        j0, j1 = indices[start + t], indices[start + t + 1]
        j2, j3 = indices[start + t + 2], indices[start + t + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for c in range(n_free):
            pc = p[c]
            s0 += V[j0, c] * pc
            s1 += V[j1, c] * pc
            s2 += V[j2, c] * pc
            s3 += V[j3, c] * pc
        c0, c1 = weights[start + t] * s0, weights[start + t + 1] * s1
        c2, c3 = weights[start + t + 2] * s2, weights[start + t + 3] * s3
        for c in range(n_free):
            ap[c] += c0 * V[j0, c] + c1 * V[j1, c] + c2 * V[j2, c] + c3 * V[j3, c]
        t += 4
    while t < n:
        j = indices[start + t]
        _add_row(ap, weights[start + t] * _dot_row(V, j, p, n_free), V, j, n_free)
        t += 1


@njit(fastmath=True)
def _cg_row(
    row, indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free, steps, z, r, p, ap,
    residuals,
):  # fmt: skip
    """CG on row `row`: min_x sum_j w_j (<x + o, v_j> - 1)^2 + (x + o)^T G (x + o) + lam |x|^2
    over x[:n_free], warm-started from X[row] (updated in place), in the basis where G's free
    block is diagonal: G[:n_free, :n_free] = diag(eig), G[:n_free, n_free:] = C (see cg_rows).
    With `residuals` (a row per row of X, else empty): the final residual r = b - A x."""
    d = X.shape[1]
    for c in range(d):
        z[c] = X[row, c] + offset[row, c] if has_offset else X[row, c]
    # r = b - A x = sum_j w_j (1 - <z, v_j>) v_j - G z - lam x, on the free coordinates only
    for a in range(n_free):
        r[a] = -eig[a] * z[a] - lam[row] * X[row, a]
        for c in range(n_free, d):
            r[a] -= C[a, c - n_free] * z[c]
    start, n = indptr[row], indptr[row + 1] - indptr[row]
    # Every pass gathers the row's rated vectors from V again: a copy into a row buffer, read at
    # each step, cost more than it saved (the user step: 5.2 CPU-s with it, 4.4 without at 27.75M)
    _residual_pass(V, indices, start, n, weights, z, n_free, r)
    rs = 0.0  # float64 scalars: the step sizes must not underflow near convergence
    for a in range(n_free):
        p[a] = r[a]
        rs += r[a] * r[a]
    for _ in range(steps):
        if rs <= 1e-30:
            break
        # ap = A p = G p + lam p + sum_j w_j <p, v_j> v_j  (p is 0 on the fixed coordinates)
        for a in range(n_free):
            ap[a] = (eig[a] + lam[row]) * p[a]
        _hessian_pass(V, indices, start, n, weights, p, n_free, ap)
        pap = 0.0
        for a in range(n_free):
            pap += p[a] * ap[a]
        if pap <= 1e-30:
            break
        alpha = np.float32(rs / pap)
        rs_new = 0.0
        for a in range(n_free):
            X[row, a] += alpha * p[a]
            r[a] -= alpha * ap[a]
            rs_new += r[a] * r[a]
        beta = np.float32(rs_new / rs)
        for a in range(n_free):
            p[a] = r[a] + beta * p[a]
        rs = rs_new
    if len(residuals):
        for a in range(n_free):
            residuals[row, a] = r[a]


@njit(parallel=True, cache=True)
def _cg_rows(
    indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free, steps, n_blocks,
    residuals, rows,
):  # fmt: skip
    n_rows, d = len(rows), X.shape[1]
    for b in prange(n_blocks):
        z = np.empty(d, np.float32)
        r = np.zeros(d, np.float32)
        p = np.zeros(d, np.float32)
        ap = np.zeros(d, np.float32)
        for t in range(b * n_rows // n_blocks, (b + 1) * n_rows // n_blocks):
            _cg_row(
                rows[t], indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free,
                steps, z, r, p, ap, residuals,
            )  # fmt: skip


def each_block(fn, n_rows: int) -> list:
    """[fn(a, b) for each block of rows a:b], the blocks shared among numba's thread count of
    Python threads, each block one BLAS call on one OpenBLAS thread: OpenBLAS's own threads spin
    while they wait, which on a shared machine cost as much CPU as the products themselves
    (the Gramians: 8.4 CPU-s on its threads at load 10, 0.5 on one); a waiting Python thread
    sleeps."""
    blocks = [(a, min(a + _BLOCK_ROWS, n_rows)) for a in range(0, n_rows, _BLOCK_ROWS)]
    with one_blas_thread(), ThreadPoolExecutor(numba.get_num_threads()) as pool:
        return list(pool.map(lambda block: fn(*block), blocks))


def rotate(A: np.ndarray, U: np.ndarray) -> None:
    """A[:, :n] = A[:, :n] @ U in place (n = len(U)), a block of rows at a time."""
    n = len(U)

    def turn(a, b):
        A[a:b, :n] = A[a:b, :n] @ U

    each_block(turn, A.shape[0])


def eigenbasis(G: np.ndarray, n_free: int) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors) of G's free block, in float64."""
    with one_blas_thread():  # a d x d problem: OpenBLAS's threads would spin more than work
        return np.linalg.eigh(G[:n_free, :n_free].astype(np.float64))


def cg_rows(
    csr, V, G, lam, X, offset, n_free: int, steps: int, residuals=None, basis=None, plan=None
) -> None:
    """`steps` CG steps for every row of X (float32, updated in place) on

        min_x  sum_{j in row r} w_rj (<x + o_r, v_j> - 1)^2 + (x + o_r)^T G (x + o_r) + lam_r |x|^2

    over its first n_free coordinates (the others stay fixed); o_r = offset[r] (None: 0).
    csr = (indptr, indices, weights) of the rows' rated columns of V. `residuals` (float32, the
    shape of X): filled with each row's final CG residual b - A x on its free coordinates (0 on
    the others), from which the feature step's gradient is a sum over movies (a pass of its own
    over the ratings cost more than the rest of that step).

    The free coordinates are first turned (in place; turned back at the end) into the
    eigenbasis of G's free block, where G p costs d multiplications instead of d^2: the d^2 part
    of every row's every step (the larger part at k=256 and ~100 ratings a row) becomes six
    float32 matrix products per half step. The CG iterates are the same, the basis being
    orthonormal. basis = eigenbasis(G, n_free) when V, X and offset are in that basis already
    (fit_ranking keeps its factors there between half steps): nothing is turned. `plan`
    (ranking_blocks.plan_rows of csr): its long rows are solved in groups, a pass over a group's
    columns serving all its rows (the same iterates up to float32 summation order)."""
    indptr, indices, weights = csr
    eig, U = eigenbasis(G, n_free) if basis is None else basis
    C = (U.T @ G[:n_free, n_free:].astype(np.float64)).astype(np.float32)
    eig, U = eig.astype(np.float32), U.astype(np.float32)
    has_offset = offset is not None
    if not has_offset:
        offset = np.zeros((1, X.shape[1]), np.float32)
    turned = [] if basis is not None else [V, X, offset] if has_offset else [V, X]
    for A in turned:
        rotate(A, U)
    out = np.zeros((0, 0), np.float32) if residuals is None else residuals
    rows = np.arange(X.shape[0], dtype=np.int32) if plan is None else plan.short
    # blocks only share out the rows: each row's arithmetic is the same whatever their number
    n_blocks = max(1, min(len(rows), _BLOCKS_PER_THREAD * numba.get_num_threads()))
    with numba.parallel_chunksize(1):  # a block (a group) to whichever thread is free
        if plan is not None:
            ranking_blocks.cg_groups(plan, V, eig, C, lam, X, offset, has_offset, n_free, steps,
                                     out)  # fmt: skip
        _cg_rows(
            indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free, steps, n_blocks,
            out, rows,
        )  # fmt: skip
    if residuals is not None:
        residuals[:, n_free:] = 0.0
        if turned:  # into the callers' coordinates, as the rows
            turned.append(residuals)
    for A in turned:
        rotate(A, U.T.copy())


@njit(cache=True)
def csr(rows, cols, vals, n_rows):
    """(indptr int64, columns int32, values float32) of the triples grouped by row, in their
    order within a row: a counting sort, one pass to count and one to place (an argsort of 27M
    keys took seconds)."""
    indptr = np.zeros(n_rows + 1, np.int64)
    for r in rows:
        indptr[r + 1] += 1
    indptr = np.cumsum(indptr)
    fill = indptr[:-1].copy()
    out_cols = np.empty(len(rows), np.int32)
    out_vals = np.empty(len(rows), np.float32)
    for t in range(len(rows)):
        k = fill[rows[t]]
        out_cols[k], out_vals[k] = cols[t], vals[t]
        fill[rows[t]] += 1
    return indptr, out_cols, out_vals


def gramian(X: np.ndarray, alpha0: float) -> np.ndarray:
    """alpha0 * X^T X as float32, accumulated in float64 across blocks of rows (each block one
    float32 BLAS product): the sum over 283k users keeps float64's accuracy at float32's speed."""
    G = np.zeros((X.shape[1], X.shape[1]))
    for part in each_block(lambda a, b: X[a:b].T @ X[a:b], X.shape[0]):
        G += part  # in block order: the same sum whatever the threads
    return (alpha0 * G).astype(np.float32)
