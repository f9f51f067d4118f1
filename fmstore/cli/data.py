"""`fmstore data fetch|synth` and `fmstore db upgrade`: get a dataset, set up the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fmstore.cli.app import (
    DbOpt,
    HomeOpt,
    check_home,
    data_app,
    db_app,
    err,
    example,
    out,
    progress_bar,
    settings,
)


@data_app.command("fetch", epilog=example("fmstore data fetch ml-latest-small --dest data/"))
def data_fetch(
    name: str = typer.Argument(..., help="ml-latest-small | ml-latest | ml-25m | ml-32m"),
    dest: Optional[Path] = typer.Option(
        None, help="Folder to unpack into [default: FMSTORE_HOME/data]."
    ),
    url: Optional[str] = typer.Option(
        None, help="Download from this URL instead of GroupLens (file:// works)."
    ),
    home: Optional[Path] = HomeOpt,
):
    """Download a MovieLens dataset, verify its published checksum and unpack it."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from fmstore import datasets

    dest = dest or check_home(settings(home), write=True) / "data"
    with progress_bar(
        *Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()
    ) as progress:
        task = progress.add_task(f"fetching {name}", total=None)
        folder = datasets.fetch_dataset(
            name,
            dest,
            url=url,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out.print(str(folder))


@data_app.command(
    "synth",
    epilog=example("fmstore data synth /tmp/synth --ratings 1000000 --users 10000 --movies 5000"),
)
def data_synth(
    out_dir: Path = typer.Argument(..., help="Folder to write ratings.csv and movies.csv into."),
    ratings: int = typer.Option(27_753_444, help="Number of ratings."),
    users: int = typer.Option(283_228, help="Number of users."),
    movies: int = typer.Option(53_889, help="Number of movies."),
    seed: int = typer.Option(0, help="Random seed."),
):
    """Write an ml-latest-shaped synthetic dataset (for benchmarks)."""
    from fmstore import datasets

    with err.status(f"writing {ratings:,} synthetic ratings"):
        folder = datasets.synthesize(
            out_dir, n_ratings=ratings, n_users=users, n_movies=movies, seed=seed
        )
    out.print(str(folder))


# ---- db ----------------------------------------------------------------------------------------


@db_app.command(
    "upgrade", epilog=example("FMSTORE_DATABASE_URL=postgresql://host/fmstore fmstore db upgrade")
)
def db_upgrade(home: Optional[Path] = HomeOpt, database_url: Optional[str] = DbOpt):
    """Create or migrate the catalog schema to the latest revision."""
    from fmstore import catalog

    s = settings(home, database_url, stores=True)
    check_home(s, write=not s.database_url)
    engine = catalog.make_engine(s.catalog_url)
    catalog.upgrade(engine)
    out.print(f"catalog at revision {catalog.current_revision(engine)}")
