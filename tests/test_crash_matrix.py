"""The crash matrix: a real `fmstore publish` killed at every stage boundary, by SIGKILL and by
SIGINT (Ctrl-C), for a new run and for a re-publish of the live run (`--force`: new collections
of the same run, then the switch).

After each kill: the aliases name one complete publication (movies and users of the same
publication, every point there), queries answer from it with the catalog of the same run, the
next publish succeeds, and no publication stays `running`. The process kills itself through the
test-only hook FMSTORE_TEST_KILL_AT=<stage>:<signal> (fmstore/publish/checks.py).
"""

from __future__ import annotations

import signal

import pytest
from planted import (
    GROUPS,
    MOVIES_PER_GROUP,
    UNRATED_PER_GROUP,
    USERS_PER_GROUP,
    copy_home,
    rated_movie_ids,
)
from sqlalchemy.orm import Session

from fmstore import catalog
from fmstore.publish import KILL_AT_ENV, STAGES, publish, run_id_of, sibling_collection
from fmstore.recommend import Recommender
from fmstore.vectors import EdgeStore

pytestmark = pytest.mark.slow  # 28 publishes, each killed in its own process

N_MOVIES = len(GROUPS) * (MOVIES_PER_GROUP + UNRATED_PER_GROUP)
N_USERS = len(GROUPS) * USERS_PER_GROUP
KINDS = ("new-run", "republish-live")
SIGNALS = ("SIGKILL", "SIGINT")
# Stages after which the new publication is live (the switch happened).
LIVE_AFTER = {"after_switch", "after_catalog"}
CASES = [(stage, kind, sig) for stage in STAGES for kind in KINDS for sig in SIGNALS]


def test_the_matrix_covers_every_stage_a_publish_passes(
    live_home, planted_runs, tmp_path, monkeypatch
):
    """The stages killed below are the ones a real publish reaches, in its order: a stage
    added to the code without a crash case (or a case for a stage the code lost) fails here."""
    from fmstore.publish import checks

    reached = []
    monkeypatch.delenv(KILL_AT_ENV, raising=False)
    real = checks.checkpoint

    def record(stage):
        if not reached or reached[-1] != stage:  # once per stage, not per batch
            reached.append(stage)
        real(stage)

    monkeypatch.setattr("fmstore.publish.transaction.checkpoint", record)
    monkeypatch.setattr("fmstore.publish.points.checkpoint", record)
    home = copy_home(live_home, tmp_path / "home")
    engine = catalog.make_engine(f"sqlite:///{home / 'catalog.db'}")
    with EdgeStore(home / "qdrant") as store:
        publish(home / "runs" / planted_runs[1].name, store, engine)
    engine.dispose()
    assert reached == list(STAGES)
    assert set(STAGES) >= LIVE_AFTER and len(CASES) == len(STAGES) * len(KINDS) * len(SIGNALS)


@pytest.mark.parametrize(("stage", "kind", "signame"), CASES, ids=["-".join(c) for c in CASES])
def test_killed_publish_leaves_one_complete_publication(
    live_home, planted_runs, tmp_path, fmstore_cli, stage, kind, signame
):
    home = tmp_path / "home"
    copy_home(live_home, home)
    old, new = (run.name for run in planted_runs)
    before = _live(home)
    assert run_id_of(before[0]) == old

    run, force = (new, []) if kind == "new-run" else (old, ["--force"])
    killed = fmstore_cli(
        home,
        "publish",
        run,
        *force,
        "--batch-size",
        "16",  # several batches of movies and of users: "mid-upsert" is mid-way
        env={KILL_AT_ENV: f"{stage}:{signame}"},
        process=True,  # the process is killed: it must be one of its own
    )
    if signame == "SIGKILL":
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    else:
        assert killed.returncode == 130, killed.stderr  # Ctrl-C's exit code
    assert "Traceback" not in killed.stderr

    # One complete publication is live: the old one until the switch, the new one after it.
    movies, users = _live(home)
    if stage in LIVE_AFTER:
        assert movies != before[0] and run_id_of(movies) == run
    else:
        assert (movies, users) == before
    if signame == "SIGINT":  # Ctrl-C: the user is told which publication serves now
        assert f"interrupted; 'movies' now serves {movies}" in killed.stderr
    _assert_queries_answer_from(home, movies)

    # The next publish succeeds (and repairs the rows the killed process left running).
    engine = catalog.make_engine(f"sqlite:///{home / 'catalog.db'}")
    try:
        with EdgeStore(home / "qdrant") as store:
            result = publish(home / "runs" / new, store, engine, force=True)
            assert not result.skipped and store.resolve_alias("movies") == result.movies_collection
        with Session(engine) as s:
            rows = catalog.publications(s)
            assert [p for p in rows if p.status == "running"] == []
            # the killed publication's rows say what happened to it
            killed_rows = [p for p in rows if p.collection in (movies, users)]
            if stage in LIVE_AFTER:
                assert {p.status for p in killed_rows} == {"succeeded"}
    finally:
        engine.dispose()
    _assert_queries_answer_from(home, _live(home)[0])


def _live(home) -> tuple[str, str]:
    """The collections the aliases name; always movies and users of one publication."""
    with EdgeStore(home / "qdrant") as store:
        movies, users = store.resolve_alias("movies"), store.resolve_alias("users")
        assert users == sibling_collection(movies, "users")
        assert store.count(movies) == N_MOVIES and store.count(users) == N_USERS
    return movies, users


def _assert_queries_answer_from(home, movies: str) -> None:
    """Similar movies, a known user and a new user, all from one publication and its run's
    catalog rows."""
    run_id = run_id_of(movies)
    with EdgeStore(home / "qdrant") as store:
        rec = Recommender(store, home / "catalog.db")
        try:
            assert rec.movies_collection == movies and rec.run_id == run_id
            assert len(rec.titles().movies) == N_MOVIES  # the live run's catalog rows
            first = rated_movie_ids(0)[0]
            answers = [
                rec.similar_items(first, N=5)[0],
                rec.recommend(1, N=5)[0],
                rec.recommend_for_ratings({first: 5.0}, N=5)[0],
            ]
            payloads = rec.movie_info([int(i) for ids in answers for i in ids])
            assert {p["run_id"] for p in payloads.values()} == {run_id}
            vectors, payload = store.retrieve(rec.users_collection, [1], vectors=["rank"])[1]
            assert payload["run_id"] == run_id and payload["rated"]  # the ranking model's user
            assert vectors["rank"].shape == (rec.rank_factors + 1,)
        finally:
            rec.close()
    reader = catalog.open_reader(home / "catalog.db")
    try:
        assert len(reader.movie_titles(run_id)) == N_MOVIES
    finally:
        reader.close()
