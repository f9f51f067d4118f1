"""The serving math, in NumPy only: the one copy that training, evaluation, publishing and the
query layer share.

A trained FM serves as biased matrix factorisation, rating(u, i) = link(w0 + b_u + b_i + <p_u, q_i>)
clamped to the rating scale (DESIGN.md). This module holds each formula once: the score (`score`),
the link and its inverse, the predicted rating (`predict`), the FM side's vector and bias
(`side_terms`), the ways of building a user vector from a handful of ratings (fold-in, the
notebook's weighted average, the ranking model's whitened fold-in), the rule that names physical
collections, and a MovieLens title's year suffix and display form. It imports nothing of ours and nothing
heavier than NumPy, so the query path can use it without torch.

Every user vector built here is linear in what each rated movie brings, so each has a `*_parts`
form: one row per rated movie, summing to the vector. The vector is the sum of its parts, and an
explanation ("because you liked X") is the dot product of a movie with each part: both come from
the same routine, so they can never disagree.
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


# ---- the score ----------------------------------------------------------------------------------


def score(
    b_i: np.ndarray | float,
    q_i: np.ndarray | None = None,
    p_u: np.ndarray | None = None,
    *,
    w0: float = 0.0,
    b_u: np.ndarray | float = 0.0,
    every_pair: bool = False,
) -> np.ndarray:
    """The FM's raw score w0 + b_u + b_i + <p_u, q_i>, before the link.

    Rows of q_i [..., k] and p_u pair up by broadcasting: one user's p_u [k] against many movies,
    or pair by pair; float64. Without vectors it is w0 + b_u + b_i (a biases-only model). With w0
    and b_u left at 0 it is b_i + <p_u, q_i>: the dot product of a stored `score` vector
    [q_i, b_i] with the query [p_u, 1], i.e. what the vector store ranks by.

    every_pair: every user (rows of p_u, b_u) against every movie (rows of q_i, b_i) as one
    [n_users, n_movies] matrix product, in the arrays' own precision (evaluation ranks every movie
    for blocks of users, where float32 halves the memory)."""
    if every_pair:
        user_rows = np.asarray(b_u)[:, None] if np.ndim(b_u) else b_u  # a plain 0: no upcast
        y = user_rows + np.asarray(b_i)
        pair = None if q_i is None or p_u is None else (np.asarray(p_u), np.asarray(q_i))
        # in place where that keeps the dtype: a [users, movies] block is hundreds of MB at
        # ml-latest size, and the sums are the same in the same order
        dtypes = [y, w0] + (list(pair) if pair else [])
        if y.ndim == 2 and np.result_type(*dtypes) == y.dtype:
            y += w0
            if pair:
                y += pair[0] @ pair[1].T
            return y
        y = y + w0
        return y if pair is None else y + pair[0] @ pair[1].T
    y = w0 + np.asarray(b_u, np.float64) + np.asarray(b_i, np.float64)
    if q_i is not None and p_u is not None:
        # the dot product in the vectors' own precision: evaluation passes millions of pairs
        q, p = np.asarray(q_i), np.asarray(p_u)
        y = y + (q @ p if p.ndim == 1 else np.einsum("...k,...k->...", q, p))
    return y


# ---- the link -----------------------------------------------------------------------------------


def apply_link(y: np.ndarray | float, link: str) -> np.ndarray | float:
    """Raw FM score -> rating before clamping: identity, or the notebook's sigmoid(y) * 5.5."""
    if link == "sigmoid":
        return SIGMOID_SCALE / (1.0 + np.exp(-np.asarray(y, np.float64)))
    return y


def predict(
    y: np.ndarray | float, link: str, rating_range: Sequence[float] | None
) -> np.ndarray | float:
    """Raw FM score y (`score`) -> rating: the link, then clamped to the rating scale (not
    clamped when rating_range is None: to tell how far above the scale a prediction lies)."""
    rating = apply_link(y, link)
    if rating_range is None:
        return rating
    return np.clip(rating, rating_range[0], rating_range[1])


def link_inverse(ratings: np.ndarray, link: str) -> np.ndarray:
    """Ratings -> the raw scores that would produce them (identity: the ratings themselves)."""
    r = np.asarray(ratings, np.float64)
    if link != "sigmoid":
        return r
    p = np.clip(r / SIGMOID_SCALE, _LOGIT_CLIP, 1 - _LOGIT_CLIP)
    return np.log(p / (1 - p))


# ---- the FM's user side --------------------------------------------------------------------------


def side_terms(
    vectors: np.ndarray, biases: np.ndarray, x: np.ndarray | float
) -> tuple[np.ndarray, float]:
    """One side of the FM (DESIGN.md: the user's fields U) as (p, b): p = sum_j x_j v_j and
    b = sum_j x_j w_j + 1/2 (|p|^2 - sum_j x_j^2 |v_j|^2), its own pairwise terms folded into b."""
    v = np.asarray(vectors, np.float64)
    x = np.broadcast_to(np.asarray(x, np.float64), (len(v),))
    p = x @ v
    pairwise = 0.5 * (p @ p - float(np.square(x) @ np.square(v).sum(1)))
    return p.astype(np.float32), float(x @ np.asarray(biases, np.float64)) + pairwise


def rated_user(rated_vectors: np.ndarray, rated_bias: np.ndarray) -> tuple[np.ndarray, float]:
    """The FM's own side (z, b_z) of someone whose `rated` field holds these movies (their y_j,
    w_j; the model's SVD++ part): side_terms with x = 1/sqrt(n) on each, exactly what training
    computes for a user's rated set."""
    y = np.asarray(rated_vectors, np.float64)
    if len(y) == 0:
        return np.zeros(y.shape[1], np.float32), 0.0
    return side_terms(y, rated_bias, 1.0 / np.sqrt(len(y)))


# ---- user vectors from a few ratings ------------------------------------------------------------


def fold_in_parts(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    ratings: np.ndarray,
    *,
    w0: float,
    weight_decay: float,
    prior: float = 0.0,
) -> np.ndarray:
    """Each rated movie's share [n, k+1] of the fold-in user's theta = [p_u, b_u] (see fold_in):
    theta = A^-1 X^T y is linear in the targets y_j, so row j is A^-1 x_j y_j."""
    q = np.asarray(item_vectors, dtype=np.float64)
    n, k = q.shape
    x = np.hstack([q, np.ones((n, 1))])  # [q_i, 1]: the last coordinate carries b_u
    target = np.asarray(ratings, np.float64) - w0 - np.asarray(item_bias, np.float64)
    gram = x.T @ x + (weight_decay * n + prior) * np.eye(k + 1)
    return (np.linalg.solve(gram, x.T) * target).T


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
    The sum of fold_in_parts.
    """
    k = np.asarray(item_vectors).shape[1]
    if len(item_vectors) == 0:
        return np.zeros(k, np.float32), 0.0
    parts = fold_in_parts(
        item_vectors, item_bias, ratings, w0=w0, weight_decay=weight_decay, prior=prior
    )
    theta = parts.sum(0)
    return theta[:k].astype(np.float32), float(theta[k])


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
    shifted = score(item_bias, q, z)
    p, b = fold_in(q, shifted, ratings, w0=w0 + b_z, weight_decay=weight_decay, prior=prior)
    return (z + p).astype(np.float32), b_z + b


def weighted_parts(item_vectors: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """Each rated movie's share [n, k] of the weighted user (see weighted_user): s_j q_j / sum s."""
    q = np.asarray(item_vectors, dtype=np.float64)
    w = np.asarray(ratings, dtype=np.float64)
    total = w.sum() if len(w) else 0.0
    return q * (w / total)[:, None] if total else np.zeros_like(q)


def weighted_user(item_vectors: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
    """The original notebook's user vector: the rated movies' q_i averaged with the ratings as
    weights (the sum of weighted_parts). It has no bias (b_u = 0) and only its direction is
    meaningful for ranking."""
    return weighted_parts(item_vectors, ratings).sum(0).astype(np.float32), 0.0


# ---- the ranking model's users (train/ranking.py) ------------------------------------------------


def liked_at(rating_range: Sequence[float]) -> float:
    """The rating from which a movie counts as liked (the ranking model's confidence, the
    evaluation's relevant movies): 4 on MovieLens's 0.5..5, the same share of any other scale
    (8 on 1..10, 0.78 on 0..1)."""
    lo, hi = float(rating_range[0]), float(rating_range[1])
    return lo + (hi - lo) * 7.0 / 9.0


def implicit_weight(
    ratings: np.ndarray, kind: str = "liked", alpha: float = 1.0, liked: float = 4.0
) -> np.ndarray:
    """The ranking model's confidence in a rated pair: binary -> 1; liked -> 1 + alpha *
    (rating >= liked: see liked_at)."""
    r = np.asarray(ratings, np.float64)
    if kind == "binary":
        return np.ones_like(r)
    if kind == "liked":
        return 1.0 + alpha * (r >= liked)
    raise ValueError(f"unknown confidence {kind!r}: use binary or liked")


def ranking_lambda(reg: float, alpha0: float, nu: float, n_items: int, n_rated: int = 1) -> float:
    """The ranking model's L2 on a user with n_rated ratings: reg * (n_rated + alpha0 n_items)^nu."""
    return float(reg * (n_rated + alpha0 * n_items) ** nu)


def ials_user(
    rated_rows: np.ndarray,
    weights: np.ndarray,
    gramian: np.ndarray,
    lam: float,
    eig: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """A ranking-model user's r_u [k] by the closed form of the model's user step, exactly what
    training stores (train/ranking.py runs its last user step to the exact solve):

        (alpha0 R^T R + sum_j w_j r_j r_j^T + lam I) r_u = sum_j w_j (1 - c_j) r_j - alpha0 R^T c

    rated_rows [n, k+1]: [r_j, c_j] of the rated movies; weights [n]: their confidences
    (implicit_weight); gramian: alpha0 Q^T Q over every movie's [r_i, c_i] of the run; lam: the
    user's L2 (ranking_lambda with n ratings). recommend/explain.py decomposes the same solve.

    eig: gramian_eig(gramian), to solve in n x n instead of k x k when n < k (Woodbury: the
    Gramian's part is diagonal in its eigenbasis whatever lam is): the same r_u, a k-square solve
    saved per user (a live update of someone with a few ratings)."""
    rated = np.asarray(rated_rows, np.float64)
    w = np.asarray(weights, np.float64)
    g = np.asarray(gramian, np.float64)
    k = rated.shape[1] - 1
    r, c = rated[:, :k], rated[:, k]
    b = r.T @ (w * (1.0 - c)) - g[:k, k]
    if eig is None or len(w) >= k:
        a = g[:k, :k] + (r.T * w) @ r + lam * np.eye(k)
        return np.linalg.solve(a, b).astype(np.float32)
    d, V = eig
    inv = 1.0 / (d + lam)  # (alpha0 R^T R + lam I)^-1 in the eigenbasis
    rt, bt = r @ V, V.T @ b  # rows and right-hand side in the eigenbasis
    x = bt * inv
    small = np.diag(1.0 / w) + (rt * inv) @ rt.T  # W^-1 + R B^-1 R^T, n x n
    x -= inv * (rt.T @ np.linalg.solve(small, rt @ x))
    return (V @ x).astype(np.float32)


def gramian_eig(gramian: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(eigenvalues, eigenvectors) of the r-block of an (alpha0-scaled) Gramian, for ials_user."""
    k = np.asarray(gramian).shape[0] - 1
    return np.linalg.eigh(np.asarray(gramian, np.float64)[:k, :k])


def whiten_rows(rows: np.ndarray, gramian_rr: np.ndarray, alpha0: float, lam: float) -> np.ndarray:
    """L^-1 r for rows r [n, k], where L L^T = alpha0 R^T R + lam I and gramian_rr = R^T R over
    every movie of the run: whiten_items for movies added after training (the other movies'
    whitening, and so their `item` vectors, stay as published)."""
    g = np.asarray(gramian_rr, np.float64)
    L = np.linalg.cholesky(alpha0 * g + lam * np.eye(g.shape[0]))
    return np.linalg.solve(L, np.asarray(rows, np.float64).T).T.astype(np.float32)


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


def whitened_parts(whitened: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each rated movie's share [n, k] of the whitened fold-in query (see whitened_fold_in):
    a_j u_j with a = (W^-1 + U U^T)^-1 1."""
    U = np.asarray(whitened, np.float64)
    w = np.asarray(weights, np.float64)
    if len(w) == 0:
        return np.zeros((0, U.shape[1]))
    K = U @ U.T + np.diag(1.0 / w)
    return U * np.linalg.solve(K, np.ones(len(w)))[:, None]


def whitened_fold_in(whitened: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Someone new who rated movies with whitened vectors `whitened` (rows u_i) and confidences
    `weights`: the ranking model's user step, solved in the whitened space,

        y = (I + U^T W U)^-1 U^T W 1 = U^T (W^-1 + U U^T)^-1 1     (an n x n solve)

    so that <y, u_j> = <r_u, r_j>: query y against the whitened vectors; the sum of
    whitened_parts. (The user's L2 is the one of a single rating, reg (1 + alpha0 n_items)^nu,
    which differs from n ratings' by reg * (n - 1): 0.2% at 20 ratings on ml-latest-small.)"""
    return whitened_parts(whitened, weights).sum(0).astype(np.float32)


# ---- "movies like x" as a similarity ------------------------------------------------------------


def similarity(
    scores: np.ndarray, item_norm: float, longest: float, distance: str = "dot"
) -> np.ndarray:
    """The scores of a "movies like x" search on `item` -> similarities in [-1, 1], in the same
    order: <item_x, item_j> / (|item_x| * longest), `longest` the largest |item_j| of the run
    (the serving config's `item_norm_max`). By Cauchy-Schwarz this is within [-1, 1], and it
    divides every score of one search by the same number, so the ranking is unchanged. A Cosine
    `item` (a run without a ranking model) scores the cosine already: returned as it is. Clipped
    to [-1, 1] against float rounding and a movie added live with a longer vector."""
    s = np.asarray(scores, np.float64)
    if distance != "cosine":
        scale = float(item_norm) * float(longest)
        s = s / scale if scale > 0 else np.zeros_like(s)
    return np.clip(s, -1.0, 1.0).astype(np.float32)


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


# MovieLens writes "Matrix, The" and "Boot, Das": these articles, after a comma at the end of a
# title (or of an alternate title in parentheses), belong in front.
TRAILING_ARTICLE = re.compile(
    r"^(.*),\s*(the|a|an|les|la|le|l'|il|lo|el|los|las|der|die|das|den|det|de|het|een|un|une|uno"
    r"|una|ein|eine|o|os|as|i|gli)$",
    re.I,
)
# A title's main part, then its alternate titles in parentheses: "Postman, The (Postino, Il)".
_ALTERNATES = re.compile(r"^(?P<main>.*?)(?P<alternates>(?:\s*\([^()]*\))*)$", re.S)
_ALTERNATE = re.compile(r"\(([^()]*)\)")


def _article_in_front(text: str) -> str:
    """'Matrix, The' -> 'The Matrix'; "Atalante, L'" -> "L'Atalante"; anything else as it is."""
    m = TRAILING_ARTICLE.match(text.strip())
    if not m:
        return text.strip()
    article, rest = m.group(2), m.group(1).strip()
    return f"{article}{rest}" if article.endswith("'") else f"{article} {rest}"


def display_title(title: str) -> str:
    """A catalog title as people write it, the one style every answer, note, error and report
    shows: MovieLens's trailing articles moved to the front, in the main title and in each
    alternate title ('Matrix, The (1999)' -> 'The Matrix (1999)', 'Postman, The (Postino, Il)
    (1994)' -> 'The Postman (Il Postino) (1994)'), runs of spaces made one, the year as written.
    The catalog and the published payloads keep the title as the data has it."""
    title = " ".join(str(title).split())
    year = YEAR_SUFFIX.search(title)
    body, suffix = (title[: year.start()], title[year.start() :].strip()) if year else (title, "")
    parts = _ALTERNATES.match(body)
    main = _article_in_front(parts["main"])
    alternates = [f"({_article_in_front(a)})" for a in _ALTERNATE.findall(parts["alternates"])]
    return " ".join(p for p in [main or body.strip(), *alternates, suffix] if p)
