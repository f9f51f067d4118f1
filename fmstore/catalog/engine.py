"""Connecting to a catalog: an Engine for a URL, with the SQLite settings the schema relies on.

Build engines with make_engine(): it installs the SQLite settings (foreign keys, real
transactions) that the schema and the migrations rely on, and it turns every failure into a
StoreError of one line that never shows the password.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from fmstore.config import mask_secrets
from fmstore.errors import StoreError


def make_engine(url: str) -> Engine:
    """An Engine for a catalog URL, checked by connecting once.

    'postgresql://' and 'postgres://' use psycopg 3. For SQLite the parent folder is created.
    Any failure raises StoreError with one line that shows the URL without its password.
    """
    try:
        sa_url = make_url(url)
    except ArgumentError:
        # The text may contain a password: do not echo it.
        raise StoreError("the catalog URL is not a valid SQLAlchemy URL") from None
    if sa_url.drivername in ("postgresql", "postgres"):
        sa_url = sa_url.set(drivername="postgresql+psycopg")
    # No password, and no secret in the query either (?password=..., ?sslpassword=...)
    shown = mask_secrets(sa_url.render_as_string(hide_password=True))
    backend = sa_url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(
            "the catalog must be SQLite or Postgres (sqlite:///... or postgresql://...), "
            f"not {shown}"
        )

    kwargs: dict[str, Any] = {}
    if backend == "postgresql":
        kwargs["pool_pre_ping"] = True  # long-lived processes survive a server restart
        if "connect_timeout" not in sa_url.query:
            kwargs["connect_args"] = {"connect_timeout": 10}  # fail fast on a dead host
    try:
        if backend == "sqlite":
            database = sa_url.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(sa_url, **kwargs)
        if backend == "sqlite":
            _configure_sqlite(engine)
        with engine.connect() as conn:
            # On SQLite, SELECT 1 would not even open the file; reading the header does.
            conn.exec_driver_sql("PRAGMA schema_version" if backend == "sqlite" else "SELECT 1")
    except ImportError as exc:
        hint = "; pip install 'fmstore[postgres]'" if backend == "postgresql" else ""
        raise StoreError(f"cannot open the catalog {shown}: {exc}{hint}") from None
    except (SQLAlchemyError, OSError) as exc:
        reason = driver_message(exc, sa_url)
        raise StoreError(f"cannot open the catalog {shown}: {reason}") from None
    return engine


def driver_message(exc: BaseException, url: URL) -> str:
    """The driver's message in one line, with the password removed should it appear."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    if url.password:
        text = text.replace(str(url.password), "***")
    return text


def _configure_sqlite(engine: Engine) -> None:
    """Foreign keys on, and transactions that SQLite itself runs (DDL included).

    Python's sqlite3 opens transactions lazily and never around DDL, so a failed migration
    would leave half a schema; SQLAlchemy's documented recipe is to switch that off and
    emit BEGIN ourselves.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA foreign_keys=ON")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")
