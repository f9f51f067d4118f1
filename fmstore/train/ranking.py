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
item vectors (with c_i = 0; A_u = alpha0 R^T R + sum_j w_uj r_j r_j^T + lam_u I). Rows are
independent within a half step: a seed gives the same vectors whatever the thread count. Factors
are float32 (Gramians summed in float64); the inner loops are fused per-row numba kernels
(ranking_kernels.py; the popular movies of the item step in groups, ranking_blocks.py), so memory
is the factor matrices, the ratings' two CSR copies, the groups' plan and each user's genre/year
pairs. The genre and year embeddings get a few steps of one preconditioned CG on all of them
together a sweep (ranking_features.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from fmstore.config import RankingConfig
from fmstore.serving import implicit_weight
from fmstore.train import ranking_blocks
from fmstore.train import ranking_kernels as kernels
from fmstore.train.ranking_features import FeatureStep

F32 = np.float32
ProgressFn = Callable[[str, int, int], None]  # (message, done, total)

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
    sweep_seconds: list[float] = field(default_factory=list)  # wall time of each sweep
    # CPU seconds (all threads) of each part of the fit, the sweeps' parts summed over sweeps:
    # setup, user, item, features, final user (the exact last user step)
    phase_cpu_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def item_rows(self) -> np.ndarray:
        """[r_i, c_i]: the served Dot vector of each movie."""
        return np.hstack([self.item_vectors, self.item_scalar[:, None]]).astype(np.float32)

    def scores(self, users: np.ndarray) -> np.ndarray:
        scores = self.user_vectors[users] @ self.item_vectors.T
        scores += self.item_scalar  # in place: a block of users x 53,889 movies is 220 MB
        return scores


def confidence(rating: np.ndarray, kind: str, alpha: float, liked: float = 4.0) -> np.ndarray:
    """Weight of a rated pair (serving.implicit_weight: the same rule folds in new users)."""
    return implicit_weight(rating, kind, alpha, liked)


def _csr(rows, cols, vals, n_rows):
    """(indptr int64, columns int32, values float32) of the triples, one row per `rows` value."""
    return kernels.csr(np.asarray(rows), np.asarray(cols), np.asarray(vals), n_rows)


def _normal(rng, shape, std) -> np.ndarray:
    """Float32 normal draws, made in float64 blocks: the same stream (and so the same start) as one
    float64 call, without its full-size float64 temporary."""
    out = np.empty(shape, F32)
    for a in range(0, shape[0], 1 << 14):
        out[a : a + (1 << 14)] = rng.normal(0, std, (min(1 << 14, shape[0] - a), shape[1]))
    return out


class _Start:
    """The factors a fit starts from: random (the seed's), or a previous model's where the shapes
    match (warm start: `init`)."""

    def __init__(self, n_users, n_items, n_features, config, seed, init, features):
        c, k = config, config.factors
        rng = np.random.default_rng(seed)
        self.P = np.ones((n_users, k + 1), F32)  # [r_u, 1]
        self.P[:, :k] = _normal(rng, (n_users, k), c.init_std / np.sqrt(k))
        self.M = _normal(rng, (n_items, k + 1), c.init_std / np.sqrt(k))
        self.M[:, k] = 0.0
        self.E = np.zeros((n_features, k + 1), F32)
        if init is None:
            return
        if init.item_vectors.shape == (n_items, k) and init.feature_vectors.shape == self.E.shape:
            self.E[:] = init.feature_vectors
            self.M[:] = init.item_rows - features.sum_of(self.E, n_items)
        if init.user_vectors.shape == (n_users, k):
            self.P[:, :k] = init.user_vectors


def _progress_line(sweep: int, total: int, seconds: list[float]) -> str:
    mean = sum(seconds) / len(seconds)
    return (
        f"ranking sweep {sweep}/{total} ({seconds[-1]:.1f} s, ETA {mean * (total - sweep):.0f} s)"
    )


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
    init: RankingModel | None = None,
    progress: ProgressFn | None = None,
    torch_device: str | None = None,
) -> RankingModel:
    """Fit on (user row, item row, rating) triples. item_features: (indptr, indices, weights),
    one CSR row per item over n_features columns (see features.ranking_item_features), or None.
    init: a previous model to start from (its movie and feature vectors when their shapes match
    these, its user vectors when theirs do), else the seed's random start. progress(message,
    done, total) hears after each sweep. torch_device: run the rows' CG half steps in torch on
    that device (ranking_torch: "cuda" when training on a GPU) instead of the numba kernels."""
    started = time.perf_counter()
    phases = _PhaseTimer()
    cg_rows = kernels.cg_rows
    if torch_device is not None:
        from fmstore.train.ranking_torch import TorchRows

        cg_rows = TorchRows(torch_device)
    c = config
    k, d = c.factors, c.factors + 1
    w = confidence(rating, c.confidence, c.conf_alpha, c.liked_at).astype(F32)
    by_user = _csr(user, item, w, n_users)
    by_item = _csr(item, user, w, n_items)
    del w
    n_u = np.diff(by_user[0]).astype(np.float64)
    n_i = np.diff(by_item[0]).astype(np.float64)
    lam_u = (c.reg * (n_u + c.alpha0 * n_items) ** c.nu).astype(F32)
    lam_i = (c.reg * (n_i + c.alpha0 * n_users) ** c.nu).astype(F32)
    unrated = n_i == 0
    n_free_item = d if c.item_bias else k
    features = FeatureStep(item_features, n_features, by_user, by_item, n_users, c)
    start = _Start(n_users, n_items, features.n, c, seed, init, features)
    P, M, features.E = start.P, start.M, start.E
    M[unrated] = 0.0  # a movie without ratings is its features alone
    S = features.sum_of(features.E, n_items)  # sum_f x_if e_f
    # the item step's final CG residuals: the feature step's gradient is their sum over movies
    residuals = np.empty_like(M) if features.n else None

    # the numba kernels' CG wants each half step's Gramian diagonal: the factors are kept turned
    basis = _Basis(k) if torch_device is None and not c.item_bias else None
    # the item step's long rows (popular movies) in groups that share their raters' vectors
    item_plan = ranking_blocks.plan_rows(by_item, n_users) if torch_device is None else None

    def user_step(steps: int) -> np.ndarray:
        Q = M + S
        G_q = kernels.gramian(Q, c.alpha0)
        turn = None
        if basis is not None:
            turn, _ = basis.turn(G_q, P, M, S, features.E)
            Q = M + S
        cg_rows(by_user, Q, G_q, lam_u, P, None, k, steps, **_given(basis=turn))
        return Q

    seconds: list[float] = []
    phases.lap("setup")
    for sweep in range(1, c.iterations + 1):
        began = time.perf_counter()
        user_step(c.cg_steps)
        phases.lap("user")
        G_p = G_turned = kernels.gramian(P, c.alpha0)
        turn = None
        if basis is not None:  # cg_rows takes G as it was, the feature step G as the factors are
            turn, G_turned = basis.turn(G_p, P, M, S, features.E)
        offset = S if features.n else None
        cg_rows(
            by_item,
            P,
            G_p,
            lam_i,
            M,
            offset,
            n_free_item,
            c.cg_steps,
            residuals,
            **_given(basis=turn, plan=item_plan),
        )
        M[unrated] = 0.0
        phases.lap("item")
        if features.n:
            S = features.step(P, G_turned, M, S, residuals, lam_i, unrated)
        phases.lap("features")
        seconds.append(time.perf_counter() - began)
        if progress:
            progress(_progress_line(sweep, c.iterations, seconds), sweep, c.iterations)
        phases.skip()  # the caller's time in progress() is no part of the fit
    Q = user_step(FINAL_USER_CG_STEPS)
    if basis is not None:
        basis.back(P, Q, features.E)
    phases.lap("final user")
    return RankingModel(
        user_vectors=np.ascontiguousarray(P[:, :k]),
        item_vectors=np.ascontiguousarray(Q[:, :k]),
        item_scalar=np.ascontiguousarray(Q[:, k]),
        feature_vectors=features.E,
        config=config,
        n_items_train=n_items,
        seconds=time.perf_counter() - started,
        sweep_seconds=seconds,
        phase_cpu_seconds=phases.seconds,
    )


class _Basis:
    """The factors' first k coordinates (P, M, S and E alike, so every <p_u, q_i> is unchanged)
    turned before each half step into the eigenbasis of its Gramian's free block, and left there:
    cg_rows needs that basis, and turning the factors once a half step rather than into it and
    back halves those [rows, k] x [k, k] products (P's four a sweep were ~1.2 CPU-s at 27.75M).
    Not on torch (its CG does not turn) nor with item_bias (the item step's free block then
    includes the users' fixed last coordinate)."""

    def __init__(self, k: int):
        self.k = k
        self.total = np.eye(k)  # the turns so far: original coordinates = turned @ total.T

    def turn(self, G: np.ndarray, *factors: np.ndarray):
        """Turn `factors` in place into G's eigenbasis: ((eig, U) for cg_rows(basis=), G there)."""
        eig, U = kernels.eigenbasis(G, self.k)
        U32 = U.astype(F32)
        for A in factors:
            kernels.rotate(A, U32)
        self.total = self.total @ U
        R = np.eye(len(G))
        R[: self.k, : self.k] = U
        return (eig, U), (R.T @ G.astype(np.float64) @ R).astype(F32)

    def back(self, *factors: np.ndarray) -> None:
        """Turn `factors` back into the original coordinates."""
        back = self.total.T.astype(F32)
        for A in factors:
            kernels.rotate(A, back)


def _given(**options) -> dict:
    """The options that are not None (TorchRows takes no basis nor plan)."""
    return {name: value for name, value in options.items() if value is not None}


class _PhaseTimer:
    """CPU seconds of this process (all threads) between laps, summed per phase name."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.process_time()

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def skip(self) -> None:
        self._last = time.process_time()


def fit_ratings(
    ratings,
    vocab,
    movies,
    config: RankingConfig,
    *,
    seed: int = 0,
    init: RankingModel | None = None,
    progress: ProgressFn | None = None,
    torch_device: str | None = None,
) -> RankingModel:
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
        init=init,
        progress=progress,
        torch_device=torch_device,
    )
