"""A nearly full disk (issue 18, item 3): publish checks the space its new collections need
before writing a byte and refuses in one line (exit 3); a disk that fills during the write (an
injected ENOSPC from the store) is one line too; either way the previous publication keeps
serving, no row stays `running` and no half-written collection is left. Also (item 4, the same
published home): a rollback whose catalog record fails after the switch says what happened."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3

import pytest


@pytest.fixture
def home(tmp_path, planted_runs, fmstore_cli):
    """A home with planted runs A and B (copied), A published and live."""
    home = tmp_path / "home"
    for run_dir in planted_runs:
        shutil.copytree(run_dir, home / "runs" / run_dir.name)
    a, b = (run_dir.name for run_dir in planted_runs)
    assert fmstore_cli(home, "publish", a).returncode == 0
    return home, a, b


def _collections(home) -> list[str]:
    return sorted(p.name for p in (home / "qdrant" / "collections").iterdir())


def _assert_a_still_serves(home, a, fmstore_cli) -> None:
    answered = fmstore_cli(home, "query", "--movie-id", "1", "--json")
    assert answered.returncode == 0, answered.stderr
    status = json.loads(fmstore_cli(home, "status", "--json").stdout)
    assert status["live_run"] == a
    with sqlite3.connect(home / "catalog.db") as db:
        states = {row[0] for row in db.execute("SELECT status FROM publications")}
    assert "running" not in states, states


def test_publish_refuses_when_the_disk_cannot_hold_the_new_collections(
    home, fmstore_cli, assert_one_line_error, monkeypatch
):
    home, a, b = home
    before = _collections(home)
    usage = shutil.disk_usage(home)
    monkeypatch.setattr(
        "fmstore.vectors.edge.shutil.disk_usage",
        lambda path: usage._replace(free=1024 * 1024),  # 1 MiB free
    )
    for args in (["publish", b], ["publish", a, "--force"]):
        refused = fmstore_cli(home, *args)
        assert_one_line_error(refused, "not enough disk space", "1.0 MiB free", "needed", code=3)
    monkeypatch.undo()
    assert _collections(home) == before
    _assert_a_still_serves(home, a, fmstore_cli)


def test_a_disk_that_fills_during_publish_is_one_line_and_a_serves_on(
    home, fmstore_cli, assert_one_line_error, monkeypatch
):
    """The store's write fails as Qdrant Edge fails on a full disk (its bare Exception carrying
    the OS error), after the first batch of points."""
    from fmstore.vectors.edge import EdgeStore

    home, a, b = home
    before = _collections(home)
    real_upsert = EdgeStore.upsert
    calls = []

    def upsert_until_full(self, name, ids, vectors, payloads):
        calls.append(name)
        if len(calls) > 1:
            with self._edge_errors(name):
                raise Exception(
                    "Service runtime error: Failed to save structure on disk: "
                    "No space left on device (os error 28)"
                )
        real_upsert(self, name, ids, vectors, payloads)

    monkeypatch.setattr(EdgeStore, "upsert", upsert_until_full)
    failed = fmstore_cli(home, "publish", b, "--batch-size", "16")
    assert_one_line_error(failed, "disk full", "free some space", code=3)
    monkeypatch.undo()
    assert _collections(home) == before  # the half-written collection is gone
    _assert_a_still_serves(home, a, fmstore_cli)
    assert fmstore_cli(home, "publish", b).returncode == 0  # and once there is room, it works


def test_the_estimate_covers_what_edge_takes(home):
    """The space publish asks for is at least what Qdrant Edge's files of a publication come to
    with every preallocated hole filled (their apparent size)."""
    from fmstore import runs
    from fmstore.publish import points as pts
    from fmstore.vectors.edge_disk import edge_bytes

    home, a, b = home
    run_dir = home / "runs" / a
    manifest = runs.load_manifest(run_dir)
    serving = runs.load_serving(run_dir, manifest)
    vectors = pts.served_vectors(serving, runs.load_ranking(run_dir, manifest))
    movies = pts.movie_points(serving, vectors, runs.load_movie_rows(run_dir))
    users = pts.user_points(serving, vectors, run_dir)
    k = serving.factors
    estimate = edge_bytes(
        vectors.movies_spec(k), len(movies), pts.payload_bytes(movies)
    ) + edge_bytes(vectors.users_spec(k), len(users), pts.payload_bytes(users))
    apparent = sum(
        f.stat().st_size for f in (home / "qdrant" / "collections").rglob("*") if f.is_file()
    )
    assert apparent <= estimate < 2 * apparent + 64 * 1024 * 1024


# ---- issue 18, item 4: rollback's catalog commit fails after the switch --------------------


def test_rollback_says_so_when_the_catalog_fails_after_the_switch(home, fmstore_cli):
    """The aliases switched back, then the commit failed: the error says the rollback happened
    (and what a second rollback would do), instead of reporting a plain failure."""
    from sqlalchemy import event

    from fmstore import catalog
    from fmstore.config import Settings
    from fmstore.errors import PublishRecordError
    from fmstore.publish import rollback
    from fmstore.vectors import open_store

    home, a, b = home
    assert fmstore_cli(home, "publish", b).returncode == 0
    settings = Settings(home=home)
    engine = catalog.make_engine(settings.catalog_url)
    store = open_store(settings)
    real_switch = store.switch_aliases

    def switch_then_break_the_catalog(mapping):
        real_switch(mapping)

        def refuse(conn):
            raise RuntimeError("catalog went away")

        event.listen(engine, "commit", refuse)

    store.switch_aliases = switch_then_break_the_catalog
    try:
        with pytest.raises(PublishRecordError, match=f"rolled back: run {a} is live") as raised:
            rollback(store, engine)
        assert f"a second --rollback returns to run {b}" in str(raised.value)
        assert store.resolve_alias("movies").startswith(f"movies__{a}")
    finally:
        store.close()
        engine.dispose()


# ---- issue 18, item 3: a query never needs to write -------------------------------------------


def _query_answers(home, fmstore_cli, process: bool = False) -> None:
    for args in (["--movie-id", "1"], ["--user", "1"], ["--rated", "Action Movie 1=5"]):
        answered = fmstore_cli(home, "query", *args, "--json", process=process)
        assert answered.returncode == 0 and json.loads(answered.stdout)["results"], answered.stderr


def test_a_query_answers_when_the_store_has_no_room_to_open_a_collection(
    home, fmstore_cli, assert_one_line_error, monkeypatch
):
    """Under 64 MiB free, a reader opens a private copy of each collection (Edge writes into a
    collection when it opens it, a SIGBUS on a full disk); a writer that would open one in place
    says so in one line instead."""
    from fmstore.config import Settings
    from fmstore.vectors import EdgeStore

    home, a, b = home
    usage = shutil.disk_usage(home)
    monkeypatch.setattr(
        "fmstore.vectors.edge.shutil.disk_usage", lambda path: usage._replace(free=1024 * 1024)
    )
    copies = []
    from fmstore.vectors.edge_disk import private_copy

    monkeypatch.setattr(
        "fmstore.vectors.edge.private_copy", lambda f: copies.append(private_copy(f)) or copies[-1]
    )
    _query_answers(home, fmstore_cli)
    assert copies and not any(c.exists() for c in copies)  # opened from copies, then removed
    with EdgeStore(Settings(home=home).qdrant_path) as store:
        store.lock()
        with pytest.raises(Exception, match="disk full or read-only") as refused:
            store.count("movies")
        assert refused.type.__name__ == "StoreError"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_a_query_answers_on_a_completely_full_disk(
    home, tmp_path, fmstore_cli, assert_one_line_error
):
    """A real full file system: queries answer, publish refuses in one line (exit 3)."""
    import subprocess

    home, a, b = home
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        full = disk / "home"
        shutil.copytree(home, full)
        with open(disk / "filler", "wb") as filler:  # every block of the file system
            with pytest.raises(OSError):
                while True:
                    filler.write(b"\0" * (1 << 20))
                    filler.flush()
        assert shutil.disk_usage(disk).free < 1 << 20
        _query_answers(full, fmstore_cli, process=True)  # (a SIGBUS must not end pytest)
        refused = fmstore_cli(full, "publish", b)
        assert_one_line_error(refused, code=3)
    finally:
        subprocess.run(["umount", "-l", str(disk)])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a read-only tmpfs")
def test_a_read_only_home_can_be_queried_and_listed(home, tmp_path, fmstore_cli):
    """issue 18 (Low): queries, `runs` and `status` on a home on a read-only file system."""
    import subprocess

    home, a, b = home
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(home, disk / "home")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        _query_answers(disk / "home", fmstore_cli, process=True)
        listed = fmstore_cli(disk / "home", "runs", "--json", process=True)
        assert listed.returncode == 0 and a in listed.stdout, listed.stderr
    finally:
        subprocess.run(["umount", "-l", str(disk)])
