"""The ranking model's genre and year embeddings and their step in each sweep (ranking.py).

A movie's row is q_i = m_i + sum_f x_if e_f. With the users P and the movie-id embeddings M
fixed, the loss is a quadratic in all the feature embeddings E together:

    sum_i [q_i^T A_i q_i - 2 b_i^T q_i] + sum_f lam_f |e_f|^2,
    A_i = G + sum_{u rated i} w_ui p_u p_u^T,  b_i = sum_u w_ui p_u,  G = alpha0 P^T P

and each sweep gives it FEATURE_CG_STEPS steps of preconditioned CG from the current E, on all
features at once. A step's Hessian product for a direction D (one row d_f per feature) is

    (H D)_f = sum_u K[u, f] p_u + sum_g (X^T X)[f, g] G d_g + lam_f d_f,
    K[u, f] = sum_{i rated by u} w_ui x_if <p_u, D_i>,   <p_u, D_i> = sum_g x_ig <p_u, d_g>

so it reads every user vector twice, in two float32 matrix products (Y = P D^T, then K^T P),
around a scalar pass over each user's feature pairs (`_hessian_weights`: K[u] = Z_u Y[u], Z_u[f,
g] = sum_{i rated by u} w_ui x_if x_ig built once a fit, `user_pairs`). The gradient is a sum
over movies of the item step's final CG residuals (no pass over the ratings). The Gauss-Seidel
pass this replaces solved one feature at a time and read each user vector once per CG step of
every feature the user touches, about 25 times more (8.4 CPU-s a sweep at 27.75M ratings, where
this step takes 1.3; benchmarks/pipeline_scale.py).

The preconditioner is block diagonal: feature f's own Hessian sum_u Z[u, f] p_u p_u^T + x2_f G +
lam_f I, taking the users' weights Z[u, f] = sum_{i rated by u} w_ui x_if^2 as their mean (so
the data part is a multiple of G), which is diagonal in G's eigenbasis. It puts the features on
one scale: a genre on half the ratings and a year on a hundred differ by 10^5 in curvature.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from fmstore.threads import one_blas_thread
from fmstore.train.ranking_kernels import each_block

F32 = np.float32
# Preconditioned CG steps on all feature embeddings together, per sweep, warm-started from the
# current embeddings (see docs/scaling.md for the choice).
FEATURE_CG_STEPS = 4


class FeatureStep:
    """The item features' embeddings E (float32 [n_features, d]) and their joint CG step."""

    def __init__(self, item_features, n_features, by_user, by_item, n_users, c):
        self.c = c
        self.n = 0 if item_features is None else int(n_features)
        self.E = np.zeros((self.n, c.factors + 1), F32)
        if not self.n:
            return
        indptr, cols, x = item_features
        n_items = len(indptr) - 1
        # each movie's features in increasing order: its pairs f <= g are then its (a, c >= a)
        rows = np.repeat(np.arange(n_items), np.diff(indptr))
        order = np.lexsort((cols, rows))
        cols, x = np.asarray(cols)[order], np.asarray(x)[order]
        self.csr = (indptr, cols.astype(np.int32), x.astype(F32))
        # dense: genres and years are a few dozen columns (the side columns stay out: features.py)
        self.X = np.zeros((n_items, self.n))
        np.add.at(self.X, (rows, np.asarray(cols, np.int64)), np.asarray(x, np.float64))
        self.XtX = self.X.T @ self.X
        self.X32 = self.X.astype(F32)
        self.pairs = user_pairs(by_user, self.csr, self.n)
        n_i = np.diff(by_item[0]).astype(np.float64)
        x2 = self.X**2
        self.lam = c.reg * (x2.T @ (n_i + c.alpha0 * n_users)) ** c.nu
        # the preconditioner's data curvature per unit of G: mean_u Z[u, f] / alpha0, plus x2_f
        weight_sums = row_sums(*by_item)
        self.curvature = (x2.T @ weight_sums) / (c.alpha0 * n_users) + x2.sum(axis=0)

    def sum_of(self, E: np.ndarray, n_items: int) -> np.ndarray:
        """S = sum_f x_if e_f for every movie (float32 [n_items, d]; zeros without features)."""
        if not self.n:
            return np.zeros((n_items, E.shape[1]), F32)
        return self.X32 @ E

    def step(self, P, G_p, M, S, residuals, lam_items, unrated) -> np.ndarray:
        """FEATURE_CG_STEPS preconditioned CG steps on all the embeddings; returns the new S.
        residuals: the item step's final CG residuals b_i - A_i q_i - lam_i m_i (cg_rows), for
        M, S as given; lam_items: its lam_i; unrated: the movies without ratings (M = 0)."""
        # small products: OpenBLAS's own threads would spin more than they work (ranking_kernels)
        with one_blas_thread():
            return self._step(P, G_p, M, S, residuals, lam_items, unrated)

    def _step(self, P, G_p, M, S, residuals, lam_items, unrated) -> np.ndarray:
        d = P.shape[1]
        n_free = d if self.c.item_bias else d - 1
        Pf = P[:, :n_free]
        G = G_p.astype(np.float64)
        Gf = G[:n_free, :n_free]
        eig, U = np.linalg.eigh(Gf)
        scale = self.curvature[:, None] * eig[None, :] + self.lam[:, None]
        scale[scale <= 0] = 1.0  # a feature no movie has: its gradient and direction stay 0

        def precondition(R):
            return ((R @ U) / scale) @ U.T

        def hessian_times(D):
            Y = _users_times(Pf, D.T.astype(F32))
            K = np.empty_like(Y)
            _hessian_weights(*self.pairs, Y, K)
            return _users_sum(K, Pf) + self.XtX @ D @ Gf + self.lam[:, None] * D

        # the negative gradient at E, sum_i x_if (b_i - A_i q_i) - lam_f e_f, from the item step's
        # residuals b_i - A_i q_i - lam_i m_i; a movie nobody rated has b_i = 0, A_i = G, m_i = 0
        item_gradient = residuals[:, :n_free] + lam_items[:, None] * M[:, :n_free]
        item_gradient[unrated] = -(S[unrated] @ G_p)[:, :n_free]
        R = _users_sum(self.X32, item_gradient) - self.lam[:, None] * self.E[:, :n_free]
        delta = np.zeros_like(R)
        Z = precondition(R)
        direction = Z
        rz = float(np.sum(R * Z))
        for _ in range(FEATURE_CG_STEPS):
            if rz <= 1e-30:
                break
            AD = hessian_times(direction)
            dad = float(np.sum(direction * AD))
            if dad <= 1e-30:
                break
            alpha = rz / dad
            delta += alpha * direction
            R -= alpha * AD
            Z = precondition(R)
            rz_new = float(np.sum(R * Z))
            direction = Z + (rz_new / rz) * direction
            rz = rz_new
        self.E[:, :n_free] += delta.astype(F32)
        return self.X32 @ self.E


def user_pairs(by_user, item_features, n_features):
    """(indptr int64, f, g, value float32) of every user's nonzero feature pairs (f <= g):
    about 37.5M pairs for 27.75M ml-latest ratings (6 bytes each), against 3 features a rating."""
    n_users = len(by_user[0]) - 1
    n_blocks = max(1, min(n_users, 64))
    index = np.uint8 if n_features <= 256 else np.int32
    indptr = np.zeros(n_users + 1, np.int64)
    none = np.empty(0, index)
    _user_pairs(
        *by_user, *item_features, n_features, n_blocks, indptr, none, none, np.empty(0, F32)
    )
    np.cumsum(indptr, out=indptr)
    f, g, v = np.empty(indptr[-1], index), np.empty(indptr[-1], index), np.empty(indptr[-1], F32)
    _user_pairs(*by_user, *item_features, n_features, n_blocks, indptr, f, g, v)
    return indptr, f, g, v


def _users_times(Pf: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Pf @ B (float32 [n_users, n_features]) in row blocks, one BLAS thread each."""
    out = np.empty((Pf.shape[0], B.shape[1]), F32)

    def block(a, b):
        np.matmul(Pf[a:b], B, out=out[a:b])

    each_block(block, Pf.shape[0])
    return out


def _users_sum(W: np.ndarray, Pf: np.ndarray) -> np.ndarray:
    """W^T Pf (float64 [n_features, n_free]): float32 products of row blocks summed in float64 in
    block order, so the same sum whatever the threads."""
    out = np.zeros((W.shape[1], Pf.shape[1]))
    for part in each_block(lambda a, b: W[a:b].T @ Pf[a:b], Pf.shape[0]):
        out += part
    return out


@njit(cache=True)
def row_sums(indptr, columns, values):
    """The sum of each CSR row's values (float64)."""
    out = np.zeros(len(indptr) - 1)
    for r in range(len(indptr) - 1):
        for t in range(indptr[r], indptr[r + 1]):
            out[r] += values[t]
    return out


@njit(parallel=True, cache=True)
def _user_pairs(
    u_indptr, u_items, u_weights, f_indptr, f_cols, f_x, n_f, n_blocks, indptr, f, g, v
):
    """Each user's feature pairs: Z_u[f, g] = sum_{i rated by u} w_ui x_if x_ig for f <= g, the
    nonzero ones, in the order the user's ratings first touch them. With an empty `f`: only
    count them, indptr[u + 1] = the user's number of pairs; else write them from indptr[u].
    A pair is the code f * n_f + g; `owner` marks the user a code was last reset for, so no
    reset pass is needed between users."""
    n_users = len(u_indptr) - 1
    fill = len(f) > 0
    for b in prange(n_blocks):
        Z = np.zeros(n_f * n_f, np.float32)
        owner = np.full(n_f * n_f, -1, np.int64)
        touched = np.empty(n_f * n_f, np.int64)
        for u in range(b * n_users // n_blocks, (b + 1) * n_users // n_blocks):
            n = 0
            for t in range(u_indptr[u], u_indptr[u + 1]):
                i, end = u_items[t], f_indptr[u_items[t] + 1]
                for a in range(f_indptr[i], end):
                    base, wa = f_cols[a] * n_f, u_weights[t] * f_x[a]
                    for c in range(a, end):  # each movie's features are in increasing order
                        code = base + f_cols[c]
                        if owner[code] != u:
                            owner[code], Z[code] = u, 0.0
                            touched[n] = code
                            n += 1
                        Z[code] += wa * f_x[c]
            if not fill:
                indptr[u + 1] = n
                continue
            for s in range(n):
                at, code = indptr[u] + s, touched[s]
                f[at], g[at], v[at] = code // n_f, code % n_f, Z[code]


@njit(parallel=True, fastmath=True, cache=True)
def _hessian_weights(indptr, f, g, v, Y, K):
    """K[u] = Z_u Y[u] (Y[u, g] = <p_u, d_g>): K[u, f] = sum_{i rated by u} w_ui x_if <p_u, D_i>,
    from the user's feature pairs (Z_u symmetric, its upper triangle stored)."""
    for u in prange(len(indptr) - 1):
        for c in range(K.shape[1]):
            K[u, c] = 0.0
        for s in range(indptr[u], indptr[u + 1]):
            a, b = f[s], g[s]
            K[u, a] += v[s] * Y[u, b]
            if a != b:
                K[u, b] += v[s] * Y[u, a]
