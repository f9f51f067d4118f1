"""Publish a run as a transaction: new collections, verified, then one switch of both aliases.

Order of work, so that readers only ever see one complete publication:
  1. check every argument and the run folder (sha256 of every file), build all points in memory;
  2. take the store (embedded: the process lock), bring the catalog schema to head, mark stale
     `running` publications of killed processes (history.reconcile);
  3. record the run and its movies (movies are kept per run: the live run's rows never change);
  4. open a `running` publication row per alias, with our pid and host;
  5. write NEW collections `movies__<run_id>__<token>` and `users__<run_id>__<token>` (a new
     token for every publication, so nothing live is ever touched), flush and verify both;
  6. switch both aliases in one atomic operation, then mark the publication rows succeeded.
A failure before 6 leaves the aliases where they were, marks the rows failed and drops the new
collections. A failure after the switch says so (PublishRecordError), and the next publish
repairs the rows. Nothing is pruned here: `prune` is its own action.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fmstore import catalog, runs
from fmstore.errors import PublishRecordError
from fmstore.publish import points as pts
from fmstore.publish.checks import check_publish_arguments, checkpoint
from fmstore.publish.history import reconcile
from fmstore.serving import physical_name, run_id_of, sibling_collection
from fmstore.vectors import VectorStore
from fmstore.vectors.base import Placement

ProgressFn = pts.ProgressFn


@dataclass
class PublishResult:
    """What publish() did: the run, its physical collections, point counts, whether it was
    skipped (already live and complete) and which stale publication rows it repaired first."""

    run_id: str
    movies_collection: str
    users_collection: str
    movies: int
    users: int
    skipped: bool  # True when the run was already live and complete: nothing was rewritten
    repaired: list[str] | None = None  # stale publication rows this start marked


def new_token() -> str:
    """Names one publication: 'p' + 8 hex digits."""
    return "p" + uuid.uuid4().hex[:8]


def publish(
    run_dir: Path,
    store: VectorStore,
    engine: Engine,
    *,
    movies_alias: str = "movies",
    users_alias: str = "users",
    batch_size: int = 1024,
    shards: int | None = None,
    replicas: int | None = None,
    write_consistency: int | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> PublishResult:
    """Publish a run (the steps are the module docstring's): new collections for this
    publication, written, flushed and verified, then both aliases switched in one operation and
    the publication recorded. Refuses bad arguments, a corrupt run and a locked store before
    writing anything. Re-publishing the live, complete run is a recorded no-op (skipped) unless
    `force`, which writes a fresh publication of it (new collections, then the switch). Which
    vectors are written: `points.served_vectors`."""
    check_publish_arguments(
        movies_alias=movies_alias,
        users_alias=users_alias,
        batch_size=batch_size,
        shards=shards,
        replicas=replicas,
        write_consistency=write_consistency,
    )
    store.check_placement(Placement(shards, replicas, write_consistency))  # before any write
    manifest = runs.load_manifest(run_dir)  # refuses a corrupt run before anything is written
    runs.check_servable(run_dir, manifest)  # and one whose serving values no query could use
    serving = runs.load_serving(run_dir, manifest)
    vectors = pts.served_vectors(serving, runs.load_ranking(run_dir, manifest))
    movie_rows = runs.load_movie_rows(run_dir)
    user_keys, movie_keys = runs.load_keys(run_dir)
    movies = pts.movie_points(serving, vectors, movie_rows, movie_keys)
    users = pts.user_points(serving, vectors, run_dir, user_keys)
    run_id = manifest["run_id"]
    aliases = (movies_alias, users_alias)

    store.lock()  # before the catalog is written: a second process is refused here
    catalog.ensure_schema(engine)
    repaired = reconcile(store, engine, aliases)
    _record_run(engine, run_dir, manifest, movie_rows, vectors.config)

    live = store.resolve_alias(movies_alias)
    if not force and live and _already_live(store, live, users_alias, run_id, movies, users):
        targets = {movies_alias: live, users_alias: sibling_collection(live, users_alias)}
        _record_noop(engine, run_id, store.backend, targets, movies, users)
        return PublishResult(run_id, *targets.values(), len(movies), len(users), True, repaired)

    # Room for both new collections, or refuse now: nothing written, the live one serves on.
    k = serving.factors
    store.check_space(
        [
            (vectors.movies_spec(k), len(movies), pts.payload_bytes(movies)),
            (vectors.users_spec(k), len(users), pts.payload_bytes(users)),
        ]
    )
    token = new_token()
    targets = {alias: physical_name(alias, run_id, token) for alias in aliases}
    pubs = _start(engine, run_id, store.backend, targets)
    options = dict(shards=shards, replicas=replicas, write_consistency=write_consistency)
    movies_coll, users_coll = targets[movies_alias], targets[users_alias]
    switched = False
    try:
        checkpoint("before_upsert")
        store.create_collection(movies_coll, vectors.movies_spec(k), **options)
        pts.write(store, movies_coll, movies, batch_size, progress, "movies")
        store.create_collection(users_coll, vectors.users_spec(k), **options)
        pts.write(store, users_coll, users, batch_size, progress, "users")
        store.flush(movies_coll)
        store.flush(users_coll)
        checkpoint("after_flush")
        pts.verify(store, movies_coll, movies)
        pts.verify(store, users_coll, users)
        checkpoint("before_switch")
        store.switch_aliases(targets)
        switched = True
        checkpoint("after_switch")
        points = {movies_alias: len(movies), users_alias: len(users)}
        _finish(engine, pubs, "succeeded", points=points)
    except BaseException as exc:
        if not switched:
            _abandon(store, engine, pubs, targets, exc)
            raise
        # Live from here on: record it (PublishRecordError when that fails too) and report
        # success, unless it was Ctrl-C, which still stops the program.
        _after_switch_failure(engine, pubs, exc, run_id, targets, len(movies), len(users))
        if not isinstance(exc, Exception):
            raise
    checkpoint("after_catalog")
    return PublishResult(run_id, movies_coll, users_coll, len(movies), len(users), False, repaired)


def _record_run(engine, run_dir, manifest, movie_rows, serving_config: dict) -> None:
    """The run and its movies. Movies are kept per run: rewriting a run's rows writes the very
    same values (the run folder is checked by sha256), so the live run's rows never change."""
    with Session(engine) as session, session.begin():
        catalog.record_run(
            session,
            run_id=manifest["run_id"],
            created_at=_parse_time(manifest["created_at"]),
            dataset_name=manifest["dataset"]["name"],
            dataset_fingerprint=manifest["dataset"]["fingerprint"],
            config={"train": manifest["config"], "serving": manifest["serving"] | serving_config},
            metrics=manifest["metrics"],
            artifact_path=str(Path(run_dir).resolve()),
        )
        catalog.upsert_movies(session, movie_rows, run_id=manifest["run_id"])


def _already_live(store, live, users_alias, run_id, movies, users) -> bool:
    """Re-publishing the live run changes nothing: its collections are complete and aliased (the
    run folder is checked by sha256, so the same run id writes the very same points)."""
    users_coll = sibling_collection(live, users_alias)
    if run_id_of(live) != run_id or store.resolve_alias(users_alias) != users_coll:
        return False
    return store.count(live) == len(movies) and store.count(users_coll) == len(users)


def _start(engine, run_id: str, backend: str, targets: dict[str, str]) -> dict[str, int]:
    with Session(engine) as session, session.begin():
        return {
            alias: catalog.start_publication(
                session,
                run_id=run_id,
                backend=backend,
                alias=alias,
                collection=coll,
                pid=os.getpid(),
                host=socket.gethostname(),
            )
            for alias, coll in targets.items()
        }


def _record_noop(engine, run_id, backend, targets, movies, users) -> None:
    pubs = _start(engine, run_id, backend, targets)
    movies_alias, users_alias = targets
    _finish(engine, pubs, "succeeded", points={movies_alias: len(movies), users_alias: len(users)})


def _finish(engine, pubs: dict[str, int], status: str, *, points=None, error=None) -> None:
    with Session(engine) as session, session.begin():
        for alias, pub in pubs.items():
            catalog.finish_publication(
                session, pub, status=status, points=(points or {}).get(alias), error=error
            )


def _abandon(store, engine, pubs, targets, exc: BaseException) -> None:
    """Before the switch: nothing a reader sees changed. Record the failure and drop the new,
    never-aliased collections (best effort: a later `prune` removes what is left)."""
    try:
        _finish(engine, pubs, "failed", error=f"{type(exc).__name__}: {exc}"[:2000])
    except Exception:
        pass  # the next start marks the rows stale (their process is gone)
    for coll in targets.values():
        try:
            store.delete_collection(coll)
        except Exception:
            pass


def _after_switch_failure(engine, pubs, exc, run_id, targets, n_movies, n_users) -> None:
    """The aliases switched: the publication is live whatever happens next. Record it; if that
    fails too, say exactly that (the next start repairs the rows from the live aliases)."""
    movies_alias, users_alias = targets
    try:
        points = {movies_alias: n_movies, users_alias: n_users}
        _finish(engine, pubs, "succeeded", points=points)
    except Exception as record_error:
        live = ", ".join(f"'{a}' -> {c}" for a, c in targets.items())
        raise PublishRecordError(
            f"run {run_id} is live ({live}), but recording it in the catalog failed: "
            f"{type(record_error).__name__}: {' '.join(str(record_error).split())[:300]}; "
            "the next publish or status repairs the record"
        ) from exc


def _parse_time(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)
