"""What gets evaluated: the model in its serving form, the baselines it is compared with, and a
serving-time re-ranking, all behind one small `Predictor` protocol.

Baselines, fitted on the same training ratings
- popularity: rank by number of training ratings; rating = the movie's training mean (the global
  mean for a movie nobody rated).
- global-mean+biases: mu + b_u + b_i with regularised biases fitted by alternating least squares,
  as surprise's BaselineOnly (reg_i 10, reg_u 15, 10 sweeps); rank by b_i.

An RMSE-trained model ranks poorly on this protocol (its top movies are ones with one or two
5-star training ratings); `Reranked` measures serving-time fixes such as a popularity prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fmstore import serving
from fmstore.datasets import Ratings
from fmstore.evaluate.indexing import Rows

BASELINE_REG_ITEM = 10.0  # surprise BaselineOnly's ALS defaults
BASELINE_REG_USER = 15.0
BASELINE_SWEEPS = 10
_PAIRS_PER_BLOCK = 1 << 16

# The names predictors are reported under.
MODEL = "model"
SERVED = "served"  # the ranking publish serves (the ranking model), ratings from the rating model
POPULARITY = "popularity"
BIASES = "global-mean+biases"


class Predictor(Protocol):
    """What the metrics evaluate: predicted ratings for pairs and ranking scores per user."""

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
    def from_serving(
        cls,
        item_vectors,
        item_bias,
        user_vectors,
        user_bias,
        w0: float,
        *,
        link: str = "identity",
        rating_range=(0.5, 5.0),
    ) -> BiasedMF:
        """From a serving form (model.ServingForm or runs.ServingArtifact arrays): appends the
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

    @classmethod
    def of_form(cls, form, *, link: str = "identity", rating_range=(0.5, 5.0)) -> BiasedMF:
        """`from_serving` of a whole model.ServingForm or runs.ServingArtifact."""
        return cls.from_serving(
            form.item_vectors,
            form.item_bias,
            form.user_vectors,
            form.user_bias,
            form.w0,
            link=link,
            rating_range=rating_range,
        )

    def raw(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """w0 + b_u + b_i (+ <p_u, q_i>) of each (user row, item) pair, before the link."""
        has_vectors = self.user_vectors is not None
        out = np.empty(len(users))
        # blocks of pairs: gathering both sides' vectors of millions of held-out pairs at once
        # took gigabytes (ml-latest's 2.8M pairs: 2.7 GB at k = 120)
        for a in range(0, len(users), _PAIRS_PER_BLOCK):
            u, i = users[a : a + _PAIRS_PER_BLOCK], items[a : a + _PAIRS_PER_BLOCK]
            out[a : a + len(u)] = serving.score(
                self.item_bias[i],
                self.item_vectors[i] if has_vectors else None,
                self.user_vectors[u] if has_vectors else None,
                w0=self.w0,
                b_u=self.user_bias[u],
            )
        return out

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted rating of each (user row, item) pair: raw() through the link, clamped."""
        return serving.predict(self.raw(users, items), self.link, self.rating_range)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Ranking scores [len(users), n_items]: b_u + b_i (+ <p_u, q_i>), serving.score without
        w0 for every (user, item) pair (b_u does not change the order, but keeps the scores on
        the rating scale for reading)."""
        has_vectors = self.user_vectors is not None
        return serving.score(
            self.item_bias,
            self.item_vectors if has_vectors else None,
            self.user_vectors[users] if has_vectors else None,
            b_u=self.user_bias[users],
            every_pair=True,
        )


@dataclass
class Served:
    """What fmstore serves: ranked by the ranking model (<r_u, r_i> + c_i), predicted ratings
    from the rating model (`rating`). User rows as `rating`'s: the last row, an unknown user, has
    a zero ranking vector."""

    rating: BiasedMF
    user_vectors: np.ndarray  # [n_user_rows, k_r], the unknown user's zero row included
    item_vectors: np.ndarray  # [n_items, k_r]
    item_scalar: np.ndarray  # [n_items]

    @classmethod
    def of(cls, rating: BiasedMF, ranking) -> Served:
        """From a ranking model (train.ranking.RankingModel or runs.RankingArtifact)."""
        zero = np.zeros((1, ranking.user_vectors.shape[1]), np.float32)
        users = np.vstack([np.asarray(ranking.user_vectors, np.float32), zero])
        return cls(rating, users, ranking.item_vectors, ranking.item_scalar)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The rating model's predicted ratings (what is shown beside the list)."""
        return self.rating.predict(users, items)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """The ranking model's scores <r_u, r_i> + c_i (the served order)."""
        return serving.score(
            self.item_scalar, self.item_vectors, self.user_vectors[users], every_pair=True
        )


@dataclass
class Popularity:
    """Rank by number of training ratings; predict the movie's training mean."""

    counts: np.ndarray  # [n_items]
    item_mean: np.ndarray  # [n_items], the global mean where a movie has no training rating

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Each item's mean training rating (the global mean for an unrated item)."""
        return self.item_mean[items]

    def scores(self, users: np.ndarray) -> np.ndarray:
        """Each item's number of training ratings, the same for every user."""
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
        """The inner predictor's ratings, unchanged."""
        return self.inner.predict(users, items)

    def scores(self, users: np.ndarray) -> np.ndarray:
        """The inner scores plus beta * log1p(count); items below min_count never ranked."""
        s = np.array(self.inner.scores(users), dtype=np.float32)
        if self.beta:
            s += np.float32(self.beta) * np.log1p(self.counts).astype(np.float32)
        if self.min_count > 0:
            s[:, self.counts < self.min_count] = -np.inf
        return s


def fit_popularity(items: np.ndarray, ratings: np.ndarray, n_items: int) -> Popularity:
    """Rating counts and means per item from training pairs (unrated items: the global mean)."""
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


def baselines(train: Ratings, rows: Rows, rating_range=(0.5, 5.0)) -> dict[str, Predictor]:
    """The popularity and global-mean+biases baselines fitted on `train`, in `rows` space."""
    u, i = rows.users(train.user_id), rows.items(train.movie_id)
    return {
        POPULARITY: fit_popularity(i, train.rating, rows.n_items),
        BIASES: fit_biases(
            u, i, train.rating, rows.n_users + 1, rows.n_items, rating_range=rating_range
        ),
    }
