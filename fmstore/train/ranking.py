"""The ranking model: implicit alternating least squares (iALS) in FM form, fitted beside the
rating FM so that what fmstore serves for "what next" is learnt from which movies people rate at
all, not only from how much they liked them.

Model (Rendle et al. 2022, "Revisiting the performance of iALS on item recommendation
benchmarks"; FM form after Bayer, He, Rendle et al., WWW 2017):

    score(u, i) = <r_u, r_i> + c_i          served as a Dot vector [r_i, c_i] queried with [r_u, 1]

    loss = sum_{(u,i) rated} w_ui (score - 1)^2          w_ui = 1 + conf_alpha * (rating >= 4)
         + alpha0 * sum_{every (u,i)} score^2             every pair a weak negative (Gramian trick)
         + sum_u lam_u |r_u|^2 + sum_i lam_i |m_i|^2 + sum_f lam_f |e_f|^2
    lam_u = reg * (n_u + alpha0 * n_items)^nu,  lam_i = reg * (n_i + alpha0 * n_users)^nu

The item row is the movie-id embedding plus its features' (genres at 1/n_genres, the year
bucket: the FM's own item features), [r_i, c_i] = m_i + sum_f x_if e_f, so a movie nobody rated
is served from its genres and year. Each side carries k + 1 columns internally: user rows are
[r_u, 1] (the last coordinate fixed), item rows [r_i, c_i] (c_i fixed at 0 unless item_bias).

Alternating solves are a few conjugate-gradient steps warm-started from the previous sweep, as
implicit's ALS does; after the last item step the users get one more step, run to the exact
solve, so the stored user vectors are the closed form r_u = A_u^-1 sum_j w_uj r_j of the final
item vectors (with c_i = 0; A_u = alpha0 R^T R + sum_j w_uj r_j r_j^T + lam_u I). Rows are independent within a half step: a seed gives the
same vectors whatever the thread count. The inner loops are numba kernels with NumPy fallbacks
(ranking_kernels.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from fmstore.config import RankingConfig
from fmstore.serving import implicit_weight
from fmstore.train import ranking_kernels

# The last user step runs CG to the exact solve, so a user's vector is exactly the closed form
# that "because you liked" decomposes (fmstore/recommend/explain.py): with 16 steps the served
# top-10 scores of 200 ml-latest-small users are within 6e-7 relative of it (float32 storage),
# where 8 steps left up to 1.1e-4 against a direct solve (benchmarks/explain.py prints the first
# figure). Eight more user steps: about a second a fit.
FINAL_USER_CG_STEPS = 16


@dataclass
class RankingModel:
    """A fitted ranking model. Serve movie i as [item_vectors[i], item_scalar[i]] and user u as
    [user_vectors[u], 1]; the score is their dot product."""

    user_vectors: np.ndarray  # float32 [n_users, k]
    item_vectors: np.ndarray  # float32 [n_items, k]
    item_scalar: np.ndarray  # float32 [n_items]
    feature_vectors: np.ndarray  # float32 [n_features, k + 1] (last column: the scalar part)
    config: RankingConfig
    n_items_train: int  # the n_items the regularisation was scaled with
    seconds: float = 0.0

    @property
    def item_rows(self) -> np.ndarray:
        """[r_i, c_i]: the served Dot vector of each movie."""
        return np.hstack([self.item_vectors, self.item_scalar[:, None]]).astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        return self.user_vectors[users] @ self.item_vectors.T + self.item_scalar


def confidence(rating: np.ndarray, kind: str, alpha: float) -> np.ndarray:
    """Weight of a rated pair (serving.implicit_weight: the same rule folds in new users)."""
    return implicit_weight(rating, kind, alpha)


def _csr(rows, cols, vals, n_rows):
    order = np.lexsort((cols, rows))
    indptr = np.zeros(n_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return indptr, np.asarray(cols, np.int64)[order], np.asarray(vals, np.float64)[order]


class _Solver:
    """Batched conjugate gradient, one independent system per row, warm-started in place:

        min_x  sum_{j in row r} w_rj (<x + o_r, v_j> - 1)^2 + (x + o_r)^T G (x + o_r) + lam_r |x|^2

    over the first n_free coordinates of x (the others stay fixed); o_r an optional offset."""

    def __init__(self, sparse_apply):
        self.sparse_apply = sparse_apply

    def __call__(self, csr, V, G, lam, X, offset, n_free, steps) -> None:
        indptr, indices, weights = csr
        fixed = np.zeros(X.shape[1], bool)
        fixed[n_free:] = True
        Z = X + offset if offset is not None else X
        R = np.empty_like(X)
        self.sparse_apply(indptr, indices, weights, V, Z, 1.0, R)
        R -= Z @ G + lam[:, None] * X
        R[:, fixed] = 0.0
        D = R.copy()
        rs = np.einsum("ij,ij->i", R, R)
        S = np.empty_like(X)
        for _ in range(steps):
            self.sparse_apply(indptr, indices, weights, V, D, 0.0, S)
            AD = D @ G + lam[:, None] * D - S
            AD[:, fixed] = 0.0
            dAd = np.einsum("ij,ij->i", D, AD)
            alpha = np.divide(rs, dAd, out=np.zeros_like(rs), where=dAd > 1e-30)
            X += alpha[:, None] * D
            R -= alpha[:, None] * AD
            rs_new = np.einsum("ij,ij->i", R, R)
            beta = np.divide(rs_new, rs, out=np.zeros_like(rs), where=rs > 1e-30)
            D = R + beta[:, None] * D
            rs = rs_new


def fit_ranking(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    n_users: int,
    n_items: int,
    item_features: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    n_features: int,
    config: RankingConfig,
    *,
    seed: int = 0,
    use_numba: bool | None = None,
) -> RankingModel:
    """Fit on (user row, item row, rating) triples. item_features: (indptr, indices, weights),
    one CSR row per item over n_features columns (see features.ranking_item_features), or None.
    use_numba: None = numba when installed; False forces the NumPy kernels."""
    started = time.perf_counter()
    sparse_apply, feature_step = ranking_kernels.kernels(use_numba)
    solve = _Solver(sparse_apply)
    c = config
    user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
    w = confidence(rating, c.confidence, c.conf_alpha)
    k, d = c.factors, c.factors + 1
    rng = np.random.default_rng(seed)
    P = np.hstack([rng.normal(0, c.init_std / np.sqrt(k), (n_users, k)), np.ones((n_users, 1))])
    M = rng.normal(0, c.init_std / np.sqrt(k), (n_items, d))
    M[:, k] = 0.0
    by_user = _csr(user, item, w, n_users)
    by_item = _csr(item, user, w, n_items)
    n_u = np.diff(by_user[0]).astype(np.float64)
    n_i = np.diff(by_item[0]).astype(np.float64)
    lam_u = c.reg * (n_u + c.alpha0 * n_items) ** c.nu
    lam_i = c.reg * (n_i + c.alpha0 * n_users) ** c.nu
    unrated = n_i == 0
    M[unrated] = 0.0  # a movie without ratings is its features alone
    n_free_item = d if c.item_bias else k
    features = _Features(item_features, n_features, user, item, w, n_i, n_users, n_items, c)

    S = np.zeros((n_items, d))  # sum_f x_if e_f
    for _ in range(c.iterations):
        Q = M + S
        solve(by_user, Q, c.alpha0 * (Q.T @ Q), lam_u, P, None, k, c.cg_steps)
        G_p = c.alpha0 * (P.T @ P)
        solve(by_item, P, G_p, lam_i, M, S if features.n else None, n_free_item, c.cg_steps)
        M[unrated] = 0.0
        if features.n:
            S = features.step(feature_step, P, G_p, M, S, by_item)
    Q = M + S
    solve(by_user, Q, c.alpha0 * (Q.T @ Q), lam_u, P, None, k, FINAL_USER_CG_STEPS)
    return RankingModel(
        user_vectors=P[:, :k].astype(np.float32),
        item_vectors=Q[:, :k].astype(np.float32),
        item_scalar=Q[:, k].astype(np.float32),
        feature_vectors=features.E.astype(np.float32),
        config=config,
        n_items_train=n_items,
        seconds=time.perf_counter() - started,
    )


class _Features:
    """The item features' embeddings E and what their exact per-feature step needs."""

    def __init__(self, item_features, n_features, user, item, w, n_i, n_users, n_items, c):
        self.c = c
        d = c.factors + 1
        self.n = 0 if item_features is None else int(n_features)
        self.E = np.zeros((self.n, d))
        if not self.n:
            return
        indptr, cols, x = item_features
        rows = np.repeat(np.arange(n_items), np.diff(indptr))
        cols, x = np.asarray(cols, np.int64), np.asarray(x, np.float64)
        self.by_feature = _csr(cols, rows, x, self.n)
        x2 = np.zeros((n_items, self.n))
        np.add.at(x2, (rows, cols), x**2)
        # Z[u, f] = sum_{i rated by u} w_ui x_if^2: the data part of e_f's Hessian
        self.Z = np.zeros((n_users, self.n))
        np.add.at(self.Z, user, w[:, None] * x2[item])
        occurrence = np.zeros(self.n)
        np.add.at(occurrence, cols, x**2 * (n_i[rows] + c.alpha0 * n_users))
        self.lam = c.reg * occurrence**c.nu

    def step(self, feature_step, P, G_p, M, S, by_item) -> np.ndarray:
        """One Gauss-Seidel pass over the features; returns the new sum_f x_if e_f."""
        n_free = self.c.factors + 1 if self.c.item_bias else self.c.factors
        Q = M + S
        H = np.stack([(P * self.Z[:, f, None]).T @ P for f in range(self.n)])
        f_ptr, f_items, f_x = self.by_feature
        r_ptr, r_users, r_w = by_item
        GQ = Q @ G_p
        feature_step(
            f_ptr, f_items, f_x, r_ptr, r_users, r_w, P, G_p, H, self.lam, self.E, Q, GQ, n_free
        )
        return Q - M


def fit_ratings(ratings, vocab, movies, config: RankingConfig, *, seed: int = 0, use_numba=None):
    """The ranking model of `ratings` (a datasets.Ratings): users in `vocab.user_ids` order, movies
    in `movies` order (the FM's serving order), the FM's genre and year features."""
    from fmstore.features import encode, ranking_item_features

    enc = encode(ratings, vocab, movies)
    features, n_features = ranking_item_features(vocab, movies)
    return fit_ranking(
        enc.user,
        enc.item,
        enc.rating,
        len(vocab.user_ids),
        len(movies),
        features if config.features else None,
        n_features,
        config,
        seed=seed,
        use_numba=use_numba,
    )
