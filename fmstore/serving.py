"""The serving math, in NumPy only: the one copy that training, evaluation, publishing and the
query layer share.

A trained FM serves as biased matrix factorisation, rating(u, i) = link(w0 + b_u + b_i + <p_u, q_i>)
clamped to the rating scale (DESIGN.md). This module holds that link and its inverse, the two ways
of building a user vector from a handful of ratings (fold-in and the notebook's weighted average),
the rule that names physical collections, and the year suffix of a MovieLens title. It imports
nothing of ours and nothing heavier than NumPy, so the query path can use it without torch.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

SIGMOID_SCALE = 5.5  # the original notebook's output link: sigmoid(y) * 5.5
LINKS = ("identity", "sigmoid")
# How far inside (0, 1) a rating is kept before the logit: 5.0 stars / 5.5 = 0.909, so the clip
# only touches ratings outside the scale, and it keeps log() finite for 0 and 5.5.
_LOGIT_CLIP = 1e-3


# ---- the link -----------------------------------------------------------------------------------


def apply_link(y: np.ndarray | float, link: str) -> np.ndarray | float:
    """Raw FM score -> rating before clamping: identity, or the notebook's sigmoid(y) * 5.5."""
    if link == "sigmoid":
        return SIGMOID_SCALE / (1.0 + np.exp(-np.asarray(y, np.float64)))
    return y


def predict(y: np.ndarray | float, link: str, rating_range: Sequence[float]) -> np.ndarray | float:
    """Raw FM score y = w0 + b_u + b_i + <p_u, q_i> -> rating: the link, then the rating scale."""
    return np.clip(apply_link(y, link), rating_range[0], rating_range[1])


def link_inverse(ratings: np.ndarray, link: str) -> np.ndarray:
    """Ratings -> the raw scores that would produce them (identity: the ratings themselves)."""
    r = np.asarray(ratings, np.float64)
    if link != "sigmoid":
        return r
    p = np.clip(r / SIGMOID_SCALE, _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    return np.log(p / (1 - p))


# ---- user vectors from a few ratings ------------------------------------------------------------


def fold_in(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    ratings: np.ndarray,
    *,
    w0: float,
    weight_decay: float,
    prior: float = 0.0,
) -> tuple[np.ndarray, float]:
    """A user's (p_u, b_u) from their ratings of movies with fixed (q_i, b_i): ridge regression.

    Minimises sum_i (r_i - w0 - b_i - b_u - <p_u, q_i>)^2 + (weight_decay * n + prior) *
    (|p_u|^2 + b_u^2), which is the training objective restricted to this user (training penalises
    a user's weights `weight_decay` once per rating plus `prior` (TrainConfig.prior_reg) once per
    epoch), so for a known user it recovers their published vector up to how far training
    converged. Like implicit's `recalculate_user`. `ratings` are raw scores (see link_inverse).
    """
    q = np.asarray(item_vectors, dtype=np.float64)
    n, k = q.shape
    if n == 0:
        return np.zeros(k, np.float32), 0.0
    x = np.hstack([q, np.ones((n, 1))])  # [q_i, 1]: the last coordinate carries b_u
    target = np.asarray(ratings, np.float64) - w0 - np.asarray(item_bias, np.float64)
    gram = x.T @ x + (weight_decay * n + prior) * np.eye(k + 1)
    theta = np.linalg.solve(gram, x.T @ target)
    return theta[:k].astype(np.float32), float(theta[k])


def rated_user(rated_vectors: np.ndarray, rated_bias: np.ndarray) -> tuple[np.ndarray, float]:
    """The FM's own side (z, b_z) of someone whose `rated` field holds these movies (their y_j,
    w_j; the model's SVD++ part): z = x sum_j y_j and b_z = x sum_j w_j + 1/2 (|z|^2 - x^2
    sum_j |y_j|^2) with x = 1/sqrt(n), exactly what training computes for a user's rated set."""
    y = np.asarray(rated_vectors, np.float64)
    if len(y) == 0:
        return np.zeros(y.shape[1], np.float32), 0.0
    x = 1.0 / np.sqrt(len(y))
    z = x * y.sum(0)
    b_z = x * float(np.sum(rated_bias)) + 0.5 * (z @ z - x * x * float(np.square(y).sum()))
    return z.astype(np.float32), float(b_z)


def rated_fold_in(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    ratings: np.ndarray,
    rated_vectors: np.ndarray,
    rated_bias: np.ndarray,
    *,
    w0: float,
    weight_decay: float,
    prior: float = 0.0,
) -> tuple[np.ndarray, float]:
    """The `rated` field's side (rated_user) plus a fold-in of what it leaves unexplained: with
    z fixed, a user id's (v, b) and its pairwise term <v, z> enter the score as a free vector and
    a free bias, so they are the ridge fit of the residual (fold_in) against b_i + <z, q_i>."""
    z, b_z = rated_user(rated_vectors, rated_bias)
    q = np.asarray(item_vectors, np.float64)
    shifted = np.asarray(item_bias, np.float64) + q @ z
    p, b = fold_in(q, shifted, ratings, w0=w0 + b_z, weight_decay=weight_decay, prior=prior)
    return (z + p).astype(np.float32), b_z + b


def weighted_user(item_vectors: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
    """The original notebook's user vector: the rated movies' q_i averaged with the ratings as
    weights. It has no bias (b_u = 0) and only its direction is meaningful for ranking."""
    q = np.asarray(item_vectors, dtype=np.float64)
    w = np.asarray(ratings, dtype=np.float64)
    if len(w) == 0 or w.sum() == 0:
        return np.zeros(q.shape[1], np.float32), 0.0
    return (w @ q / w.sum()).astype(np.float32), 0.0


# ---- the ranking model's users (train/ranking.py) ------------------------------------------------


def implicit_weight(ratings: np.ndarray, kind: str = "liked", alpha: float = 1.0) -> np.ndarray:
    """The ranking model's confidence in a rated pair: binary -> 1; liked -> 1 + alpha *
    (rating >= 4)."""
    r = np.asarray(ratings, np.float64)
    if kind == "binary":
        return np.ones_like(r)
    if kind == "liked":
        return 1.0 + alpha * (r >= 4.0)
    raise ValueError(f"unknown confidence {kind!r}: use binary or liked")


def ranking_lambda(reg: float, alpha0: float, nu: float, n_items: int, n_rated: int = 1) -> float:
    """The ranking model's L2 on a user with n_rated ratings: reg * (n_rated + alpha0 n_items)^nu."""
    return float(reg * (n_rated + alpha0 * n_items) ** nu)


def whiten_items(item_vectors: np.ndarray, alpha0: float, lam: float) -> np.ndarray:
    """L^-1 r_i for every movie, where L L^T = alpha0 R^T R + lam I (Cholesky).

    <L^-1 r_x, L^-1 r_j> = r_x^T A0^-1 r_j, and A0^-1 r_x is (up to scale) the vector the ranking
    model gives someone who rated only movie x: so the movies with the largest dot product with
    movie x's whitened vector are the top list of a person who named only x ("movies like x"), and
    a new user can be folded in from the whitened vectors alone (`whitened_fold_in`)."""
    R = np.asarray(item_vectors, np.float64)
    A0 = alpha0 * (R.T @ R) + lam * np.eye(R.shape[1])
    L = np.linalg.cholesky(A0)
    return np.linalg.solve(L, R.T).T.astype(np.float32)


def whitened_fold_in(whitened: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Someone new who rated movies with whitened vectors `whitened` (rows u_i) and confidences
    `weights`: the ranking model's user step, solved in the whitened space,

        y = (I + U^T W U)^-1 U^T W 1 = U^T (W^-1 + U U^T)^-1 1     (an n x n solve)

    so that <y, u_j> = <r_u, r_j>: query y against the whitened vectors. (The user's L2 is the
    one of a single rating, reg (1 + alpha0 n_items)^nu, which differs from n ratings' by
    reg * (n - 1): 0.2% at 20 ratings on ml-latest-small.)"""
    U = np.asarray(whitened, np.float64)
    w = np.asarray(weights, np.float64)
    if len(w) == 0:
        return np.zeros(U.shape[1], np.float32)
    K = U @ U.T + np.diag(1.0 / w)
    return (U.T @ np.linalg.solve(K, np.ones(len(w)))).astype(np.float32)


# ---- collection names ---------------------------------------------------------------------------


def physical_name(alias: str, run_id: str, token: str | None = None) -> str:
    """The physical collection an alias points at: `movies__<run_id>__<token>`, where `token`
    names one publication (every publish writes new collections, never the live ones). Without
    a token, the name collections had before publications were named: `movies__<run_id>`."""
    return f"{alias}__{run_id}__{token}" if token else f"{alias}__{run_id}"


def run_id_of(collection: str) -> str:
    """The run id a physical collection was published from (`movies__<run_id>[__<token>]`)."""
    parts = collection.split("__")
    return parts[1] if len(parts) > 1 else collection


def sibling_collection(collection: str, alias: str) -> str:
    """The collection of `alias` written by the same publication as `collection`:
    ('movies__R__T', 'users') -> 'users__R__T'. One alias read names both, so a reader never
    pairs the movies of one publication with the users of another."""
    _, sep, suffix = collection.partition("__")
    return f"{alias}__{suffix}" if sep else alias


# ---- titles -------------------------------------------------------------------------------------

# "(1995)" or a series' "(2006–2007)" / "(2006-)" at the very end of a title.
YEAR_SUFFIX = re.compile(r"\s*\((\d{4})(?:\s*[-\u2013\u2014]\s*(?:\d{4})?\s*)?\)\s*$")


def split_year(title: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); no year -> (title, None)."""
    match = YEAR_SUFFIX.search(title)
    if not match:
        return title.strip(), None
    return title[: match.start()].strip(), int(match.group(1))
