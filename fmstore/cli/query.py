"""`fmstore query`: similar movies, or recommendations for a known or a new user, printed as a
table or JSON.

Only NumPy, the recommend package and the store are imported, and only when the command runs:
a query must not pay for torch or SQLAlchemy.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence

import typer
from rich.table import Table

from fmstore.cli.app import DbOpt, HomeOpt, JsonOpt, QdrantOpt, app, err, out, print_json, settings
from fmstore.cli.ratings_input import RatingInput, parse_rated, read_ratings_file
from fmstore.errors import ConfigError, DataError, FmstoreError

if TYPE_CHECKING:
    import numpy as np

    from fmstore.recommend import Recommender
    from fmstore.vectors import QueryFilter

# Cosine neighbours with a handful of ratings are echoes of their genres and year (their id vector
# is held near zero by the prior), so "movies like X" looks among movies with some support by
# default; --min-ratings 0 lifts the floor.
SIMILAR_MIN_RATINGS = 20


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
    movie: Optional[str] = typer.Option(
        None,
        "--movie",
        help="Movies similar to this title (exact, any case/article, year optional, fuzzy).",
    ),
    movie_id: Optional[int] = typer.Option(
        None, "--movie-id", help="Movies similar to this MovieLens movieId."
    ),
    user: Optional[int] = typer.Option(
        None, "--user", help="Recommendations for a known user (userId in the published run)."
    ),
    rated: Optional[List[str]] = typer.Option(
        None, "--rated", help='A new user\'s rating, "TITLE=RATING" (repeatable).'
    ),
    ratings_file: Optional[Path] = typer.Option(
        None,
        "--ratings-file",
        help="A new user's ratings: CSV with columns title or movieId, and rating.",
    ),
    method: str = typer.Option(
        "fold-in",
        "--method",
        help="New user's vector: fold-in (ridge on the published q_i, b_i) | weighted (the notebook's mean).",
    ),
    n: int = typer.Option(10, "-n", "--n", min=1, max=1000, help="Number of results."),
    genre: Optional[List[str]] = typer.Option(
        None, "--genre", help="Only movies of any of these genres (repeatable)."
    ),
    year_min: Optional[int] = typer.Option(
        None, "--year-min", help="Only movies from this year on."
    ),
    year_max: Optional[int] = typer.Option(None, "--year-max", help="Only movies up to this year."),
    min_ratings: Optional[int] = typer.Option(
        None,
        "--min-ratings",
        help=f"Only movies with at least this many ratings [default: {SIMILAR_MIN_RATINGS} for --movie/--movie-id, else 0].",
    ),
    include_rated: bool = typer.Option(
        False, "--include-rated", help="Known user: keep the movies they rated in training."
    ),
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
            flt = QueryFilter(
                genres=genres, year_min=year_min, year_max=year_max, min_ratings=min_ratings or None
            )
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
    asked = {
        "--movie": movie,
        "--movie-id": movie_id,
        "--user": user,
        "--rated/--ratings-file": new_user,
    }
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
        results.append(
            {
                "movie_id": movie_id,
                "title": p.get("title"),
                "year": p.get("year"),
                "genres": p.get("genres") or [],
                "score": round(score, 5),
                "predicted_rating": rating,
            }
        )
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
