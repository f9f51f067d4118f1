"""Publish as a transaction, on both engines and both SQL backends: the live publication keeps
serving whatever fails, arguments are checked and the store taken before anything is written,
the catalog follows the aliases (rollback included), and outcome records match what happened."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from planted import write_planted
from sqlalchemy.orm import Session

from fmstore import catalog
from fmstore.errors import ArgumentError, PublishRecordError, StoreBusyError
from fmstore.publish import (
    physical_name,
    publish,
    reconcile,
    rollback,
    run_id_of,
    sibling_collection,
    status,
)
from fmstore.publish import transaction as transaction_module
from fmstore.recommend import Recommender
from fmstore.vectors import EdgeStore


class FailingStore:
    """Wraps a store and raises on the n-th upsert: a publish that dies half-way."""

    def __init__(self, store, fail_at: int):
        self._store, self._left = store, fail_at

    def __getattr__(self, name):
        return getattr(self._store, name)

    def upsert(self, *args, **kwargs):
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("injected failure")
        return self._store.upsert(*args, **kwargs)


def _serves(store, engine, run_id: str, movies_collection: str) -> None:
    """Queries answer from publication `movies_collection` of run `run_id`, titles from the same
    run."""
    rec = Recommender(store, engine)
    try:
        assert rec.run_id == run_id and rec.movies_collection == movies_collection
        ids, _ = rec.similar_items(1, N=3)
        info = rec.movie_info(ids)
        assert {p["run_id"] for p in info.values()} == {run_id}
        assert rec.user_vector(1)[0].shape == (rec.factors,)
        assert rec.resolve_title("Action Movie 1") == 1
    finally:
        rec.close()


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    return int(done.stdout)


def test_republishing_the_live_run_that_fails_keeps_it_serving(vector_store, engine, planted_runs):
    run = planted_runs[0]
    live = publish(run, vector_store, engine, batch_size=8)
    for fail_at in (1, 3, 7):  # first movie batch, mid-movies, users
        with pytest.raises(RuntimeError, match="injected"):
            publish(
                run,
                FailingStore(vector_store, fail_at),
                engine,
                batch_size=8,
                force=True,
            )
        assert vector_store.resolve_alias("movies") == live.movies_collection
        assert vector_store.resolve_alias("users") == live.users_collection
        _serves(vector_store, engine, run.name, live.movies_collection)
    assert publish(run, vector_store, engine).skipped  # without force: a recorded no-op
    again = publish(run, vector_store, engine, force=True)
    assert not again.skipped
    assert again.movies_collection != live.movies_collection  # a new publication, never in place
    _serves(vector_store, engine, run.name, again.movies_collection)
    assert rollback(vector_store, engine) == run.name  # back to the first publication
    _serves(vector_store, engine, run.name, live.movies_collection)


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("batch_size", 1.5),
        ("replicas", 0),
        ("write_consistency", -1),
        ("batch_size", 0),
        ("batch_size", -5),
        ("shards", 0),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    vector_store, engine, planted_runs, argument, value
):
    old, new = planted_runs
    live = publish(old, vector_store, engine)
    with Session(engine) as s:
        before = [(p.id, p.status) for p in catalog.publications(s)]
    with pytest.raises(ArgumentError) as caught:
        publish(new, vector_store, engine, **{argument: value})
    assert caught.value.argument == argument
    assert vector_store.resolve_alias("movies") == live.movies_collection
    assert vector_store.list_collections() == sorted(
        [live.movies_collection, live.users_collection]
    )
    with Session(engine) as s:
        assert catalog.get_run(s, new.name) is None  # the catalog was not written
        assert [(p.id, p.status) for p in catalog.publications(s)] == before


def test_a_locked_store_is_refused_before_the_catalog_is_written(tmp_path, engine, planted_runs):
    old, new = planted_runs
    with EdgeStore(tmp_path / "q") as store:
        publish(old, store, engine)
    with EdgeStore(tmp_path / "q") as holder:
        holder.lock()
        with pytest.raises(StoreBusyError, match="store in use by process"):
            publish(new, EdgeStore(tmp_path / "q"), engine)
    with Session(engine) as s:
        assert catalog.get_run(s, new.name) is None
        assert catalog.movie_count(s, new.name) == 0


@pytest.fixture(scope="module")
def renamed_run(planted_train, tmp_path_factory):
    """A run whose movie 1 has another title: catalog rows differ between runs."""
    from fmstore import datasets, runs
    from fmstore.config import TrainConfig
    from fmstore.train import train

    folder = write_planted(tmp_path_factory.mktemp("renamed"))
    movies = folder / "movies.csv"
    movies.write_text(movies.read_text().replace("Action Movie 1 (1991)", "Renamed Feature (1991)"))
    dataset = datasets.load_dataset(folder)
    config = TrainConfig(**planted_train, seed=2)
    return runs.save_run(train(dataset, config), dataset, config, tmp_path_factory.mktemp("r"))


def test_titles_belong_to_the_live_run_through_publish_and_rollback(
    vector_store, engine, planted_runs, renamed_run
):
    first = publish(planted_runs[0], vector_store, engine)
    _serves(vector_store, engine, planted_runs[0].name, first.movies_collection)
    publish(renamed_run, vector_store, engine)
    with Recommender(vector_store, engine) as rec:
        assert rec.resolve_title("Renamed Feature") == 1
        assert rec.titles().movies[0][1] == "Renamed Feature (1991)"
    rollback(vector_store, engine)
    _serves(vector_store, engine, planted_runs[0].name, first.movies_collection)  # "Action Movie 1"
    with Recommender(vector_store, engine) as rec:
        assert all(t != "Renamed Feature (1991)" for _, t, _ in rec.titles().movies)


def test_a_catalog_failure_after_the_switch_says_so_and_is_repaired(
    vector_store, engine, planted_runs, monkeypatch
):
    old, new = planted_runs
    publish(old, vector_store, engine)
    real_finish = transaction_module._finish

    def failing_finish(engine_, pubs, status_, **kwargs):
        if status_ == "succeeded":
            raise RuntimeError("catalog went away")
        return real_finish(engine_, pubs, status_, **kwargs)

    monkeypatch.setattr(transaction_module, "_finish", failing_finish)
    with pytest.raises(PublishRecordError, match="is live .* recording it in the catalog failed"):
        publish(new, vector_store, engine)
    monkeypatch.undo()
    live = vector_store.resolve_alias("movies")
    assert live.startswith(f"movies__{new.name}__")  # what the message said: it is live
    _serves(vector_store, engine, new.name, live)  # and queries answer from it already
    with Session(engine) as s, s.begin():
        running = catalog.publications(s, status="running")
        assert {p.collection.split("__")[1] for p in running} == {new.name}
        for p in running:
            p.pid = _dead_pid()  # the process that published has ended
    state = status(vector_store, engine)
    assert state["live_run"] == new.name and len(state["repaired"]) == 2
    with Session(engine) as s:
        assert catalog.publications(s, status="running") == []
        latest = catalog.publications(s, alias="movies")[0]
        assert (latest.collection, latest.status) == (live, "succeeded")
    assert rollback(vector_store, engine) == old.name  # the history is right again


def test_stale_running_rows_are_marked_failed(vector_store, engine, planted_runs):
    old, new = planted_runs
    publish(old, vector_store, engine)
    with Session(engine) as s, s.begin():
        stale = catalog.start_publication(
            s,
            run_id=old.name,
            backend=vector_store.backend,
            alias="movies",
            collection="movies__x__pdead",
            pid=_dead_pid(),
            host=socket.gethostname(),
        )
        alive = catalog.start_publication(
            s,
            run_id=old.name,
            backend=vector_store.backend,
            alias="movies",
            collection="movies__x__palive",
            pid=1,
            host="another-machine",
        )
    assert reconcile(vector_store, engine, ("movies", "users")) == [
        "movies__x__pdead: failed (stale)"
    ]
    with Session(engine) as s:
        rows = {p.id: p for p in catalog.publications(s)}
        assert rows[stale].status == "failed" and "ended before finishing" in rows[stale].error
        assert rows[alive].status == "running"  # another machine's: left alone


def test_switch_aliases_is_all_or_nothing(vector_store, engine, planted_runs):
    live = publish(planted_runs[0], vector_store, engine)
    from fmstore.errors import NotFoundError

    with pytest.raises(NotFoundError):
        vector_store.switch_aliases(
            {"movies": live.movies_collection, "users": "users__no-such-collection"}
        )
    assert vector_store.resolve_alias("users") == live.users_collection
    second = publish(planted_runs[1], vector_store, engine)
    assert vector_store.resolve_alias("movies") == second.movies_collection
    assert vector_store.resolve_alias("users") == second.users_collection
    assert np.isfinite(vector_store.count("users"))


def test_collection_names_carry_run_and_publication():
    name = physical_name("movies", "20261129-105500-ab12cd", "p0123abcd")
    assert name == "movies__20261129-105500-ab12cd__p0123abcd"
    assert (
        run_id_of(name) == run_id_of("movies__20261129-105500-ab12cd") == "20261129-105500-ab12cd"
    )
    assert sibling_collection(name, "users") == "users__20261129-105500-ab12cd__p0123abcd"
    assert sibling_collection("movies__r1", "users") == "users__r1"  # names from before tokens
