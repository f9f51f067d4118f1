"""Query layer: title resolution, user vectors for new users, similar movies, recommendations.

NumPy + the vectors interface + the catalog readers: importing this package must not import torch,
and a query on a SQLite catalog must not import SQLAlchemy.

    rec = Recommender(store, catalog)             # the live run: alias -> movies__<run_id>__<publication>
    ids, scores = rec.similar_items(rec.resolve_title("toy story"), N=10)
    ids, scores = rec.recommend(42, N=10)         # a known user, every movie they rated excluded
    ids, scores = rec.recommend([1, 2, 3], N=10)  # a batch: 2-D arrays, one row per user
    ids, scores = rec.recommend_for_ratings({"Terminator 2": 5, 165: 4.5})  # someone new (weighted)
    p_u, b_u = rec.recalculate_user({589: 5, 165: 4.5})           # their rating-model vector
    stars = rec.predicted_ratings(p_u, b_u, ids)                  # predicted ratings of the list
    rec.predict(42, [1, 2571])                    # predicted ratings of a known user
    rec.similar_users(42), rec.item_factors, rec.user_factors
    rec.explain(42, ids)                          # {movie: [(liked movie, its term in the score)]}
    rec.recommend(42, filter={"genres": ["comedy"], "min_ratings": 50}, filter_items=[1])

Every ranking is a pair of NumPy arrays `(ids, scores)`, best first, like `implicit`. For similar
movies the scores are similarities in [-1, 1] in Qdrant's order (serving.similarity: the dot
product of whitened ranking vectors, `item`, over |item_x| times the run's longest); for users
what Qdrant returns, the ranking model's <r_u, r_i> + c_i (`rank`). Predicted ratings always come from the rating
model's exact `score` vectors [q_i, b_i]. Every error is an FmstoreError.

Files: recommender.py (the Recommender, one class read top to bottom), titles.py (what a person
typed -> a movie id, and whether that was a guess), explain.py ("because you liked X": the exact
terms of the score that ranked each movie, plain functions over vectors), checks.py (a method, a
rating: the checks the Recommender shares with the CLI), filters.py (filters as dicts or
QueryFilters, ids). The serving math is fmstore.serving's, re-exported here for callers of the
former module; reading `--rated` flags and ratings files is the CLI's (fmstore.cli).
"""

from fmstore.recommend.checks import DEFAULT_METHOD, METHODS, check_method, check_rating
from fmstore.recommend.explain import Contributions
from fmstore.recommend.filters import FILTER_KEYS, with_excluded
from fmstore.recommend.recommender import Recommender
from fmstore.recommend.titles import TitleIndex, TitleMatch, display_title, query_key, title_keys
from fmstore.serving import (
    SIGMOID_SCALE,
    fold_in,
    link_inverse,
    predict,
    split_year,
    weighted_user,
)

__all__ = [
    "DEFAULT_METHOD",
    "FILTER_KEYS",
    "METHODS",
    "SIGMOID_SCALE",
    "Contributions",
    "Recommender",
    "TitleIndex",
    "TitleMatch",
    "check_method",
    "check_rating",
    "display_title",
    "fold_in",
    "link_inverse",
    "predict",
    "query_key",
    "split_year",
    "title_keys",
    "weighted_user",
    "with_excluded",
]
