"""`fmstore report RUN`: a run's pictures as one self-contained report.html and PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fmstore.cli.app import HomeOpt, JsonOpt, app, dataset_path, err, out, print_json, settings
from fmstore.cli.live import resolve_run


@app.command(
    epilog="Example: fmstore report --out docs/report  (the live run; open docs/report/report.html)"
)
def report(
    run: Optional[str] = typer.Argument(
        None,
        help="Run id, its start, latest, live or a run folder [default: the live run (the one "
        "published), else the latest run].",
    ),
    out_dir: Optional[Path] = typer.Option(
        None, "--out", help="Folder to write into [default: FMSTORE_HOME/reports/RUN]."
    ),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        help="The run's dataset, if it moved since training [default: the path in the manifest].",
    ),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """Draw a run: learning curves, predicted vs actual ratings, ranking against the baselines
    and a map of the movie embeddings, in report.html (figures embedded, opens offline) and PNGs."""
    from fmstore import datasets, runs
    from fmstore.report import build_report

    s = settings(home)
    _check_out(out_dir)
    if run and (Path(run) / runs.MANIFEST).is_file():
        folder, chosen = Path(run), "given"
    elif run:
        folder, chosen = resolve_run(s, run), "given"
    else:
        folder, chosen = _default_run(s)
    with err.status(f"drawing run {folder.name}"):
        data = dataset_path(s, data) if data else None
        dataset = datasets.load_dataset(data, cache_dir=s.home / "cache") if data else None
        result = build_report(
            folder,
            out_dir or s.home / "reports" / folder.name,
            dataset=dataset,
            cache_dir=s.home / "cache",
        )
    summary = {
        "run_id": result.run_id,
        "chosen": chosen,
        "html": str(result.html),
        "figures": [str(p) for p in result.figures],
    }
    if as_json:
        return print_json(summary)
    which = {"live": " (the live run)", "latest": " (the latest run; no live run here)"}
    out.print(f"report of run {result.run_id}{which.get(chosen, '')}: {result.html}")


def _default_run(s) -> tuple[Path, str]:
    """The run a report draws when none is named: the live one (what people are being served)
    when its folder is here, else the latest. Reads the movies alias only: nothing is written."""
    from fmstore.cli.live import has_store
    from fmstore.errors import FmstoreError
    from fmstore.serving import run_id_of
    from fmstore.vectors import open_store

    live = None
    if has_store(s):
        try:
            with open_store(s) as store:
                collection = store.resolve_alias(s.movies_collection)
            live = run_id_of(collection) if collection else None
        except FmstoreError:  # a store that cannot be read now: the latest run is drawn
            live = None
    if live is not None:
        try:
            return resolve_run(s, live), "live"
        except FmstoreError:  # published from another home: its folder is not here
            pass
    return resolve_run(s, None), "latest"


def _check_out(out_dir: Optional[Path]) -> None:
    """--out names a folder: refuse a file there (or above it) before anything is drawn."""
    from fmstore.errors import ConfigError

    if out_dir is None:
        return
    existing = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(
            f"--out {out_dir}: {existing} is a file, not a folder; give a folder to write into"
        )
