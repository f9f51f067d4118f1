"""Concurrency on the server path: 8 threads query (similar movies, a new user, a known user)
through one shared QdrantClient(":memory:") while another thread publishes and rolls back,
switching the aliases. Zero errors, and every answer's movies and user vector come from one
publication (and its run's catalog rows)."""

from __future__ import annotations

import threading

import pytest
from planted import rated_movie_ids

from fmstore import catalog
from fmstore.publish import publish, rollback, sibling_collection
from fmstore.recommend import Recommender
from fmstore.vectors import ServerStore

READERS = 8


@pytest.fixture
def sqlite_engine(tmp_path):
    engine = catalog.make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield engine
    engine.dispose()


def test_queries_during_publishes_and_rollbacks(sqlite_engine, planted_runs):
    from qdrant_client import QdrantClient

    store = ServerStore(QdrantClient(":memory:"))
    old, new = planted_runs
    publish(old, store, sqlite_engine)
    done = threading.Event()
    errors: list[BaseException] = []
    answers = [0] * READERS
    switches = []

    def writer() -> None:
        try:
            for _round in range(3):
                for run in (new, old, new, new):  # the last: the live run again, forced
                    result = publish(run, store, sqlite_engine, force=True)
                    switches.append(("publish", result.movies_collection))
                switches.append(("rollback", rollback(store, sqlite_engine)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    def reader(slot: int) -> None:
        first = rated_movie_ids(slot % 3)[0]
        try:
            while not done.is_set() or answers[slot] == 0:
                with Recommender(store, sqlite_engine) as rec:
                    assert rec.users_collection == sibling_collection(
                        rec.movies_collection, "users"
                    )
                    rankings = [
                        rec.similar_items(first, N=5)[0],
                        rec.recommend_for_ratings({first: 5.0}, N=5)[0],
                        rec.recommend(1 + slot, N=5, filter_already_liked_items=False)[0],
                    ]
                    info = rec.movie_info([int(i) for ids in rankings for i in ids])
                    assert {p["run_id"] for p in info.values()} == {rec.run_id}
                    user = store.retrieve(rec.users_collection, [1 + slot])[1 + slot][1]
                    assert user["run_id"] == rec.run_id and user["rated"]
                    assert rec.titles().movies  # the run's own catalog rows
                answers[slot] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    threads.append(threading.Thread(target=writer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert errors == []
    assert len(switches) == 15 and all(n > 0 for n in answers)
    print(
        f"\n{sum(answers)} query rounds (3 queries each) by {READERS} threads, "
        f"{len(switches)} alias switches, 0 errors"
    )
