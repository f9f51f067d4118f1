"""The notebook flow (fmstore.fit / load / publish, fmstore.notebook): a DataFrame with a person's
own ids (text) and scale (1-10) fitted, asked before any publish, published, asked again; the
in-memory store (vectors.MemoryStore) answers as Qdrant Edge does; docs/examples/notebook.py runs."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from planted import group_of_movie, group_of_user, rated_movie_ids, write_planted

import fmstore
from fmstore import catalog, runs
from fmstore.config import Settings
from fmstore.errors import ConfigError, NotFoundError
from fmstore.recommend import Recommender
from fmstore.vectors import EdgeStore, QueryFilter

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "notebook.py"


def _user(u: int) -> str:
    return f"user-{u}"


def _movie(m: int) -> str:
    return f"film/{m}"


def _number(key: str) -> int:
    return int(key.split("/")[-1])


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """The planted data with text ids, stars doubled onto a 1-10 scale, columns of our own."""
    folder = write_planted(tmp_path_factory.mktemp("planted"))
    ratings = pd.read_csv(folder / "ratings.csv")
    ratings = pd.DataFrame(
        {
            "who": ratings.userId.map(_user),
            "what": ratings.movieId.map(_movie),
            "score": ratings.rating * 2,
            "when": pd.to_datetime(ratings.timestamp, unit="s"),
        }
    )
    movies = pd.read_csv(folder / "movies.csv")
    movies["movieId"] = movies.movieId.map(_movie)
    return ratings, movies


@pytest.fixture(scope="module")
def model(frames, tmp_path_factory, planted_train):
    runs_dir = tmp_path_factory.mktemp("runs")
    columns = dict(user_col="who", item_col="what", rating_col="score", time_col="when")
    return fmstore.fit(*frames, runs_dir=runs_dir, **columns, **planted_train)


def test_fit_keeps_the_persons_ids_and_scale(model):
    assert model.rating_scale == (1.0, 10.0)
    assert model.run_dir.is_dir() and model.metrics["valid_rmse"] > 0
    user_keys, movie_keys = runs.load_keys(model.run_dir)
    assert user_keys[0] == "user-1" and all(k.startswith("film/") for k in movie_keys)
    manifest = runs.load_manifest(model.run_dir)
    assert manifest["ranking"]["config"]["liked_at"] == 8.0  # 4 of 0.5..5 is 8 of 1..10


@pytest.mark.parametrize("user", [1, 31, 61])
def test_recommend_before_any_publish_in_the_persons_ids(model, user):
    ids, scores = model.recommend(_user(user), N=3)
    assert ids.dtype == object and all(isinstance(i, str) for i in ids)
    assert [group_of_movie(_number(i)) for i in ids] == [group_of_user(user)] * 3, ids
    assert np.all(np.diff(scores) <= 1e-6)
    stars = model.predict(_user(user), list(ids))
    assert 8.0 <= stars.min() and stars.max() <= 10.0  # the user's own scale


def test_recommend_takes_implicits_arguments(model):
    ids, _ = model.recommend(_user(1), N=5, filter_items=[_movie(1), _movie(2)])
    assert not {_movie(1), _movie(2)} & set(ids)
    both, _ = model.recommend([_user(1), _user(31)], N=3)
    assert both.shape == (2, 3) and [group_of_movie(_number(i)) for i in both[1]] == [1] * 3
    liked = {_movie(m): 10 for m in rated_movie_ids(2)[:3]}
    for new in (
        model.recommend("someone new", user_items=liked, N=4)[0],
        model.recommend(_user(1), user_items=liked, N=4, recalculate_user=True)[0],
        model.recommend_for_ratings(liked, N=4)[0],
    ):
        assert [group_of_movie(_number(i)) for i in new] == [2] * 4, new
    with pytest.raises(NotFoundError, match="user 'nobody' is not in run"):
        model.recommend("nobody")


def test_titles_wherever_a_movie_is(model):
    title = model.titles([_movie(1)])[0]  # "Action Movie 1 (1991)"
    by_title, _ = model.similar_items(title, N=5)
    by_id, _ = model.similar_items(_movie(1), N=5)
    assert list(by_title) == list(by_id) and _movie(1) not in by_id
    assert {group_of_movie(_number(i)) for i in by_id} == {0}
    many, _ = model.similar_items([_movie(1), title], N=5)
    assert many.shape == (2, 5) and list(many[0]) == list(many[1]) == list(by_id)
    ids, _ = model.recommend_for_ratings({title: 10, _movie(2): 9}, N=3)
    assert {group_of_movie(_number(i)) for i in ids} == {0}
    assert model.predict(_user(1), title) == pytest.approx(model.predict(_user(1), _movie(1)))


def test_explain_names_the_persons_movies(model):
    ids, _ = model.recommend(_user(1), N=2)
    reasons = model.explain(_user(1), list(ids))
    assert set(reasons) == set(ids)
    for because in reasons.values():
        assert because and all(isinstance(m, str) and m.startswith("film/") for m, _ in because)
        assert all(group_of_movie(_number(m)) == 0 for m, _ in because)
    new = model.explain({_movie(1): 10, _movie(2): 9}, ids[0])
    assert {m for m, _ in new[ids[0]]} <= {_movie(1), _movie(2)}


def test_load_serves_the_same_answers(model):
    again = fmstore.load(model.run_dir)
    assert again.run_id == model.run_id
    for user in (_user(1), _user(61)):
        a, b = model.recommend(user, N=5), again.recommend(user, N=5)
        assert list(a[0]) == list(b[0]) and np.allclose(a[1], b[1])
    assert fmstore.load("latest", runs_dir=model.run_dir.parent).run_id == model.run_id
    with pytest.raises(ConfigError, match="year_min 2000 is after year_max 1990"):
        model.similar_items(_movie(1), filter={"year_min": 2000, "year_max": 1990})
    with pytest.raises(ConfigError, match="unknown setting"):
        fmstore.fit(pd.DataFrame(), nonsense=1)


def test_publish_serves_what_the_run_folder_served(model, tmp_path):
    """The MemoryStore and Qdrant Edge hold the same points and rank them alike, filters too."""
    live = fmstore.publish(model, settings=Settings(home=tmp_path / "home"))
    try:
        assert "qdrant" in repr(live)
        for ask in (
            lambda m: m.recommend(_user(31), N=6),
            lambda m: m.similar_items(_movie(15), N=6),
            lambda m: m.recommend_for_ratings({_movie(30): 10}, N=6),
            lambda m: m.recommend(_user(1), N=6, filter={"genres": ["comedy"]}),
            lambda m: m.similar_items(_movie(1), N=50, filter=QueryFilter(year_min=1995)),
        ):
            (a, sa), (b, sb) = ask(model), ask(live)
            _same_ranking(a, sa, b, sb)
        # the published payloads keep the person's ids
        store = live.recommender.store
        found = store.retrieve("movies", [0])[0][1]
        assert found["key"] == _movie(1)
    finally:
        live.close()
    with pytest.raises(TypeError, match="fmstore.publish.publish"):
        fmstore.publish(model.run_dir)


def _same_ranking(a, sa, b, sb) -> None:
    """The same scores, and the same movies wherever the scores are not tied (floats summed in
    another order may swap two equal scores; the last may tie with the first one left out)."""
    assert np.allclose(sa, sb, atol=1e-5), (sa, sb)
    tied = np.isclose(sa[:, None], sa[None, :], atol=1e-5).sum(axis=1) > 1
    tied[-1] = True
    assert [x for x, t in zip(a, tied) if not t] == [x for x, t in zip(b, tied) if not t]


def test_a_published_run_is_read_by_a_plain_recommender(model, tmp_path):
    engine = catalog.make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    with EdgeStore(tmp_path / "qdrant") as store:
        fmstore.publish.publish(model.run_dir, store, engine)
        with Recommender(store, engine) as rec:
            ids, _ = rec.recommend(0, N=3)  # whole numbers: the Recommender's own ids
            assert all(rec.movie_info([i])[i]["key"].startswith("film/") for i in ids)
    engine.dispose()


def test_the_notebook_example_runs(tmp_path, monkeypatch, planted_train):
    """docs/examples/notebook.py on the planted data (the ml-latest-small run: slow test)."""
    folder = write_planted(tmp_path / "data")
    text = EXAMPLE.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 16
    text = text.replace("../shared/data/ml-latest-small", str(folder))
    text = text.replace('"Toy Story"', '"Action Movie 1"').replace('"Alien"', '"Drama Movie 29"')
    settings = ", ".join(f"{k}={v!r}" for k, v in planted_train.items())
    text = text.replace('rating_col="stars")', f'rating_col="stars", {settings})')
    text = "from fmstore.config import RankingConfig\n" + text
    script = tmp_path / "notebook.py"
    script.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FMSTORE_HOME", str(tmp_path / "home"))
    runpy.run_path(str(script), run_name="__main__")
    assert list((tmp_path / "home" / "runs").iterdir())


@pytest.mark.slow
def test_the_notebook_example_runs_on_movielens(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FMSTORE_HOME", str(tmp_path / "home"))
    if not (ROOT / "../shared/data/ml-latest-small").is_dir():
        pytest.skip("ml-latest-small is not here")
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    assert os.listdir(tmp_path / "home" / "runs")
