"""`fmstore query`: similar movies, or recommendations for a known or a new user, printed as a
table or JSON.

Only NumPy, the recommend package and the store are imported, and only when the command runs:
a query must not pay for torch or SQLAlchemy.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, List, Optional, Sequence

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
    print_json,
    safe,
    settings,
)
from fmstore.cli.query_output import print_results, results_of, shown_title
from fmstore.cli.ratings_input import (
    RatingInput,
    check_id,
    check_title_length,
    parse_rated,
    read_ratings_file,
)
from fmstore.errors import ConfigError, DataError, FmstoreError, NotFoundError

if TYPE_CHECKING:
    import numpy as np

    from fmstore.recommend import Recommender
    from fmstore.recommend.titles import TitleMatch
    from fmstore.vectors import QueryFilter

# "Movies like X" looks among movies with some support by default; --min-ratings 0 lifts the floor.
# benchmarks/ranking.py (item-to-item hit rate@10 of the served `item` vectors): no floor 0.2130,
# 5 ratings 0.2131, 10: 0.2140, 20: 0.2151, 50: 0.2256. The rate keeps rising with the floor
# because held-out likes are mostly popular movies; 20 takes most of the gain below 50 while
# keeping ~1,300 of ml-latest-small's 9,742 movies answerable (50 keeps ~450).
SIMILAR_MIN_RATINGS = 20


@contextmanager
def _in_flag_words() -> Iterator[None]:
    """Re-raise a query library error with its argument names and hints worded as this command's
    flags: the library says `method 'x'` and "use the movie id", a user here types --method and
    --movie-id."""
    from fmstore.recommend.checks import USE_THEIR_RATINGS
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


def _recommender(store, catalog, aliases, wait: float) -> Recommender:
    """A Recommender of the live publication; with `wait`, retried until one is live."""
    from fmstore.errors import NotFoundError
    from fmstore.recommend import Recommender

    deadline = time.monotonic() + wait
    while True:
        try:
            return Recommender(store, catalog, *aliases)
        except NotFoundError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


@dataclass
class _Answer:
    """What a query found, before it is printed: the ranking and how to describe it."""

    ids: np.ndarray
    scores: np.ndarray
    question: dict
    heading: str
    b_u: float | None = None  # set for users: the results then carry a predicted rating
    # for users: why each movie, {movie_id: [(rated movie id, contribution)]} (Recommender.explain)
    reasons: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    # for users: the rating model's b_i + <p_u, q_i> of each movie (its stars come from these)
    rating_scores: np.ndarray | None = None
    similar: bool = False  # scores are similarities in [-1, 1] (Recommender.similar_items)


@app.command(
    epilog=example(
        'fmstore query --movie "Toy Story (1995)" -n 10',
        'fmstore query --rated "Terminator 2=5" --rated "Die Hard: With a Vengeance=5"',
        "fmstore query --user 42 --genre comedy --json",
    )
)
def query(
    movie: Optional[str] = typer.Option(
        None,
        "--movie",
        help="Movies similar to this title (exact, any case/article, year optional, fuzzy).",
    ),
    movie_id: Optional[int] = typer.Option(
        None, "--movie-id", help="Movies similar to this MovieLens movieId."
    ),
    user: Optional[str] = typer.Option(
        None,
        "--user",
        help="Recommendations for a known user (userId in the published run; a run trained on "
        "your own text ids takes those).",
    ),
    rated: Optional[List[str]] = typer.Option(
        None, "--rated", help='A new user\'s rating, "TITLE=RATING" (repeatable).'
    ),
    ratings_file: Optional[Path] = typer.Option(
        None,
        "--ratings-file",
        help="A new user's ratings: CSV with columns title or movieId, and rating.",
    ),
    method: Optional[str] = typer.Option(
        None,
        "--method",
        help="New user's ranking vector: weighted (the rating-weighted mean of their movies' ranking vectors; the default) | fold-in (the ranking model's user step).",
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
    wait: float = typer.Option(
        0.0,
        "--wait",
        metavar="SECONDS",
        help="Wait up to SECONDS for a publication when none is live yet (queries never wait "
        "for a publish: they read the old or the new one).",
    ),
):
    """Similar movies (--movie), or recommendations for a known (--user) or new user (--rated).

    For users the table shows the predicted rating with one decimal ("5.0+": the model's
    prediction is above the top of the scale) and the movie they liked that pushed each
    recommendation up most ("because you liked"); --json also has the raw ranking scores. A title
    that had to be guessed is said on stderr ("note: showing ... for '...'")."""
    from fmstore.recommend import DEFAULT_METHOD, check_method
    from fmstore.vectors import QueryFilter, open_store

    if year_min is not None and year_max is not None and year_min > year_max:
        raise ConfigError(
            f"--year-min {year_min} is after --year-max {year_max}: no movie can match; swap them"
        )
    new_user = bool(rated) or ratings_file is not None
    _check_one_question(movie is not None, movie_id is not None, user is not None, new_user)
    _check_flags_apply(method is not None, include_rated, user is not None, new_user)
    method = method or DEFAULT_METHOD
    with _in_flag_words():
        check_method(method)
    if movie_id is not None:
        check_id(movie_id, "--movie-id")
    if user is not None and re.fullmatch(r"\s*-?\d+\s*", user):
        user = check_id(int(user), "--user")
    if movie is not None:
        check_title_length(movie, "--movie")
    inputs = parse_rated(rated or [])
    if ratings_file is not None:
        inputs += read_ratings_file(ratings_file)
    similar = movie is not None or movie_id is not None
    if min_ratings is None and similar:
        min_ratings = SIMILAR_MIN_RATINGS

    check_wait(wait)
    s = settings(home, database_url, qdrant_url, stores=True)
    check_home(s, write=False)
    store = open_store(s)
    try:
        # From the URL: a SQLite catalog is read with sqlite3, read-only (SQLAlchemy's import alone
        # is a quarter of the time budget of a query).
        catalog = s.catalog_url
        aliases = (s.movies_collection, s.users_collection)
        with _in_flag_words(), _recommender(store, catalog, aliases, wait) as rec:
            genres = rec.canonical_genres(genre or [])
            flt = QueryFilter(
                genres=genres, year_min=year_min, year_max=year_max, min_ratings=min_ratings or None
            )
            if similar:
                target = movie_id
                if movie is not None:
                    match = rec.match_title(movie)
                    target = match.movie_id
                    if match.note():
                        rec.notes.append(match.note())
                answer = _ask_similar(rec, target, n, flt)
                if movie is not None:
                    answer.question["title_match"] = match.as_dict()
            elif user is not None:
                asked = _user_number(rec, user)
                answer = _ask_known_user(rec, asked, n, not include_rated, flt)
                if asked != user:
                    answer.question["user"] = user
            else:
                answer = _ask_new_user(rec, inputs, method, n, flt)
            if not flt.is_empty():
                used = {k: v for k, v in vars(flt).items() if v not in (None, ())}
                answer.question["filter"] = used
            reasons = [j for r in answer.reasons.values() for j, _ in r]
            info = rec.movie_info([*answer.ids.tolist(), *reasons])
    finally:
        store.close()

    results = results_of(rec, answer, info)
    for note in rec.notes:
        err.print(f"note: {safe(note)}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        return print_json(
            {"run_id": rec.run_id, "query": answer.question, "results": results, "notes": rec.notes}
        )
    print_results(answer.heading, rec.run_id, results, for_user=answer.b_u is not None)


def _user_number(rec: Recommender, user: int | str) -> int:
    """--user as the published run's whole number: a number as it is; a person's own id (a run
    trained on text ids) through the run folder's keys.json."""
    if isinstance(user, int):
        return user
    from fmstore import runs

    if rec.artifact_path is None or not (rec.artifact_path / "keys.json").is_file():
        raise ConfigError(
            f"--user {user!r}: run {rec.run_id}'s user ids are whole numbers"
            if rec.artifact_path is not None and rec.artifact_path.is_dir()
            else f"--user {user!r}: the run folder {rec.artifact_path}, whose keys.json maps "
            "your ids, is not on this machine; give the user's number"
        )
    keys, _ = runs.load_keys(rec.artifact_path)
    try:
        return (keys or []).index(user)
    except ValueError:
        raise NotFoundError(f"--user {user!r} is not in run {rec.run_id}") from None


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


def _check_flags_apply(method: bool, include_rated: bool, user: bool, new_user: bool) -> None:
    """Refuse flags that would be silently ignored by the question asked."""
    if include_rated and not user:
        raise ConfigError(
            "--include-rated applies to --user only (a new user's movies are never shown)"
        )
    if method and not new_user:
        raise ConfigError(
            "--method applies to --rated/--ratings-file only (a known user's vector is the "
            "published one)"
        )


def _ask_similar(rec: Recommender, movie_id: int, n: int, flt: QueryFilter) -> _Answer:
    from fmstore.serving import display_title

    ids, scores = rec.similar_items(movie_id, n, flt)
    title = display_title(rec.movie_info([movie_id])[movie_id].get("title") or str(movie_id))
    question = {"type": "similar", "movie_id": movie_id, "title": title}
    return _Answer(ids, scores, question, f"Movies like {title} [id {movie_id}]", similar=True)


def _ask_known_user(
    rec: Recommender, user: int, n: int, exclude_rated: bool, flt: QueryFilter
) -> _Answer:
    ids, scores = rec.recommend(user, n, filter_already_liked_items=exclude_rated, filter=flt)
    notes = list(rec.notes)
    p_u, b_u = rec.user_vector(user)
    reasons = rec.explain(user, ids.tolist())
    rec.notes = notes + [n for n in rec.notes if n not in notes]
    question = {"type": "user", "user_id": user, "exclude_rated": exclude_rated}
    rating_scores = rec.rating_scores(p_u, ids.tolist())
    return _Answer(ids, scores, question, f"For user {user}", b_u, reasons, rating_scores)


def _ask_new_user(
    rec: Recommender, inputs: Sequence[RatingInput], method: str, n: int, flt: QueryFilter
) -> _Answer:
    ratings, matches = _resolve_ratings(rec, inputs)
    notes = list(rec.notes)  # the title notes: recommend_for_ratings starts its own
    ids, scores = rec.recommend_for_ratings(ratings, n, method, flt)
    p_u, b_u = rec.recalculate_user(ratings)  # the rating model's fold-in: the stars shown
    reasons = rec.explain(ratings, ids.tolist(), method)  # the method that ranked them
    rec.notes = notes + [n for n in rec.notes if n not in notes]
    rating_scores = rec.rating_scores(p_u, ids.tolist())
    info = rec.movie_info(ratings)
    rated = [
        {"movie_id": m, "title": shown_title(info, m), "rating": r}
        | ({"title_match": matches[m].as_dict()} if m in matches else {})
        for m, r in ratings.items()
    ]
    listed = ", ".join(f"{shown_title(info, m) or m}={r:g}" for m, r in ratings.items())
    question = {"type": "new_user", "method": method, "ratings": rated}
    heading = f"For someone who rated {listed} ({method})"
    return _Answer(ids, scores, question, heading, b_u, reasons, rating_scores)


def _resolve_ratings(
    rec: Recommender, inputs: Sequence[RatingInput]
) -> tuple[dict[int, float], dict[int, TitleMatch]]:
    """[(title or movie id, rating, where)] -> ({movie_id: rating}, {movie_id: how its typed
    title matched}), each rating checked against the run; guessed titles noted in rec.notes."""
    from fmstore.recommend import check_rating

    ratings: dict[int, float] = {}
    matches: dict[int, TitleMatch] = {}
    for key, value, where in inputs:
        if isinstance(key, int):
            movie_id = key
        else:
            match = _match_title_at(rec, key, where)
            movie_id, matches[match.movie_id] = match.movie_id, match
            if match.note():
                rec.notes.append(match.note())
        check_rating(value, rec.rating_range, where)
        if movie_id in ratings:
            raise DataError(f"{where}: movie id {movie_id} is rated twice")
        ratings[movie_id] = value
    return ratings, matches


def _match_title_at(rec: Recommender, title: str, where: str) -> TitleMatch:
    """A title from a ratings file or a --rated flag; its error says where the title was given."""
    check_title_length(title, where)
    try:
        return rec.match_title(title)
    except FmstoreError as exc:
        if str(exc).startswith(where):
            raise
        raise type(exc)(f"{where}: {exc}") from None
