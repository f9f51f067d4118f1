"""Offline evaluation: rating error, ranking quality and cold start, side by side with baselines.

Everything here works on the serving form (DESIGN.md), as NumPy arrays:

    rating = clamp(link(w0 + b_u + b_i + <p_u, q_i>))

Rows of a score matrix are users, in a fixed "user row" space: the training users in sorted id
order (the vocabulary's order), plus one last row for a user unseen at training, whose b_u and p_u
are zero (exactly what the model does with such a user). Columns are movies in movies.csv order.

Metrics
- RMSE and MAE of the predicted rating on held-out ratings.
- Recall@K = |relevant in top K| / |relevant| and NDCG@K (binary gains, 1/log2(rank + 1),
  normalised by the ideal ordering of min(K, |relevant|) hits), averaged over users. "Relevant" is a
  held-out rating >= 4 stars. Each user's ranking is over every movie they did not rate in
  training (movies without any training rating included: the model scores them from their
  features). Users with no relevant held-out movie are skipped.

Baselines, fitted on the same training ratings
- popularity: rank by number of training ratings; rating = the movie's training mean (the global
  mean for a movie nobody rated).
- global-mean+biases: mu + b_u + b_i with regularised biases fitted by alternating least squares,
  as surprise's BaselineOnly (reg_i 10, reg_u 15, 10 sweeps); rank by b_i.

An RMSE-trained model ranks poorly on this protocol (its top movies are ones with one or two
5-star training ratings); `Reranked` measures serving-time fixes such as a popularity prior.

Cold start (`cold_start_split`, `evaluate_cold_users`, `evaluate_cold_movies`, `run_cold_start`):
users and movies held out of training entirely. A held-out user is folded in from their first n
ratings by time (recommend.fold_in, with the run's w0 and regularisation) and scored on the rest;
a held-out movie is scored from its genre and year features alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from fmstore.config import POPULARITY_WEIGHT
from fmstore.datasets import Dataset, Movies, Ratings
from fmstore.errors import ConfigError, DataError
from fmstore.recommend import fold_in, weighted_user

RELEVANT_MIN = 4.0  # a held-out rating at or above this is a relevant item
RECALL_KS = (10, 20)
NDCG_K = 10
COLD_SIZES = (5, 10, 20)
BASELINE_REG_ITEM = 10.0  # surprise BaselineOnly's ALS defaults
BASELINE_REG_USER = 15.0
BASELINE_SWEEPS = 10
SIGMOID_SCALE = 5.5  # model.SIGMOID_SCALE (not imported: this module must not need torch)

MODEL = "model"
POPULARITY = "popularity"
BIASES = "global-mean+biases"


# ---- metric primitives -------------------------------------------------------------------------


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    err = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean(err * err))) if len(err) else float("nan")


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    err = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.mean(np.abs(err))) if len(err) else float("nan")


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per user: relevant items in the top k / all relevant items.

    `hits[u, r]` says whether user u's item at rank r (0-based) is relevant; `n_relevant[u] > 0`.
    """
    hits = np.asarray(hits, bool)
    return hits[:, :k].sum(1) / np.asarray(n_relevant, np.float64)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per user: DCG of the top k (gain 1 per hit, discount 1/log2(rank + 1), rank from 1) over
    the DCG of the ideal top k, which holds min(k, n_relevant) hits."""
    hits = np.asarray(hits, bool)[:, :k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount[: hits.shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    return dcg / ideal[np.minimum(np.asarray(n_relevant), k)]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, best first."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


# ---- predictors --------------------------------------------------------------------------------


class Predictor(Protocol):
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted rating of each (user row, item) pair."""

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Ranking scores [len(users), n_items]: higher is better; only the order matters."""


@dataclass
class BiasedMF:
    """rating = clamp(link(w0 + b_u + b_i + <p_u, q_i>)); vectors may be absent (biases only)."""

    w0: float
    user_bias: np.ndarray  # [n_user_rows]
    item_bias: np.ndarray  # [n_items]
    user_vectors: np.ndarray | None = None  # [n_user_rows, k]
    item_vectors: np.ndarray | None = None  # [n_items, k]
    link: str = "identity"
    rating_range: tuple[float, float] = (0.5, 5.0)

    @classmethod
    def from_serving(cls, item_vectors, item_bias, user_vectors, user_bias, w0: float, *,
                     link: str = "identity", rating_range=(0.5, 5.0)) -> "BiasedMF":
        """From a serving form (model.ServingForm or artifact.ServingArtifact arrays): appends the
        zero row that stands for a user unseen at training."""
        k = np.asarray(item_vectors).shape[1]
        return cls(
            float(w0),
            np.append(np.asarray(user_bias, np.float32), np.float32(0)),
            np.asarray(item_bias, np.float32),
            np.vstack([np.asarray(user_vectors, np.float32), np.zeros((1, k), np.float32)]),
            np.asarray(item_vectors, np.float32),
            link,
            tuple(rating_range),
        )

    def raw(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        y = self.w0 + self.user_bias[users].astype(np.float64) + self.item_bias[items]
        if self.user_vectors is not None:
            y = y + np.einsum("ij,ij->i", self.user_vectors[users], self.item_vectors[items])
        return y

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        y = self.raw(users, items)
        if self.link == "sigmoid":
            y = SIGMOID_SCALE / (1.0 + np.exp(-y))
        return np.clip(y, *self.rating_range)

    def scores(self, users: np.ndarray) -> np.ndarray:
        s = self.user_bias[users][:, None] + self.item_bias[None, :]  # b_u does not change the order,
        if self.user_vectors is not None:  # but keeps scores on the rating scale for reading
            s = s + self.user_vectors[users] @ self.item_vectors.T
        return s


@dataclass
class Popularity:
    """Rank by number of training ratings; predict the movie's training mean."""

    counts: np.ndarray  # [n_items]
    item_mean: np.ndarray  # [n_items], the global mean where a movie has no training rating

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.item_mean[items]

    def scores(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts.astype(np.float32), (len(users), len(self.counts)))


@dataclass
class Reranked:
    """A serving-time re-ranking of `inner`, for diagnostics: score + beta * log1p(n_i), and
    movies with fewer than `min_count` training ratings dropped. Rating predictions unchanged."""

    inner: Predictor
    counts: np.ndarray  # [n_items] training ratings per movie
    beta: float = 0.0
    min_count: int = 0

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.inner.predict(users, items)

    def scores(self, users: np.ndarray) -> np.ndarray:
        s = np.array(self.inner.scores(users), dtype=np.float32)
        if self.beta:
            s += np.float32(self.beta) * np.log1p(self.counts).astype(np.float32)
        if self.min_count > 0:
            s[:, self.counts < self.min_count] = -np.inf
        return s


def fit_popularity(items: np.ndarray, ratings: np.ndarray, n_items: int) -> Popularity:
    counts = np.bincount(items, minlength=n_items)
    sums = np.bincount(items, weights=np.asarray(ratings, np.float64), minlength=n_items)
    mu = float(np.mean(ratings)) if len(ratings) else 0.0
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), mu)
    return Popularity(counts, mean)


def fit_biases(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_items: int,
    *,
    reg_user: float = BASELINE_REG_USER,
    reg_item: float = BASELINE_REG_ITEM,
    sweeps: int = BASELINE_SWEEPS,
    rating_range: tuple[float, float] = (0.5, 5.0),
) -> BiasedMF:
    """mu + b_u + b_i by alternating least squares (surprise's BaselineOnly, method "als"):

        b_i = sum_{u in R(i)} (r_ui - mu - b_u) / (reg_item + |R(i)|), then the same for b_u.

    `n_users` rows are fitted; users and items without ratings keep a zero bias."""
    r = np.asarray(ratings, np.float64)
    mu = float(r.mean()) if len(r) else 0.0
    n_u = np.bincount(users, minlength=n_users)
    n_i = np.bincount(items, minlength=n_items)
    b_u, b_i = np.zeros(n_users), np.zeros(n_items)
    for _ in range(sweeps):
        b_i = np.bincount(items, weights=r - mu - b_u[users], minlength=n_items) / (reg_item + n_i)
        b_u = np.bincount(users, weights=r - mu - b_i[items], minlength=n_users) / (reg_user + n_u)
    return BiasedMF(mu, b_u.astype(np.float32), b_i.astype(np.float32), rating_range=rating_range)


# ---- indexing ----------------------------------------------------------------------------------


@dataclass
class Rows:
    """A user-row space and the movies' columns: raw ids -> row/column indices."""

    user_ids: np.ndarray  # sorted; row len(user_ids) is "unknown user"
    movie_ids: np.ndarray  # movies.csv order
    _movie_order: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.user_ids = np.asarray(self.user_ids, np.int64)
        self._movie_order = np.argsort(self.movie_ids, kind="stable")

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.movie_ids)

    def users(self, raw: np.ndarray) -> np.ndarray:
        """User row of each raw id; unknown ids map to the last row (n_users)."""
        found = _lookup(self.user_ids, raw)
        return np.where(found >= 0, found, self.n_users)

    def items(self, raw: np.ndarray) -> np.ndarray:
        found = _lookup(self.movie_ids[self._movie_order], raw)
        if (found < 0).any():
            bad = np.asarray(raw)[found < 0][0]
            raise DataError(f"movie {bad} is not in the dataset's movies.csv; the ratings do not "
                            "belong to this dataset")
        return self._movie_order[found]


def _lookup(sorted_ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    raw = np.asarray(raw, np.int64)
    if len(sorted_ids) == 0:
        return np.full(len(raw), -1, np.int64)
    pos = np.searchsorted(sorted_ids, raw).clip(0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == raw, pos, -1)


@dataclass
class CSR:
    """Items of each user row (compressed sparse rows, no values)."""

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def build(cls, users: np.ndarray, items: np.ndarray, n_rows: int) -> "CSR":
        order = np.argsort(users, kind="stable")
        counts = np.bincount(users, minlength=n_rows)
        return cls(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   np.asarray(items, np.int64)[order])

    def block(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(local row, item) of every entry of `rows` (local row = position in `rows`)."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        counts = ends - starts
        local = np.repeat(np.arange(len(rows)), counts)
        offsets = np.cumsum(counts) - counts
        flat = np.repeat(starts - offsets, counts) + np.arange(counts.sum())
        return local, self.items[flat]


# ---- evaluation of predictors on held-out ratings ---------------------------------------------


def ranking_metrics(
    predictor: Predictor,
    exclude: CSR,
    relevant: CSR,
    users: np.ndarray,
    n_items: int,
    *,
    recall_ks: Sequence[int] = RECALL_KS,
    ndcg_k: int = NDCG_K,
    blocked: np.ndarray | None = None,
    chunk: int = 1024,
) -> dict:
    """Mean Recall@k (each k of `recall_ks`) and NDCG@ndcg_k over `users` (rows of `exclude` and
    `relevant`, which are also the predictor's user rows) that have a relevant item.

    Each user ranks every item except their `exclude` items and the `blocked` items (a bool mask
    over items, e.g. movies held out of a cold-start evaluation)."""
    depth = max(max(recall_ks), ndcg_k)
    sums = {f"recall@{k}": 0.0 for k in recall_ks} | {f"ndcg@{ndcg_k}": 0.0}
    n_ranked = 0
    for s in range(0, len(users), chunk):
        rows = np.asarray(users[s : s + chunk])
        scores = np.array(predictor.scores(rows), dtype=np.float32)  # a writable copy
        rel = np.zeros(scores.shape, bool)
        rel[relevant.block(rows)] = True
        seen = exclude.block(rows)
        scores[seen] = -np.inf
        rel[seen] = False
        if blocked is not None:
            scores[:, blocked] = -np.inf
            rel[:, blocked] = False
        n_rel = rel.sum(1)
        keep = n_rel > 0
        if not keep.any():
            continue
        top = top_k(scores[keep], depth)
        hits = np.take_along_axis(rel[keep], top, 1)
        for k in recall_ks:
            sums[f"recall@{k}"] += float(recall_at_k(hits, n_rel[keep], k).sum())
        sums[f"ndcg@{ndcg_k}"] += float(ndcg_at_k(hits, n_rel[keep], ndcg_k).sum())
        n_ranked += int(keep.sum())
    means = {name: (total / n_ranked if n_ranked else float("nan")) for name, total in sums.items()}
    return means | {"users_ranked": n_ranked}


def evaluate_predictors(
    predictors: dict[str, Predictor],
    train: Ratings,
    test: Ratings,
    rows: Rows,
    *,
    relevant_min: float = RELEVANT_MIN,
    recall_ks: Sequence[int] = RECALL_KS,
    ndcg_k: int = NDCG_K,
) -> dict[str, dict]:
    """RMSE, MAE, Recall@k and NDCG@k of each predictor on `test`; the ranking excludes each
    user's `train` movies. Predictors index users by `rows` (unknown users: the last row)."""
    tr_u, tr_i = rows.users(train.user_id), rows.items(train.movie_id)
    te_u, te_i = rows.users(test.user_id), rows.items(test.movie_id)
    te_r = test.rating.astype(np.float64)
    n_rows = rows.n_users + 1
    exclude = CSR.build(tr_u, tr_i, n_rows)
    good = te_r >= relevant_min
    relevant = CSR.build(te_u[good], te_i[good], n_rows)
    users = np.unique(te_u[good])
    report = {}
    for name, predictor in predictors.items():
        predicted = predictor.predict(te_u, te_i)
        report[name] = {"rmse": rmse(predicted, te_r), "mae": mae(predicted, te_r)} | ranking_metrics(
            predictor, exclude, relevant, users, rows.n_items, recall_ks=recall_ks, ndcg_k=ndcg_k
        )
    return report


def baselines(train: Ratings, rows: Rows, rating_range=(0.5, 5.0)) -> dict[str, Predictor]:
    """The popularity and global-mean+biases baselines fitted on `train`, in `rows` space."""
    u, i = rows.users(train.user_id), rows.items(train.movie_id)
    return {
        POPULARITY: fit_popularity(i, train.rating, rows.n_items),
        BIASES: fit_biases(u, i, train.rating, rows.n_users + 1, rows.n_items, rating_range=rating_range),
    }


@dataclass
class Report:
    """Metrics of the model and the baselines on one held-out set."""

    rows: dict[str, dict]  # name -> {rmse, mae, recall@10, recall@20, ndcg@10, users_ranked}
    n_train: int
    n_test: int
    test_source: str  # "valid split (seed S, fraction F)" or a file name
    run_id: str | None = None

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "test": self.test_source,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "relevant_min": RELEVANT_MIN,
            "metrics": self.rows,
        }


def evaluate_serving(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    user_ids: np.ndarray,
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    w0: float,
    *,
    movies: Movies,
    train: Ratings,
    test: Ratings,
    link: str = "identity",
    rating_range=(0.5, 5.0),
    test_source: str = "test",
    run_id: str | None = None,
) -> Report:
    """The model (from its serving form) and both baselines, evaluated on `test`."""
    rows = Rows(user_ids, movies.movie_id)
    model = BiasedMF.from_serving(item_vectors, item_bias, user_vectors, user_bias, w0,
                                  link=link, rating_range=rating_range)
    predictors = {MODEL: model} | baselines(train, rows, rating_range)
    metrics = evaluate_predictors(predictors, train, test, rows)
    return Report(metrics, len(train), len(test), test_source, run_id)


def evaluate_result(result, dataset: Dataset, config, test: Ratings | None = None) -> Report:
    """Evaluate a train.TrainResult on its validation ratings (or on `test`)."""
    form = result.model.serving_form()
    source = "test ratings" if test is not None else _split_label(config.seed, config.valid_fraction)
    return evaluate_serving(
        form.item_vectors, form.item_bias, result.vocab.user_ids, form.user_vectors, form.user_bias,
        form.w0, movies=dataset.movies, train=result.train_ratings,
        test=test if test is not None else result.valid_ratings, link=config.link,
        rating_range=(config.rating_min, config.rating_max), test_source=source,
    )


def evaluate_run(
    run_dir: Path,
    *,
    dataset: Dataset | None = None,
    test_ratings: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Evaluate a saved run: on its own held-out ratings (the seeded split of training, recomputed
    from the manifest) or on a ratings file. The dataset is read from the manifest's source unless
    given; its fingerprint must match the one the run was trained on."""
    from fmstore import artifact, datasets
    from fmstore.train import split_indices

    manifest = artifact.load_manifest(run_dir)
    config = manifest["config"]
    if dataset is None:
        source = manifest["dataset"]["source"]
        if not Path(source).exists():
            raise DataError(f"run {manifest['run_id']} was trained on {source}, which is no longer "
                            "there; pass the dataset with --data PATH")
        dataset = datasets.load_dataset(source, cache_dir=cache_dir)
    if dataset.fingerprint != manifest["dataset"]["fingerprint"]:
        raise DataError(f"{dataset.source} is not the dataset run {manifest['run_id']} was trained on "
                        "(its fingerprint differs); pass the original with --data PATH")
    serving = artifact.load_serving(run_dir, manifest)
    if not np.array_equal(serving.movie_ids, dataset.movies.movie_id):
        raise DataError(f"run {manifest['run_id']}: its movies differ from {dataset.source}'s movies.csv; "
                        "the run folder does not belong to this dataset")

    train_idx, valid_idx = split_indices(len(dataset.ratings), config["valid_fraction"], config["seed"])
    train = dataset.ratings.take(train_idx)
    if not np.array_equal(np.unique(train.user_id), serving.user_ids):
        raise DataError(f"run {manifest['run_id']}: the recomputed training split does not match the "
                        "run's users; the run was not trained by this fmstore's split")
    if test_ratings is not None:
        test = datasets.load_ratings_file(test_ratings, dataset.movies)
        source = str(test_ratings)
    else:
        if len(valid_idx) == 0:
            raise ConfigError(f"run {manifest['run_id']} was trained with --valid-fraction 0, so it "
                              "has no held-out ratings; pass --test-ratings FILE")
        test = dataset.ratings.take(valid_idx)
        source = _split_label(config["seed"], config["valid_fraction"])
    return evaluate_serving(
        serving.item_vectors, serving.item_bias, serving.user_ids, serving.user_vectors,
        serving.user_bias, serving.w0, movies=dataset.movies, train=train, test=test,
        link=serving.link, rating_range=serving.rating_range, test_source=source,
        run_id=manifest["run_id"],
    )


def _split_label(seed: int, valid_fraction: float) -> str:
    return f"valid split (seed {seed}, fraction {valid_fraction:g})"


# ---- cold start --------------------------------------------------------------------------------


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


def cold_start_split(ratings: Ratings, *, user_fraction: float = 0.1, movie_fraction: float = 0.1,
                     seed: int = 0) -> ColdStartSplit:
    """Hold out round(fraction * n) of the users and of the movies with ratings, at random (seeded)."""
    for name, f in (("user", user_fraction), ("movie", movie_fraction)):
        if not 0.0 <= f < 1.0:
            raise ConfigError(f"cold-start {name} fraction {f} must be in [0, 1)")
    rng = np.random.default_rng([seed, 0xC01D])
    users, movies = np.unique(ratings.user_id), np.unique(ratings.movie_id)
    cold_u = np.sort(rng.permutation(users)[: int(round(len(users) * user_fraction))])
    cold_m = np.sort(rng.permutation(movies)[: int(round(len(movies) * movie_fraction))])
    is_u, is_m = np.isin(ratings.user_id, cold_u), np.isin(ratings.movie_id, cold_m)
    return ColdStartSplit(
        ratings.take(~is_u & ~is_m), ratings.take(is_u & ~is_m), ratings.take(~is_u & is_m), cold_u, cold_m
    )


FOLD_IN = "fold-in"
WEIGHTED = "weighted"


def evaluate_cold_users(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    w0: float,
    reg: float,
    *,
    prior: float = 0.0,
    movies: Movies,
    train: Ratings,
    cold: Ratings,
    sizes: Sequence[int] = COLD_SIZES,
    k: int = NDCG_K,
    blocked_movie_ids: np.ndarray | None = None,
    popularity_weight: float = POPULARITY_WEIGHT,
    link: str = "identity",
    rating_range=(0.5, 5.0),
) -> list[dict]:
    """For each n of `sizes`: build each held-out user from their first n ratings (by time) and
    score the rest. One row per (method, n) with RMSE, MAE, Recall@k, NDCG@k.

    Methods: fold-in (recommend.fold_in: ridge for (p_u, b_u) against the fixed q_i, b_i), weighted
    (recommend.weighted_user: the rating-weighted mean of q_i; ranked by b_i + <p, q_i>, and its
    RMSE uses w0 + b_i + <p, q_i>, a scale it was never calibrated to), popularity, and
    global-mean+biases (b_i fitted on `train`, b_u from the n ratings by the same ALS formula).
    The same users are used for every n: those with more than max(sizes) ratings. `blocked_movie_ids`
    (e.g. cold-start movies) are left out of every ranking."""
    rows = Rows(np.zeros(0, np.int64), movies.movie_id)
    q = np.asarray(item_vectors, np.float32)
    b_i = np.asarray(item_bias, np.float32)
    tr_i = rows.items(train.movie_id)
    pop = fit_popularity(tr_i, train.rating, rows.n_items)
    base = _item_biases(train, rows, rating_range)
    blocked = None
    if blocked_movie_ids is not None and len(blocked_movie_ids):
        blocked = np.zeros(rows.n_items, bool)
        blocked[rows.items(blocked_movie_ids)] = True

    order = np.lexsort((cold.movie_id, cold.timestamp, cold.user_id))
    c_user, c_item = cold.user_id[order], rows.items(cold.movie_id[order])
    c_rating = cold.rating[order].astype(np.float64)
    ids, starts, counts = np.unique(c_user, return_index=True, return_counts=True)
    eligible = counts > max(sizes)
    ids, starts, counts = ids[eligible], starts[eligible], counts[eligible]
    fold_target = _inverse_link(c_rating, link)  # fold_in fits the raw score

    out = []
    for n in sizes:
        n_users = len(ids)
        p_fold = np.zeros((n_users, q.shape[1]), np.float32)
        b_fold = np.zeros(n_users, np.float32)
        p_w = np.zeros((n_users, q.shape[1]), np.float32)
        b_base = np.zeros(n_users, np.float32)
        ctx_u, ctx_i, te_u, te_i, te_r = [], [], [], [], []
        for row, (start, count) in enumerate(zip(starts, counts)):
            ctx = slice(start, start + n)
            rest = slice(start + n, start + count)
            items = c_item[ctx]
            p_fold[row], b_fold[row] = fold_in(q[items], b_i[items], fold_target[ctx], w0=w0, reg=reg, prior=prior)
            p_w[row], _ = weighted_user(q[items], c_rating[ctx])
            b_base[row] = np.sum(c_rating[ctx] - base.w0 - base.item_bias[items]) / (BASELINE_REG_USER + n)
            ctx_u.append(np.full(n, row)), ctx_i.append(items)
            te_u.append(np.full(count - n, row)), te_i.append(c_item[rest]), te_r.append(c_rating[rest])
        ctx_u, ctx_i = np.concatenate(ctx_u or [[]]).astype(np.int64), np.concatenate(ctx_i or [[]]).astype(np.int64)
        te_u, te_i = np.concatenate(te_u or [[]]).astype(np.int64), np.concatenate(te_i or [[]]).astype(np.int64)
        te_r = np.concatenate(te_r or [[]])
        predictors: dict[str, Predictor] = {
            FOLD_IN: BiasedMF(w0, b_fold, b_i, p_fold, q, link, tuple(rating_range)),
            WEIGHTED: BiasedMF(w0, np.zeros(n_users, np.float32), b_i, p_w, q, link, tuple(rating_range)),
            POPULARITY: pop,
            BIASES: BiasedMF(base.w0, b_base, base.item_bias, rating_range=tuple(rating_range)),
        }
        if popularity_weight:  # the ranking that publish serves: + weight * log1p(n_ratings)
            for name in (FOLD_IN, WEIGHTED):
                predictors[f"{name} + popularity prior"] = Reranked(predictors[name], pop.counts, beta=popularity_weight)
        exclude = CSR.build(ctx_u, ctx_i, n_users)
        good = te_r >= RELEVANT_MIN
        relevant = CSR.build(te_u[good], te_i[good], n_users)
        rank_users = np.unique(te_u[good])
        for name, predictor in predictors.items():
            predicted = predictor.predict(te_u, te_i)
            ranking = ranking_metrics(predictor, exclude, relevant, rank_users, rows.n_items,
                                      recall_ks=(k,), ndcg_k=k, blocked=blocked)
            out.append({"method": name, "n": n, "users": n_users, "rmse": rmse(predicted, te_r),
                        "mae": mae(predicted, te_r)} | ranking)
    return out


def _item_biases(train: Ratings, rows: Rows, rating_range) -> BiasedMF:
    """The global-mean+biases baseline's mu and b_i, fitted with the training users' rows."""
    user_rows = Rows(np.unique(train.user_id), rows.movie_ids)
    full = fit_biases(user_rows.users(train.user_id), user_rows.items(train.movie_id), train.rating,
                      user_rows.n_users, rows.n_items, rating_range=rating_range)
    return BiasedMF(full.w0, np.zeros(1, np.float32), full.item_bias, rating_range=rating_range)


def _inverse_link(ratings: np.ndarray, link: str) -> np.ndarray:
    if link == "sigmoid":
        x = np.clip(ratings / SIGMOID_SCALE, 1e-4, 1 - 1e-4)
        return np.log(x / (1 - x))
    return ratings


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
    no_item = BiasedMF(model.w0, model.user_bias, np.zeros(rows.n_items, np.float32),
                       link=model.link, rating_range=model.rating_range)
    mu = float(np.mean(train.rating))
    candidates = {
        "model (genre + year)": model.predict(u, i),
        "model w0 + b_u (no movie features)": no_item.predict(u, i),
        "global mean": np.full(len(r), mu),
        BIASES + " (b_i = 0)": base.predict(u, i),
    }
    return [{"method": name, "ratings": len(r), "rmse": rmse(p, r), "mae": mae(p, r)}
            for name, p in candidates.items()]


@dataclass
class ColdStartReport:
    users: list[dict]
    movies: list[dict]
    n_cold_users: int
    n_cold_movies: int
    n_train: int
    valid_rmse: float  # of the model trained without the held-out users and movies
    train_seconds: float

    def to_json(self) -> dict:
        return {
            "n_cold_users": self.n_cold_users,
            "n_cold_movies": self.n_cold_movies,
            "n_train": self.n_train,
            "valid_rmse": self.valid_rmse,
            "train_seconds": self.train_seconds,
            "users": self.users,
            "movies": self.movies,
        }


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
    from fmstore.train import train as run_training

    split = cold_start_split(dataset.ratings, user_fraction=user_fraction,
                             movie_fraction=movie_fraction, seed=seed)
    if len(split.train) == 0:
        raise DataError("nothing left to train on after holding out the cold-start users and movies")
    warm = Dataset(dataset.name, dataset.source, dataset.fingerprint, split.train, dataset.movies)
    result = run_training(warm, config, progress=progress)
    form = result.model.serving_form()
    rating_range = (config.rating_min, config.rating_max)
    users = evaluate_cold_users(
        form.item_vectors, form.item_bias, form.w0, config.weight_decay, prior=config.prior_reg, movies=dataset.movies,
        train=result.train_ratings, cold=split.cold_users, sizes=sizes,
        blocked_movie_ids=split.movie_ids, link=config.link, rating_range=rating_range,
    )
    model = BiasedMF.from_serving(form.item_vectors, form.item_bias, form.user_vectors, form.user_bias,
                                  form.w0, link=config.link, rating_range=rating_range)
    movies = evaluate_cold_movies(model, result.vocab.user_ids, movies=dataset.movies,
                                  train=result.train_ratings, cold=split.cold_movies)
    return ColdStartReport(users, movies, len(split.user_ids), len(split.movie_ids),
                           len(result.train_ratings), result.metrics["valid_rmse"],
                           result.metrics["train_seconds"])
