"""The Recommender's calls on the ranking model (see fmstore/train/ranking.py): someone new's
ranking query, and the rating model's stars for a list the ranking model chose.

A new user's ranking vector is, by default, the rating-weighted mean of the ranking vectors of the
movies they rated: it measured better than the ranking model's exact fold-in at 3, 5, 10 and 20
ratings (benchmarks/ranking.py, cold-start table: Recall@10 0.069 vs 0.059 at 3 ratings, 0.117
vs 0.109 at 20; NDCG@10 0.235 vs 0.167 and 0.320 vs 0.259).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from fmstore.serving import implicit_weight, weighted_user, whitened_fold_in

if TYPE_CHECKING:
    from fmstore.recommend.recommender import Recommender

DEFAULT_METHOD = "weighted"


class RankingMixin:
    """ranking_query, rating_scores, predicted_ratings (see the module)."""

    def ranking_query(
        self: Recommender, ratings: Mapping[int, float], method: str = DEFAULT_METHOD
    ) -> tuple[np.ndarray, str]:
        """Someone new's ranking query from {movie_id: rating}: (vector, named vector to search).

        weighted: the rating-weighted mean of their movies' r_i, as [r, 1] on `rank`;
        fold-in: the ranking model's user step (serving.whitened_fold_in) on the whitened `item`
        vectors. A run without a ranking model: the rating model's (p_u) as [p_u, 1] on `score`."""
        from fmstore.recommend.recommender import check_method

        check_method(method)
        ids, values = self._checked(ratings)
        if not self.ranking:
            p_u, _ = self.recalculate_user(ratings, method)
            return np.append(p_u, np.float32(1.0)), "score"
        if method == "weighted":
            rank = np.stack(list(self.movie_vectors(ids, "rank").values())).astype(np.float64)
            p, _ = weighted_user(rank[:, :-1], values)
            return np.append(p, np.float32(1.0)), "rank"
        whitened = np.stack(list(self.movie_vectors(ids, "item").values()))
        weights = implicit_weight(values, self.ranking["confidence"], self.ranking["conf_alpha"])
        return whitened_fold_in(whitened, weights), "item"

    def rating_scores(self: Recommender, p_u: np.ndarray, movie_ids: Sequence[int]) -> np.ndarray:
        """The rating model's b_i + <p_u, q_i> of movies (the `score` dot product), float64."""
        q, b = self.item_terms(movie_ids)
        return b + q @ np.asarray(p_u, np.float64)

    def predicted_ratings(
        self: Recommender, p_u: np.ndarray, b_u: float, movie_ids: Sequence[int]
    ) -> np.ndarray:
        """The rating model's predictions w0 + b_u + b_i + <p_u, q_i> (linked, clamped) for
        movies of the live run, whatever ranked them."""
        scores = self.rating_scores(p_u, movie_ids)
        return np.asarray(self.predict_rating(b_u, scores), dtype=np.float64).reshape(-1)
