"""Cold start: users and movies held out of training entirely.

A held-out user is folded in from their first n ratings by time (serving.fold_in, with the run's
w0 and regularisation) and scored on the rest; a held-out movie is scored from its genre and year
features alone. `run_cold_start` does the whole experiment: split, train on the rest, evaluate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

from fmstore.datasets import Dataset, Movies, Ratings
from fmstore.errors import ConfigError, DataError
from fmstore.evaluate.baselines import (
    BASELINE_REG_USER,
    BIASES,
    POPULARITY,
    BiasedMF,
    Popularity,
    Predictor,
    Reranked,
    baselines,
    fit_biases,
    fit_popularity,
)
from fmstore.evaluate.indexing import Rows, spans
from fmstore.evaluate.metrics import NDCG_K, HeldOut, mae, rmse
from fmstore.serving import (
    fold_in,
    link_inverse,
    rated_fold_in,
    rated_user,
    score,
    weighted_user,
)

COLD_SIZES = (5, 10, 20)
FOLD_IN = "fold-in"
WEIGHTED = "weighted"
RATED = "rated field"  # the FM's own side from the `rated` field (SVD++ in FM form)
RATED_FOLD_IN = "rated field + fold-in"


# ---- the split ----------------------------------------------------------------------------------


@dataclass
class ColdStartSplit:
    """Users and movies held out of training entirely.

    Ratings of a held-out user on a held-out movie are in none of the three sets, so the user
    evaluation has warm movies only and the movie evaluation warm users only."""

    train: Ratings  # warm users x warm movies
    cold_users: Ratings  # the held-out users' ratings of warm movies
    cold_movies: Ratings  # warm users' ratings of the held-out movies
    user_ids: np.ndarray  # held-out users, sorted
    movie_ids: np.ndarray  # held-out movies, sorted


def cold_start_split(
    ratings: Ratings, *, user_fraction: float = 0.1, movie_fraction: float = 0.1, seed: int = 0
) -> ColdStartSplit:
    """Hold out round(fraction * n) of the users and of the movies with ratings, at random
    (seeded)."""
    for name, f in (("user", user_fraction), ("movie", movie_fraction)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"cold-start {name} fraction {f} must be in [0, 1)")
    rng = np.random.default_rng([seed, 0xC01D])
    users, movies = np.unique(ratings.user_id), np.unique(ratings.movie_id)
    cold_u = np.sort(rng.permutation(users)[: int(round(len(users) * user_fraction))])
    cold_m = np.sort(rng.permutation(movies)[: int(round(len(movies) * movie_fraction))])
    is_u, is_m = np.isin(ratings.user_id, cold_u), np.isin(ratings.movie_id, cold_m)
    return ColdStartSplit(
        ratings.take(~is_u & ~is_m),
        ratings.take(is_u & ~is_m),
        ratings.take(~is_u & is_m),
        cold_u,
        cold_m,
    )


# ---- held-out users ----------------------------------------------------------------------------


@dataclass
class _Histories:
    """The held-out users' ratings, each user's in time order: user row r rated
    item[starts[r] : starts[r] + counts[r]]."""

    item: np.ndarray  # column in the movies
    rating: np.ndarray  # float64
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, cold: Ratings, rows: Rows, min_count: int) -> _Histories:
        """The users of `cold` with more than `min_count` ratings."""
        order = np.lexsort((cold.movie_id, cold.timestamp, cold.user_id))
        users = cold.user_id[order]
        _, starts, counts = np.unique(users, return_index=True, return_counts=True)
        eligible = counts > min_count
        return cls(
            rows.items(cold.movie_id[order]),
            cold.rating[order].astype(np.float64),
            starts[eligible],
            counts[eligible],
        )

    def first(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(user row, flat index) of each user's first n ratings."""
        return spans(self.starts, np.full(len(self.starts), n))

    def after(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(user row, flat index) of each user's ratings after the first n."""
        return spans(self.starts + n, self.counts - n)


def evaluate_cold_users(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    w0: float,
    weight_decay: float,
    *,
    prior: float = 0.0,
    movies: Movies,
    train: Ratings,
    cold: Ratings,
    sizes: Sequence[int] = COLD_SIZES,
    k: int = NDCG_K,
    blocked_movie_ids: np.ndarray | None = None,
    popularity_weight: float = 0.0,
    link: str = "identity",
    rating_range=(0.5, 5.0),
    rated: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict]:
    """For each n of `sizes`: build each held-out user from their first n ratings (by time) and
    score the rest. One row per (method, n) with RMSE, MAE, Recall@k, NDCG@k.

    Methods: fold-in (serving.fold_in: ridge for (p_u, b_u) against the fixed q_i, b_i), weighted
    (serving.weighted_user: the rating-weighted mean of q_i; ranked by b_i + <p, q_i>, and its
    RMSE uses w0 + b_i + <p, q_i>, a scale it was never calibrated to), popularity, and
    global-mean+biases (b_i fitted on `train`, b_u from the n ratings by the same ALS formula).
    With `rated` (the serving form's rated_vectors, rated_bias of a model trained with the `rated`
    field) also: rated field (serving.rated_user: the user's side computed by the model from the
    movies they rated) and rated field + fold-in (serving.rated_fold_in).
    The same users are used for every n: those with more than max(sizes) ratings.
    `blocked_movie_ids` (e.g. cold-start movies) are left out of every ranking."""
    rows = Rows(np.zeros(0, np.int64), movies.movie_id)
    trained = BiasedMF(  # the trained movies, with no user yet: _user_models adds them
        w0,
        np.zeros(0, np.float32),
        np.asarray(item_bias, np.float32),
        item_vectors=np.asarray(item_vectors, np.float32),
        link=link,
        rating_range=tuple(rating_range),
    )
    pop = fit_popularity(rows.items(train.movie_id), train.rating, rows.n_items)
    base = _item_biases(train, rows, rating_range)
    blocked = None
    if blocked_movie_ids is not None and len(blocked_movie_ids):
        blocked = np.zeros(rows.n_items, bool)
        blocked[rows.items(blocked_movie_ids)] = True
    history = _Histories.of(cold, rows, max(sizes))
    fold_target = link_inverse(history.rating, link)  # fold_in fits the raw score

    out = []
    for n in sizes:
        fitted = _user_models(trained, base, history, fold_target, n, weight_decay, prior)
        if rated is not None:
            fitted |= _rated_user_models(
                trained, history, fold_target, n, weight_decay, prior, rated
            )
        predictors = _cold_user_predictors(fitted, pop, popularity_weight)
        n_users = len(history.starts)
        ctx_u, ctx = history.first(n)
        test_u, test = history.after(n)
        held = HeldOut.build(
            (ctx_u, history.item[ctx]), test_u, history.item[test], history.rating[test], n_users
        )
        for name, predictor in predictors.items():
            metrics = held.metrics(
                predictor, rows.n_items, recall_ks=(k,), ndcg_k=k, blocked=blocked
            )
            out.append({"method": name, "n": n, "users": n_users} | metrics)
    return out


def _user_models(
    trained: BiasedMF,
    base: BiasedMF,
    history: _Histories,
    fold_target: np.ndarray,
    n: int,
    weight_decay: float,
    prior: float,
) -> dict[str, BiasedMF]:
    """The held-out users built from their first n ratings, one user row each: by fold-in, by the
    weighted average of q_i, and by the biases baseline's b_u formula on top of `base`."""
    q, b_i = trained.item_vectors, trained.item_bias
    n_users = len(history.starts)
    p_fold = np.zeros((n_users, q.shape[1]), np.float32)
    b_fold = np.zeros(n_users, np.float32)
    p_w = np.zeros((n_users, q.shape[1]), np.float32)
    b_base = np.zeros(n_users, np.float32)
    for row, start in enumerate(history.starts):
        ctx = slice(start, start + n)
        items, rated = history.item[ctx], history.rating[ctx]
        p_fold[row], b_fold[row] = fold_in(
            q[items],
            b_i[items],
            fold_target[ctx],
            w0=trained.w0,
            weight_decay=weight_decay,
            prior=prior,
        )
        p_w[row], _ = weighted_user(q[items], rated)
        residual = rated - score(base.item_bias[items], w0=base.w0)
        b_base[row] = np.sum(residual) / (BASELINE_REG_USER + n)
    link, scale = trained.link, trained.rating_range
    return {
        FOLD_IN: BiasedMF(trained.w0, b_fold, b_i, p_fold, q, link, scale),
        WEIGHTED: BiasedMF(trained.w0, np.zeros(n_users, np.float32), b_i, p_w, q, link, scale),
        BIASES: BiasedMF(base.w0, b_base, base.item_bias, rating_range=scale),
    }


def _rated_user_models(
    trained: BiasedMF,
    history: _Histories,
    fold_target: np.ndarray,
    n: int,
    weight_decay: float,
    prior: float,
    rated: tuple[np.ndarray, np.ndarray],
) -> dict[str, BiasedMF]:
    """The held-out users built by the model's `rated` field from their first n movies, alone
    and with a fold-in of the rest (see evaluate_cold_users)."""
    q, b_i = trained.item_vectors, trained.item_bias
    y, w = rated
    n_users = len(history.starts)
    users = {
        name: (np.zeros((n_users, q.shape[1]), np.float32), np.zeros(n_users, np.float32))
        for name in (RATED, RATED_FOLD_IN)
    }
    for row, start in enumerate(history.starts):
        ctx = slice(start, start + n)
        items = history.item[ctx]
        p, b = users[RATED]
        p[row], b[row] = rated_user(y[items], w[items])
        p, b = users[RATED_FOLD_IN]
        p[row], b[row] = rated_fold_in(
            q[items],
            b_i[items],
            fold_target[ctx],
            y[items],
            w[items],
            w0=trained.w0,
            weight_decay=weight_decay,
            prior=prior,
        )
    link, scale = trained.link, trained.rating_range
    return {name: BiasedMF(trained.w0, b, b_i, p, q, link, scale) for name, (p, b) in users.items()}


def _cold_user_predictors(
    fitted: dict[str, BiasedMF], pop: Popularity, popularity_weight: float
) -> dict[str, Predictor]:
    """The methods compared, in report order; with a popularity weight, also the ranking that
    publish serves: score + weight * log1p(n_ratings)."""
    predictors: dict[str, Predictor] = {
        FOLD_IN: fitted[FOLD_IN],
        WEIGHTED: fitted[WEIGHTED],
        POPULARITY: pop,
        BIASES: fitted[BIASES],
    }
    predictors |= {name: fitted[name] for name in (RATED, RATED_FOLD_IN) if name in fitted}
    if popularity_weight:
        for name in (FOLD_IN, WEIGHTED):
            reranked = Reranked(predictors[name], pop.counts, beta=popularity_weight)
            predictors[f"{name} + popularity prior"] = reranked
    return predictors


def _item_biases(train: Ratings, rows: Rows, rating_range) -> BiasedMF:
    """The global-mean+biases baseline's mu and b_i, fitted with the training users' rows."""
    user_rows = Rows(np.unique(train.user_id), rows.movie_ids)
    full = fit_biases(
        user_rows.users(train.user_id),
        user_rows.items(train.movie_id),
        train.rating,
        user_rows.n_users,
        rows.n_items,
        rating_range=rating_range,
    )
    return BiasedMF(full.w0, np.zeros(1, np.float32), full.item_bias, rating_range=rating_range)


# ---- held-out movies ----------------------------------------------------------------------------


def evaluate_cold_movies(
    model: BiasedMF,
    user_ids: np.ndarray,
    *,
    movies: Movies,
    train: Ratings,
    cold: Ratings,
) -> list[dict]:
    """RMSE/MAE on the ratings of movies nobody rated in training, for: the model (such a movie
    has no id feature, so its q_i, b_i come from genre and year alone); the model without any
    movie term (w0 + b_u); the global mean; and global-mean+biases (mu + b_u, its b_i being 0)."""
    rows = Rows(user_ids, movies.movie_id)
    u, i, r = rows.users(cold.user_id), rows.items(cold.movie_id), cold.rating.astype(np.float64)
    base = baselines(train, rows, model.rating_range)[BIASES]
    no_item = BiasedMF(
        model.w0,
        model.user_bias,
        np.zeros(rows.n_items, np.float32),
        link=model.link,
        rating_range=model.rating_range,
    )
    mu = float(np.mean(train.rating))
    candidates = {
        "model (genre + year)": model.predict(u, i),
        "model w0 + b_u (no movie features)": no_item.predict(u, i),
        "global mean": np.full(len(r), mu),
        BIASES + " (b_i = 0)": base.predict(u, i),
    }
    return [
        {"method": name, "ratings": len(r), "rmse": rmse(p, r), "mae": mae(p, r)}
        for name, p in candidates.items()
    ]


# ---- the whole experiment -----------------------------------------------------------------------


@dataclass
class ColdStartReport:
    """Cold-start results: per-protocol rows for new users and new movies, counts, the
    validation RMSE of the model trained without them, and its training time."""

    users: list[dict]
    movies: list[dict]
    n_cold_users: int
    n_cold_movies: int
    n_train: int
    valid_rmse: float  # of the model trained without the held-out users and movies
    train_seconds: float

    def to_json(self) -> dict:
        """The report as JSON: counts first, then the users and movies tables."""
        summary = asdict(self)
        tables = {"users": summary.pop("users"), "movies": summary.pop("movies")}
        return summary | tables  # the counts first, then the tables


def run_cold_start(
    dataset: Dataset,
    config,
    *,
    user_fraction: float = 0.1,
    movie_fraction: float = 0.1,
    seed: int = 0,
    sizes: Sequence[int] = COLD_SIZES,
    progress: Callable[[str, int, int], None] | None = None,
) -> ColdStartReport:
    """Hold out users and movies (`cold_start_split`), train `config` on the rest (train's own
    valid split of the rest drives early stopping), then `evaluate_cold_users` and
    `evaluate_cold_movies`."""
    from fmstore.train import train as run_training  # torch: only when this experiment runs

    split = cold_start_split(
        dataset.ratings, user_fraction=user_fraction, movie_fraction=movie_fraction, seed=seed
    )
    if len(split.train) == 0:
        raise DataError(
            "nothing left to train on after holding out the cold-start users and movies"
        )
    warm = Dataset(dataset.name, dataset.source, dataset.fingerprint, split.train, dataset.movies)
    result = run_training(warm, config, progress=progress)
    form = result.model.serving_form()
    rating_range = (config.rating_min, config.rating_max)
    users = evaluate_cold_users(
        form.item_vectors,
        form.item_bias,
        form.w0,
        config.weight_decay,
        prior=config.prior_reg,
        movies=dataset.movies,
        train=result.train_ratings,
        cold=split.cold_users,
        sizes=sizes,
        blocked_movie_ids=split.movie_ids,
        link=config.link,
        rating_range=rating_range,
        rated=None if form.rated_vectors is None else (form.rated_vectors, form.rated_bias),
    )
    model = BiasedMF.of_form(form, link=config.link, rating_range=rating_range)
    movies = evaluate_cold_movies(
        model,
        result.vocab.user_ids,
        movies=dataset.movies,
        train=result.train_ratings,
        cold=split.cold_movies,
    )
    return ColdStartReport(
        users,
        movies,
        len(split.user_ids),
        len(split.movie_ids),
        len(result.train_ratings),
        result.metrics["valid_rmse"],
        result.metrics["train_seconds"],
    )
