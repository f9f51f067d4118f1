"""CG half steps for long rows in groups (ranking_kernels.cg_rows' path for rows with many rated
columns, the popular movies of the item step).

The per-row path gathers a row's rated vectors from all over V at every CG step: in the item
step at 27.75M ratings, 64% of the entries belong to movies with over LONG_ROW raters, and each
step reads a 1 KB user vector per entry from a 290 MB matrix (latency-bound random gathers). Here the
long rows are cut into groups of up to GROUP_ROWS rows, and each group's entries are stored
transposed (`plan`: sorted by column). A group's residual pass and each of its CG steps are one
pass over its distinct columns in increasing order: v_u is loaded once and applied to every row
of the group that rated u (s = <p_row, v_u>; ap_row += w s v_u), the group's p and ap
(GROUP_ROWS x d float32 each, 1 MB together at d = 257) staying in L2. Popular movies share most
of their raters, so one load serves many entries (7.5 on average at 27.75M), and V streams in
order. Between passes each row takes the per-row path's CG update (the same float64 scalars and
early exits: a converged row stops while its group goes on), so the iterates are the per-row
path's up to float32 summation order (the same bits when the CSR lists each row's columns in
increasing order: each row's sums then add the same terms in the same order).

Tried and left: tiles of rows whose p and ap stay in L1, within chunks of columns whose vectors
stay in L2: no faster (a pass is bound by the L2 traffic of a row's p and ap per entry), and
more memory.

Groups are fixed by the CSR alone (not the thread count) and each is solved by one thread: the
result is the same whatever the threads.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from fmstore.train.numba_prefetch import prefetch as _prefetch

# Rows with more entries than this take the grouped path: at 27.75M (2 sweeps, the item step's
# CPU-s a sweep) 1,024 gave 5.35-5.54, 512 5.67-5.79, 2,048 5.61, 256 6.32.
LONG_ROW = 1024
# Rows per group: more rows, more entries per column vector fetched from far away (the long
# rows' item step at 27.75M, k = 256, one thread: 4.0 CPU-s with 512, 4.3 with 256, 4.5 with 128;
# the per-row path 7.1).
GROUP_ROWS = 512
# Entries per group at most: a group is one thread's work, so the first (most popular) groups
# must not hold a large part of the step (4M of 20M at 27.75M: enough for a few threads, where
# 8M was no faster).
GROUP_ENTRIES = 1 << 22
# How many columns ahead a pass asks for a column's vector.
PREFETCH_COLS = 4


class Plan(NamedTuple):
    """The long rows of a CSR, grouped, with each group's entries sorted by column. Groups are
    cut from the rows in decreasing length (rows that share columns together; the longest
    groups are handed out first). Per rating: 2 + 4 bytes (row in group, weight), plus 8 bytes
    per distinct column of a group."""

    short: np.ndarray  # int32: rows left to the per-row path
    rows: np.ndarray  # int32: the grouped rows, group after group
    group_rows: np.ndarray  # int64 [n_groups + 1]: a group's slice of rows
    group_cols: np.ndarray  # int64 [n_groups + 1]: its slice of cols / col_end
    cols: np.ndarray  # int32: a group's distinct columns, increasing
    col_end: np.ndarray  # int32: end of a column's entries, from the group's first entry
    group_entries: np.ndarray  # int64 [n_groups + 1]: its slice of the entries
    entry_row: np.ndarray  # int16: the entry's row, as an index into the group's rows
    entry_weight: np.ndarray  # float32


def plan_rows(csr, n_cols, long_row=None, group_rows=None, group_entries=None):
    """The Plan of a CSR (indptr, indices, weights) over n_cols columns; built once per fit (the
    CSR is the same every sweep). The sizes default to the module's constants (read at the call);
    group_rows must stay below 2^15 (int16 row indices)."""
    long_row = LONG_ROW if long_row is None else long_row
    group_rows = GROUP_ROWS if group_rows is None else group_rows
    group_entries = GROUP_ENTRIES if group_entries is None else group_entries
    if not 0 < group_rows < 2**15:
        raise ValueError(f"group_rows {group_rows}: use 1 to 32767 (int16 row indices)")
    indptr, indices, weights = csr
    lengths = np.diff(indptr)
    long = np.flatnonzero(lengths > long_row)
    long = long[np.argsort(-lengths[long], kind="stable")].astype(np.int32)
    cuts = [0]
    size = 0
    for t, row in enumerate(long):
        if t > cuts[-1] and (t - cuts[-1] == group_rows or size + lengths[row] > group_entries):
            cuts.append(t)
            size = 0
        size += lengths[row]
    if len(long):
        cuts.append(len(long))
    g_rows = np.asarray(cuts, np.int64)
    g_entries = np.zeros(len(g_rows), np.int64)
    np.cumsum(np.add.reduceat(lengths[long], g_rows[:-1]) if len(long) else [], out=g_entries[1:])
    pos_type = np.int32 if len(indices) < 2**31 else np.int64  # read only while building
    entry_row = np.empty(g_entries[-1], np.int16)
    entry_weight = np.empty(g_entries[-1], np.float32)
    entry_pos = np.empty(g_entries[-1], pos_type)
    n_distinct = _transpose(indptr, indices, weights, n_cols, long, g_rows, g_entries,
                            entry_row, entry_weight, entry_pos)  # fmt: skip
    g_cols = np.zeros(len(g_rows), np.int64)
    np.cumsum(n_distinct, out=g_cols[1:])
    cols = np.empty(g_cols[-1], np.int32)
    col_end = np.empty(g_cols[-1], np.int32)
    _columns(indices, g_entries, g_cols, entry_pos, cols, col_end)
    short = np.flatnonzero(lengths <= long_row).astype(np.int32)
    return Plan(short, long, g_rows, g_cols, cols, col_end, g_entries, entry_row, entry_weight)


def plan_bytes(plan: Plan) -> int:
    """Memory held by the plan's arrays."""
    return sum(a.nbytes for a in plan)


@njit(parallel=True, cache=True)
def _transpose(indptr, indices, weights, n_cols, rows, g_rows, g_entries, entry_row,
               entry_weight, entry_pos):  # fmt: skip
    """Each group's entries as (row in group, weight, CSR position), sorted by column (a counting
    sort; rows in group order within a column); returns each group's distinct column count."""
    n_groups = len(g_rows) - 1
    n_distinct = np.zeros(n_groups, np.int64)
    for g in prange(n_groups):
        count = np.zeros(n_cols + 1, np.int64)
        for b in range(g_rows[g], g_rows[g + 1]):
            for k in range(indptr[rows[b]], indptr[rows[b] + 1]):
                count[indices[k] + 1] += 1
        for j in range(n_cols):
            if count[j + 1] > 0:
                n_distinct[g] += 1
            count[j + 1] += count[j]
        for b in range(g_rows[g], g_rows[g + 1]):
            for k in range(indptr[rows[b]], indptr[rows[b] + 1]):
                t = g_entries[g] + count[indices[k]]
                count[indices[k]] += 1
                entry_row[t], entry_weight[t], entry_pos[t] = b - g_rows[g], weights[k], k
    return n_distinct


@njit(parallel=True, cache=True)
def _columns(indices, g_entries, g_cols, entry_pos, cols, col_end):
    """Each group's distinct columns, and where their entries end (from the group's first)."""
    for g in prange(len(g_entries) - 1):
        k = g_cols[g]
        first = g_entries[g]
        for e in range(first, g_entries[g + 1]):
            j = indices[entry_pos[e]]
            if e == first or j != cols[k - 1]:
                cols[k] = j
                k += 1
            col_end[k - 1] = e + 1 - first


# The helpers index 2-D arrays by (row, column), as ranking_kernels' do: numba vectorises these.


@njit(inline="always", fastmath=True)
def _dot_rows(A, a, B, b, n):
    """<A[a, :n], B[b, :n]> in float32."""
    s = np.float32(0.0)
    for c in range(n):
        s += A[a, c] * B[b, c]
    return s


@njit(inline="always", fastmath=True)
def _add_rows(A, a, coef, B, b, n):
    """A[a, :n] += coef * B[b, :n]."""
    for c in range(n):
        A[a, c] += coef * B[b, c]


@njit(inline="always", fastmath=True)
def _pass(plan, g, V, Y, n_dot, Out, n_add, active, residual):
    """One pass over group g's columns in increasing order: for each entry (row b, column j,
    weight w), s = <Y[b, :n_dot], v_j> and Out[b, :n_add] += w * (1 - s if residual else s) * v_j,
    for the rows still active."""
    first = plan.group_entries[g]
    t = first
    last = plan.group_cols[g + 1] - 1
    for k in range(plan.group_cols[g], last + 1):
        j = plan.cols[k]
        # the columns are far apart in V: ask for a later one's vector while this one works
        _prefetch(V, plan.cols[min(k + PREFETCH_COLS, last)])
        end = first + plan.col_end[k]
        # four rows of this column at a time: four independent dot products (one chain of
        # dependent additions is latency-bound), v_j read once for four
        while t + 4 <= end:
            b0, b1 = plan.entry_row[t], plan.entry_row[t + 1]
            b2, b3 = plan.entry_row[t + 2], plan.entry_row[t + 3]
            s0 = s1 = s2 = s3 = np.float32(0.0)
            for c in range(n_dot):
                vc = V[j, c]
                s0 += Y[b0, c] * vc
                s1 += Y[b1, c] * vc
                s2 += Y[b2, c] * vc
                s3 += Y[b3, c] * vc
            _apply(plan, t, s0, V, j, Out, n_add, active, residual)
            _apply(plan, t + 1, s1, V, j, Out, n_add, active, residual)
            _apply(plan, t + 2, s2, V, j, Out, n_add, active, residual)
            _apply(plan, t + 3, s3, V, j, Out, n_add, active, residual)
            t += 4
        while t < end:
            if active[plan.entry_row[t]]:
                s = _dot_rows(Y, plan.entry_row[t], V, j, n_dot)
                _apply(plan, t, s, V, j, Out, n_add, active, residual)
            t += 1


@njit(inline="always", fastmath=True)
def _apply(plan, t, s, V, j, Out, n_add, active, residual):
    """Entry t's term, given s = <y_b, v_j>: Out[b, :n_add] += w (1 - s if residual else s) v_j."""
    b = plan.entry_row[t]
    if active[b]:
        coef = plan.entry_weight[t] * (np.float32(1.0) - s if residual else s)
        _add_rows(Out, b, coef, V, j, n_add)


@njit(fastmath=True)
def _cg_group(plan, g, V, eig, C, lam, X, offset, has_offset, n_free, steps, residuals):
    """_cg_row's CG (ranking_kernels) for every row of group g in lockstep: the same initial
    residual, the same float64 step sizes and early exits per row, each pass over the rated
    columns one pass over the group's columns. With `residuals` (a row per row of X, else
    empty): each row's final residual r = b - A x."""
    d = X.shape[1]
    rows = plan.rows[plan.group_rows[g] : plan.group_rows[g + 1]]
    n_rows = len(rows)
    Z = np.empty((n_rows, d), np.float32)
    R = np.empty((n_rows, d), np.float32)
    P = np.zeros((n_rows, d), np.float32)
    AP = np.zeros((n_rows, d), np.float32)
    rs = np.zeros(n_rows)
    active = np.ones(n_rows, np.bool_)
    # r = b - A x = sum_j w_j (1 - <z, v_j>) v_j - G z - lam x, on the free coordinates only
    for b in range(n_rows):
        row = rows[b]
        for c in range(d):
            Z[b, c] = X[row, c] + offset[row, c] if has_offset else X[row, c]
        for a in range(n_free):
            R[b, a] = -eig[a] * Z[b, a] - lam[row] * X[row, a]
            for c in range(n_free, d):
                R[b, a] -= C[a, c - n_free] * Z[b, c]
    _pass(plan, g, V, Z, d, R, n_free, active, True)
    for b in range(n_rows):
        for a in range(n_free):
            P[b, a] = R[b, a]
            rs[b] += R[b, a] * R[b, a]
    for _ in range(steps):
        any_active = False
        for b in range(n_rows):
            active[b] = active[b] and rs[b] > 1e-30
            any_active = any_active or active[b]
            if active[b]:
                for a in range(n_free):
                    AP[b, a] = (eig[a] + lam[rows[b]]) * P[b, a]
        if not any_active:
            break
        _pass(plan, g, V, P, n_free, AP, n_free, active, False)
        for b in range(n_rows):
            if not active[b]:
                continue
            pap = 0.0
            for a in range(n_free):
                pap += P[b, a] * AP[b, a]
            if pap <= 1e-30:
                active[b] = False
                continue
            row = rows[b]
            alpha = np.float32(rs[b] / pap)
            rs_new = 0.0
            for a in range(n_free):
                X[row, a] += alpha * P[b, a]
                R[b, a] -= alpha * AP[b, a]
                rs_new += R[b, a] * R[b, a]
            beta = np.float32(rs_new / rs[b])
            for a in range(n_free):
                P[b, a] = R[b, a] + beta * P[b, a]
            rs[b] = rs_new
    if len(residuals):
        for b in range(n_rows):
            for a in range(n_free):
                residuals[rows[b], a] = R[b, a]


@njit(parallel=True, cache=True)
def cg_groups(plan, V, eig, C, lam, X, offset, has_offset, n_free, steps, residuals):
    """_cg_group for every group of the plan, a group to whichever thread is free (the caller
    sets parallel_chunksize(1)); groups come longest first."""
    for g in prange(len(plan.group_rows) - 1):
        _cg_group(plan, g, V, eig, C, lam, X, offset, has_offset, n_free, steps, residuals)
