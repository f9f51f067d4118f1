"""Reading catalog rows through a Session: runs, movies and publications (the ORM side).

The query path does not use these: it reads through fmstore.catalog.readers, without the ORM.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fmstore.catalog.tables import Movie, Publication, Run

# Ids per IN (...) list: each id is one bound parameter, and SQLite allows 32766 of them.
_IDS_PER_QUERY = 5000


def chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` items (the last may be shorter), without materialising `items`."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def get_run(session: Session, run_id: str) -> Run | None:
    """The run with this id, or None."""
    return session.get(Run, run_id)


def movie_count(session: Session, run_id: str) -> int:
    """How many movies run `run_id` has in the catalog."""
    query = select(func.count()).select_from(Movie).where(Movie.run_id == run_id)
    return session.scalar(query) or 0


def movie_titles(session: Session, run_id: str) -> list[tuple[int, str, int | None]]:
    """(movie_id, title, year) of every movie of the run, by movie_id: what title resolution
    needs."""
    rows = session.execute(
        select(Movie.movie_id, Movie.title, Movie.year)
        .where(Movie.run_id == run_id)
        .order_by(Movie.movie_id)
    )
    return [tuple(r) for r in rows]  # type: ignore[misc]


def get_movies(session: Session, movie_ids: Iterable[int], run_id: str) -> dict[int, Movie]:
    """Movies of the run by id; ids not in the catalog are simply absent from the result."""
    ids = sorted({int(i) for i in movie_ids})
    found: dict[int, Movie] = {}
    for chunk in chunks(ids, _IDS_PER_QUERY):
        query = select(Movie).where(Movie.run_id == run_id, Movie.movie_id.in_(chunk))
        for movie in session.scalars(query):
            found[movie.movie_id] = movie
    return found


def publications(
    session: Session, alias: str | None = None, status: str | None = None
) -> list[Publication]:
    """Publications, newest first, optionally only one alias and/or status."""
    query = select(Publication).order_by(Publication.id.desc())
    if alias is not None:
        query = query.where(Publication.alias == alias)
    if status is not None:
        query = query.where(Publication.status == status)
    return list(session.scalars(query))
