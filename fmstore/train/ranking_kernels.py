"""The two inner loops of the ranking model's fit (ranking.py), as numba kernels when numba is
installed and as NumPy with the same arithmetic when it is not (slower, same answers).

- `sparse_apply`: for each row r, sum over its entries t of w_t (target - <v_j, z_r>) v_j: the
  data term of a least-squares gradient (target 1) or of a Hessian-vector product (target 0).
- `feature_step`: Gauss-Seidel over the item features: for each feature f the exact minimiser of
  the loss in the first n_free coordinates of its embedding e_f with everything else fixed, then
  the item rows that carry f are moved with it.
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional: without it the NumPy versions below run
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised by forcing use_numba=False in the tests
    numba = None

_CHUNK = 1 << 15  # entries per NumPy block: bounds the [entries, d] temporaries


def available() -> bool:
    return numba is not None


# ---- NumPy ----------------------------------------------------------------------------------------


def _segment_sum(values: np.ndarray, indptr: np.ndarray, n_rows: int) -> np.ndarray:
    """Sum of values[indptr[r]:indptr[r+1]] for each row r (empty rows: 0)."""
    out = np.zeros((n_rows, values.shape[1]))
    lengths = np.diff(indptr)
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
        out[nonempty] = np.add.reduceat(values, indptr[:-1][nonempty], axis=0)
    return out


def sparse_apply_numpy(indptr, indices, weights, V, Z, target, out) -> None:
    n_rows = Z.shape[0]
    out[:] = 0.0
    start = 0
    while start < n_rows:  # blocks of whole rows, about _CHUNK entries each
        end = int(np.searchsorted(indptr, indptr[start] + _CHUNK, side="right")) - 1
        end = min(max(end, start + 1), n_rows)
        a, b = indptr[start], indptr[end]
        rows = np.repeat(np.arange(start, end), np.diff(indptr[start : end + 1]))
        Vj = V[indices[a:b]]
        coef = weights[a:b] * (target - np.einsum("ij,ij->i", Vj, Z[rows]))
        out[start:end] = _segment_sum(Vj * coef[:, None], indptr[start : end + 1] - a, end - start)
        start = end


def _entries_of(rows: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position of each entry's row in `rows`, entry index) for the CSR entries of `rows`."""
    lengths = indptr[rows + 1] - indptr[rows]
    owner = np.repeat(np.arange(len(rows)), lengths)
    first = np.repeat(indptr[rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return owner, first + np.arange(int(lengths.sum()))


def feature_step_numpy(
    f_indptr,
    f_items,
    f_x,
    r_indptr,
    r_users,
    r_weights,
    P,
    G_alpha,
    H_data,
    lam_f,
    E,
    Q,
    GQ,
    n_free,
) -> None:
    for f in range(E.shape[0]):
        s, e = f_indptr[f], f_indptr[f + 1]
        if s == e:
            continue
        items, x = f_items[s:e], f_x[s:e]
        owner, entries = _entries_of(items, r_indptr)
        pu = P[r_users[entries]]
        resid = r_weights[entries] * (1.0 - np.einsum("ij,ij->i", pu, Q[items][owner]))
        g = -lam_f[f] * E[f] - x @ GQ[items] + (x[owner] * resid) @ pu
        H = H_data[f] + (x @ x) * G_alpha + lam_f[f] * np.eye(E.shape[1])
        delta = np.zeros(E.shape[1])
        delta[:n_free] = np.linalg.solve(H[:n_free, :n_free], g[:n_free])
        E[f] += delta
        np.add.at(Q, items, x[:, None] * delta)
        np.add.at(GQ, items, x[:, None] * (G_alpha @ delta))


# ---- numba ----------------------------------------------------------------------------------------

if numba is not None:

    @njit(parallel=True, cache=True)
    def _sparse_apply_numba(indptr, indices, weights, V, Z, target, out):  # pragma: no cover
        n_rows, d = Z.shape
        for r in prange(n_rows):
            for c in range(d):
                out[r, c] = 0.0
            for t in range(indptr[r], indptr[r + 1]):
                j = indices[t]
                dot = 0.0
                for c in range(d):
                    dot += V[j, c] * Z[r, c]
                coef = weights[t] * (target - dot)
                for c in range(d):
                    out[r, c] += coef * V[j, c]

    @njit(cache=True)
    def _feature_step_numba(
        f_indptr,
        f_items,
        f_x,
        r_indptr,
        r_users,
        r_weights,
        P,
        G_alpha,
        H_data,
        lam_f,
        E,
        Q,
        GQ,
        n_free,
    ):  # pragma: no cover
        n_f, d = E.shape
        for f in range(n_f):
            s, e = f_indptr[f], f_indptr[f + 1]
            if s == e:
                continue
            H = H_data[f].copy()
            sx2 = 0.0
            g = -lam_f[f] * E[f]
            for t in range(s, e):
                i, x = f_items[t], f_x[t]
                sx2 += x * x
                q = Q[i]
                g -= x * GQ[i]
                for k in range(r_indptr[i], r_indptr[i + 1]):
                    pu = P[r_users[k]]
                    coef = x * r_weights[k] * (1.0 - pu @ q)
                    for c in range(d):
                        g[c] += coef * pu[c]
            H += sx2 * G_alpha
            for a in range(d):
                H[a, a] += lam_f[f]
            delta = np.zeros(d)
            delta[:n_free] = np.linalg.solve(H[:n_free, :n_free].copy(), g[:n_free].copy())
            E[f] += delta
            Gd = G_alpha @ delta
            for t in range(s, e):
                Q[f_items[t]] += f_x[t] * delta
                GQ[f_items[t]] += f_x[t] * Gd


def kernels(use_numba: bool | None = None):
    """(sparse_apply, feature_step): numba's when available (and not refused), else NumPy's."""
    if use_numba is None:
        use_numba = available()
    if use_numba and available():
        return _sparse_apply_numba, _feature_step_numba
    return sparse_apply_numpy, feature_step_numpy
