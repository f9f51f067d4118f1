"""The `fmstore` command line: the only module that prints or reads Settings from the environment.

Heavy modules (torch, qdrant, sqlalchemy) are imported inside the commands that need them, so
`fmstore query` starts in a fraction of a second.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence

import typer
from rich.console import Console
from rich.table import Table

from fmstore.config import POPULARITY_WEIGHT, Settings, TrainConfig
from fmstore.errors import ConfigError, DataError, FmstoreError

if TYPE_CHECKING:
    import numpy as np

    from fmstore.recommend import Recommender
    from fmstore.vectors import QueryFilter

# Tracebacks with locals could show secrets: never let typer print them.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
                  help="Train a Factorization Machine on movie ratings and serve it from Qdrant.")
data_app = typer.Typer(no_args_is_help=True, help="Get or make datasets in the MovieLens layout.")
db_app = typer.Typer(no_args_is_help=True, help="The SQL catalog.")
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")

# Not a terminal (pipes, CI logs): wide enough that tables keep their columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def settings(home: Optional[Path] = None, database_url: Optional[str] = None, qdrant_url: Optional[str] = None) -> Settings:
    base = Settings.from_env()
    return Settings(
        home=home or base.home,
        database_url=database_url or base.database_url,
        qdrant_url=qdrant_url or base.qdrant_url,
        qdrant_api_key=base.qdrant_api_key,
        movies_collection=base.movies_collection,
        users_collection=base.users_collection,
    )


HomeOpt = typer.Option(None, "--home", help="Folder for runs, catalog and embedded store [env FMSTORE_HOME, default ./.fmstore].")
DbOpt = typer.Option(None, "--database-url", help="SQLAlchemy URL of the catalog [env FMSTORE_DATABASE_URL, default SQLite in home].")
QdrantOpt = typer.Option(None, "--qdrant-url", help="Qdrant server URL [env FMSTORE_QDRANT_URL, default embedded Qdrant Edge].")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


# Cosine neighbours with a handful of ratings are echoes of their genres and year (their id vector
# is held near zero by the prior), so "movies like X" looks among movies with some support by
# default; --min-ratings 0 lifts the floor.
SIMILAR_MIN_RATINGS = 20


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str, ensure_ascii=False) + "\n")


# ---- train -------------------------------------------------------------------------------------


@app.command()
def train(
    data: Path = typer.Option(..., "--data", help="Dataset folder or GroupLens .zip in the ml-latest layout."),
    epochs: int = typer.Option(TrainConfig.epochs, help="Most epochs (early stopping may end sooner)."),
    factors: int = typer.Option(TrainConfig.factors, help="Embedding width k."),
    lr: float = typer.Option(TrainConfig.lr, help="Adam learning rate."),
    batch_size: int = typer.Option(TrainConfig.batch_size, help="Ratings per step."),
    weight_decay: float = typer.Option(TrainConfig.weight_decay, help="L2 per occurrence of each weight."),
    prior_reg: float = typer.Option(TrainConfig.prior_reg, help="L2 per weight and epoch (a Gaussian prior): holds rarely seen movies and users near zero."),
    seed: int = typer.Option(TrainConfig.seed, help="Seed of the split, the initialisation and the order."),
    device: str = typer.Option(TrainConfig.device, help="auto | cpu | cuda."),
    link: str = typer.Option(TrainConfig.link, help="identity | sigmoid (the notebook's sigmoid(y)*5.5)."),
    valid_fraction: float = typer.Option(TrainConfig.valid_fraction, help="Share of ratings held out for validation."),
    patience: int = typer.Option(TrainConfig.patience, help="Epochs without improvement before stopping."),
    lr_milestones: Optional[List[int]] = typer.Option(None, "--lr-milestone", help="Epoch at which lr is multiplied by --lr-gamma (repeatable)."),
    lr_gamma: float = typer.Option(TrainConfig.lr_gamma),
    test_ratings: Optional[Path] = typer.Option(None, "--test-ratings", help="Ratings CSV to report test RMSE on (a predefined split)."),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """Train an FM on a dataset and save it as a run."""
    from fmstore import artifact, datasets
    from fmstore.train import check_config, resolve_device
    from fmstore.train import train as run_training

    s = settings(home)
    config = TrainConfig(
        epochs=epochs, factors=factors, lr=lr, batch_size=batch_size, weight_decay=weight_decay, prior_reg=prior_reg,
        seed=seed, device=device, link=link, valid_fraction=valid_fraction, patience=patience,
        lr_milestones=tuple(lr_milestones or ()), lr_gamma=lr_gamma,
    )
    check_config(config)  # refuse bad flags before spending time on the data
    resolve_device(config.device)
    with err.status(f"reading {data}"):
        dataset = datasets.load_dataset(data, cache_dir=s.home / "cache")
        test = datasets.load_ratings_file(test_ratings, dataset.movies) if test_ratings else None
    err.print(f"{dataset.name}: {len(dataset.ratings):,} ratings, {len(dataset.movies):,} movies")

    from rich.progress import Progress

    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("training", total=config.epochs)

        def report(message: str, done: int, total: int) -> None:
            progress.update(task, completed=done, description=message)
            if not as_json:
                err.print(message)

        result = run_training(dataset, config, test_ratings=test, progress=report)
    run_dir = artifact.save_run(result, dataset, config, s.runs_dir)
    summary = {"run_id": run_dir.name, "path": str(run_dir), **result.metrics}
    if as_json:
        print_json(summary)
    else:
        m = result.metrics
        test_part = f", test RMSE {m['test_rmse']:.4f}" if "test_rmse" in m else ""
        out.print(
            f"run {run_dir.name}: valid RMSE {m['valid_rmse']:.4f} (best epoch {m['best_epoch']}/{m['epochs_run']})"
            f"{test_part}, {m['train_seconds']:.1f}s on {result.device}"
        )


@app.command()
def runs(home: Optional[Path] = HomeOpt, as_json: bool = JsonOpt):
    """List training runs with their metrics."""
    from fmstore import artifact

    manifests = artifact.list_runs(settings(home).runs_dir)
    rows = [
        {
            "run_id": m["run_id"],
            "created_at": m["created_at"],
            "dataset": m["dataset"]["name"],
            "factors": m["config"]["factors"],
            "valid_rmse": m["metrics"].get("valid_rmse"),
            "test_rmse": m["metrics"].get("test_rmse"),
            "epochs": m["metrics"].get("epochs_run"),
            "seconds": m["metrics"].get("train_seconds"),
        }
        for m in manifests
    ]
    if as_json:
        return print_json(rows)
    if not rows:
        out.print("no runs yet: `fmstore train --data PATH`")
        return
    table = Table("run", "created", "dataset", "k", "valid RMSE", "test RMSE", "epochs", "seconds")
    for r in rows:
        table.add_row(
            r["run_id"], r["created_at"], r["dataset"], str(r["factors"]), _fmt(r["valid_rmse"]),
            _fmt(r["test_rmse"]), str(r["epochs"]), _fmt(r["seconds"], 1),
        )
    out.print(table)


def _fmt(x, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


# ---- data --------------------------------------------------------------------------------------


@data_app.command("fetch")
def data_fetch(
    name: str = typer.Argument(..., help="ml-latest-small | ml-latest | ml-25m | ml-32m"),
    dest: Optional[Path] = typer.Option(None, help="Folder to unpack into [default: FMSTORE_HOME/data]."),
    url: Optional[str] = typer.Option(None, help="Download from this URL instead of GroupLens (file:// works)."),
    home: Optional[Path] = HomeOpt,
):
    """Download a MovieLens dataset, verify its published checksum and unpack it."""
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    from fmstore import datasets

    dest = dest or settings(home).home / "data"
    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=err, transient=True) as progress:
        task = progress.add_task(f"fetching {name}", total=None)
        folder = datasets.fetch_dataset(name, dest, url=url, progress=lambda done, total: progress.update(task, completed=done, total=total))
    out.print(str(folder))


@data_app.command("synth")
def data_synth(
    out_dir: Path = typer.Argument(..., help="Folder to write ratings.csv and movies.csv into."),
    ratings: int = typer.Option(27_753_444, help="Number of ratings."),
    users: int = typer.Option(283_228, help="Number of users."),
    movies: int = typer.Option(53_889, help="Number of movies."),
    seed: int = typer.Option(0),
):
    """Write an ml-latest-shaped synthetic dataset (for benchmarks)."""
    from fmstore import datasets

    with err.status(f"writing {ratings:,} synthetic ratings"):
        folder = datasets.synthesize(out_dir, n_ratings=ratings, n_users=users, n_movies=movies, seed=seed)
    out.print(str(folder))


# ---- db ----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(home: Optional[Path] = HomeOpt, database_url: Optional[str] = DbOpt):
    """Create or migrate the catalog schema to the latest revision."""
    from fmstore import catalog

    s = settings(home, database_url)
    engine = catalog.make_engine(s.catalog_url)
    catalog.upgrade(engine)
    out.print(f"catalog at revision {catalog.current_revision(engine)}")


# ---- publish -----------------------------------------------------------------------------------


@app.command()
def publish(
    run_id: Optional[str] = typer.Argument(None, help="Run to publish [default: the latest]."),
    rollback: bool = typer.Option(False, "--rollback", help="Switch the aliases back to the previous publication."),
    prune: Optional[int] = typer.Option(None, "--prune", help="Afterwards keep only the N newest physical collections (and the live one)."),
    batch_size: int = typer.Option(1024, help="Points per upsert."),
    shards: Optional[int] = typer.Option(None, help="Server only: shards per collection."),
    replicas: Optional[int] = typer.Option(None, help="Server only: replication factor."),
    write_consistency: Optional[int] = typer.Option(None, help="Server only: write consistency factor."),
    popularity_weight: float = typer.Option(
        POPULARITY_WEIGHT, help="Ranking prior: the score bias is b_i + weight*log1p(n_ratings); 0 = pure FM ranking."),
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Publish a run to Qdrant (movies + users) and the SQL catalog, switching aliases atomically."""
    from fmstore import artifact, catalog
    from fmstore import publish as publishing
    from fmstore.vectors import open_store

    s = settings(home, database_url, qdrant_url)
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
                    run_dir, store, engine, batch_size=batch_size, shards=shards, replicas=replicas,
                    write_consistency=write_consistency, popularity_weight=popularity_weight, progress=report, **aliases,
                )
            summary.update(vars(result))
        if prune is not None:
            summary["pruned"] = publishing.prune(store, engine, prune, aliases=tuple(aliases.values()))
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


# ---- evaluate ----------------------------------------------------------------------------------


@app.command()
def evaluate(
    run: Optional[str] = typer.Argument(None, help="Run id or run folder [default: the latest run]."),
    test_ratings: Optional[Path] = typer.Option(None, "--test-ratings", help="Ratings CSV to evaluate on instead of the run's held-out split."),
    data: Optional[Path] = typer.Option(None, "--data", help="The run's dataset, if it moved since training [default: the path in the manifest]."),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """RMSE, MAE, Recall@10/20 and NDCG@10 of a run on held-out ratings, beside two baselines."""
    from fmstore import artifact, datasets
    from fmstore import evaluate as evaluation

    s = settings(home)
    folder = Path(run) if run and (Path(run) / artifact.MANIFEST).is_file() else artifact.resolve_run(s.runs_dir, run)
    with err.status(f"evaluating run {folder.name}"):
        dataset = datasets.load_dataset(data, cache_dir=s.home / "cache") if data else None
        report = evaluation.evaluate_run(folder, dataset=dataset, test_ratings=test_ratings, cache_dir=s.home / "cache")
    if as_json:
        return print_json(report.to_json())
    table = Table("", "RMSE", "MAE", "Recall@10", "Recall@20", "NDCG@10", title=f"run {report.run_id}")
    for name, m in report.rows.items():
        table.add_row(name, _fmt(m["rmse"]), _fmt(m["mae"]), _fmt(m["recall@10"]), _fmt(m["recall@20"]), _fmt(m["ndcg@10"]))
    out.print(table)
    ranked = report.rows[evaluation.MODEL]["users_ranked"]
    out.print(
        f"{report.n_test:,} held-out ratings ({report.test_source}); ranking: {ranked:,} users with a held-out "
        f"rating >= {evaluation.RELEVANT_MIN:g}, over all movies they did not rate in training"
    )


# ---- query: a new user's ratings as typed ------------------------------------------------------

# One rating as the flags or a ratings file gave it: (title or movie id, rating, where it was
# given, for messages: '--rated "Toy Story=5"' or 'me.csv, line 3').
RatingInput = tuple[str | int, float, str]


def parse_rating(text: str, where: str) -> float:
    """A rating value as typed -> float; one-line DataError naming the value when it is not one."""
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: rating {str(text).strip()!r} is not a number")
    return value


def parse_rated(items: Sequence[str]) -> list[RatingInput]:
    """`--rated "Title=4.5"` values -> [(title, rating, where)]; the last '=' is the separator."""
    parsed: list[RatingInput] = []
    for item in items:
        title, sep, rating = str(item).rpartition("=")
        where = f'--rated "{item}"'
        if not sep or not title.strip():
            raise ConfigError(
                f'{where}: expected TITLE=RATING, e.g. --rated "Toy Story (1995)=4.5"'
            )
        parsed.append((title.strip(), parse_rating(rating, where), where))
    return parsed


def read_ratings_file(path: Path) -> list[RatingInput]:
    """A CSV with a header: `movieId` (or `movie_id`) or `title`, and `rating`.

    Returns [(movie id or title, rating, where)] where `where` names file and line for messages."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the ratings file ({exc.strerror or exc})") from None
    with f:
        reader = csv.DictReader(f)
        columns = _ratings_file_columns(path, reader.fieldnames or [])
        rows = [
            _ratings_file_row(record, columns, f"{path}, line {line}")
            for line, record in enumerate(reader, start=2)
        ]
    ratings = [row for row in rows if row is not None]
    if not ratings:
        raise DataError(f"{path}: no ratings in the file")
    return ratings


def _ratings_file_columns(path: Path, header: Sequence[str]) -> tuple[str | None, ...]:
    """The header's (movie id, title, rating) column names, each as spelt in the file."""
    fields = {(name or "").strip().lower(): name for name in header}
    id_col = fields.get("movieid") or fields.get("movie_id")
    title_col, rating_col = fields.get("title"), fields.get("rating")
    if rating_col is None or (id_col is None and title_col is None):
        raise DataError(
            f"{path}: needs a header with columns 'rating' and 'movieId' or 'title'; "
            f"found {list(header)}"
        )
    return id_col, title_col, rating_col


def _ratings_file_row(
    record: dict, columns: tuple[str | None, ...], where: str
) -> RatingInput | None:
    """One line of a ratings file -> (movie id or title, rating, where); None for a blank line."""
    id_col, title_col, rating_col = columns
    movie_id = (record.get(id_col) or "").strip() if id_col else ""
    title = (record.get(title_col) or "").strip() if title_col else ""
    if not movie_id and not title:
        if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
            return None
        raise DataError(f"{where}: no movieId or title")
    rating = parse_rating(record.get(rating_col) or "", where)
    if not movie_id:
        return title, rating, where
    try:
        return int(movie_id), rating, where
    except ValueError:
        raise DataError(f"{where}: movieId {movie_id!r} is not an integer") from None


# ---- query -------------------------------------------------------------------------------------


@contextmanager
def _in_flag_words() -> Iterator[None]:
    """Re-raise a query library error with its argument names and hints worded as this command's
    flags: the library says `method 'x'` and "use the movie id", a user here types --method and
    --movie-id."""
    from fmstore.recommend.recommender import USE_THEIR_RATINGS
    from fmstore.recommend.titles import USE_MOVIE_ID

    flag_words = (
        (r"^method ", "--method "),
        (re.escape(USE_MOVIE_ID), "use --movie-id"),
        (re.escape(USE_THEIR_RATINGS), "use --rated or --ratings-file"),
    )
    try:
        yield
    except FmstoreError as exc:
        message = str(exc)
        for words, flags in flag_words:
            message = re.sub(words, flags, message)
        if message == str(exc):
            raise
        raise type(exc)(message) from None


@dataclass
class _Answer:
    """What a query found, before it is printed: the ranking and how to describe it."""

    ids: np.ndarray
    scores: np.ndarray
    question: dict
    heading: str
    b_u: float | None = None  # set for users: the results then carry a predicted rating


@app.command()
def query(
    movie: Optional[str] = typer.Option(None, "--movie", help="Movies similar to this title (exact, any case/article, year optional, fuzzy)."),
    movie_id: Optional[int] = typer.Option(None, "--movie-id", help="Movies similar to this MovieLens movieId."),
    user: Optional[int] = typer.Option(None, "--user", help="Recommendations for a known user (userId in the published run)."),
    rated: Optional[List[str]] = typer.Option(None, "--rated", help='A new user\'s rating, "TITLE=RATING" (repeatable).'),
    ratings_file: Optional[Path] = typer.Option(None, "--ratings-file", help="A new user's ratings: CSV with columns title or movieId, and rating."),
    method: str = typer.Option("fold-in", "--method", help="New user's vector: fold-in (ridge on the published q_i, b_i) | weighted (the notebook's mean)."),
    n: int = typer.Option(10, "-n", "--n", min=1, max=1000, help="Number of results."),
    genre: Optional[List[str]] = typer.Option(None, "--genre", help="Only movies of any of these genres (repeatable)."),
    year_min: Optional[int] = typer.Option(None, "--year-min", help="Only movies from this year on."),
    year_max: Optional[int] = typer.Option(None, "--year-max", help="Only movies up to this year."),
    min_ratings: Optional[int] = typer.Option(
        None, "--min-ratings",
        help=f"Only movies with at least this many ratings [default: {SIMILAR_MIN_RATINGS} for --movie/--movie-id, else 0].",
    ),
    include_rated: bool = typer.Option(False, "--include-rated", help="Known user: keep the movies they rated in training."),
    home: Optional[Path] = HomeOpt,
    database_url: Optional[str] = DbOpt,
    qdrant_url: Optional[str] = QdrantOpt,
    as_json: bool = JsonOpt,
):
    """Similar movies (--movie), or recommendations for a known (--user) or new user (--rated)."""
    from fmstore.recommend import Recommender, check_method
    from fmstore.vectors import QueryFilter, open_store

    new_user = bool(rated) or ratings_file is not None
    _check_one_question(movie is not None, movie_id is not None, user is not None, new_user)
    with _in_flag_words():
        check_method(method)
    inputs = parse_rated(rated or [])
    if ratings_file is not None:
        inputs += read_ratings_file(ratings_file)
    similar = movie is not None or movie_id is not None
    if min_ratings is None and similar:
        min_ratings = SIMILAR_MIN_RATINGS

    s = settings(home, database_url, qdrant_url)
    store = open_store(s)
    try:
        # From the URL: a SQLite catalog is read with sqlite3, read-only (SQLAlchemy's import alone
        # is a quarter of the time budget of a query).
        catalog = s.catalog_url
        aliases = (s.movies_collection, s.users_collection)
        with _in_flag_words(), Recommender(store, catalog, *aliases) as rec:
            genres = rec.canonical_genres(genre or [])
            flt = QueryFilter(genres=genres, year_min=year_min, year_max=year_max,
                              min_ratings=min_ratings or None)
            if similar:
                target = rec.resolve_title(movie) if movie is not None else movie_id
                answer = _ask_similar(rec, target, n, flt)
            elif user is not None:
                answer = _ask_known_user(rec, user, n, not include_rated, flt)
            else:
                answer = _ask_new_user(rec, inputs, method, n, flt)
            if not flt.is_empty():
                used = {k: v for k, v in vars(flt).items() if v not in (None, ())}
                answer.question["filter"] = used
            info = rec.movie_info(answer.ids)
    finally:
        store.close()

    results = _results(rec, answer, info)
    for note in rec.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if as_json:
        return print_json(
            {"run_id": rec.run_id, "query": answer.question, "results": results, "notes": rec.notes}
        )
    _print_results(answer.heading, rec.run_id, results, with_rating=answer.b_u is not None)


def _check_one_question(movie: bool, movie_id: bool, user: bool, new_user: bool) -> None:
    """Exactly one kind of question: a movie by title or by id, a known user, or a new one."""
    asked = {"--movie": movie, "--movie-id": movie_id, "--user": user,
             "--rated/--ratings-file": new_user}
    given = [flag for flag, on in asked.items() if on]
    if len(given) != 1:
        got = f" (got {' and '.join(given)})" if given else ""
        raise ConfigError(f"give exactly one of {', '.join(asked)}{got}")


def _ask_similar(rec: Recommender, movie_id: int, n: int, flt: QueryFilter) -> _Answer:
    ids, scores = rec.similar_items(movie_id, n, flt)
    title = rec.movie_info([movie_id])[movie_id].get("title")
    question = {"type": "similar", "movie_id": movie_id, "title": title}
    return _Answer(ids, scores, question, f"Movies like {title} [id {movie_id}]")


def _ask_known_user(
    rec: Recommender, user: int, n: int, exclude_rated: bool, flt: QueryFilter
) -> _Answer:
    ids, scores = rec.recommend(user, n, filter_already_liked_items=exclude_rated, filter=flt)
    _, b_u = rec.user_vector(user)
    question = {"type": "user", "user_id": user, "exclude_rated": exclude_rated}
    return _Answer(ids, scores, question, f"For user {user}", b_u)


def _ask_new_user(
    rec: Recommender, inputs: Sequence[RatingInput], method: str, n: int, flt: QueryFilter
) -> _Answer:
    ratings = _resolve_ratings(rec, inputs)
    ids, scores = rec.recommend_for_ratings(ratings, n, method, flt)
    _, b_u = rec.recalculate_user(ratings, method)
    info = rec.movie_info(ratings)
    rated = [
        {"movie_id": m, "title": info.get(m, {}).get("title"), "rating": r}
        for m, r in ratings.items()
    ]
    listed = ", ".join(f"{info.get(m, {}).get('title', m)}={r:g}" for m, r in ratings.items())
    question = {"type": "new_user", "method": method, "ratings": rated}
    return _Answer(ids, scores, question, f"For someone who rated {listed} ({method})", b_u)


def _resolve_ratings(rec: Recommender, inputs: Sequence[RatingInput]) -> dict[int, float]:
    """[(title or movie id, rating, where)] -> {movie_id: rating}, each checked against the run."""
    from fmstore.recommend import check_rating

    ratings: dict[int, float] = {}
    for key, value, where in inputs:
        movie_id = key if isinstance(key, int) else rec.resolve_title(key)
        check_rating(value, rec.rating_range, where)
        if movie_id in ratings:
            raise DataError(f"{where}: movie id {movie_id} is rated twice")
        ratings[movie_id] = value
    return ratings


def _results(rec: Recommender, answer: _Answer, info: dict[int, dict]) -> list[dict]:
    """The ranking as rows: the movie's payload, its score and, for users, a predicted rating."""
    results = []
    for movie_id, score in zip(answer.ids.tolist(), answer.scores.tolist(), strict=True):
        p = info.get(movie_id, {})
        rating = None
        if answer.b_u is not None:
            boost = p.get("popularity_boost", 0.0)
            rating = round(rec.predict_rating(answer.b_u, score, boost), 3)
        results.append({
            "movie_id": movie_id, "title": p.get("title"), "year": p.get("year"),
            "genres": p.get("genres") or [], "score": round(score, 5), "predicted_rating": rating,
        })
    return results


def _print_results(heading: str, run_id: str, results: list[dict], with_rating: bool) -> None:
    from rich.markup import escape

    out.print(f"[bold]{escape(heading)}[/bold]  (run {run_id})", highlight=False)
    if not results:
        out.print("no movies match")
        return
    table = Table("#", "title", "year", "genres", "score", *(["rating"] if with_rating else []))
    for rank, r in enumerate(results, 1):
        shown = r["title"] or ""
        if r["year"] and shown.endswith(f"({r['year']})"):
            shown = shown[: -len(f"({r['year']})")].rstrip()
        genres = escape("|".join(r["genres"]))
        row = [str(rank), escape(shown), str(r["year"] or ""), genres, f"{r['score']:.3f}"]
        if with_rating:
            row.append(f"{r['predicted_rating']:.2f}")
        table.add_row(*row)
    out.print(table)


# ---- entry point -------------------------------------------------------------------------------


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except FmstoreError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
        if os.environ.get("FMSTORE_DEBUG"):
            raise
        if isinstance(exc, typer.Abort):  # Ctrl-C inside a prompt
            sys.exit(130)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # a usage error (bad flag)
            _fail(f"error: {exc.format_message()} (see --help)", exc.exit_code)
        if type(exc).__module__.split(".")[0] in ("sqlalchemy", "psycopg", "qdrant_client", "httpx", "grpc"):
            # The database or Qdrant server failed under us: say so in one line, no traceback.
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            _fail(f"error: storage backend failed: {first_line}", 2)
        _fail(f"internal error: {type(exc).__name__}: {exc} (set FMSTORE_DEBUG=1 for the traceback)", 1)


def _fail(message: str, code: int) -> None:
    # Plain write, not rich: rich would wrap a long message over several lines.
    sys.stderr.write(" ".join(message.split()) + "\n")
    sys.exit(code)
