"""`fmstore status`: where everything lives and what is being served, secrets masked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fmstore.cli.app import (
    DbOpt,
    HomeOpt,
    JsonOpt,
    QdrantOpt,
    app,
    check_home,
    example,
    out,
    print_json,
    settings,
)


@app.command(epilog=example("fmstore status", "fmstore status --json"))
def status(
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Home, backends (passwords and API keys never shown), the run each alias serves with its
    point count, the run a rollback would return to, and the catalog's schema revision. Exit
    code 3 when a backend cannot be reached (the rest is still reported)."""
    from fmstore import runs
    from fmstore.cli.live import Served, has_catalog, mask_url, served

    s = settings(home, database_url, qdrant_url)
    check_home(s, write=False)  # a file or a dangling link as home: one line, exit 3
    problems: dict[str, str] = {}
    state = _probe(s, "vectors", problems, lambda: served(s, count_points=True), Served())
    report = {
        "home": str(s.home.resolve()),
        "runs": len(runs.list_runs(s.runs_dir)),
        "vectors": {
            "backend": "server" if s.qdrant_url else "edge",
            "location": mask_url(s.qdrant_url) if s.qdrant_url else str(s.qdrant_path.resolve()),
            "api_key": "set" if s.qdrant_api_key else "not set",
        },
        "catalog": {
            "url": mask_url(s.catalog_url),
            "revision": None,
            "head": None,
        },
        "aliases": [
            {
                "alias": alias,
                "collection": collection,
                "run_id": _run_of(collection),
                "points": state.points.get(collection) if collection else None,
            }
            for alias, collection in state.aliases.items()
        ],
        "live_run": state.live_run,
        "rollback_target": state.rollback_target,
        "repaired": state.repaired,
    }
    if has_catalog(s):
        revisions = _probe(s, "catalog", problems, lambda: _revisions(s.catalog_url), (None, None))
        report["catalog"]["revision"], report["catalog"]["head"] = revisions
    for part, problem in problems.items():
        report[part]["error"] = problem
    if as_json:
        print_json(report)
    else:
        _print(report)
    if problems:  # for health checks: the report is printed, and the exit code says it is not ok
        raise typer.Exit(3)


def _probe(s, part: str, problems: dict, read, fallback):
    """`read()`, or `fallback` with the failure noted under `part`: status reports what it can
    reach instead of stopping at the first backend that is down. The note is one line, with the
    URLs' secrets and the API key masked."""
    from fmstore.cli.live import mask_secrets

    try:
        return read()
    except Exception as exc:  # any backend failure: a storage error, a driver's own exception
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        problems[part] = mask_secrets(first, s)
        return fallback


def _run_of(collection: str | None) -> str | None:
    from fmstore.serving import run_id_of

    return run_id_of(collection) if collection else None


def _revisions(url: str) -> tuple[str | None, str | None]:
    from fmstore import catalog

    engine = catalog.make_engine(url)
    try:
        return catalog.current_revision(engine), catalog.head_revision()
    finally:
        engine.dispose()


def _print(report: dict) -> None:
    table = Table("", "", show_header=False)
    table.add_row("home", f"{report['home']} ({report['runs']} runs)")
    v = report["vectors"]
    key = f", API key {v['api_key']}" if v["backend"] == "server" else ""
    table.add_row("vectors", f"{v['backend']}: {v['location']}{key}" + _error(v))
    c = report["catalog"]
    revision = c["revision"] or "no schema yet"
    if c["revision"] and c["head"] and c["revision"] != c["head"]:
        revision += f" (head {c['head']}: run `fmstore db upgrade`)"
    table.add_row("catalog", f"{c['url']} at revision {revision}" + _error(c))
    for a in report["aliases"]:
        serving = (
            f"run {a['run_id']} ({a['collection']}, {a['points']:,} points)"
            if a["collection"]
            else "nothing published"
        )
        table.add_row(f"alias {a['alias']}", serving)
    if not report["aliases"]:
        table.add_row("aliases", "nothing published")
    table.add_row("rollback to", report["rollback_target"] or "none")
    for line in report["repaired"]:  # publications a killed process left `running`
        table.add_row("repaired", line)
    out.print(table, highlight=False)


def _error(part: dict) -> str:
    return f" (unreachable: {part['error']})" if part.get("error") else ""
