"""`fmstore status`: where everything lives and what is being served, secrets masked."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.table import Table

from fmstore.cli.app import (
    DbOpt,
    HomeOpt,
    JsonOpt,
    QdrantOpt,
    app,
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
    point count, the run a rollback would return to, and the catalog's schema revision."""
    from fmstore import artifact
    from fmstore.cli.live import has_catalog, mask_url, served

    s = settings(home, database_url, qdrant_url)
    state = served(s, count_points=True)
    report = {
        "home": str(s.home.resolve()),
        "runs": len(artifact.list_runs(s.runs_dir)),
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
    }
    if has_catalog(s):
        report["catalog"]["revision"], report["catalog"]["head"] = _revisions(s.catalog_url)
    if as_json:
        return print_json(report)
    _print(report)


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
    table.add_row("vectors", f"{v['backend']}: {v['location']}{key}")
    c = report["catalog"]
    revision = c["revision"] or "no schema yet"
    if c["revision"] and c["head"] and c["revision"] != c["head"]:
        revision += f" (head {c['head']}: run `fmstore db upgrade`)"
    table.add_row("catalog", f"{c['url']} at revision {revision}")
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
    out.print(table, highlight=False)
