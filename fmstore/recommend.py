"""Query layer: user vectors for new users, similar movies, recommendations.

NumPy + the vectors interface + the catalog: importing this module must not import torch.
"""

from __future__ import annotations

import numpy as np


def fold_in(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    ratings: np.ndarray,
    *,
    w0: float,
    reg: float,
) -> tuple[np.ndarray, float]:
    """A user's (p_u, b_u) from their ratings of movies with fixed (q_i, b_i): ridge regression.

    Minimises sum_i (r_i - w0 - b_i - b_u - <p_u, q_i>)^2 + reg * n * (|p_u|^2 + b_u^2), which is
    exactly the training objective restricted to this user (training penalises a user's weights
    once per rating, hence reg * n), so for a known user it recovers their published vector up to
    how far training converged. Like implicit's `recalculate_user`.
    """
    q = np.asarray(item_vectors, dtype=np.float64)
    n, k = q.shape
    if n == 0:
        return np.zeros(k, np.float32), 0.0
    x = np.hstack([q, np.ones((n, 1))])  # [q_i, 1]: the last coordinate carries b_u
    target = np.asarray(ratings, np.float64) - w0 - np.asarray(item_bias, np.float64)
    gram = x.T @ x + reg * n * np.eye(k + 1)
    theta = np.linalg.solve(gram, x.T @ target)
    return theta[:k].astype(np.float32), float(theta[k])


def weighted_user(item_vectors: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
    """The original notebook's user vector: the rated movies' q_i averaged with the ratings as
    weights. It has no bias (b_u = 0) and only its direction is meaningful for ranking."""
    q = np.asarray(item_vectors, dtype=np.float64)
    w = np.asarray(ratings, dtype=np.float64)
    if len(w) == 0 or w.sum() == 0:
        return np.zeros(q.shape[1], np.float32), 0.0
    return (w @ q / w.sum()).astype(np.float32), 0.0
