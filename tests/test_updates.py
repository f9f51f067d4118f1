"""Live updates (fmstore.updates, `fmstore rate`, `fmstore movies add`, `fmstore data export`):
a user's ratings and new movies served from the live publication without retraining, exactly
as the models would serve them, repaired after a crash and carried across publishes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fmstore import catalog, runs
from fmstore.catalog.tables import RecordedRating
from fmstore.publish import publish
from fmstore.recommend import Recommender
from fmstore.updates import Updater
from fmstore.updates.run import MovieRows
from fmstore.vectors import EdgeStore

NEW_USER = 1_000_001


@pytest.fixture
def home(live_home, tmp_path):
    """A copy of the shared live home (planted run 0 published; run 1 beside it)."""
    copy = tmp_path / "home"
    shutil.copytree(live_home, copy)
    return copy


def _runs(home):
    return sorted((home / "runs").iterdir(), key=lambda p: runs.load_manifest(p)["created_at"])


def _open(home):
    engine = catalog.make_engine(f"sqlite:///{home / 'catalog.db'}")
    return EdgeStore(home / "qdrant"), engine


def _liked_movies(run_dir, n=3):
    """n movies of the run's first user (ids), for ratings that exist in the live run."""
    user = int(runs.seen_user_ids(run_dir)[0])
    ids, _ = runs.seen_movies(run_dir, user)
    return [int(m) for m in ids[:n]]


def _point(store, alias, point_id, names=("score", "rank")):
    return store.retrieve(alias, [point_id], vectors=list(names)).get(point_id)


def _titles(home, movie_ids):
    rows = {r["movie_id"]: r["title"] for r in runs.load_movie_rows(_runs(home)[0])}
    return [rows[m] for m in movie_ids]


# ---- the math: what training would store ------------------------------------------------------


def test_a_known_users_recomputed_point_is_their_published_one(home):
    """The closed form of a user's ratings against the live movies is the vector training stored
    (its last user step is exact); the FM side's fold-in points the same way."""
    store, engine = _open(home)
    with store:
        updater = Updater(store, engine)
        movies, users, run = updater._live()
        user = int(runs.seen_user_ids(run.path)[3])
        ratings = run.training_ratings(user)
        found = store.retrieve(movies, list(ratings), vectors=["score", "rank"])
        point = run.user_vectors(user, ratings, MovieRows.of({m: v for m, (v, _) in found.items()}))
        stored, payload = _point(store, users, user)
    np.testing.assert_allclose(point.vectors["rank"], stored["rank"], atol=2e-6)
    p, q = point.vectors["score"][:-1], stored["score"][:-1]
    assert p @ q / np.linalg.norm(p) / np.linalg.norm(q) > 0.99
    assert point.payload["rated"] == sorted(payload["rated"])


def test_a_new_movies_vectors_are_those_of_a_movie_nobody_rated(home):
    """A movie added live is served exactly as training serves a movie of movies.csv without
    ratings: from its genre and year embeddings (score, rank and the whitened item vector)."""
    unrated = [r for r in runs.load_movie_rows(_runs(home)[0]) if r["n_ratings"] == 0]
    assert unrated, "the planted data has movies without ratings"
    row = unrated[0]
    store, engine = _open(home)
    with store:
        movies, _, run = Updater(store, engine)._live()
        vectors, payload = run.movie_vectors(row)
        stored, _ = _point(store, movies, row["movie_id"], ("score", "rank", "item"))
    for name in ("score", "rank", "item"):
        np.testing.assert_allclose(vectors[name], stored[name], rtol=1e-4, atol=1e-5)
    assert payload["n_ratings"] == 0


def test_the_closed_form_in_the_gramians_eigenbasis_is_the_direct_solve():
    """serving.ials_user with the Gramian's eigenbasis (an n x n solve, Woodbury) gives the k x k
    solve's r_u, for users with fewer ratings than k and more."""
    from fmstore import serving

    rng = np.random.default_rng(0)
    k = 16
    rows = rng.normal(size=(300, k + 1))
    gramian = 0.5 * rows.T @ rows
    eig = serving.gramian_eig(gramian)
    for n in (1, 3, 15, 40):
        rated = rows[rng.choice(300, n, replace=False)]
        weights = 1.0 + rng.integers(0, 2, n)
        direct = serving.ials_user(rated, weights, gramian, 2.0)
        np.testing.assert_allclose(
            serving.ials_user(rated, weights, gramian, 2.0, eig), direct, rtol=1e-4, atol=1e-6
        )


def test_one_blas_thread_is_restored():
    from fmstore.threads import _openblas_calls, one_blas_thread

    calls = _openblas_calls()
    if calls is None:
        pytest.skip("NumPy here is not built on OpenBLAS")
    before = calls[0]()
    with one_blas_thread():
        assert calls[0]() == 1
    assert calls[0]() == before


# ---- update, then query -----------------------------------------------------------------------


def test_rate_then_query_serves_the_new_user(home, fmstore_cli):
    """`fmstore rate` as a new user, then `query --user` answers from those ratings, leaves the
    rated movies out, and equals `query --rated` with the same ratings and method."""
    liked = _titles(home, _liked_movies(_runs(home)[0]))
    given = [f"{t}=5" for t in liked]
    flags = [x for t in given for x in ("--rated", t)]
    for user, method in ((NEW_USER, "weighted"), (NEW_USER + 1, "fold-in")):
        rated = fmstore_cli(home, "rate", "--user", str(user), *given, "--method", method, "--json")
        assert rated.returncode == 0, rated.stderr
        assert json.loads(rated.stdout)["recorded"] == 3
        by_user = fmstore_cli(home, "query", "--user", str(user), "-n", "10", "--json")
        assert by_user.returncode == 0, by_user.stderr
        ids = [r["movie_id"] for r in json.loads(by_user.stdout)["results"]]
        assert len(ids) == 10 and not set(ids) & set(_liked_movies(_runs(home)[0]))
        by_ratings = fmstore_cli(home, "query", *flags, "--method", method, "-n", "10", "--json")
        assert [r["movie_id"] for r in json.loads(by_ratings.stdout)["results"]] == ids, method


def test_the_same_ratings_twice_change_nothing_and_a_rerating_replaces(home):
    store, engine = _open(home)
    movie_ids = _liked_movies(_runs(home)[0])
    with store:
        updater = Updater(store, engine)
        first = updater.add_ratings({NEW_USER: {m: 4.0 for m in movie_ids}})
        vectors, payload = _point(store, "users", NEW_USER)
        again = updater.add_ratings({NEW_USER: {m: 4.0 for m in movie_ids}})
        same, same_payload = _point(store, "users", NEW_USER)
        changed = updater.add_ratings({NEW_USER: {movie_ids[0]: 1.0}})
        after, after_payload = _point(store, "users", NEW_USER)
    with Session(engine) as session:
        rows = session.scalar(select(func.count()).select_from(RecordedRating))
    assert (first.recorded, again.recorded, changed.recorded) == (3, 0, 1)
    assert again.users == [] and rows == 4
    np.testing.assert_array_equal(same["rank"], vectors["rank"])
    assert same_payload == payload
    assert after_payload["rated"] == sorted(movie_ids) and after_payload["n_ratings"] == 3
    assert not np.allclose(after["rank"], vectors["rank"])


def test_recommender_add_ratings_then_recommend(home):
    """The Python API: add_ratings by title or id, then recommend() that user at once."""
    movie_ids = _liked_movies(_runs(home)[0])
    store, _ = _open(home)
    with store, Recommender(store, f"sqlite:///{home / 'catalog.db'}") as rec:
        title = _titles(home, movie_ids[:1])[0]
        applied = rec.add_ratings(NEW_USER, {title: 5, movie_ids[1]: 4.5})
        rec.add_ratings({NEW_USER + 1: {movie_ids[2]: 3}})  # the batch form
        ids, _ = rec.recommend(NEW_USER, N=5)
        assert applied.users == [NEW_USER] and len(ids) == 5
        assert not set(ids.tolist()) & set(movie_ids[:2])
        assert rec.recommend(NEW_USER + 1, N=3)[0].size == 3


@pytest.mark.parametrize("bad", [{NEW_USER: {10**9: 4.0}}, {NEW_USER: {1: 9.0}}, {-1: {1: 4.0}}])
def test_bad_updates_are_refused_before_anything_is_written(home, bad):
    from fmstore.errors import FmstoreError

    store, engine = _open(home)
    with store:
        with pytest.raises(FmstoreError):
            Updater(store, engine).add_ratings(bad)
        assert _point(store, "users", NEW_USER) is None
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(RecordedRating)) == 0


def test_bad_input_to_rate_and_movies_add_is_one_line(home, fmstore_cli, assert_one_line_error):
    result = fmstore_cli(home, "rate", "--user", "5", "No Such Film Anywhere (1899)=4")
    assert_one_line_error(result, "No Such Film")
    assert_one_line_error(fmstore_cli(home, "rate", "--user", "5"), "give ratings")
    title = _titles(home, _liked_movies(_runs(home)[0]))[0]
    assert_one_line_error(fmstore_cli(home, "rate", "--user", "5", f"{title}=9"), "rating scale")
    unknown = fmstore_cli(home, "movies", "add", "--title", "X", "--genres", "Spaghetti")
    assert_one_line_error(unknown, "unknown genre(s) Spaghetti")
    clash = fmstore_cli(home, "movies", "add", "--title", "X (2001)", "--year", "2002")
    assert_one_line_error(clash, "the title says 2001, the year 2002")


# ---- new movies -------------------------------------------------------------------------------


def test_movies_add_is_served_under_the_same_filters(home, fmstore_cli):
    added = fmstore_cli(
        home, "movies", "add", "--title", "Brand New Film", "--genres", "Action|Comedy",
        "--year", "2031", "--json",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    movie_id = json.loads(added.stdout)["movies"][0]
    like = fmstore_cli(home, "query", "--movie", "Brand New Film (2031)", "--min-ratings", "0")
    assert like.returncode == 0, like.stderr
    # the only movie of 2031: a user's recommendations filtered to it find it
    user = str(int(runs.seen_user_ids(_runs(home)[0])[0]))
    found = fmstore_cli(home, "query", "--user", user, "--year-min", "2031", "--json")
    assert [r["movie_id"] for r in json.loads(found.stdout)["results"]] == [movie_id]
    rated = fmstore_cli(home, "rate", "--user", str(NEW_USER), "Brand New Film=5")
    assert rated.returncode == 0, rated.stderr
    again = fmstore_cli(home, "movies", "add", "--title", "X", "--id", str(movie_id))
    assert again.returncode == 2 and "already in the live publication" in again.stderr


# ---- crashes and publishes --------------------------------------------------------------------


def test_a_crash_between_the_catalog_and_the_store_is_repaired_by_the_next_command(
    home, fmstore_cli
):
    """Killed after the ratings are committed, before the point is written: the next update
    (of anyone) writes it."""
    titles = _titles(home, _liked_movies(_runs(home)[0]))
    killed = fmstore_cli(
        home, "rate", "--user", str(NEW_USER), f"{titles[0]}=5", f"{titles[1]}=4",
        env={"FMSTORE_TEST_KILL_AT": "updates_recorded"},
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    store, engine = _open(home)
    with store:
        assert _point(store, "users", NEW_USER) is None
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(RecordedRating)) == 2
    nxt = fmstore_cli(home, "rate", "--user", str(NEW_USER + 1), f"{titles[2]}=3")
    assert nxt.returncode == 0, nxt.stderr
    store, _ = _open(home)
    with store:
        assert _point(store, "users", NEW_USER)[1]["n_ratings"] == 2
        assert _point(store, "users", NEW_USER + 1)[1]["n_ratings"] == 1


def test_publish_and_rollback_carry_the_recorded_updates(home, fmstore_cli):
    """A run trained without the recorded ratings is published: publish says how many it lacks
    and applies them; a rollback brings the earlier publication up to date too."""
    first, second = _runs(home)
    titles = _titles(home, _liked_movies(first))
    assert fmstore_cli(home, "rate", "--user", str(NEW_USER), f"{titles[0]}=5").returncode == 0
    published = fmstore_cli(home, "publish", second.name, "--json")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["updates"]["not_in_run"] == 1
    assert fmstore_cli(home, "query", "--user", str(NEW_USER)).returncode == 0
    assert fmstore_cli(home, "rate", "--user", str(NEW_USER), f"{titles[1]}=4").returncode == 0
    rolled = fmstore_cli(home, "publish", "--rollback", "--json")
    assert rolled.returncode == 0, rolled.stderr
    store, _ = _open(home)
    with store:
        assert store.resolve_alias("movies").split("__")[1] == first.name
        assert _point(store, "users", NEW_USER)[1]["n_ratings"] == 2


def test_an_update_racing_a_publish_is_served_by_whichever_ends_live(home):
    """`rate` and `publish` of another run at once, as two processes on the embedded store:
    one waits for the other's lock, and the live publication serves the update either way."""
    second = _runs(home)[1]
    titles = _titles(home, _liked_movies(second))
    env = {"FMSTORE_HOME": str(home)}

    def fmstore(*args):
        return subprocess.run(
            [sys.executable, "-m", "fmstore", *args, "--wait", "120"],
            capture_output=True, text=True, env=env | _path_env(), timeout=300,
        )  # fmt: skip

    results = {}
    publisher = threading.Thread(
        target=lambda: results.setdefault("publish", fmstore("publish", second.name))
    )
    publisher.start()
    results["rate"] = fmstore("rate", "--user", str(NEW_USER), f"{titles[0]}=5")
    publisher.join()
    assert results["rate"].returncode == 0, results["rate"].stderr
    assert results["publish"].returncode == 0, results["publish"].stderr
    store, _ = _open(home)
    with store:
        assert store.resolve_alias("movies").split("__")[1] == second.name
        assert _point(store, "users", NEW_USER)[1]["n_ratings"] == 1


READER = """
import json, sys
from fmstore.config import Settings
from fmstore.recommend import Recommender
from fmstore.vectors import EdgeStore
from pathlib import Path
s = Settings(home=Path(sys.argv[1])); users = [int(u) for u in sys.argv[3].split(",")]
errors, asked = [], 0
store = EdgeStore(s.qdrant_path)
for i in range(int(sys.argv[2])):
    try:
        with Recommender(store, s.catalog_url) as rec:
            assert len(rec.recommend(users[i % len(users)], N=5)[0]) == 5
        asked += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"asked": asked, "errors": errors}))
"""


@pytest.mark.slow  # processes: the boundary is the point
def test_readers_in_other_processes_while_updates_write_in_place(home):
    """Live updates write into the collections being served: readers in three processes ask
    for the updated users all along with no error (edge_locks: the shards lock and the
    generation that makes a reader reopen), and after the writer stops they see its last
    vectors."""
    run_dir = _runs(home)[0]
    users = [int(u) for u in runs.seen_user_ids(run_dir)[:4]]
    movies = _liked_movies(run_dir, n=6)
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(home), "60", ",".join(map(str, users))],
            stdout=subprocess.PIPE,
            text=True,
            env=_path_env(),
        )  # fmt: skip
        for _ in range(3)
    ]
    store, engine = _open(home)
    with store, Recommender(store, engine) as rec:
        for i in range(40):
            rec.add_ratings(users[i % 4], {movies[i % 6]: 1.0 + i % 5})
        expected = rec.recommend(users[0], N=5)[0]
    seen = [json.loads(r.communicate(timeout=600)[0]) for r in readers]
    assert [s["errors"] for s in seen] == [[], [], []]
    assert sum(s["asked"] for s in seen) == 180
    store, engine = _open(home)
    with store, Recommender(store, engine) as rec:
        np.testing.assert_array_equal(rec.recommend(users[0], N=5)[0], expected)


def _path_env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("FMSTORE_")}


# ---- both engines, both catalogs --------------------------------------------------------------


def test_updates_on_each_store_and_catalog(planted_runs, vector_store, engine):
    """Qdrant Edge and a server (qdrant-client), SQLite and Postgres: the same update, the same
    point."""
    run_dir = planted_runs[0]
    publish(run_dir, vector_store, engine)
    movie_ids = _liked_movies(run_dir)
    updater = Updater(vector_store, engine)
    applied = updater.add_ratings({NEW_USER: {m: 5.0 for m in movie_ids}})
    assert applied.users == [NEW_USER]
    point = _point(vector_store, "users", NEW_USER)
    assert point[1]["rated"] == sorted(movie_ids)
    added = updater.add_movies([{"movie_id": 10**6, "title": "Later", "year": 2030}])
    assert added.movies == [10**6]
    assert _point(vector_store, "movies", 10**6, ("item",))[1]["title"] == "Later (2030)"
    assert updater.add_ratings({NEW_USER: {m: 5.0 for m in movie_ids}}).recorded == 0


def test_export_writes_a_dataset_with_the_recorded_updates(home, fmstore_cli, tmp_path):
    from fmstore.datasets import load_dataset

    first = _runs(home)[0]
    movie_ids = _liked_movies(first)
    store, engine = _open(home)
    with store:
        updater = Updater(store, engine)
        updater.add_movies([{"movie_id": 10**6, "title": "Later", "year": 2030, "genres": []}])
        user = int(runs.seen_user_ids(first)[0])
        updater.add_ratings({user: {movie_ids[0]: 0.5}, NEW_USER: {10**6: 4.0}})
    source = runs.load_manifest(first)["dataset"]["source"]
    result = fmstore_cli(home, "data", "export", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["recorded_ratings"] == 2
    data, before = load_dataset(tmp_path / "out"), load_dataset(source)
    assert (
        len(data.ratings) == len(before.ratings) + 1 and len(data.movies) == len(before.movies) + 1
    )
    mine = (data.ratings.user_id == user) & (data.ratings.movie_id == movie_ids[0])
    assert data.ratings.rating[mine].tolist() == [0.5]
