"""The query path's view of the catalog: three reads behind one small protocol.

A query needs the run's serving config, the movie titles and the genre values, nothing else.
`open_reader` picks how to read them: a SQLite catalog URL is read with the standard library's
sqlite3, read-only, because importing SQLAlchemy alone costs 0.2-0.3 s of the < 1 s a query aims
at; anything else (a Postgres URL, the caller's Engine or Session factory) goes through
SQLAlchemy, imported only then. This module must not import SQLAlchemy at import time.

The three reads are the documented catalog contract (docs/qdrant-contract.md: `runs.config` is
JSON), written once below in SQL that SQLite and Postgres both accept; both readers run that same
text, so there is a single copy of each query on the query path.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import quote

from fmstore.errors import NotFoundError, StoreError

# Named parameters (:run_id): the style both sqlite3 and SQLAlchemy's text() understand.
RUN_SQL = "SELECT config, artifact_path FROM runs WHERE id = :run_id"
# Movies are kept per run: a query reads the movies of the run that is live (and after a
# rollback, of the run rolled back to), never another run's.
TITLES_SQL = "SELECT movie_id, title, year FROM movies WHERE run_id = :run_id ORDER BY movie_id"
GENRES_SQL = "SELECT DISTINCT genres FROM movies WHERE run_id = :run_id"

_SQLITE_URL = re.compile(r"^sqlite(?:\+pysqlite)?:///(?P<path>[^?]+)$")
_UPGRADE_HINT = "(run `fmstore publish` or `fmstore db upgrade`)"


class CatalogReader(Protocol):
    """What the query path reads from the catalog."""

    def run(self, run_id: str) -> tuple[dict, str | None] | None:
        """(the run's config: {'train': ..., 'serving': ...}, its artifact path), or None."""

    def movie_titles(self, run_id: str) -> list[tuple[int, str, int | None]]:
        """(movie_id, title, year) of every movie of the run, by movie_id."""

    def genres(self, run_id: str) -> list[str | None]:
        """The distinct `genres` values ('Action|Comedy') of the run's movies, in no order."""

    def close(self) -> None:
        """Release what the reader opened itself (never the caller's Engine)."""


def open_reader(source: Any) -> CatalogReader:
    """A reader for an Engine or Session factory (the caller's: close() leaves it open), or for a
    catalog URL or SQLite path (opened here, closed by close())."""
    if isinstance(source, Path):
        source = f"sqlite:///{source}"
    if isinstance(source, str):
        match = _SQLITE_URL.match(source)
        if match and match["path"] != ":memory:":
            return SqliteReader(Path(match["path"]))
        from fmstore.catalog.engine import make_engine

        engine = make_engine(source)
        return SqlAlchemyReader(engine, owned=engine)
    return SqlAlchemyReader(source)


def _run_row(rows: list) -> tuple[dict, str | None] | None:
    """The RUN_SQL result as (config, artifact_path); SQLite hands JSON back as text."""
    if not rows:
        return None
    config, path = rows[0]
    if isinstance(config, str):
        config = json.loads(config)
    return config or {}, path


class SqliteReader:
    """The three reads with sqlite3 on a read-only connection to a SQLite catalog file."""

    def __init__(self, path: Path):
        self.path = path
        if not path.is_file():
            raise NotFoundError(f"no catalog at {path}: run `fmstore publish` first")
        try:
            self._conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the catalog {path}: {exc}") from None

    def _read(self, sql: str, params: dict | None = None) -> list[tuple]:
        try:
            return self._conn.execute(sql, params or {}).fetchall()
        except sqlite3.Error as exc:
            reason = f"{exc} {_UPGRADE_HINT}"
            raise StoreError(f"cannot read the catalog {self.path}: {reason}") from None

    def run(self, run_id: str) -> tuple[dict, str | None] | None:
        return _run_row(self._read(RUN_SQL, {"run_id": run_id}))

    def movie_titles(self, run_id: str) -> list[tuple[int, str, int | None]]:
        return [tuple(r) for r in self._read(TITLES_SQL, {"run_id": run_id})]  # type: ignore[misc]

    def genres(self, run_id: str) -> list[str | None]:
        return [r[0] for r in self._read(GENRES_SQL, {"run_id": run_id})]

    def close(self) -> None:
        self._conn.close()


class SqlAlchemyReader:
    """The three reads through SQLAlchemy, on an Engine or a Session factory."""

    def __init__(self, engine_or_factory: Any, owned: Any = None):
        from sqlalchemy.engine import Engine
        from sqlalchemy.orm import Session

        if isinstance(engine_or_factory, Engine):
            self._session: Callable[[], Any] = lambda: Session(engine_or_factory)
        elif callable(engine_or_factory):
            self._session = engine_or_factory
        else:
            raise TypeError(
                "the catalog must be a SQLAlchemy Engine, a Session factory or a catalog URL"
            )
        self._owned = owned  # an Engine made here from a URL: disposed by close()

    def _read(self, sql: str, params: dict | None = None) -> list[tuple]:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._session() as session:
                return [tuple(r) for r in session.execute(text(sql), params or {})]
        except SQLAlchemyError as exc:
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            raise StoreError(f"cannot read the catalog: {reason} {_UPGRADE_HINT}") from None

    def run(self, run_id: str) -> tuple[dict, str | None] | None:
        return _run_row(self._read(RUN_SQL, {"run_id": run_id}))

    def movie_titles(self, run_id: str) -> list[tuple[int, str, int | None]]:
        return self._read(TITLES_SQL, {"run_id": run_id})  # type: ignore[return-value]

    def genres(self, run_id: str) -> list[str | None]:
        return [r[0] for r in self._read(GENRES_SQL, {"run_id": run_id})]

    def close(self) -> None:
        if self._owned is not None:
            self._owned.dispose()
