"""`fmstore rate` (a user's new ratings), `fmstore movies add` (new movies) and `fmstore data
export` (a dataset folder with them, to train on): live updates of the published store, recorded
in the catalog (fmstore.updates)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from fmstore.cli.app import (
    DbOpt,
    HomeOpt,
    JsonOpt,
    QdrantOpt,
    app,
    check_home,
    data_app,
    err,
    example,
    out,
    print_json,
    safe,
    settings,
)
from fmstore.cli.publish import WaitOpt, _in_flags
from fmstore.cli.ratings_input import check_id, parse_rated, read_ratings_file
from fmstore.errors import ConfigError, DataError

movies_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Movies of the live publication.",
    epilog=example('fmstore movies add --title "New Film" --genres "Drama|Sci-Fi" --year 2026'),
)
app.add_typer(movies_app, name="movies")


@contextlib.contextmanager
def _store_and_engine(home, database_url, qdrant_url, wait: float) -> Iterator:
    """Settings checked, then the store (taking its lock, waiting up to `wait`) and the catalog."""
    from fmstore import catalog
    from fmstore.vectors import open_store

    if wait < 0:
        raise ConfigError(f"--wait {wait:g}: use 0 (do not wait) or more seconds")
    s = settings(home, database_url, qdrant_url, stores=True)
    check_home(s, write=not (s.database_url and s.qdrant_url))
    store = open_store(s, wait=wait)
    engine = catalog.make_engine(s.catalog_url)
    try:
        with _in_flags():
            yield s, store, engine
    finally:
        store.close()
        engine.dispose()


def _print_applied(applied, what: str, as_json: bool, extra: dict | None = None) -> None:
    for note in applied.notes:
        err.print(f"note: {safe(note)}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        return print_json(vars(applied) | (extra or {}))
    if applied.not_in_run:
        err.print(f"applied {applied.not_in_run} recorded update(s) the live run lacked")
    out.print(what)


@app.command(
    epilog=example(
        'fmstore rate --user 42 "Heat (1995)=5" "Alien=4"',
        "fmstore rate --user 1000001 --ratings-file my-ratings.csv --json",
    )
)
def rate(
    rated: Optional[List[str]] = typer.Argument(
        None, help='Ratings "TITLE=RATING" (a title as `query` resolves it, or a movie id).'
    ),
    user: int = typer.Option(..., "--user", help="The user's id (a new id creates the user)."),
    ratings_file: Optional[Path] = typer.Option(
        None, "--ratings-file", help="Ratings: CSV with columns title or movieId, and rating."
    ),
    method: str = typer.Option(
        "weighted",
        "--method",
        help="Someone new to the live run: weighted | fold-in, as `query --rated` (a user the run was trained on gets the ranking model's closed form of all their ratings).",
    ),
    wait: float = WaitOpt,
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Record a user's ratings and serve them now: the ratings go into the catalog, and the
    user's point in the live publication is recomputed from all their ratings (the ranking
    model's closed form for a user the run was trained on; for someone new, the vector `query
    --rated` builds with --method; the rating model's fold-in for the stars), so `query --user`
    answers from them and leaves the rated movies out. The same ratings again change nothing; a new rating of a movie
    replaces the old one."""
    from fmstore.cli.query import _in_flag_words, _resolve_ratings
    from fmstore.recommend import Recommender, check_method

    check_id(user, "--user")
    with _in_flag_words():
        check_method(method)
    inputs = [
        (key, value, where[len("--rated ") :]) for key, value, where in parse_rated(rated or [])
    ]
    if ratings_file is not None:
        inputs += read_ratings_file(ratings_file)
    if not inputs:
        raise ConfigError('give ratings: "TITLE=RATING" arguments or --ratings-file')
    with _store_and_engine(home, database_url, qdrant_url, wait) as (s, store, engine):
        aliases = (s.movies_collection, s.users_collection)
        with _in_flag_words(), Recommender(store, engine, *aliases) as rec:
            ratings, _ = _resolve_ratings(rec, inputs)
            for note in rec.notes:
                err.print(f"note: {safe(note)}", markup=False, highlight=False, soft_wrap=True)
            source = f"file:{ratings_file.name}" if ratings_file is not None else "cli"
            applied = rec.add_ratings(user, ratings, source=source, method=method)
    changed = (
        "no change (already recorded)"
        if not applied.recorded
        else (f"{applied.recorded} rating(s) recorded")
    )
    _print_applied(applied, f"user {user}: {changed}; serving run {applied.run_id}", as_json)


@movies_app.command(
    "add",
    epilog=example(
        'fmstore movies add --title "New Film" --genres "Drama|Sci-Fi" --year 2026',
        "fmstore movies add --file new-movies.csv",
    ),
)
def movies_add(
    title: Optional[str] = typer.Option(None, "--title", help="The title (year optional)."),
    genres: str = typer.Option("", "--genres", help='Genres, "A|B" (the run\'s genres).'),
    year: Optional[int] = typer.Option(None, "--year", help="Release year."),
    movie_id: Optional[int] = typer.Option(
        None, "--id", help="Its movieId [default: one more than the largest]."
    ),
    file: Optional[Path] = typer.Option(
        None, "--file", help="New movies: a movies.csv (movieId,title,genres) of new rows."
    ),
    wait: float = WaitOpt,
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Add movies to the catalog and the live publication, served from their genres and year as
    a movie nobody rated yet: they appear in `query --movie` and in recommendations (they have
    0 ratings: `--min-ratings 0` shows them in "movies like X", whose default floor is 20)."""
    from fmstore.updates import Updater

    if (title is None) == (file is None):
        raise ConfigError("give either --title (one movie) or --file (a movies.csv of new rows)")
    if file is not None and (genres or year is not None or movie_id is not None):
        raise ConfigError("--genres, --year and --id apply to --title only")
    if movie_id is not None:
        check_id(movie_id, "--id")
    rows = _movies_file(file) if file is not None else []
    with _store_and_engine(home, database_url, qdrant_url, wait) as (s, store, engine):
        updater = Updater(
            store, engine, movies_alias=s.movies_collection, users_alias=s.users_collection
        )
        if title is not None:
            new_id = movie_id if movie_id is not None else updater.next_movie_id()
            split = [g for g in genres.split("|") if g.strip()]
            rows = [{"movie_id": new_id, "title": title, "year": year, "genres": split}]
        source = f"file:{file.name}" if file is not None else "cli"
        applied = updater.add_movies(rows, source=source)
    listed = ", ".join(str(m) for m in applied.movies) or "none (already added)"
    _print_applied(applied, f"added movie id(s) {listed}; serving run {applied.run_id}", as_json)


def _movies_file(path: Path) -> list[dict]:
    """A movies.csv of new rows -> [{movie_id, title, year, genres}] (the dataset's own checks)."""
    from fmstore.datasets.validate import parse_movies

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the movies file ({exc.strerror or exc})") from None
    movies = parse_movies(data, str(path))
    return [
        {
            "movie_id": int(movies.movie_id[i]),
            "title": movies.title[i],
            "year": int(movies.year[i]) or None,
            "genres": list(movies.genres[i]),
        }
        for i in range(len(movies))
    ]


@data_app.command(
    "export", epilog=example("fmstore data export data/with-updates --data ml-latest-small")
)
def data_export(
    dest: Path = typer.Argument(..., help="A new folder for the dataset."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="The source dataset [default: the live run's]."
    ),
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    as_json: bool = JsonOpt,
):
    """Write a dataset folder: the source dataset plus every rating recorded by `fmstore rate`
    (a re-rating replaces the dataset's rating) and every movie added by `fmstore movies add`.
    `fmstore train --data DEST` then trains on them (training reads only its --data folder)."""
    from fmstore import catalog
    from fmstore.updates.export import export_dataset

    s = settings(home, database_url, None, stores=True)
    engine = catalog.make_engine(s.catalog_url)
    try:
        catalog.ensure_schema(engine)
        source = data if data is not None else _live_dataset(s, engine)
        exported = export_dataset(engine, source, dest)
    finally:
        engine.dispose()
    if as_json:
        return print_json(vars(exported))
    out.print(
        f"{dest}: {exported.ratings:,} ratings ({exported.recorded_ratings:,} recorded), "
        f"{exported.movies:,} movies ({exported.added_movies:,} added)"
    )


def _live_dataset(s, engine) -> Path:
    """The dataset the newest published run was trained on (its manifest's source)."""
    from sqlalchemy.orm import Session

    from fmstore import catalog, runs

    with Session(engine) as session:
        done = [p for p in catalog.publications(session) if p.status == "succeeded"]
        run = catalog.get_run(session, done[0].run_id) if done else None  # newest first
        path = run.artifact_path if run else None
    if path is None or not Path(path).is_dir():
        raise ConfigError("no published run to take the dataset from: give --data")
    return Path(runs.load_manifest(Path(path))["dataset"]["source"])
