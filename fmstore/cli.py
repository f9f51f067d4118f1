"""The `fmstore` command line: the only module that prints or reads Settings from the environment.

Heavy modules (torch, qdrant, sqlalchemy) are imported inside the commands that need them, so
`fmstore query` starts in a fraction of a second.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from fmstore.config import POPULARITY_WEIGHT, Settings, TrainConfig
from fmstore.errors import FmstoreError

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


# ---- query -------------------------------------------------------------------------------------


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
    from fmstore.errors import ConfigError, DataError
    from fmstore.recommend import METHODS, Recommender, check_rating, parse_rated, read_ratings_file, with_excluded
    from fmstore.vectors import QueryFilter, open_store

    given = [name for name, on in (("--movie", movie is not None), ("--movie-id", movie_id is not None),
                                   ("--user", user is not None), ("--rated/--ratings-file", bool(rated) or ratings_file is not None)) if on]
    if len(given) != 1:
        raise ConfigError("give exactly one of --movie, --movie-id, --user, --rated/--ratings-file"
                          + (f" (got {' and '.join(given)})" if given else ""))
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    inputs = parse_rated(rated or []) + (read_ratings_file(ratings_file) if ratings_file is not None else [])

    s = settings(home, database_url, qdrant_url)
    store = open_store(s)
    rec = None
    try:
        # From the URL: a SQLite catalog is read with sqlite3, read-only (SQLAlchemy's import alone
        # is a quarter of the time budget of a query).
        rec = Recommender(store, s.catalog_url, s.movies_collection, s.users_collection)
        similar = movie is not None or movie_id is not None
        if min_ratings is None and similar:
            min_ratings = SIMILAR_MIN_RATINGS
        flt = QueryFilter(genres=rec.canonical_genres(genre or []), year_min=year_min, year_max=year_max,
                          min_ratings=min_ratings or None)
        b_u = None
        if similar:
            target = rec.resolve_title(movie) if movie is not None else movie_id
            ids, scores = rec.similar_items(target, n, flt)
            title = rec.movie_info([target])[target].get("title")
            question = {"type": "similar", "movie_id": target, "title": title}
            heading = f"Movies like {title} [id {target}]"
        elif user is not None:
            ids, scores = rec.recommend(user, n, filter_already_liked_items=not include_rated, filter=flt)
            _, b_u = rec.user_vector(user)
            question = {"type": "user", "user_id": user, "exclude_rated": not include_rated}
            heading = f"For user {user}"
        else:
            ratings: dict = {}
            for key, value, where in inputs:
                target = key if isinstance(key, int) else rec.resolve_title(key)
                check_rating(value, rec.rating_range, where)
                if target in ratings:
                    raise DataError(f"{where}: movie id {target} is rated twice")
                ratings[target] = value
            p_u, b_u = rec.recalculate_user(ratings, method)
            ids, scores = rec.rank_for_vector(p_u, n, filter=with_excluded(flt, ratings))
            titles = rec.movie_info(ratings)
            question = {"type": "new_user", "method": method,
                        "ratings": [{"movie_id": m, "title": titles.get(m, {}).get("title"), "rating": r} for m, r in ratings.items()]}
            heading = "For someone who rated " + ", ".join(f"{titles.get(m, {}).get('title', m)}={r:g}" for m, r in ratings.items()) + f" ({method})"
        if not flt.is_empty():
            question["filter"] = {k: v for k, v in vars(flt).items() if v not in (None, ())}
        info = rec.movie_info(ids)
        notes = list(rec.notes)
    finally:
        if rec is not None:
            rec.close()
        store.close()

    results = []
    for movie_key, score in zip(ids.tolist(), scores.tolist()):
        p = info.get(movie_key, {})
        results.append({
            "movie_id": movie_key, "title": p.get("title"), "year": p.get("year"), "genres": p.get("genres") or [],
            "score": round(score, 5),
            "predicted_rating": None if b_u is None else round(rec.predict_rating(b_u, score, p.get("popularity_boost", 0.0)), 3),
        })
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if as_json:
        return print_json({"run_id": rec.run_id, "query": question, "results": results, "notes": notes})
    from rich.markup import escape

    out.print(f"[bold]{escape(heading)}[/bold]  (run {rec.run_id})", highlight=False)
    if not results:
        out.print("no movies match")
        return
    columns = ["#", "title", "year", "genres", "score"] + (["rating"] if b_u is not None else [])
    table = Table(*columns)
    for rank, r in enumerate(results, 1):
        shown = r["title"] or ""
        if r["year"] and shown.endswith(f"({r['year']})"):
            shown = shown[: -len(f"({r['year']})")].rstrip()
        row = [str(rank), escape(shown), str(r["year"] or ""), escape("|".join(r["genres"])), f"{r['score']:.3f}"]
        if b_u is not None:
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
