"""What happens between publications: stale rows repaired, rollback, prune, and the status.

A publication row is `running` while its process works on it. A process killed mid-way leaves
its rows `running`: reconcile() (run by every publish, rollback, prune and status) marks such
rows of processes that are gone: `succeeded` when the aliases point at their collections (killed
after the switch), `failed` otherwise.
"""

from __future__ import annotations

import os
import socket

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fmstore import catalog
from fmstore.errors import NotFoundError, PublishRecordError
from fmstore.publish.checks import check_aliases, check_keep
from fmstore.serving import run_id_of, sibling_collection
from fmstore.vectors import VectorStore


def reconcile(store: VectorStore, engine: Engine, aliases: tuple[str, ...]) -> list[str]:
    """Mark the `running` publications whose process is gone; returns what was marked."""
    live = {alias: store.resolve_alias(alias) for alias in aliases}
    marked = []
    with Session(engine) as session, session.begin():
        for pub in catalog.publications(session, status="running"):
            if not _process_gone(pub, store):
                continue
            who = f"process {pub.pid} on {pub.host}" if pub.pid else "an earlier process"
            if live.get(pub.alias) == pub.collection:
                catalog.finish_publication(
                    session,
                    pub.id,
                    status="succeeded",
                    error=f"recorded late: {who} switched the alias and ended before recording it",
                )
                marked.append(f"{pub.collection}: succeeded (live)")
            else:
                catalog.finish_publication(
                    session,
                    pub.id,
                    status="failed",
                    error=f"stale: {who} ended before finishing (killed?)",
                )
                marked.append(f"{pub.collection}: failed (stale)")
    return marked


def _process_gone(pub, store: VectorStore) -> bool:
    if pub.pid is None:
        # A row from before pids were recorded: on the embedded store we hold its lock, so no
        # other process can be writing to it.
        return pub.backend == "edge" == store.backend
    if pub.host != socket.gethostname():
        return False  # another machine's process: we cannot tell; leave it
    if pub.pid == os.getpid():
        return False
    try:
        os.kill(pub.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


# ---- rollback -----------------------------------------------------------------------------------


def rollback_target(
    store: VectorStore, engine: Engine, movies_alias: str, users_alias: str
) -> tuple[str, str] | None:
    """The collections of the newest succeeded publication that is not live and still complete
    on the store (movies and users of the same publication), or None."""
    live = store.resolve_alias(movies_alias)
    with Session(engine) as session:
        history = catalog.publications(session, alias=movies_alias, status="succeeded")
        candidates = list(dict.fromkeys(p.collection for p in history))
    for coll in candidates:
        users = sibling_collection(coll, users_alias)
        if coll != live and store.collection_exists(coll) and store.collection_exists(users):
            return coll, users
    return None


def rollback(
    store: VectorStore, engine: Engine, *, movies_alias: str = "movies", users_alias: str = "users"
) -> str:
    """Point both aliases, in one switch, back at the previous succeeded publication; returns its
    run id. The catalog follows: queries read the movies of the run the aliases point at.

    The publication being left is marked rolled_back in the same transaction as the switch, so a
    second rollback goes one further back. With no alias live (the live collections were
    deleted), it brings back the newest complete publication whose collections are still there."""
    check_aliases(movies_alias, users_alias)
    store.lock()
    catalog.ensure_schema(engine)
    reconcile(store, engine, (movies_alias, users_alias))
    live = store.resolve_alias(movies_alias)
    target = rollback_target(store, engine, movies_alias, users_alias)
    if target is None:
        raise NotFoundError(f"no earlier complete publication of {movies_alias!r} to roll back to")
    mapping = {movies_alias: target[0], users_alias: target[1]}
    switched = False
    try:
        with Session(engine) as session, session.begin():
            if live is not None:
                left = [live, sibling_collection(live, users_alias)]
                catalog.mark_rolled_back(session, collections=left)
            # Switched inside the transaction: when the switch fails, the marks are not committed.
            store.switch_aliases(mapping)
            switched = True
    except Exception as exc:
        if not switched:
            raise
        _say_rollback_unrecorded(exc, mapping, live)
    return run_id_of(target[0])


def _say_rollback_unrecorded(exc: Exception, mapping: dict[str, str], left: str | None):
    """The aliases switched back but the catalog did not record which publication was left:
    the rollback happened (queries answer from its run), and a second rollback would return to
    the one left, so say both, as publish does after its switch."""
    live = ", ".join(f"'{a}' -> {c}" for a, c in mapping.items())
    back = f"; until then a second --rollback returns to run {run_id_of(left)}" if left else ""
    raise PublishRecordError(
        f"rolled back: run {run_id_of(next(iter(mapping.values())))} is live ({live}), but "
        f"recording the rollback in the catalog failed: {type(exc).__name__}: "
        f"{' '.join(str(exc).split())[:300]}{back}"
    ) from exc


# ---- prune --------------------------------------------------------------------------------------


def prune(
    store: VectorStore,
    engine: Engine,
    keep: int,
    *,
    movies_alias: str = "movies",
    users_alias: str = "users",
) -> list[str]:
    """Delete the collections of all but the `keep` newest complete publications (succeeded or
    rolled back: a failed one holds nothing to serve, so it takes no place among the kept), never
    the live one nor the last rollback target, nor those of a publication still running.
    Collections the catalog does not know (left by a killed publish) count as the oldest.
    Returns the deleted names."""
    check_keep(keep)
    check_aliases(movies_alias, users_alias)
    store.lock()
    catalog.ensure_schema(engine)
    reconcile(store, engine, (movies_alias, users_alias))
    live = store.resolve_alias(movies_alias)
    target = rollback_target(store, engine, movies_alias, users_alias)
    with Session(engine) as session:
        pubs = catalog.publications(session, alias=movies_alias)
        complete = ("succeeded", "rolled_back")
        newest_first = list(dict.fromkeys(p.collection for p in pubs if p.status in complete))
        running = {p.collection for p in pubs if p.status == "running"}
    protected = set(newest_first[:keep]) | running | {live, target and target[0]}
    physical = store.list_collections()
    deleted = []
    for coll in physical:
        if not coll.startswith(f"{movies_alias}__") or coll in protected:
            continue
        for name in (coll, sibling_collection(coll, users_alias)):
            if name in physical:
                store.delete_collection(name)
                deleted.append(name)
    # users collections whose movies collection is already gone
    kept_users = {sibling_collection(c, users_alias) for c in protected if c}
    for coll in physical:
        if coll.startswith(f"{users_alias}__") and coll not in kept_users and coll not in deleted:
            store.delete_collection(coll)
            deleted.append(coll)
    return sorted(deleted)


# ---- status -------------------------------------------------------------------------------------


def status(
    store: VectorStore, engine: Engine, *, movies_alias: str = "movies", users_alias: str = "users"
) -> dict:
    """What is live, what a rollback would go to, the recent publications; repairs stale rows
    first (and says which)."""
    check_aliases(movies_alias, users_alias)
    store.lock()
    catalog.ensure_schema(engine)
    repaired = reconcile(store, engine, (movies_alias, users_alias))
    live = {alias: store.resolve_alias(alias) for alias in (movies_alias, users_alias)}
    target = rollback_target(store, engine, movies_alias, users_alias)
    with Session(engine) as session:
        recent = [
            {
                "id": p.id,
                "run_id": p.run_id,
                "alias": p.alias,
                "collection": p.collection,
                "status": p.status,
                "points": p.points,
                "started_at": p.started_at.isoformat() if p.started_at else None,
                "error": p.error,
            }
            for p in catalog.publications(session)[:20]
        ]
    movies_live = live[movies_alias]
    return {
        "live_run": run_id_of(movies_live) if movies_live else None,
        "aliases": live,
        "rollback_to": run_id_of(target[0]) if target else None,
        "repaired": repaired,
        "publications": recent,
    }
