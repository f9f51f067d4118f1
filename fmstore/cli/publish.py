"""`fmstore publish` (a run into Qdrant and the SQL catalog, or a rollback) and `fmstore prune`.
(`fmstore status`, in status.py, also repairs publications left `running` by killed processes.)"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Optional

import typer

from fmstore.cli.app import (
    DbOpt,
    HomeOpt,
    JsonOpt,
    QdrantOpt,
    app,
    check_home,
    check_wait,
    err,
    example,
    out,
    print_json,
    settings,
)
from fmstore.cli.live import resolve_run
from fmstore.errors import ArgumentError, ConfigError, EnvError, StoreBusyError

# Library argument -> what the user typed.
_FLAGS = {
    "batch_size": "--batch-size",
    "shards": "--shards",
    "replicas": "--replicas",
    "write_consistency": "--write-consistency",
    "keep": "--keep",
    "movies_alias": "FMSTORE_MOVIES_COLLECTION",
    "users_alias": "FMSTORE_USERS_COLLECTION",
}

WaitOpt = typer.Option(
    0.0,
    "--wait",
    metavar="SECONDS",
    help="Embedded store: wait up to SECONDS for another process to release it.",
)


@contextlib.contextmanager
def _in_flags() -> Iterator[None]:
    """Library errors that name arguments, reworded with the flags the user typed."""
    try:
        yield
    except ArgumentError as exc:
        flag = _FLAGS.get(exc.argument, exc.argument)
        raise ConfigError(f"{flag} {exc.value}: {exc.advice}") from None
    except StoreBusyError as exc:
        raise StoreBusyError(f"{exc}, or pass --wait SECONDS", exc.pid) from None


@contextlib.contextmanager
def _opened(home, database_url, qdrant_url, wait: float, run_id=None, resolve=False):
    """Settings checked (URLs, a writable home), the run resolved when `resolve` (a run that
    cannot be published is refused before anything is opened), then the store and catalog."""
    from fmstore import catalog
    from fmstore.vectors import open_store

    check_wait(wait)
    s = settings(home, database_url, qdrant_url, stores=True)
    local = not (s.database_url and s.qdrant_url)
    if local and not s.home.exists() and not s.home.is_symlink():
        # publish, rollback and prune act on what a home holds: a mistyped one is not created
        raise EnvError(
            f"FMSTORE_HOME {s.home} does not exist: there is nothing to publish, roll back or "
            "prune there; check FMSTORE_HOME or --home (`fmstore train` creates a home)"
        )
    check_home(s, write=local)
    if resolve:
        resolve_run(s, run_id)
    engine = catalog.make_engine(s.catalog_url)
    store = open_store(s, wait=wait)
    aliases = dict(movies_alias=s.movies_collection, users_alias=s.users_collection)
    try:
        with _in_flags():
            yield s, store, engine, aliases
    finally:
        store.close()
        engine.dispose()


@app.command(
    epilog=example(
        "fmstore publish",
        "fmstore publish RUN --qdrant-url http://localhost:6333",
        "fmstore publish --rollback",
    )
)
def publish(
    run_id: Optional[str] = typer.Argument(None, help="Run to publish [default: the latest]."),
    rollback: bool = typer.Option(
        False, "--rollback", help="Switch the aliases back to the previous publication."
    ),
    prune: Optional[int] = typer.Option(
        None, "--prune", hidden=True, help="Removed: use `fmstore prune --keep N`."
    ),
    batch_size: int = typer.Option(1024, help="Points per upsert."),
    shards: Optional[int] = typer.Option(None, help="Server only: shards per collection."),
    replicas: Optional[int] = typer.Option(None, help="Server only: replication factor."),
    write_consistency: Optional[int] = typer.Option(
        None, help="Server only: write consistency factor."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Publish the run again even when it is already live: new collections, then the switch.",
    ),
    wait: float = WaitOpt,
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Publish a run to Qdrant (movies + users) and the SQL catalog, switching both aliases in one
    step; the live publication keeps serving until then, and whatever fails."""
    from fmstore import publish as publishing

    if prune is not None:
        raise ConfigError(
            "publish no longer prunes: publish, then run `fmstore prune --keep N` "
            "(it never removes the live publication or the last rollback target)"
        )
    if rollback and run_id:
        raise ConfigError("--rollback takes no RUN_ID: it goes back to the previous publication")
    if rollback and force:
        raise ConfigError("--rollback takes no --force: --force re-publishes a run")
    opened = _opened(home, database_url, qdrant_url, wait, run_id, resolve=not rollback)
    with opened as (s, store, engine, aliases):
        if rollback:
            summary = {"rolled_back_to": publishing.rollback(store, engine, **aliases)}
        else:
            run_dir = resolve_run(s, run_id, store)
            if run_id is None:
                from fmstore.serving import run_id_of

                live = store.resolve_alias(aliases["movies_alias"])
                change = _what_changes(s, run_dir, run_id_of(live) if live else None, force)
                err.print(f"publishing the latest run, {run_dir.name}{change}", markup=False)
            options = dict(
                batch_size=batch_size,
                shards=shards,
                replicas=replicas,
                write_consistency=write_consistency,
                force=force,
            )
            try:
                result = _publish_with_progress(run_dir, store, engine, aliases, options)
            except KeyboardInterrupt:
                _say_what_is_live(store, aliases["movies_alias"])
                raise
            summary = vars(result)
        summary["updates"] = _apply_recorded_updates(store, engine, aliases)
        backend = store.backend
    if as_json:
        return print_json(summary)
    for line in summary.get("repaired") or []:
        err.print(f"repaired a publication left by a killed process: {line}")
    _say_updates(summary["updates"])
    if rollback:
        out.print(f"aliases now point at run {summary['rolled_back_to']}")
        return
    state = "already live, nothing rewritten" if summary["skipped"] else "published"
    out.print(
        f"run {summary['run_id']} {state}: {summary['movies']:,} movies -> "
        f"{summary['movies_collection']}, {summary['users']:,} users -> "
        f"{summary['users_collection']} ({backend})"
    )


def _apply_recorded_updates(store, engine, aliases: dict) -> dict:
    """The ratings and movies recorded since training (`fmstore rate`, `fmstore movies add`)
    that the now-live run lacks, written into its collections (fmstore.updates): a publish or
    rollback never drops them silently. The publication stands whatever happens here."""
    from fmstore.errors import FmstoreError
    from fmstore.updates import Updater

    try:
        applied = Updater(store, engine, **aliases).sync()
    except FmstoreError as exc:
        return {"not_in_run": None, "users": 0, "movies": 0, "error": str(exc)}
    return {
        "not_in_run": applied.not_in_run,
        "users": len(applied.users),
        "movies": len(applied.movies),
    }


def _say_updates(updates: dict) -> None:
    if updates.get("error"):
        err.print(f"warning: recorded updates not applied: {updates['error']}", markup=False)
    elif updates["not_in_run"]:
        err.print(
            f"{updates['not_in_run']} recorded update(s) are not in this run: applied to the "
            "live publication (`fmstore data export DIR` writes a dataset with them, to train on)"
        )


# Served NDCG@10 a latest run may lose against the live run before publish refuses it: a margin
# for the difference two trainings of one config may show (numba's parallel sums), so that
# training and publishing again (scripts/demo.sh twice) is not refused.
WORSE_BY = 0.002


def _what_changes(s, run_dir: Path, live: str | None, force: bool) -> str:
    """What publishing the latest run (no RUN_ID) changes, as the end of a line; refused
    (ConfigError: exit 2) unless --force when the run has no ranking model or its served
    NDCG@10 on the validation split is more than WORSE_BY below the live run's on the same
    dataset."""
    from fmstore import runs

    new = runs.load_manifest(run_dir, verify=False)
    insist = "name it as RUN_ID or pass --force to publish it anyway"
    if not new.get("ranking") and not force:
        raise ConfigError(
            f"the latest run {run_dir.name} has no ranking model (trained with --no-ranking): "
            f"publishing it would serve recommendations from the rating model alone; {insist}"
        )
    if live is None or live == run_dir.name or not (s.runs_dir / live).is_dir():
        return " (name RUN_ID for another)"
    old = runs.load_manifest(s.runs_dir / live, verify=False)
    a, b = old["metrics"].get("valid_ndcg@10"), new["metrics"].get("valid_ndcg@10")
    if a is None or b is None or old["dataset"]["fingerprint"] != new["dataset"]["fingerprint"]:
        return f", in place of run {live} (their figures are not comparable)"
    if b < a - WORSE_BY and not force:
        raise ConfigError(
            f"the latest run {run_dir.name} serves a worse ranking than the live run {live}: "
            f"NDCG@10 {b:.4f} < {a:.4f} on the validation split; {insist}"
        )
    return f", in place of run {live}: served NDCG@10 {a:.4f} -> {b:.4f}"


def _say_what_is_live(store, movies_alias: str) -> None:
    """After Ctrl-C: which publication serves now (the interrupted one only if it switched)."""
    import sys

    try:
        live = store.resolve_alias(movies_alias)
    except Exception:  # the store itself may be what was interrupted
        live = "unknown (see `fmstore status`)"
    sys.stderr.write(f"interrupted; '{movies_alias}' now serves {live or 'nothing'}\n")


def _publish_with_progress(run_dir, store, engine, aliases, options: dict):
    from rich.progress import Progress

    from fmstore import publish as publishing

    with Progress(console=err, transient=True) as progress:
        tasks: dict = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = progress.add_task(f"publishing {what}", total=total)
            progress.update(tasks[what], completed=done)

        return publishing.publish(
            run_dir,
            store,
            engine,
            progress=report,
            **options,
            **aliases,
        )


@app.command()
def prune(
    keep: int = typer.Option(..., "--keep", help="Publications to keep, newest first (>= 1)."),
    wait: float = WaitOpt,
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Delete the collections of old publications: all but the KEEP newest, never the live one or
    the last rollback target."""
    from fmstore import publish as publishing

    if keep < 1:
        raise ConfigError(f"--keep {keep}: keep at least 1 publication")
    with _opened(home, database_url, qdrant_url, wait) as (_, store, engine, aliases):
        deleted = publishing.prune(store, engine, keep, **aliases)
    if as_json:
        return print_json({"pruned": deleted})
    out.print("pruned " + ", ".join(deleted) if deleted else "nothing to prune")
