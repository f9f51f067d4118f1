"""The catalog's schema version: Alembic migrations (migrations/ at the repository root) to head.

The migrations are found through the package: an installed wheel carries them as
fmstore/_migrations (setup.py copies the top-level folder there at build time); a source checkout
or an editable install reads the top-level migrations/ folder itself.

Alembic is configured in code, not by alembic.ini, so a library caller needs no config file;
migrations/env.py uses migration_connection() from here for the `alembic` command line too.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import Engine
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from fmstore.catalog.engine import driver_message
from fmstore.errors import StoreError


def _migrations_dir() -> Path:
    from importlib.resources import files

    packaged = Path(str(files("fmstore") / "_migrations"))
    if (packaged / "env.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS_DIR = _migrations_dir()


def _alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    # ConfigParser interpolates '%': escape it in the path.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest Alembic revision in migrations/ (the schema `upgrade` brings a catalog to)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction, fit for running migrations (also used by migrations/env.py)."""
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        raw = conn.connection.driver_connection
        if sqlite:
            # Batch migrations copy and drop tables; SQLite's foreign keys must be off for
            # that, and the pragma only takes effect outside a transaction.
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def upgrade(engine: Engine) -> None:
    """Apply all migrations up to head, in one transaction."""
    from alembic import command

    try:
        with migration_connection(engine) as conn:
            command.upgrade(_alembic_config(conn), "head")
    except SQLAlchemyError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        reason = driver_message(exc, engine.url)
        raise StoreError(f"migrating the catalog {shown} failed: {reason}") from None


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at; None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def ensure_schema(engine: Engine) -> None:
    """Upgrade when the database is empty or behind head; refuse one from a newer fmstore."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        shown = engine.url.render_as_string(hide_password=True)
        reason = driver_message(exc, engine.url)
        raise StoreError(f"cannot read the catalog {shown}: {reason}") from None
    script = ScriptDirectory.from_config(_alembic_config())
    if current == script.get_current_head():
        return
    if current is not None:
        try:
            script.get_revision(current)
        except CommandError:
            raise StoreError(
                f"the catalog is at schema revision {current!r}, which this fmstore does not "
                "know; upgrade fmstore or point FMSTORE_DATABASE_URL at another database"
            ) from None
    upgrade(engine)
