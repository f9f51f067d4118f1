"""Writing catalog rows through a Session: runs, movies and publications.

Functions flush but never commit: the caller owns the transaction.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from sqlalchemy import update
from sqlalchemy.orm import Session

from fmstore.catalog.queries import chunks
from fmstore.catalog.tables import BACKENDS, STATUSES, Movie, Publication, Run, utc_now
from fmstore.errors import NotFoundError, StoreError

# Rows handed to the driver at a time: bounds memory when rows come from a generator.
_CHUNK = 5000

_MOVIE_COLUMNS = tuple(c.name for c in Movie.__table__.columns)


# ---- runs ---------------------------------------------------------------------------------------


def record_run(
    session: Session,
    *,
    run_id: str,
    created_at: datetime,
    dataset_name: str,
    dataset_fingerprint: str,
    config: dict,
    metrics: dict,
    artifact_path: str,
) -> None:
    """Insert or update the run (publishing the same run twice is fine)."""
    if created_at.tzinfo is None:
        raise ValueError("created_at must be timezone-aware")
    session.merge(
        Run(
            id=run_id,
            created_at=created_at,
            dataset_name=dataset_name,
            dataset_fingerprint=dataset_fingerprint,
            config=_jsonable(config),
            metrics=_jsonable(metrics),
            artifact_path=str(artifact_path),
        )
    )
    session.flush()


def _jsonable(obj: Any) -> Any:
    """Plain JSON: NumPy scalars and Paths become numbers and strings, NaN/inf become null.

    Postgres rejects NaN in JSON, and a diverged run's metrics can hold one; the artifact
    keeps the exact values.
    """

    def default(o: Any) -> Any:
        if hasattr(o, "item"):  # NumPy / torch scalar
            return o.item()
        if isinstance(o, (Path, datetime)):
            return str(o)
        if isinstance(o, (tuple, set)):
            return list(o)
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    def finite(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {k: finite(v) for k, v in o.items()}
        if isinstance(o, list):
            return [finite(v) for v in o]
        return o

    return finite(json.loads(json.dumps(obj, default=default)))


# ---- movies -------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _opt(value: Any, convert: Any) -> Any:
    return None if _missing(value) else convert(value)


def _movie_row(row: dict, run_id: str) -> dict:
    """One complete row of plain Python values (rows often come from pandas: NumPy ints, NaN)."""
    unknown = set(row) - set(_MOVIE_COLUMNS) - {"run_id"}
    if unknown:
        raise ValueError(f"unknown movie columns: {sorted(unknown)}")
    genres = row.get("genres")
    if _missing(genres):
        genres = ""
    elif not isinstance(genres, str):
        genres = "|".join(str(g) for g in genres)
    return {
        "run_id": run_id,
        "movie_id": int(row["movie_id"]),
        "title": str(row["title"]),
        "year": _opt(row.get("year"), int),
        "genres": genres,
        "n_ratings": _opt(row.get("n_ratings"), int) or 0,
        "mean_rating": _opt(row.get("mean_rating"), float),
        "imdb_id": _opt(row.get("imdb_id"), str),
        "tmdb_id": _opt(row.get("tmdb_id"), int),
    }


def upsert_movies(session: Session, rows: Iterable[dict], *, run_id: str) -> int:
    """Insert or update the movies of run `run_id` by movie_id (INSERT ... ON CONFLICT DO
    UPDATE, executemany). Other runs' movies are never touched: movies are kept per run.

    Keys are Movie columns; `genres` may be a list. Returns the number of rows written.
    Movie objects already loaded in this session are not refreshed.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise StoreError(f"the catalog supports SQLite and Postgres, not {dialect}")

    table = Movie.__table__
    stmt = insert(table)
    # One statement executed for many parameter sets: compiled once, and the driver's
    # executemany does the batching (psycopg pipelines it). Building multi-row VALUES per chunk
    # instead was 10x slower: SQLAlchemy recompiles each such statement.
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.run_id, table.c.movie_id],
        set_={c: stmt.excluded[c] for c in _MOVIE_COLUMNS if c not in ("run_id", "movie_id")},
    )
    count = 0
    for chunk in chunks((_movie_row(r, run_id) for r in rows), _CHUNK):
        session.execute(stmt, chunk)
        count += len(chunk)
    return count


# ---- publications -------------------------------------------------------------------------------


def start_publication(
    session: Session,
    *,
    run_id: str,
    backend: str,
    alias: str,
    collection: str,
    pid: int | None = None,
    host: str | None = None,
) -> int:
    """Record that publishing `collection` (for `alias`) began, by process `pid` on `host`;
    returns the publication id."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if session.get(Run, run_id) is None:
        raise NotFoundError(
            f"run {run_id} is not in the catalog; record the run before publishing it"
        )
    publication = Publication(
        run_id=run_id,
        backend=backend,
        alias=alias,
        collection=collection,
        status="running",
        started_at=utc_now(),
        pid=pid,
        host=host,
    )
    session.add(publication)
    session.flush()
    return publication.id


def finish_publication(
    session: Session,
    publication_id: int,
    *,
    status: str,
    points: int | None = None,
    error: str | None = None,
) -> None:
    """Close a publication: succeeded, failed or rolled_back, with its point count or error."""
    if status not in STATUSES or status == "running":
        raise ValueError(f"status must be one of {STATUSES[1:]}, not {status!r}")
    publication = session.get(Publication, publication_id)
    if publication is None:
        raise NotFoundError(f"publication {publication_id} is not in the catalog")
    publication.status = status
    publication.finished_at = utc_now()
    if points is not None:
        publication.points = int(points)
    if error is not None:
        publication.error = error
    session.flush()


def mark_rolled_back(session: Session, *, collections: Iterable[str]) -> None:
    """The succeeded publications of `collections` become rolled_back, so that the next
    rollback looks past them. Their finished_at stays: it records when they went live."""
    session.execute(
        update(Publication)
        .where(
            Publication.collection.in_(list(collections)),
            Publication.status == "succeeded",
        )
        .values(status="rolled_back")
    )
    session.flush()
