"""The SQL catalog: movies, training runs and publications (SQLAlchemy 2.0, migrations by Alembic).

SQLite is the embedded default, Postgres the server default; everything here works on both.
Functions take an Engine or a Session and never read the environment. They flush but never
commit: the caller owns the transaction, e.g.

    engine = make_engine(settings.catalog_url)
    ensure_schema(engine)
    with Session(engine) as session, session.begin():
        upsert_movies(session, rows)

Files: tables (the models), engine (make_engine), schema (migrations to head), writes and
queries (rows through a Session), readers (the query path's three reads, light on SQLite).

The names below are imported on first use (PEP 562), not here: `import fmstore.catalog.readers`
runs this file first, and the query path must not pay for importing SQLAlchemy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# The file of this package that defines each public name.
_HOMES = {
    "tables": ("BACKENDS", "STATUSES", "UTCDateTime", "Base", "Movie", "Run", "Publication"),
    "engine": ("make_engine",),
    "schema": (
        "MIGRATIONS_DIR",
        "head_revision",
        "migration_connection",
        "upgrade",
        "current_revision",
        "ensure_schema",
    ),
    "writes": (
        "record_run",
        "upsert_movies",
        "start_publication",
        "finish_publication",
        "mark_rolled_back",
    ),
    "queries": ("get_run", "movie_count", "movie_titles", "get_movies", "publications"),
    "readers": ("CatalogReader", "open_reader"),
}
_HOME_OF = {name: home for home, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str) -> Any:
    home = _HOME_OF.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
