"""Many readers at once (issue 18): any number of processes and threads query while publishes,
rollbacks and prunes run beside them, with 0 errors; only writers wait for writers."""

from __future__ import annotations

import math
import os
import shutil

import pytest
from many_readers import drive_processes, drive_threads
from planted import rated_movie_ids

from fmstore import catalog
from fmstore.recommend import Recommender
from fmstore.vectors import EdgeStore


def test_a_query_does_not_wait_for_a_writer(planted_home, tmp_path, fmstore_cli):
    """Two `fmstore query` at once, and one while a writer holds the store: all answer."""
    import subprocess
    import sys

    home = tmp_path / "home"
    shutil.copytree(planted_home[0], home)
    with EdgeStore(home / "qdrant") as writer:
        writer.lock()  # as a publish, rollback or prune holds it
        args = [sys.executable, "-m", "fmstore", "query", "--movie-id", "1", "--json"]
        env = {**os.environ, "FMSTORE_HOME": str(home)}
        pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs = [subprocess.Popen(args, env=env, **pipes) for _ in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, results):
        assert proc.returncode == 0 and out.strip().startswith(b"{"), err
    assert not (home / "qdrant" / ".lock").read_text()  # the writer's pid went with its lock


def test_the_same_home_twice_in_one_process_and_close_releases(planted_published_home):
    """The README snippet run twice in a notebook: no StoreBusyError on its own pid; close()
    (or `with`) lets go of the shards the queries opened, given store or not."""
    from fmstore.config import Settings

    s = Settings(home=planted_published_home)
    for _ in range(2):
        store = EdgeStore(s.qdrant_path)
        with Recommender(store, s.catalog_url) as rec:
            assert len(rec.similar_items(rated_movie_ids(0)[0], N=3)[0]) == 3
            other = Recommender(EdgeStore(s.qdrant_path), s.catalog_url)
            assert other.run_id == rec.run_id and len(other.recommend(1, N=3)[0]) == 3
            other.close()
            assert store._shards  # open while in use
        assert store._shards == {} and other.store._shards == {}


def test_query_wait_waits_for_a_first_publication(tmp_path, fmstore_cli, assert_one_line_error):
    nothing = fmstore_cli(tmp_path / "empty", "query", "--movie-id", "1", "--wait", "0.3")
    assert_one_line_error(nothing, "nothing is published", code=2)
    assert not (tmp_path / "empty").exists()  # a read never creates a home
    for bad in ("nan", "-1", "inf"):
        refused = fmstore_cli(tmp_path / "empty", "query", "--movie-id", "1", "--wait", bad)
        assert_one_line_error(refused, f"--wait {bad}", code=2)


@pytest.fixture
def load_home(planted_runs, tmp_path):
    """A home with run 0 published (embedded store, SQLite catalog) and its engine."""
    from fmstore.publish import publish

    home = tmp_path / "home"
    engine = catalog.make_engine(f"sqlite:///{home / 'catalog.db'}")
    with EdgeStore(home / "qdrant") as store:
        publish(planted_runs[0], store, engine)
    yield home, engine
    engine.dispose()


@pytest.mark.slow
def test_8_processes_query_the_embedded_store_during_publishes_and_rollbacks(
    load_home, planted_runs
):
    home, engine = load_home
    seen, writes = drive_processes(
        home, engine, planted_runs, rated_movie_ids(0)[0], 8, 200, publishes=5, rollbacks=2
    )
    print("\n" + seen.table("embedded store (processes)", 8, writes))
    assert seen.errors == [] and len(seen.latencies) == 8 * 200
    assert writes.count("publish") == 5 and writes.count("rollback") == 2
    assert math.isfinite(sorted(seen.latencies)[len(seen.latencies) // 2])


@pytest.mark.slow
def test_8_threads_query_a_local_mode_server_store_during_publishes_and_rollbacks(
    planted_runs, tmp_path
):
    from qdrant_client import QdrantClient

    from fmstore.publish import publish
    from fmstore.vectors import ServerStore

    engine = catalog.make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    store = ServerStore(QdrantClient(":memory:"))
    publish(planted_runs[0], store, engine)
    seen, writes = drive_threads(
        store, engine, planted_runs, rated_movie_ids(0)[0], 8, 200, publishes=5, rollbacks=2
    )
    print("\n" + seen.table("qdrant-client local mode (threads)", 8, writes))
    engine.dispose()
    assert seen.errors == [] and len(seen.latencies) == 8 * 200
