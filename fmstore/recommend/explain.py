"""Why a movie is recommended: "because you liked X", each rated movie's exact share of the score
that ranked it.

A user's ranking vector is built from the movies they rated, so the served score of each
recommended movie splits into one term per rated movie (plus, for some constructions, a part no
rated movie explains: `baseline`), and the largest terms from movies the user liked are the
reasons. Exact for the way each vector is built, as in Hu, Koren and Volinsky (2008, section 5)
and implicit's `explain`:

- a known user of the ranking model (train/ranking.py): the stored r_u is the closed form of the
  model's user step (training runs its last user step to the exact solve),

      A_u r_u = sum_j w_uj (1 - c_j) r_j - alpha0 R^T c
      A_u = alpha0 R^T R + sum_j w_uj r_j r_j^T + lam_u I,   lam_u = reg (n_u + alpha0 n_items)^nu

  with w_uj the confidence (serving.implicit_weight: 1 + conf_alpha (rating >= 4) by default),
  R^T R over every movie of the run and c_i the movie scalars (0 unless trained with item_bias).
  So score_i = <r_u, r_i> + c_i = sum_j w_uj (1 - c_j) r_i^T A_u^-1 r_j + baseline_i, with
  baseline_i = c_i - alpha0 r_i^T A_u^-1 R^T c. The Gramian R^T R comes from the run folder
  (ranking.safetensors, where training saves it), like the user's ratings (seen.safetensors).
- someone new, weighted (the default): the query is [sum_j s_j r_j / sum_j s_j, 1] on `rank`,
  so the term of movie j is s_j <r_i, r_j> / sum_j s_j and baseline_i = c_i.
- someone new, fold-in: the query y = U^T (W^-1 + U U^T)^-1 1 on the whitened `item` vectors
  (serving.whitened_fold_in), so with a = (W^-1 + U U^T)^-1 1 the term of movie j is
  a_j <u_i, u_j>; no baseline.
- a run trained without a ranking model (--no-ranking) ranks by the rating model's score
  b_i + <p_u, q_i>: its terms are the rating fold-in's (q_i^T [A^-1 x_j]_k y_j, see
  fold_in_contributions) or the weighted mean's, its baseline b_i. A known user's published p_u
  is what training found, which fold-in of their training ratings reproduces closely (not
  exactly: cosine median 0.98 on ml-latest-small).

"Liked" is a rating of at least the user's own mean or 4 stars on a 0.5-5 scale (one below the
top), whichever is lower, and above the middle of the scale: a movie they disliked is never given
as the reason, even when it pushes a score up (its term still counts in the sum). One k-square
solve and an m x n product per call: microseconds for a new user, milliseconds for a known one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from fmstore.errors import DataError
from fmstore.recommend.filters import as_id, as_ids
from fmstore.serving import (
    implicit_weight,
    link_inverse,
    ranking_lambda,
)

if TYPE_CHECKING:
    from fmstore.recommend.recommender import Recommender

# (rated movie id, its term in the score), largest first.
Reasons = list[tuple[int, float]]


@dataclass
class Contributions:
    """Each rated movie's exact term in the served score of each asked movie:
    terms.sum(axis=1) + baseline == the score the recommendation was ranked by."""

    movie_ids: list[int]  # the asked movies: rows
    rated_ids: list[int]  # the user's rated movies: columns
    stars: np.ndarray  # float64 [n] their ratings
    terms: np.ndarray  # float64 [m, n]
    baseline: np.ndarray  # float64 [m]: the part of the score no rated movie explains
    vector: str  # the named vector whose score is decomposed: rank, item or score

    @property
    def scores(self) -> np.ndarray:
        """The decomposed scores: the sum of the terms plus the baseline."""
        return self.terms.sum(axis=1) + self.baseline


def liked(stars: np.ndarray, rating_range: Sequence[float]) -> np.ndarray:
    """Which ratings count as "liked" (see the module docstring)."""
    lo, hi = float(rating_range[0]), float(rating_range[1])
    stars = np.asarray(stars, np.float64)
    bar = min(float(stars.mean()), hi - 1.0)
    return (stars >= bar) & (stars > (lo + hi) / 2)


def ials_contributions(
    rec_rows: np.ndarray,
    rated_rows: np.ndarray,
    weights: np.ndarray,
    gramian: np.ndarray,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(terms [m, n], baseline [m]) of a ranking-model user's score <r_u, r_i> + c_i.

    rec_rows [m, k+1] and rated_rows [n, k+1]: [r_i, c_i] of the asked and the rated movies;
    weights [n]: the user's confidences; gramian: alpha0 Q^T Q over every movie's [r_i, c_i];
    lam: the user's L2 (serving.ranking_lambda with their number of ratings)."""
    rec, rated = np.asarray(rec_rows, np.float64), np.asarray(rated_rows, np.float64)
    w = np.asarray(weights, np.float64)
    k = rec.shape[1] - 1
    r, c = rated[:, :k], rated[:, k]
    a = gramian[:k, :k] + (r.T * w) @ r + lam * np.eye(k)
    solved = np.linalg.solve(a, np.hstack([r.T, gramian[:k, k:]]))  # [k, n + 1]
    terms = rec[:, :k] @ (solved[:, :-1] * (w * (1.0 - c)))
    return terms, rec[:, k] - rec[:, :k] @ solved[:, -1]


def whitened_contributions(
    u_rec: np.ndarray, u_rated: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """terms [m, n] of someone new's fold-in score <y, u_i> on the whitened vectors (see
    serving.whitened_fold_in): a_j <u_i, u_j> with a = (W^-1 + U U^T)^-1 1."""
    u = np.asarray(u_rated, np.float64)
    gram = u @ u.T + np.diag(1.0 / np.asarray(weights, np.float64))
    a = np.linalg.solve(gram, np.ones(len(u)))
    return (np.asarray(u_rec, np.float64) @ u.T) * a


def weighted_contributions(v_rec: np.ndarray, v_rated: np.ndarray, stars: np.ndarray) -> np.ndarray:
    """terms [m, n] of <p, v_i> for the rating-weighted mean p = sum_j s_j v_j / sum_j s_j."""
    s = np.asarray(stars, np.float64)
    total = s.sum() or 1.0
    return (np.asarray(v_rec, np.float64) @ np.asarray(v_rated, np.float64).T) * (s / total)


def fold_in_contributions(
    q_rec: np.ndarray,
    q: np.ndarray,
    b: np.ndarray,
    raw: np.ndarray,
    *,
    w0: float,
    weight_decay: float,
    prior: float = 0.0,
) -> np.ndarray:
    """terms [m, n] of <p_u, q_i> for the rating model's fold-in user of these ratings
    (serving.fold_in): p_u = [I_k 0] A^-1 X^T y with X = [q_j, 1], A = X^T X + (weight_decay n +
    prior) I, y_j = raw_j - w0 - b_j. q [n, k], b [n]: rated movies; raw: their ratings through
    the inverse link."""
    q = np.asarray(q, np.float64)
    n, k = q.shape
    x = np.hstack([q, np.ones((n, 1))])
    y = np.asarray(raw, np.float64) - w0 - np.asarray(b, np.float64)
    gram = x.T @ x + (weight_decay * n + prior) * np.eye(k + 1)
    per_rated = np.linalg.solve(gram, x.T) * y  # [k+1, n]: column j is movie j's share of theta
    return np.asarray(q_rec, np.float64) @ per_rated[:k]


def top_reasons(contributions: np.ndarray, liked_mask: np.ndarray, top: int = 3) -> list[Reasons]:
    """Per asked movie, up to `top` (column, term) of liked rated movies with a positive term,
    largest first."""
    masked = np.where(liked_mask[None, :], contributions, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :top]
    return [
        [(int(j), float(row[j])) for j in picks if row[j] > 0]
        for row, picks in zip(masked, order, strict=True)
    ]


class ExplainMixin:
    """explain and contributions (see the module)."""

    def explain(
        self: Recommender,
        user: int | Mapping[int | str, float],
        movie_ids: Sequence[int],
        method: str | None = None,
        top: int = 3,
    ) -> dict[int, Reasons]:
        """Why each movie is recommended: up to `top` (rated movie id, term) pairs of the movies
        the user liked, largest first; the terms are shares of the score that ranked the movie
        (see `contributions`). `user` is a known user id (their ratings are read from the run
        folder; no reasons and a note without it) or {movie: rating} of someone new, with the
        `method` their list was made with (recommend_for_ratings's default when None)."""
        found = self.contributions(user, movie_ids, method)
        if not found.rated_ids:
            return {i: [] for i in found.movie_ids}
        reasons = top_reasons(found.terms, liked(found.stars, self.rating_range), top)
        return {
            i: [(found.rated_ids[j], c) for j, c in r]
            for i, r in zip(found.movie_ids, reasons, strict=True)
        }

    def contributions(
        self: Recommender,
        user: int | Mapping[int | str, float],
        movie_ids: Sequence[int],
        method: str | None = None,
    ) -> Contributions:
        """Every rated movie's exact term in the served score of each movie (the ranking model's,
        or the rating model's for a run without one), for a known user or someone new as in
        `explain`: `.scores` equals what recommend / recommend_for_ratings return for them."""
        from fmstore.recommend.ranking import DEFAULT_METHOD
        from fmstore.recommend.recommender import check_method

        if isinstance(user, Mapping):
            ratings, method = self.ratings_by_id(user), check_method(method or DEFAULT_METHOD)
        else:
            ratings, method = self._training_ratings(user), None
        ids, rated = as_ids(movie_ids), list(ratings)
        stars = np.array(list(ratings.values()), np.float64)
        if not ratings or not ids:
            empty = np.zeros((len(ids), 0))
            return Contributions(ids, [], stars, empty, np.zeros(len(ids)), "none")
        if not self.ranking:
            return self._rating_contributions(ids, rated, stars, method or "fold-in")
        if method is None:
            return self._known_user_contributions(ids, rated, stars)
        if method == "fold-in":
            u = self.movie_vectors(ids + rated, "item")
            weights = self._confidences(stars)
            terms = whitened_contributions(_rows(u, ids), _rows(u, rated), weights)
            return Contributions(ids, rated, stars, terms, np.zeros(len(ids)), "item")
        rows = self.movie_vectors(ids + rated, "rank")
        rec, rated_rows = _rows(rows, ids), _rows(rows, rated)
        terms = weighted_contributions(rec[:, :-1], rated_rows[:, :-1], stars)
        return Contributions(ids, rated, stars, terms, rec[:, -1].copy(), "rank")

    def _known_user_contributions(
        self: Recommender, ids: list[int], rated: list[int], stars: np.ndarray
    ) -> Contributions:
        """A known user of the ranking model: the closed form of their stored r_u."""
        rows = self.movie_vectors(ids + rated, "rank")
        c = self.ranking
        lam = ranking_lambda(c["reg"], c["alpha0"], c["nu"], c["n_items"], len(rated))
        gramian = c["alpha0"] * self._ranking_gramian()
        weights = self._confidences(stars)
        terms, baseline = ials_contributions(
            _rows(rows, ids), _rows(rows, rated), weights, gramian, lam
        )
        return Contributions(ids, rated, stars, terms, baseline, "rank")

    def _confidences(self: Recommender, stars: np.ndarray) -> np.ndarray:
        return implicit_weight(stars, self.ranking["confidence"], self.ranking["conf_alpha"])

    def _rating_contributions(
        self: Recommender, ids: list[int], rated: list[int], stars: np.ndarray, method: str
    ) -> Contributions:
        """A run without a ranking model: the rating model's b_i + <p_u, q_i> (see the module)."""
        scores = self.movie_vectors(ids + rated, "score")
        rec, q_rated = _rows(scores, ids), _rows(scores, rated)
        if method == "weighted":
            terms = weighted_contributions(rec[:, :-1], q_rated[:, :-1], stars)
        else:
            _, b = self.item_terms(rated)
            raw = link_inverse(stars, self.link)
            terms = fold_in_contributions(
                rec[:, :-1],
                q_rated[:, :-1],
                b,
                raw,
                w0=self.w0,
                weight_decay=self.weight_decay,
                prior=self.prior_reg,
            )
        return Contributions(ids, rated, stars, terms, rec[:, -1].copy(), "score")

    def _ranking_gramian(self: Recommender) -> np.ndarray:
        """Q^T Q over every movie's [r_i, c_i], from the run folder's ranking.safetensors (saved
        there since explanations need it; computed from the movies' rows for older runs). Read
        once per Recommender."""
        if self._gramian is None:
            from safetensors import safe_open

            path = self.artifact_path / "ranking.safetensors"
            try:
                with safe_open(str(path), framework="numpy") as f:
                    if "gramian" in f.keys():
                        self._gramian = f.get_tensor("gramian").astype(np.float64)
                        return self._gramian
                    r = f.get_tensor("item_vectors").astype(np.float64)
                    c = f.get_tensor("item_scalar").astype(np.float64)
            except Exception as exc:  # SafetensorError (damaged, missing tensor), OSError
                raise DataError(f"{path}: unreadable ({exc}); the run folder is corrupt") from None
            q = np.hstack([r, c[:, None]])
            self._gramian = q.T @ q
        return self._gramian

    def _training_ratings(self: Recommender, user_id: int) -> dict[int, float]:
        """A known user's ratings that the published model was trained on, from the run folder;
        {} (and a note) without it."""
        from fmstore import artifact

        self.user_vector(user_id)  # NotFoundError for a user who is not published
        folder = self.artifact_path
        if folder is None or not (folder / "seen.safetensors").is_file():
            self.notes.append(
                f"the run folder {folder} is not on this machine: the reasons for user "
                f"{user_id}'s recommendations are read from it, so none are given"
            )
            return {}
        ids, stars = artifact.seen_movies(self.artifact_path, as_id(user_id))
        return dict(zip(ids.tolist(), stars.astype(np.float64).tolist(), strict=True))


def _rows(vectors: Mapping[int, np.ndarray], ids: Sequence[int]) -> np.ndarray:
    return np.stack([vectors[i] for i in ids]).astype(np.float64)
