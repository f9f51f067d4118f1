"""The inner loops of the ranking model's fit (ranking.py), as float32 numba kernels.

- `cg_rows`: for every row (a user, or a movie) a few conjugate-gradient steps on its own least
  squares system, done while the row is in cache (as implicit's `_als.pyx`, after Takacs et al.
  2011): the residual r = b - A x is built from the Gramian G and the row's rated columns, then
  each step is one Hessian-vector product over the same rated columns. Rows run in parallel
  (`prange`) with a few d-sized scratch vectors per block of rows: no [n_rows, d] temporaries.
- `gramian`: alpha0 * X^T X, summed in float64 over float32 blocks (one BLAS call each).
- `feature_weights`: Z[u, f] = sum_{i rated by u} w_ui x_if^2, the data part of the Hessian of
  feature f's embedding, one pass over the ratings.
- `feature_cg`: CG steps on one feature's system, its data Hessian sum_u Z[u, f] p_u p_u^T
  applied by a pass over the users that touch f (the d x d Hessians themselves, for 40 features
  x 283k users, would cost more than the rest of a sweep).
- `feature_scatter`, `rows_sum`, `feature_update`, `rows_dot`: one feature's data gradient from
  the residuals w_ui (1 - <p_u, q_i>) kept per rating (the item step's `dots` start them), and
  their update when its embedding moves: scalar passes over its ratings, vector passes over its
  users (a pass of d-vectors over its ratings cost 40% of a sweep at ml-latest scale).

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
# rows_sum and _hessian_times sum their blocks' partial sums: a fixed block
# count (not one per thread) keeps that order, and so the model, the same whatever the threads.
_GRADIENT_BLOCKS = 64
# Users of a feature from which its Hessian-vector products and its gradient run on every thread
# (a few milliseconds on one).
_PARALLEL_USERS = 1 << 15
# Rated columns a row may copy into its cache-resident buffer: 512 x 257 floats = 0.5 MB.
_BUFFER_ROWS = 512
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
def _residual_pass(V, indices, start, weights, z, n_free, r, buf, buffered, dots, track, dz):
    """r[:n_free] += sum_t w_t (1 - <z, v_t>) v_t over the row's n = len(dz) rated vectors
    v_t = V[indices[start + t]] (all d coordinates in the dot), copying them into buf when
    buffered and writing <z, v_t> to dots when tracked. Four rows at a time: four gathers in
    flight from all over V, and z and r read once for four."""
    n, d = len(dz), V.shape[1]
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
        dz[t], dz[t + 1], dz[t + 2], dz[t + 3] = s0, s1, s2, s3
        one = np.float32(1.0)
        c0, c1 = weights[start + t] * (one - s0), weights[start + t + 1] * (one - s1)
        c2, c3 = weights[start + t + 2] * (one - s2), weights[start + t + 3] * (one - s3)
        for c in range(n_free):
            r[c] += c0 * V[j0, c] + c1 * V[j1, c] + c2 * V[j2, c] + c3 * V[j3, c]
        if buffered:
            for c in range(n_free):
                buf[t, c] = V[j0, c]
                buf[t + 1, c] = V[j1, c]
                buf[t + 2, c] = V[j2, c]
                buf[t + 3, c] = V[j3, c]
        t += 4
    while t < n:
        j = indices[start + t]
        dz[t] = _dot_row(V, j, z, d)
        _add_row(r, weights[start + t] * (np.float32(1.0) - dz[t]), V, j, n_free)
        if buffered:
            for c in range(n_free):
                buf[t, c] = V[j, c]
        t += 1
    if track:
        for t in range(n):
            dots[start + t] = dz[t]


@njit(inline="always", fastmath=True)
def _hessian_pass(B, buffered, indices, start, weights, p, n_free, ap, dp):
    """ap[:n_free] += sum_t w_t <p, b_t> b_t over the row's n = len(dp) entries, b_t its t-th
    rated vector (B[t] when buffered, else B[indices[start + t]]); dp[t] = <p, b_t>. Four entries
    at a time: p and ap are read once for four rated vectors (SIMD over the coordinates)."""
    n = len(dp)
    t = 0
    while t + 4 <= n:
        j0, j1, j2, j3 = t, t + 1, t + 2, t + 3
        if not buffered:
            j0, j1 = indices[start + t], indices[start + t + 1]
            j2, j3 = indices[start + t + 2], indices[start + t + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for c in range(n_free):
            pc = p[c]
            s0 += B[j0, c] * pc
            s1 += B[j1, c] * pc
            s2 += B[j2, c] * pc
            s3 += B[j3, c] * pc
        dp[t], dp[t + 1], dp[t + 2], dp[t + 3] = s0, s1, s2, s3
        c0, c1 = weights[start + t] * s0, weights[start + t + 1] * s1
        c2, c3 = weights[start + t + 2] * s2, weights[start + t + 3] * s3
        for c in range(n_free):
            ap[c] += c0 * B[j0, c] + c1 * B[j1, c] + c2 * B[j2, c] + c3 * B[j3, c]
        t += 4
    while t < n:
        j = t if buffered else indices[start + t]
        s = _dot_row(B, j, p, n_free)
        dp[t] = s
        _add_row(ap, weights[start + t] * s, B, j, n_free)
        t += 1


@njit(fastmath=True)
def _cg_row(
    row, indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free, steps, z, r, p, ap,
    buf, dp, dots,
):  # fmt: skip
    """CG on row `row`: min_x sum_j w_j (<x + o, v_j> - 1)^2 + (x + o)^T G (x + o) + lam |x|^2
    over x[:n_free], warm-started from X[row] (updated in place), in the basis where G's free
    block is diagonal: G[:n_free, :n_free] = diag(eig), G[:n_free, n_free:] = C (see cg_rows).
    With `dots` (one slot per entry of the CSR, else empty): <x + o, v_j> of the solution at each
    of the row's entries."""
    d = X.shape[1]
    for c in range(d):
        z[c] = X[row, c] + offset[row, c] if has_offset else X[row, c]
    # r = b - A x = sum_j w_j (1 - <z, v_j>) v_j - G z - lam x, on the free coordinates only
    for a in range(n_free):
        r[a] = -eig[a] * z[a] - lam[row] * X[row, a]
        for c in range(n_free, d):
            r[a] -= C[a, c - n_free] * z[c]
    start, n = indptr[row], indptr[row + 1] - indptr[row]
    # The row's rated columns are gathered from all over V once, into a contiguous buffer read
    # sequentially at every CG step (a row too long for it gathers from V again at every step).
    buffered = n <= buf.shape[0]
    track = len(dots) > 0
    _residual_pass(V, indices, start, weights, z, n_free, r, buf, buffered, dots, track, dp[:n])
    B = buf if buffered else V
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
        _hessian_pass(B, buffered, indices, start, weights, p, n_free, ap, dp[:n])
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
        # <z, v_j> moves by alpha <p, v_j>: the dots follow without another pass over the row
        if track:
            for t in range(n):
                dots[start + t] += alpha * dp[t]
        beta = np.float32(rs_new / rs)
        for a in range(n_free):
            p[a] = r[a] + beta * p[a]
        rs = rs_new


@njit(parallel=True, cache=True)
def _cg_rows(
    indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free, steps, n_blocks, dots,
    buffer_rows, rows,
):  # fmt: skip
    n_rows, d = len(rows), X.shape[1]
    for b in prange(n_blocks):
        first, end = b * n_rows // n_blocks, (b + 1) * n_rows // n_blocks
        longest = 0
        for t in range(first, end):
            longest = max(longest, indptr[rows[t] + 1] - indptr[rows[t]])
        z = np.empty(d, np.float32)
        r = np.zeros(d, np.float32)
        p = np.zeros(d, np.float32)
        ap = np.zeros(d, np.float32)
        buf = np.empty((min(longest, buffer_rows), d), np.float32)
        dp = np.empty(longest, np.float32)
        for t in range(first, end):
            _cg_row(
                rows[t], indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free,
                steps, z, r, p, ap, buf, dp, dots,
            )  # fmt: skip


def _each_block(fn, n_rows: int) -> list:
    """[fn(a, b) for each block of rows a:b], the blocks shared among numba's thread count of
    Python threads, each block one BLAS call on one OpenBLAS thread: OpenBLAS's own threads spin
    while they wait, which on a shared machine cost as much CPU as the products themselves
    (the Gramians: 8.4 CPU-s on its threads at load 10, 0.5 on one); a waiting Python thread
    sleeps."""
    blocks = [(a, min(a + _BLOCK_ROWS, n_rows)) for a in range(0, n_rows, _BLOCK_ROWS)]
    with one_blas_thread(), ThreadPoolExecutor(numba.get_num_threads()) as pool:
        return list(pool.map(lambda block: fn(*block), blocks))


def _rotate(A: np.ndarray, U: np.ndarray) -> None:
    """A[:, :n] = A[:, :n] @ U in place (n = len(U)), a block of rows at a time."""
    n = len(U)

    def turn(a, b):
        A[a:b, :n] = A[a:b, :n] @ U

    _each_block(turn, A.shape[0])


def cg_rows(csr, V, G, lam, X, offset, n_free: int, steps: int, dots=None, plan=None) -> None:
    """`steps` CG steps for every row of X (float32, updated in place) on

        min_x  sum_{j in row r} w_rj (<x + o_r, v_j> - 1)^2 + (x + o_r)^T G (x + o_r) + lam_r |x|^2

    over its first n_free coordinates (the others stay fixed); o_r = offset[r] (None: 0).
    csr = (indptr, indices, weights) of the rows' rated columns of V. `dots` (float32, one per
    entry of csr): filled with <x_r + o_r, v_j> of the solution at each entry, which the feature
    step's gradients start from (the rows are in cache here; a pass of its own was most of it).
    `plan` (ranking_blocks.plan_rows of csr): its long rows are solved in groups, a pass over a
    group's columns serving all its rows (the same iterates up to float32 summation order).

    The free coordinates are first turned (in place; turned back at the end) into the
    eigenbasis of G's free block, where G p costs d multiplications instead of d^2: the d^2 part
    of every row's every step (the larger part at k=256 and ~100 ratings a row) becomes six
    float32 matrix products per half step. The CG iterates are the same, the basis being
    orthonormal."""
    indptr, indices, weights = csr
    with one_blas_thread():  # a d x d problem: OpenBLAS's threads would spin more than work
        eig, U = np.linalg.eigh(G[:n_free, :n_free].astype(np.float64))
    C = (U.T @ G[:n_free, n_free:].astype(np.float64)).astype(np.float32)
    eig, U = eig.astype(np.float32), U.astype(np.float32)
    has_offset = offset is not None
    if not has_offset:
        offset = np.zeros((1, X.shape[1]), np.float32)
    turned = [V, X, offset] if has_offset else [V, X]
    for A in turned:
        _rotate(A, U)
    dots = np.zeros(0, np.float32) if dots is None else dots
    rows = np.arange(X.shape[0], dtype=np.int32) if plan is None else plan.short
    # blocks only share out the rows: each row's arithmetic is the same whatever their number
    n_blocks = max(1, min(len(rows), _BLOCKS_PER_THREAD * numba.get_num_threads()))
    with numba.parallel_chunksize(1):  # a block (a group) to whichever thread is free
        if plan is not None:
            ranking_blocks.cg_groups(plan, V, eig, C, lam, X, offset, has_offset, n_free, steps,
                                     dots)  # fmt: skip
        _cg_rows(
            indptr, indices, weights, V, eig, C, lam, X, offset, has_offset, n_free, steps, n_blocks,
            dots, _BUFFER_ROWS, rows,
        )  # fmt: skip
    for A in turned:
        _rotate(A, U.T.copy())


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
    for part in _each_block(lambda a, b: X[a:b].T @ X[a:b], X.shape[0]):
        G += part  # in block order: the same sum whatever the threads
    return (alpha0 * G).astype(np.float32)


@njit(parallel=True, cache=True)
def feature_weights(u_indptr, u_items, u_weights, f_indptr, f_cols, f_x, n_features):
    """Z[u, f] = sum_{i rated by u} w_ui x_if^2 (float32 [n_users, n_features]); f_* is the
    item -> feature CSR."""
    n_users = len(u_indptr) - 1
    Z = np.zeros((n_users, n_features), np.float32)
    for u in prange(n_users):
        for t in range(u_indptr[u], u_indptr[u + 1]):
            i = u_items[t]
            for s in range(f_indptr[i], f_indptr[i + 1]):
                Z[u, f_cols[s]] += u_weights[t] * f_x[s] * f_x[s]
    return Z


def feature_users(Z: np.ndarray):
    """Z as one sparse row per feature: (indptr int64, users int32, z float32) of its nonzeros;
    a feature's Hessian-vector product reads only the users that touch it."""
    users, features = np.nonzero(Z)
    order = np.argsort(features, kind="stable")
    indptr = np.zeros(Z.shape[1] + 1, np.int64)
    np.cumsum(np.bincount(features, minlength=Z.shape[1]), out=indptr[1:])
    return indptr, users[order].astype(np.int32), Z[users[order], features[order]]


@njit(fastmath=True, cache=True)
def _hessian_times_part(users, z, P, v, n_free, first, end, out):
    """out[:n_free] = sum_t z_t <p_u, v> p_u over users[first:end] (u = users[t]), four users at a
    time (v and out read once for four rows)."""
    out[:] = 0.0
    t = first
    while t + 4 <= end:
        u0, u1, u2, u3 = users[t], users[t + 1], users[t + 2], users[t + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for c in range(n_free):
            vc = v[c]
            s0 += P[u0, c] * vc
            s1 += P[u1, c] * vc
            s2 += P[u2, c] * vc
            s3 += P[u3, c] * vc
        s0, s1, s2, s3 = z[t] * s0, z[t + 1] * s1, z[t + 2] * s2, z[t + 3] * s3
        for c in range(n_free):
            out[c] += s0 * P[u0, c] + s1 * P[u1, c] + s2 * P[u2, c] + s3 * P[u3, c]
        t += 4
    while t < end:
        u = users[t]
        _add_row(out, z[t] * _dot_row(P, u, v, n_free), P, u, n_free)
        t += 1


@njit(parallel=True, cache=True)
def _hessian_blocks_parallel(users, z, P, v, n_free, parts):
    n, n_blocks = len(users), parts.shape[0]
    for b in prange(n_blocks):
        _hessian_times_part(users, z, P, v, n_free, b * n // n_blocks, (b + 1) * n // n_blocks,
                            parts[b])  # fmt: skip


@njit(cache=True)
def _hessian_times(users, z, P, v, n_free, out):
    """out = sum_u z_u <p_u, v> p_u over the given users (0 past n_free): a feature's data Hessian
    times v, one pass over those users' rows, without forming the d x d matrix. The same blocks
    of users either way; on every thread only for a feature of many users (a sweep has hundreds
    of these products, and waking the threads costs a time slice on a shared machine)."""
    n, n_blocks = len(users), _GRADIENT_BLOCKS
    parts = np.zeros((n_blocks, P.shape[1]), np.float32)
    if n >= _PARALLEL_USERS:
        _hessian_blocks_parallel(users, z, P, v, n_free, parts)
    else:
        for b in range(n_blocks):
            _hessian_times_part(users, z, P, v, n_free, b * n // n_blocks,
                                (b + 1) * n // n_blocks, parts[b])  # fmt: skip
    out[:] = 0.0
    for b in range(n_blocks):
        out += parts[b]


@njit(cache=True)
def feature_cg(users, z, P, G, r, x2, lam, n_free, steps):
    """`steps` CG steps from delta = 0 on one feature's system

        (sum_u z_u p_u p_u^T + x2 G + lam I) delta = r        (r: its negative gradient)

    over the first n_free coordinates; returns delta (float32 [d])."""
    d = P.shape[1]
    delta = np.zeros(d)
    r = r.copy()
    r[n_free:] = 0.0
    p = r.copy()
    hv = np.zeros(d, np.float32)
    rs = r @ r
    for _ in range(steps):
        if rs <= 1e-30:
            break
        _hessian_times(users, z, P, p.astype(np.float32), n_free, hv)
        ap = hv.astype(np.float64) + x2 * (G @ p) + lam * p
        ap[n_free:] = 0.0
        alpha = rs / (p @ ap)
        delta += alpha * p
        r -= alpha * ap
        rs_new = r @ r
        p = r + (rs_new / rs) * p
        rs = rs_new
    return delta.astype(np.float32)


@njit(cache=True)
def feature_scatter(items, xs, r_indptr, r_users, res, coef):
    """coef[u] += x_i res_k over every entry k (user u) of the movies `items` (weights `xs`): the
    feature's data gradient is then sum_u coef[u] p_u, a pass over its users, not its ratings."""
    for t in range(len(items)):
        i, x = items[t], xs[t]
        for k in range(r_indptr[i], r_indptr[i + 1]):
            coef[r_users[k]] += x * res[k]


@njit(cache=True)
def feature_update(items, xs, r_indptr, r_users, r_weights, moved, res):
    """res_k -= w_k x_i moved[u] over the entries of the movies `items`: the residuals
    w_ui (1 - <p_u, q_i>) after q_i moved by x_i delta (moved[u] = <p_u, delta>)."""
    for t in range(len(items)):
        i, x = items[t], xs[t]
        for k in range(r_indptr[i], r_indptr[i + 1]):
            res[k] -= r_weights[k] * x * moved[r_users[k]]


@njit(fastmath=True, cache=True)
def _rows_sum_part(users, coef, P, first, end, out):
    """out = sum_t coef[u] p_u over users[first:end] (u = users[t]), four users at a time."""
    out[:] = 0.0
    d = P.shape[1]
    t = first
    while t + 4 <= end:
        u0, u1, u2, u3 = users[t], users[t + 1], users[t + 2], users[t + 3]
        c0, c1, c2, c3 = coef[u0], coef[u1], coef[u2], coef[u3]
        for c in range(d):
            out[c] += c0 * P[u0, c] + c1 * P[u1, c] + c2 * P[u2, c] + c3 * P[u3, c]
        t += 4
    while t < end:
        _add_row(out, coef[users[t]], P, users[t], d)
        t += 1


@njit(parallel=True, cache=True)
def _rows_sum_parallel(users, coef, P, parts):
    n, n_blocks = len(users), parts.shape[0]
    for b in prange(n_blocks):
        _rows_sum_part(users, coef, P, b * n // n_blocks, (b + 1) * n // n_blocks, parts[b])


@njit(cache=True)
def _rows_sum_serial(users, coef, P, parts):
    n, n_blocks = len(users), parts.shape[0]
    for b in range(n_blocks):
        _rows_sum_part(users, coef, P, b * n // n_blocks, (b + 1) * n // n_blocks, parts[b])


def rows_sum(users, coef, P) -> np.ndarray:
    """sum_u coef[u] p_u over `users` (float64 [d]): the same blocks of users whatever the
    threads (so the same sum); on every thread only for many users."""
    parts = np.zeros((_GRADIENT_BLOCKS, P.shape[1]), np.float32)
    blocks = _rows_sum_parallel if len(users) >= _PARALLEL_USERS else _rows_sum_serial
    blocks(users, coef, P, parts)
    return parts.astype(np.float64).sum(axis=0)


@njit(fastmath=True, cache=True)
def _rows_dot_part(users, P, v, first, end, out):
    """out[u] = <p_u, v> for u in users[first:end], four users at a time."""
    d = P.shape[1]
    t = first
    while t + 4 <= end:
        u0, u1, u2, u3 = users[t], users[t + 1], users[t + 2], users[t + 3]
        s0 = s1 = s2 = s3 = np.float32(0.0)
        for c in range(d):
            vc = v[c]
            s0 += P[u0, c] * vc
            s1 += P[u1, c] * vc
            s2 += P[u2, c] * vc
            s3 += P[u3, c] * vc
        out[u0], out[u1], out[u2], out[u3] = s0, s1, s2, s3
        t += 4
    while t < end:
        out[users[t]] = _dot_row(P, users[t], v, d)
        t += 1


@njit(parallel=True, cache=True)
def _rows_dot_parallel(users, P, v, out):
    # blocks, not single users: the feature step runs under parallel_chunksize(1)
    n = len(users)
    for b in prange(_GRADIENT_BLOCKS):
        _rows_dot_part(users, P, v, b * n // _GRADIENT_BLOCKS, (b + 1) * n // _GRADIENT_BLOCKS, out)


@njit(cache=True)
def _rows_dot_serial(users, P, v, out):
    _rows_dot_part(users, P, v, 0, len(users), out)


def rows_dot(users, P, v, out) -> None:
    """out[u] = <p_u, v> for each of `users` (float32)."""
    blocks = _rows_dot_parallel if len(users) >= _PARALLEL_USERS else _rows_dot_serial
    blocks(users, P, np.asarray(v, np.float32), out)
