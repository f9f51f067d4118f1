"""The live updates' rows (fmstore.updates): recorded ratings, added movies, and how far each
physical collection has applied them. Functions flush but never commit: the caller owns the
transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterable, Mapping

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from fmstore.catalog.queries import chunks
from fmstore.catalog.tables import AddedMovie, AppliedUpdates, RecordedRating, utc_now

# ---- ratings ------------------------------------------------------------------------------------


def current_ratings(session: Session, user_ids: Iterable[int]) -> dict[int, dict[int, float]]:
    """{user: {movie: rating}}: each user's newest recorded rating of each movie ({} for a user
    with none)."""
    users = sorted({int(u) for u in user_ids})
    out: dict[int, dict[int, float]] = {u: {} for u in users}
    for chunk in chunks(users, 5000):
        rows = session.execute(
            select(RecordedRating.user_id, RecordedRating.movie_id, RecordedRating.rating)
            .where(RecordedRating.user_id.in_(chunk))
            .order_by(RecordedRating.id)
        )
        for user, movie, rating in rows:
            out[int(user)][int(movie)] = float(rating)  # the newest row wins
    return out


def record_ratings(
    session: Session,
    ratings: Mapping[int, Mapping[int, float]],
    *,
    source: str,
    at: datetime | None = None,
) -> int:
    """Append the ratings ({user: {movie: rating}}) that differ from each user's current ones;
    returns how many rows were appended (0: the same ratings again change nothing)."""
    at = at or utc_now()
    current = current_ratings(session, ratings)
    rows = [
        {
            "user_id": int(user),
            "movie_id": int(movie),
            "rating": float(r),
            "recorded_at": at,
            "source": source,
        }
        for user, given in ratings.items()
        for movie, r in given.items()
        if current[int(user)].get(int(movie)) != float(r)
    ]
    if rows:  # one executemany, not an ORM object per row (a batch holds thousands)
        session.execute(insert(RecordedRating), rows)
    return len(rows)


def last_rating_id(session: Session) -> int:
    """The newest recorded_ratings id (0 when there is none)."""
    return int(session.scalar(select(func.max(RecordedRating.id))) or 0)


def users_rated_after(session: Session, after: int) -> list[int]:
    """Users with a recorded rating newer than id `after`, ascending."""
    rows = session.scalars(
        select(RecordedRating.user_id).where(RecordedRating.id > after).distinct()
    )
    return sorted(int(u) for u in rows)


def all_current_ratings(session: Session) -> dict[int, dict[int, float]]:
    """Every user's current recorded ratings (the newest row of each user and movie)."""
    out: dict[int, dict[int, float]] = {}
    rows = session.execute(
        select(RecordedRating.user_id, RecordedRating.movie_id, RecordedRating.rating).order_by(
            RecordedRating.id
        )
    )
    for user, movie, rating in rows:
        out.setdefault(int(user), {})[int(movie)] = float(rating)
    return out


def rating_times(session: Session) -> dict[tuple[int, int], datetime]:
    """(user, movie) -> when its current rating was recorded (for an exported ratings.csv)."""
    rows = session.execute(
        select(RecordedRating.user_id, RecordedRating.movie_id, RecordedRating.recorded_at)
    )
    out: dict[tuple[int, int], datetime] = {}
    for user, movie, at in rows:
        key = (int(user), int(movie))
        out[key] = max(out.get(key, at), at)
    return out


# ---- movies -------------------------------------------------------------------------------------


def record_movies(session: Session, movies: list[dict], *, source: str) -> list[dict]:
    """Append movies ({movie_id, title, year, genres: list}) not added before; returns those
    appended (adding the same movie again changes nothing)."""
    ids = [int(m["movie_id"]) for m in movies]
    known = set(session.scalars(select(AddedMovie.movie_id).where(AddedMovie.movie_id.in_(ids))))
    new = [m for m in movies if int(m["movie_id"]) not in known]
    session.add_all(
        AddedMovie(
            movie_id=int(m["movie_id"]),
            title=m["title"],
            year=m.get("year"),
            genres="|".join(m.get("genres") or []),
            recorded_at=utc_now(),
            source=source,
        )
        for m in new
    )
    session.flush()
    return new


def added_movies(session: Session, after: int = 0) -> list[tuple[int, dict]]:
    """(id, {movie_id, title, year, genres: list}) of the movies added after id `after`, in order."""
    rows = session.scalars(select(AddedMovie).where(AddedMovie.id > after).order_by(AddedMovie.id))
    return [
        (
            int(m.id),
            {
                "movie_id": int(m.movie_id),
                "title": m.title,
                "year": m.year,
                "genres": m.genres.split("|") if m.genres else [],
            },
        )
        for m in rows
    ]


def max_added_movie_id(session: Session) -> int:
    """The largest movie id among the added movies (0 when none)."""
    return int(session.scalar(select(func.max(AddedMovie.movie_id))) or 0)


# ---- what each collection holds -----------------------------------------------------------------


def applied_through(session: Session, collection: str) -> int | None:
    """The newest update a physical collection holds; None for one never brought up to date
    (a new publication: it holds what its run was trained on)."""
    row = session.get(AppliedUpdates, collection)
    return None if row is None else int(row.through)


def mark_applied(session: Session, collection: str, through: int) -> None:
    """Record that `collection` holds every update up to id `through`."""
    session.merge(AppliedUpdates(collection=collection, through=int(through)))
    session.flush()
