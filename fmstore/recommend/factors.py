"""The Recommender's calls that work on the stored vectors themselves, next to implicit's and
LightFM's: `predict`, `item_factors` / `user_factors`, `similar_users` and the batch form of
`recommend` (`explain` is explain.py's). A mixin, so recommender.py stays about rankings from the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from fmstore.errors import ConfigError, NotFoundError
from fmstore.recommend.filters import as_id, as_ids, is_one_id
from fmstore.serving import predict

if TYPE_CHECKING:
    from fmstore.recommend.recommender import Recommender

# Retrieve at most this many points per call: keeps one request to a server small.
_RETRIEVE_BATCH = 2048
# similar_users ranks every user by cosine up to this many users; beyond it, the candidates are
# the top users by dot product with the unit query (see similar_users).
_EXACT_SIMILAR_USERS = 20_000


class FactorsMixin:
    """predict, factors, similar users and batch recommend (see the module)."""

    # -- predictions -----------------------------------------------------------------------------

    def predict(self: Recommender, user_id: int, movie_ids: int | Sequence[int]) -> Any:
        """Predicted ratings of a known user for movies: link(w0 + b_u + b_i + <p_u, q_i>),
        clamped to the rating scale. One movie id: a float; a sequence: an array in that order."""
        p_u, b_u = self.user_vector(user_id)
        one = is_one_id(movie_ids)
        ids = [as_id(movie_ids, "movie id")] if one else as_ids(movie_ids)
        q, b = self.item_terms(ids)
        y = self.w0 + b_u + b + q @ p_u.astype(np.float64)
        ratings = np.asarray(predict(y, self.link, self.rating_range), np.float64)
        return float(ratings[0]) if one else ratings

    # -- factors ---------------------------------------------------------------------------------

    @property
    def item_ids(self: Recommender) -> np.ndarray:
        """Movie ids of the live publication, ascending: the row order of item_factors and
        item_biases."""
        return np.array(sorted(m for m, _, _ in self.titles().movies), dtype=np.int64)

    @property
    def item_factors(self: Recommender) -> np.ndarray:
        """q_i of every movie, float32 [n_movies, k], rows in item_ids order (ascending movie
        id). Read from the store on each access: keep the array rather than asking twice."""
        return self._item_arrays()[0].astype(np.float32)

    @property
    def item_biases(self: Recommender) -> np.ndarray:
        """b_i of every movie (the FM's, without the ranking prior), float64, in item_ids order."""
        return self._item_arrays()[1]

    @property
    def user_ids(self: Recommender) -> np.ndarray:
        """Published user ids (users with training ratings), ascending: the row order of
        user_factors. Read from the run folder; NotFoundError when it is not on this machine."""
        from safetensors import safe_open

        folder = self.artifact_path
        if folder is None or not (folder / "seen.safetensors").is_file():
            raise NotFoundError(
                f"the run folder {folder} is not on this machine: the list of users is read "
                "from it; ask for users by id (user_vector) instead"
            )
        with safe_open(str(folder / "seen.safetensors"), framework="numpy") as f:
            return np.asarray(f.get_tensor("user_ids"), dtype=np.int64)

    @property
    def user_factors(self: Recommender) -> np.ndarray:
        """p_u of every published user, float32 [n_users, k], rows in user_ids order."""
        ids = self.user_ids.tolist()
        rows = np.zeros((len(ids), self.factors), np.float32)
        for start in range(0, len(ids), _RETRIEVE_BATCH):
            chunk = ids[start : start + _RETRIEVE_BATCH]
            found = self.store.retrieve(self.users_collection, chunk, vectors=["score"])
            for offset, user in enumerate(chunk):
                if user in found:
                    rows[start + offset] = found[user][0]["score"][:-1]
        return rows

    def _item_arrays(self: Recommender) -> tuple[np.ndarray, np.ndarray]:
        ids = self.item_ids.tolist()
        parts = [
            self.item_terms(ids[s : s + _RETRIEVE_BATCH])
            for s in range(0, len(ids), _RETRIEVE_BATCH)
        ]
        if not parts:
            return np.zeros((0, self.factors)), np.zeros(0)
        return np.concatenate([q for q, _ in parts]), np.concatenate([b for _, b in parts])

    # -- users -----------------------------------------------------------------------------------

    def similar_users(
        self: Recommender, user_id: int, N: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """Users whose taste vector p_u points the same way as this user's: (ids, cosines), best
        first, the user excluded. Exact up to 20,000 published users; beyond that the candidates
        are the 50 N (at least 5,000) users with the largest dot product with the unit query,
        ranked by cosine (the store holds [p_u, 1] for dot products only)."""
        p_u, _ = self.user_vector(user_id)
        if isinstance(N, bool) or not is_one_id(N) or N < 1:
            raise ConfigError(f"N must be a whole number of at least 1, not {N!r}")
        norm = float(np.linalg.norm(p_u))
        if norm == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        total = self.store.count(self.users_collection)
        pool = total if total <= _EXACT_SIMILAR_USERS else max(50 * int(N), 5000)
        query = np.append(p_u / norm, np.float32(0.0))
        hits = self.store.search(self.users_collection, query, using="score", limit=pool)
        ids = [h.id for h in hits if h.id != as_id(user_id)]
        vectors = np.zeros((len(ids), self.factors), np.float64)
        for start in range(0, len(ids), _RETRIEVE_BATCH):
            chunk = ids[start : start + _RETRIEVE_BATCH]
            found = self.store.retrieve(self.users_collection, chunk, vectors=["score"])
            for offset, user in enumerate(chunk):
                vectors[start + offset] = found[user][0]["score"][:-1]
        norms = np.linalg.norm(vectors, axis=1)
        cosine = vectors @ (p_u / norm) / np.where(norms > 0, norms, 1.0)
        order = np.argsort(-cosine, kind="stable")[: int(N)]
        return np.array(ids, np.int64)[order], cosine[order].astype(np.float32)

    # -- batches ---------------------------------------------------------------------------------

    def _recommend_many(
        self: Recommender,
        user_ids: Sequence[int],
        N: int,
        filter_already_liked_items: bool,
        filter: Any,
        filter_items: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """recommend() of each user, as 2-D arrays padded with id -1 and score -inf."""
        users = as_ids(user_ids, "user id")
        ids = np.full((len(users), int(N) if is_one_id(N) else 0), -1, np.int64)
        scores = np.full(ids.shape, -np.inf, np.float32)
        notes: list[str] = []
        for row, user in enumerate(users):
            got_ids, got_scores = self.recommend(
                user, N, filter_already_liked_items, filter, filter_items
            )
            ids[row, : len(got_ids)], scores[row, : len(got_scores)] = got_ids, got_scores
            notes += [n for n in self.notes if n not in notes]
        self.notes = notes
        return ids, scores
