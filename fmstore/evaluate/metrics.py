"""The metrics: rating error of predicted ratings, and ranking quality of each user's top K.

- RMSE and MAE of the predicted rating on held-out ratings.
- Recall@K = |relevant in top K| / |relevant|; capped Recall@K = |relevant in top K| /
  min(K, |relevant|), as implicit's evaluation divides (its `precision_at_k`: a user with 30
  relevant movies can reach 1 at K = 10, where plain Recall@10 stops at 1/3); NDCG@K (binary
  gains, 1/log2(rank + 1), normalised by the ideal ordering of min(K, |relevant|) hits); each
  averaged over users. "Relevant" is a
  held-out rating >= 4 stars. Each user's ranking is over every movie they did not rate in
  training (movies without any training rating included: the model scores them from their
  features). Users with no relevant held-out movie are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fmstore.evaluate.baselines import Predictor
from fmstore.evaluate.indexing import CSR
from fmstore.evaluate.topk import top_hits, top_k  # noqa: F401 (top_k: the package's API)

RELEVANT_MIN = 4.0  # a held-out rating at or above this is a relevant item
RECALL_KS = (10, 20)
NDCG_K = 10
# Ranking every movie for every user costs users x movies x k: at ml-latest's 283k users and 53k
# movies that alone took 17+ minutes. A seeded sample of 20,000 users puts the standard error of
# a mean NDCG@10 near 0.002, below the differences the tables report.
MAX_RANKED_USERS = 20_000


# ---- rating error -------------------------------------------------------------------------------


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error (NaN for no pairs)."""
    err = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.sqrt(np.mean(err * err))) if len(err) else float("nan")


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error (NaN for no pairs)."""
    err = np.asarray(predicted, np.float64) - np.asarray(actual, np.float64)
    return float(np.mean(np.abs(err))) if len(err) else float("nan")


# ---- ranking ------------------------------------------------------------------------------------


def recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per user: relevant items in the top k / all relevant items.

    `hits[u, r]` says whether user u's item at rank r (0-based) is relevant; `n_relevant[u] > 0`.
    """
    hits = np.asarray(hits, bool)
    return hits[:, :k].sum(1) / np.asarray(n_relevant, np.float64)


def capped_recall_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per user: relevant items in the top k / min(k, all relevant items) (implicit's
    definition: 1 when the top k is as full of relevant items as it can be)."""
    hits = np.asarray(hits, bool)
    return hits[:, :k].sum(1) / np.minimum(np.asarray(n_relevant, np.float64), k)


def ndcg_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Per user: DCG of the top k (gain 1 per hit, discount 1/log2(rank + 1), rank from 1) over
    the DCG of the ideal top k, which holds min(k, n_relevant) hits."""
    hits = np.asarray(hits, bool)[:, :k]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hits @ discount[: hits.shape[1]]
    ideal = np.concatenate([[0.0], np.cumsum(discount)])
    return dcg / ideal[np.minimum(np.asarray(n_relevant), k)]


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
    """Mean Recall@k and capped Recall@k (each k of `recall_ks`) and NDCG@ndcg_k over `users` (rows of `exclude` and
    `relevant`, which are also the predictor's user rows) that have a relevant item.

    Each user ranks every item except their `exclude` items and the `blocked` items (a bool mask
    over items, e.g. movies held out of a cold-start evaluation)."""
    depth = max(max(recall_ks), ndcg_k)
    sums = {f"recall@{k}": 0.0 for k in recall_ks} | {f"ndcg@{ndcg_k}": 0.0}
    sums |= {f"capped_recall@{k}": 0.0 for k in recall_ks}
    n_ranked = 0
    for hits, n_rel in ranked_hits(predictor, exclude, relevant, users, depth, blocked, chunk):
        for k in recall_ks:
            sums[f"recall@{k}"] += float(recall_at_k(hits, n_rel, k).sum())
            sums[f"capped_recall@{k}"] += float(capped_recall_at_k(hits, n_rel, k).sum())
        sums[f"ndcg@{ndcg_k}"] += float(ndcg_at_k(hits, n_rel, ndcg_k).sum())
        n_ranked += len(n_rel)
    means = {name: (total / n_ranked if n_ranked else float("nan")) for name, total in sums.items()}
    return means | {"users_ranked": n_ranked}


def user_ndcg(
    predictor: Predictor, exclude: CSR, relevant: CSR, users: np.ndarray, k: int = NDCG_K
) -> np.ndarray:
    """NDCG@k of each of `users` that has a relevant item, in their order: what a search compares
    point by point (paired over the same users), where ranking_metrics gives the mean."""
    parts = [ndcg_at_k(h, n, k) for h, n in ranked_hits(predictor, exclude, relevant, users, k)]
    return np.concatenate(parts) if parts else np.zeros(0)


def ranked_hits(
    predictor: Predictor,
    exclude: CSR,
    relevant: CSR,
    users: np.ndarray,
    depth: int,
    blocked: np.ndarray | None = None,
    chunk: int = 1024,
):
    """For blocks of `users` with a relevant item: (hits of their top `depth` [users, depth],
    their number of relevant items). Each user ranks every item but their `exclude` items and
    the `blocked` ones."""
    for s in range(0, len(users), chunk):
        rows = np.asarray(users[s : s + chunk])
        hits, n_rel = top_hits(predictor.scores(rows), rows, exclude, relevant, depth, blocked)
        keep = n_rel > 0
        if keep.any():
            yield hits[keep], n_rel[keep]


# ---- both, on one held-out set ------------------------------------------------------------------


@dataclass
class HeldOut:
    """Held-out ratings in a user-row space, with what each user's ranking leaves out (their
    training items) and counts as a hit (their relevant held-out items)."""

    users: np.ndarray  # user row of each held-out rating
    items: np.ndarray
    ratings: np.ndarray  # float64
    exclude: CSR
    relevant: CSR
    ranked_users: np.ndarray  # the rows with a relevant item, the only ones ranked

    @classmethod
    def build(
        cls,
        seen: tuple[np.ndarray, np.ndarray],
        users: np.ndarray,
        items: np.ndarray,
        ratings: np.ndarray,
        n_rows: int,
        relevant_min: float = RELEVANT_MIN,
    ) -> HeldOut:
        """`seen`: (user row, item) of the training ratings; the rest is the held-out set."""
        good = ratings >= relevant_min
        return cls(
            users,
            items,
            ratings,
            CSR.build(seen[0], seen[1], n_rows),
            CSR.build(users[good], items[good], n_rows),
            np.unique(users[good]),
        )

    def metrics(
        self,
        predictor: Predictor,
        n_items: int,
        max_users: int | None = MAX_RANKED_USERS,
        **ranking,
    ) -> dict:
        """RMSE and MAE of the predictor's ratings (all of them), then `ranking_metrics`
        (`ranking`: its keyword arguments) over the ranked users, or a seeded sample of
        `max_users` of them when there are more (every predictor the same sample)."""
        predicted = predictor.predict(self.users, self.items)
        error = {"rmse": rmse(predicted, self.ratings), "mae": mae(predicted, self.ratings)}
        users = self.ranked_users
        if max_users is not None and len(users) > max_users:
            users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
        ranked = ranking_metrics(predictor, self.exclude, self.relevant, users, n_items, **ranking)
        return error | ranked | {"users_with_relevant": int(len(self.ranked_users))}
