"""The ranking model's genre/year step (fmstore/train/ranking_features.py) against a dense solve
of the feature embeddings' normal equations, and its pieces against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from fmstore.config import RankingConfig
from fmstore.train import ranking_features
from fmstore.train import ranking_kernels as kernels

N_USERS, N_ITEMS, N_FEATURES, K = 40, 25, 6, 4


def _problem(seed, item_bias):
    rng = np.random.default_rng(seed)
    pairs = rng.random((N_USERS, N_ITEMS)) < 0.3
    pairs[0, :] = True  # a user who rated everything
    pairs[:, N_ITEMS - 1] = False  # and a movie nobody rated
    user, item = np.nonzero(pairs)
    order = rng.permutation(len(user))  # the CSRs keep the triples' order: not sorted
    user, item = user[order], item[order]
    w = rng.uniform(1.0, 3.0, len(user)).astype(np.float32)
    # every movie has 1-3 features (weights 1/n, as genres), the last feature none at all
    cols = [rng.choice(N_FEATURES - 1, rng.integers(1, 4), replace=False) for _ in range(N_ITEMS)]
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int64)
    x = np.concatenate([np.full(len(c), 1.0 / len(c)) for c in cols])
    config = RankingConfig(factors=K, item_bias=item_bias, reg=0.05, nu=0.5)
    by_user = kernels.csr(user, item, w, N_USERS)
    by_item = kernels.csr(item, user, w, N_ITEMS)
    step = ranking_features.FeatureStep(
        (indptr, np.concatenate(cols), x), N_FEATURES, by_user, by_item, N_USERS, config
    )
    P = rng.normal(size=(N_USERS, K + 1)).astype(np.float32)
    P[:, K] = 1.0
    M = rng.normal(size=(N_ITEMS, K + 1)).astype(np.float32)
    M[:, K] = rng.normal(size=N_ITEMS) if item_bias else 0.0
    M[N_ITEMS - 1] = 0.0  # the movie nobody rated is its features alone
    step.E[:] = 0.3 * rng.normal(size=step.E.shape)
    step.E[:, K] = step.E[:, K] if item_bias else 0.0
    step.E[N_FEATURES - 1] = 0.0  # no movie has it: nothing moves it
    return step, (user, item, w), P, M, config


LAM_ITEMS = np.linspace(0.5, 2.0, N_ITEMS).astype(np.float32)
UNRATED = np.arange(N_ITEMS) == N_ITEMS - 1


def _residuals(step, ratings, P, M, G, n_free):
    """What the item step leaves: b_i - A_i q_i - lam_i m_i for q = M + S (free coordinates)."""
    user, item, w = ratings
    P64, G = P.astype(np.float64), G.astype(np.float64)
    Q = M + step.X @ step.E.astype(np.float64)
    out = np.zeros(M.shape, np.float32)
    for i in range(N_ITEMS):
        raters, wi = user[item == i], w[item == i].astype(np.float64)
        full = (wi * (1.0 - P64[raters] @ Q[i])) @ P64[raters] - G @ Q[i] - LAM_ITEMS[i] * M[i]
        out[i, :n_free] = full[:n_free]
    return out


def _step(step, ratings, P, M, G, n_free):
    residuals = _residuals(step, ratings, P, M, G, n_free)
    S = step.sum_of(step.E, N_ITEMS)
    return step.step(P, G, M, S, residuals, LAM_ITEMS, UNRATED)


def _exact(step, ratings, P, M, G, n_free):
    """The minimiser over E[:, :n_free] of sum_(u,i) w (<p_u, q_i> - 1)^2 + sum_i q_i^T G q_i
    + sum_f lam_f |e_f|^2, q_i = m_i + sum_f x_if e_f, by one dense solve in vec(E)."""
    user, item, w = ratings
    X, P64, G = step.X, P.astype(np.float64), G.astype(np.float64)
    n = N_FEATURES * n_free
    H, b = np.zeros((n, n)), np.zeros(n)
    M_fixed = M.astype(np.float64).copy()
    M_fixed += X @ np.where(np.arange(K + 1) < n_free, 0.0, step.E.astype(np.float64))
    for i in range(N_ITEMS):  # item i's quadratic q^T A q - 2 c^T q, then the chain rule
        raters = user[item == i]
        wi = w[item == i].astype(np.float64)
        A = G + (P64[raters] * wi[:, None]).T @ P64[raters]
        c = wi @ P64[raters] - A @ M_fixed[i]
        J = np.kron(X[i][None, :], np.eye(K + 1)[:n_free].T)  # d(q_i)/d(vec E), (d, n)
        H += J.T @ A @ J
        b += J.T @ c
    H += np.diag(np.repeat(step.lam, n_free))
    H[np.diag(H) == 0, np.diag(H) == 0] = 1.0  # the feature no movie has: it stays at 0
    E = step.E.astype(np.float64).copy()
    E[:, :n_free] = np.linalg.solve(H, b).reshape(N_FEATURES, n_free)
    return E


@pytest.mark.parametrize("item_bias", [False, True])
def test_enough_steps_reach_the_dense_solve(item_bias, monkeypatch):
    step, ratings, P, M, config = _problem(0, item_bias)
    G = kernels.gramian(P, config.alpha0)
    n_free = K + 1 if item_bias else K
    expected = _exact(step, ratings, P, M, G, n_free)
    monkeypatch.setattr(ranking_features, "FEATURE_CG_STEPS", 60)
    S = _step(step, ratings, P, M, G, n_free)
    np.testing.assert_allclose(step.E, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(S, step.X @ expected, rtol=1e-4, atol=1e-5)
    assert not step.E[N_FEATURES - 1].any()  # the feature no movie has stays 0


def test_the_default_steps_go_most_of_the_way():
    """FEATURE_CG_STEPS steps from the current embeddings: most of the distance to the solve."""
    step, ratings, P, M, config = _problem(1, item_bias=False)
    G = kernels.gramian(P, config.alpha0)
    expected = _exact(step, ratings, P, M, G, K)
    before = np.linalg.norm(step.E - expected)
    _step(step, ratings, P, M, G, K)
    assert np.linalg.norm(step.E - expected) < 0.05 * before


def test_user_pairs_are_each_users_feature_weights():
    step, (user, item, w), *_ = _problem(2, item_bias=False)
    indptr, f, g, v = step.pairs
    for u in range(N_USERS):
        Z = np.zeros((N_FEATURES, N_FEATURES))
        for i, wi in zip(item[user == u], w[user == u]):
            Z += wi * np.outer(step.X[i], step.X[i])
        stored = np.zeros_like(Z)
        span = slice(indptr[u], indptr[u + 1])
        stored[f[span], g[span]] = v[span]
        assert (f[span] <= g[span]).all()
        np.testing.assert_allclose(np.triu(Z), stored, rtol=1e-5, atol=1e-7)
