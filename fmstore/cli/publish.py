"""`fmstore publish`: a run into Qdrant and the SQL catalog, or a rollback, and pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fmstore.cli.app import (
    DbOpt,
    HomeOpt,
    JsonOpt,
    QdrantOpt,
    app,
    check_home,
    err,
    example,
    out,
    print_json,
    settings,
)


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
        None,
        "--prune",
        help="Afterwards keep only the N newest physical collections (and the live one).",
    ),
    batch_size: int = typer.Option(1024, help="Points per upsert."),
    shards: Optional[int] = typer.Option(None, help="Server only: shards per collection."),
    replicas: Optional[int] = typer.Option(None, help="Server only: replication factor."),
    write_consistency: Optional[int] = typer.Option(
        None, help="Server only: write consistency factor."
    ),
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Publish a run to Qdrant (movies + users) and the SQL catalog, switching aliases atomically."""
    from fmstore import artifact, catalog
    from fmstore import publish as publishing
    from fmstore.vectors import open_store

    s = settings(home, database_url, qdrant_url, stores=True)
    check_home(s, write=not (s.database_url and s.qdrant_url))
    if not rollback:  # a run that cannot be published is refused before anything is opened
        artifact.resolve_run(s.runs_dir, run_id)
    engine = catalog.make_engine(s.catalog_url)
    store = open_store(s)
    aliases = dict(movies_alias=s.movies_collection, users_alias=s.users_collection)
    try:
        summary: dict = {}
        if rollback:
            catalog.ensure_schema(engine)
            summary["rolled_back_to"] = publishing.rollback(store, engine, **aliases)
        else:
            run_dir = artifact.resolve_run(s.runs_dir, run_id)
            from rich.progress import Progress

            with Progress(console=err, transient=True) as progress:
                tasks: dict = {}

                def report(what: str, done: int, total: int) -> None:
                    if what not in tasks:
                        tasks[what] = progress.add_task(f"publishing {what}", total=total)
                    progress.update(tasks[what], completed=done)

                result = publishing.publish(
                    run_dir,
                    store,
                    engine,
                    batch_size=batch_size,
                    shards=shards,
                    replicas=replicas,
                    write_consistency=write_consistency,
                    progress=report,
                    **aliases,
                )
            summary.update(vars(result))
        if prune is not None:
            summary["pruned"] = publishing.prune(
                store, engine, prune, aliases=tuple(aliases.values())
            )
    finally:
        store.close()
        engine.dispose()
    if as_json:
        return print_json(summary)
    if rollback:
        out.print(f"aliases now point at run {summary['rolled_back_to']}")
    else:
        state = "already live, nothing rewritten" if summary["skipped"] else "published"
        out.print(
            f"run {summary['run_id']} {state}: {summary['movies']:,} movies -> {summary['movies_collection']}, "
            f"{summary['users']:,} users -> {summary['users_collection']} ({store.backend})"
        )
    if summary.get("pruned"):
        out.print("pruned " + ", ".join(summary["pruned"]))
