"""The Python API next to implicit's and LightFM's, on the planted data (users of group g love
the movies of group g): batch recommend, similar_users, predict, factors, filters as dicts or
QueryFilters (genres in any case), titles as rating keys, explanations, and only fmstore's own
exceptions. Then the API reference: every public name documented, docs/api.md current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from planted import GROUPS, group_of_movie, group_of_user, rated_movie_ids, unrated_movie_ids

from fmstore.errors import ConfigError, DataError, FmstoreError, NotFoundError
from fmstore.recommend import Recommender, fold_in
from fmstore.recommend.explain import fold_in_contributions, liked, weighted_contributions
from fmstore.vectors import QueryFilter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rec(planted_recommender):
    """A Recommender on planted run 0 (Qdrant Edge + SQLite), pure FM ranking."""
    return planted_recommender


def _groups(ids) -> list[int]:
    return [group_of_movie(int(i)) for i in ids]


def test_batch_recommend_is_each_users_ranking(rec):
    users = [1, 31, 61]
    ids, scores = rec.recommend(users, N=5)
    assert ids.shape == scores.shape == (3, 5) and ids.dtype == np.int64
    for row, user in enumerate(users):
        one_ids, one_scores = rec.recommend(user, N=5)
        np.testing.assert_array_equal(ids[row], one_ids)
        np.testing.assert_allclose(scores[row], one_scores)
        assert set(_groups(ids[row])) == {group_of_user(user)}
    # numpy ids work too, and a filter with fewer than N movies pads with -1 / -inf
    ids, scores = rec.recommend(np.array([1, 2]), N=20, filter={"genres": ["drama"]})
    assert ids.shape == (2, 20) and (ids == -1).any()
    assert np.all(np.isneginf(scores[ids == -1])) and set(_groups(ids[ids > 0])) == {2}


def test_similar_users_share_the_group(rec):
    ids, cosines = rec.similar_users(1, N=10)
    assert 1 not in ids and len(ids) == 10
    assert {group_of_user(int(u)) for u in ids} == {0}
    assert np.all(np.diff(cosines) <= 1e-6) and cosines[0] <= 1.0 + 1e-6


def test_predict_known_user(rec):
    user = 31  # group 1
    inside, outside = rated_movie_ids(1), rated_movie_ids(0) + rated_movie_ids(2)
    mine, theirs = rec.predict(user, inside), rec.predict(user, outside)
    assert mine.shape == (len(inside),) and mine.mean() >= 4.0 and theirs.mean() <= 2.5
    assert rec.predict(user, inside[0]) == pytest.approx(mine[0])
    # the same number the rating model's stars of a ranking give
    ids, _ = rec.recommend(user, N=3)
    p_u, b_u = rec.user_vector(user)
    np.testing.assert_allclose(
        rec.predict(user, ids), rec.predicted_ratings(p_u, b_u, ids), atol=1e-4
    )


def test_factors_in_documented_order(rec):
    ids, q = rec.item_ids, rec.item_factors
    n_movies = len(GROUPS) * (len(rated_movie_ids(0)) + len(unrated_movie_ids(0)))
    assert q.shape == (n_movies, rec.factors) and q.dtype == np.float32
    assert np.all(np.diff(ids) > 0)
    movie = int(ids[5])
    score = rec.movie_vectors([movie], "score")[movie]
    np.testing.assert_allclose(q[5], score[:-1], rtol=1e-6)
    # the stored `item` vector is the ranking model's (whitened r_i), not the rating model's q_i
    item = rec.movie_vectors([movie], "item")[movie]
    assert item.shape == (rec.rank_factors,)
    assert rec.item_biases.shape == (n_movies,)
    users, p = rec.user_ids, rec.user_factors
    assert p.shape == (90, rec.factors) and np.all(np.diff(users) > 0)
    np.testing.assert_allclose(p[40], rec.user_vector(int(users[40]))[0], rtol=1e-6)


def test_filters_as_dict_or_query_filter_in_any_case(rec):
    movie = rated_movie_ids(0)[0]
    by_class, _ = rec.similar_items(movie, N=5, filter=QueryFilter(genres=("comedy",)))
    by_dict, _ = rec.similar_items(movie, N=5, filter={"genres": ["COMEDY"], "min_ratings": 1})
    assert len(by_class) == 5 and set(_groups(by_class)) == {1}
    assert set(_groups(by_dict)) == {1} and not set(by_dict) & set(unrated_movie_ids(1))
    by_string, _ = rec.similar_items(movie, N=5, filter={"genres": "comedy"})
    np.testing.assert_array_equal(by_string, by_class)
    skip = by_class[:2].tolist()
    fewer, _ = rec.similar_items(movie, N=5, filter={"genres": ["comedy"]}, filter_items=skip)
    assert not set(fewer) & set(skip)
    with pytest.raises(ConfigError, match=r"filter: unknown key\(s\) 'min_rating'; use genres"):
        rec.recommend(1, filter={"min_rating": 50})
    with pytest.raises(ConfigError, match="filter 'year_min': expected a whole number"):
        rec.recommend(1, filter={"year_min": "1990"})
    with pytest.raises(ConfigError, match="unknown genre 'western'; known genres: Action"):
        rec.recommend(1, filter=QueryFilter(genres=("western",)))


def test_ratings_by_title(rec):
    liked_ids = rated_movie_ids(2)[:3]
    by_title = {f"drama movie {m}": 5 for m in liked_ids}
    ids, _ = rec.recommend_for_ratings(by_title, N=5)
    assert set(_groups(ids)) == {2} and rec.notes == []
    same, _ = rec.recommend_for_ratings(dict.fromkeys(liked_ids, 5), N=5)
    np.testing.assert_array_equal(ids, same)
    rec.recommend_for_ratings({f"Drama Mvie {liked_ids[0]}": 5}, N=3)
    assert len(rec.notes) == 1 and f"for 'Drama Mvie {liked_ids[0]}'" in rec.notes[0]


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda r: r.recommend_for_ratings({"Terminator 2": 5}), NotFoundError, "no movie matches"),
        (
            lambda r: r.recommend_for_ratings({1: "five"}),
            DataError,
            "rating 'five' is not a number",
        ),
        (lambda r: r.recommend_for_ratings({1: 9}), DataError, "outside the rating scale"),
        (lambda r: r.recommend_for_ratings({1.5: 4}), ConfigError, "use a movie id or a title"),
        (lambda r: r.recommend_for_ratings([1, 2]), ConfigError, "ratings must be a dict"),
        (lambda r: r.recommend_for_ratings({}), ConfigError, "no ratings given"),
        (lambda r: r.recommend("1"), ConfigError, "user ids"),
        (lambda r: r.recommend(1, N=0), ConfigError, "N must be"),
        (lambda r: r.recommend(1, N=2.5), ConfigError, "N must be"),
        (lambda r: r.recommend(1, filter="comedy"), ConfigError, "filter must be"),
        (lambda r: r.recommend(1, filter_items=["x"]), ConfigError, "'x' is not a movie id"),
        (lambda r: r.similar_items("Toy Story"), ConfigError, "movie id must be"),
        (lambda r: r.similar_users(99999), NotFoundError, "user 99999"),
        (lambda r: r.predict(1, ["x"]), ConfigError, "movie id must be"),
        (lambda r: r.predict(1, [999999]), NotFoundError, "999999"),
        (lambda r: r.match_title(42), ConfigError, "a title must be text"),
        (
            lambda r: r.explain(1, [1], top=3) and r.explain({1: 5}, [2], method="x"),
            ConfigError,
            "method",
        ),
    ],
)
def test_every_error_is_fmstores(rec, call, error, fragment):
    with pytest.raises(FmstoreError) as info:
        call(rec)
    assert isinstance(info.value, error) and fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", ["fold-in", "weighted"])
def test_explain_new_user_names_liked_movies_of_the_group(rec, method):
    liked_ids = rated_movie_ids(1)[:3]
    ratings = {**dict.fromkeys(liked_ids, 5.0), rated_movie_ids(0)[0]: 1.0}
    ids, _ = rec.recommend_for_ratings(ratings, N=5, method=method)
    reasons = rec.explain(ratings, ids, method=method)
    assert list(reasons) == ids.tolist()
    for movie, why in reasons.items():
        assert why and {m for m, _ in why} <= set(liked_ids), (movie, why)
        assert [c for _, c in why] == sorted((c for _, c in why), reverse=True)


def test_contributions_add_up_to_the_user_vector():
    rng = np.random.default_rng(3)
    q, b = rng.normal(size=(12, 5)), rng.normal(size=12)
    stars = rng.choice([1.0, 3.0, 4.5, 5.0], 12)
    q_rec = rng.normal(size=(4, 5))
    p_u, _ = fold_in(q, b, stars, w0=3.2, weight_decay=0.05, prior=0.5)
    c = fold_in_contributions(q_rec, q, b, stars, w0=3.2, weight_decay=0.05, prior=0.5)
    np.testing.assert_allclose(c.sum(axis=1), q_rec @ p_u, rtol=1e-5, atol=1e-5)
    w = weighted_contributions(q_rec, q, stars)
    np.testing.assert_allclose(w.sum(axis=1), q_rec @ (stars @ q / stars.sum()), rtol=1e-9)
    assert liked(np.array([5.0, 4.0, 3.0, 1.0]), (0.5, 5.0)).tolist() == [True, True, False, False]
    assert liked(np.array([2.0, 2.5]), (0.5, 5.0)).tolist() == [False, False]  # below the middle


# ---- the API reference -------------------------------------------------------------------------


def _api_docs():
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "scripts" / "api_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["api_docs"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_public_name_has_a_docstring():
    api_docs = _api_docs()
    entries = list(api_docs.entries())
    assert {e.qualname for e in entries if e.kind == "module"} == set(api_docs.MODULES)
    missing = [f"{e.kind} {e.qualname}" for e in entries if e.needs_doc and not e.doc]
    assert not missing, f"{len(missing)} public names without a docstring: {missing}"


def test_api_reference_is_current():
    api_docs = _api_docs()
    page = ROOT / "docs" / "api.md"
    assert page.read_text(encoding="utf-8") == api_docs.render(), (
        f"docs/api.md is stale: run `{api_docs.REGENERATE}` and commit it"
    )
    # the script's own check, as CI or a person would run it
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "api_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr


def test_wrong_store_or_catalog_is_a_config_error(rec):
    with pytest.raises(ConfigError, match="store must be a VectorStore"):
        Recommender(object(), "sqlite:///x.db")
    with pytest.raises(ConfigError, match="catalog must be"):
        Recommender(rec.store, 42)
