"""Why a movie is recommended: "because you liked X", each rated movie's exact share of the score
that ranked it. Plain functions over vectors; `Recommender.explain` and `contributions` gather the
stored vectors and call them.

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
  b_i + <p_u, q_i>: its terms are the rating fold-in's (q_i^T [A^-1 x_j]_k y_j) or the weighted
  mean's, its baseline b_i.

The new-user cases are not derived again here: each vector is built in fmstore.serving as a sum
of one part per rated movie (`weighted_parts`, `whitened_parts`, `fold_in_parts`), and a term is
the asked movie's dot product with a part (`terms`). Only the known user's closed form is written
out (`ials_contributions`), since their vector is built by training (torch), not by serving. A known user's published p_u
  is what training found, which fold-in of their training ratings reproduces closely (not
  exactly: cosine median 0.98 on ml-latest-small).

"Liked" is a rating of at least the user's own mean or 4 stars on a 0.5-5 scale (one below the
top), whichever is lower, and above the middle of the scale: a movie they disliked is never given
as the reason, even when it pushes a score up (its term still counts in the sum). One k-square
solve and an m x n product per call: microseconds for a new user, milliseconds for a known one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from fmstore.serving import fold_in_parts, weighted_parts, whitened_parts

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

    @classmethod
    def none(cls, movie_ids: list[int], stars: np.ndarray) -> Contributions:
        """No rated movies (or no asked ones): nothing to decompose."""
        n = len(movie_ids)
        return cls(movie_ids, [], stars, np.zeros((n, 0)), np.zeros(n), "none")

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


def terms(asked: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """terms [m, n] of <user, v_i> for a user vector that is the sum of `parts` [n, k] (one per
    rated movie): v_i^T part_j, for asked movies' vectors `asked` [m, k]."""
    return np.asarray(asked, np.float64) @ np.asarray(parts, np.float64).T


def weighted_contributions(v_rec: np.ndarray, v_rated: np.ndarray, stars: np.ndarray) -> np.ndarray:
    """terms [m, n] of <p, v_i> for the rating-weighted mean p (serving.weighted_user)."""
    return terms(v_rec, weighted_parts(v_rated, stars))


def whitened_contributions(
    u_rec: np.ndarray, u_rated: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """terms [m, n] of someone new's fold-in score <y, u_i> on the whitened vectors
    (serving.whitened_fold_in): a_j <u_i, u_j>."""
    return terms(u_rec, whitened_parts(u_rated, weights))


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
    (serving.fold_in). q [n, k], b [n]: rated movies; raw: their ratings through the inverse
    link."""
    parts = fold_in_parts(q, b, raw, w0=w0, weight_decay=weight_decay, prior=prior)
    return terms(q_rec, parts[:, :-1])  # the last coordinate is b_u: no share in <p_u, q_i>


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
    shares = rec[:, :k] @ (solved[:, :-1] * (w * (1.0 - c)))
    return shares, rec[:, k] - rec[:, :k] @ solved[:, -1]


def top_reasons(contributions: np.ndarray, liked_mask: np.ndarray, top: int = 3) -> list[Reasons]:
    """Per asked movie, up to `top` (column, term) of liked rated movies with a positive term,
    largest first."""
    masked = np.where(liked_mask[None, :], contributions, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")[:, :top]
    return [
        [(int(j), float(row[j])) for j in picks if row[j] > 0]
        for row, picks in zip(masked, order, strict=True)
    ]
