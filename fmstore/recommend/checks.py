"""The checks the Recommender and the CLI share: a new user's method, a rating on the scale, N.
Errors name this API's arguments (`method 'mean'`); the CLI words them as its flags.

A new user's ranking vector is, by default, the rating-weighted mean of the ranking vectors of the
movies they rated: it measured better than the ranking model's exact fold-in at 3, 5, 10 and 20
ratings (benchmarks/ranking.py, cold-start table: Recall@10 0.069 vs 0.059 at 3 ratings, 0.117
vs 0.109 at 20; NDCG@10 0.235 vs 0.167 and 0.320 vs 0.259).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from fmstore.errors import ConfigError, DataError

DEFAULT_METHOD = "weighted"
METHODS = (DEFAULT_METHOD, "fold-in")
# How user_vector's error for an unknown user ends; the CLI words it as its flags.
USE_THEIR_RATINGS = "use their ratings (recommend_for_ratings)"


def check_method(method: str) -> str:
    """`method` if it is one of METHODS; ConfigError naming the argument otherwise."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: use one of {', '.join(METHODS)}")
    return method


def check_n(N: Any) -> int:
    """How many results to return, as an int; ConfigError unless a whole number of at least 1."""
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ConfigError(f"N must be a whole number of at least 1, not {N!r}")
    return int(N)


def check_rating(value: Any, rating_range: Sequence[float], where: str) -> float:
    """`value` as a float if it is a number on the rating scale; DataError naming `where` it came
    from otherwise."""
    lo, hi = float(rating_range[0]), float(rating_range[1])
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: rating {value!r} is not a number") from None
    if value != value:  # NaN
        raise DataError(f"{where}: rating {value!r} is not a number")
    if not lo <= value <= hi:
        raise DataError(f"{where}: rating {value:g} is outside the rating scale {lo:g}-{hi:g}")
    return value
