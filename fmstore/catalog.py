"""The SQL catalog: movies, training runs and publications (SQLAlchemy 2.0, migrations by Alembic).

SQLite is the embedded default, Postgres the server default; everything here works on both.
Functions take an Engine or a Session and never read the environment. They flush but never
commit: the caller owns the transaction, e.g.

    engine = make_engine(settings.catalog_url)
    ensure_schema(engine)
    with Session(engine) as session, session.begin():
        upsert_movies(session, rows)

Build engines with make_engine(): it installs the SQLite settings (foreign keys, real
transactions) that the schema and the migrations rely on.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .errors import NotFoundError, StoreError

MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"

BACKENDS = ("edge", "server")
STATUSES = ("running", "succeeded", "failed", "rolled_back")

# Rows handed to the driver at a time: bounds memory when rows come from a generator.
_CHUNK = 5000


class UTCDateTime(TypeDecorator):
    """A timezone-aware datetime, stored in UTC.

    SQLite has no timezone type and would hand back naive datetimes; storing UTC and attaching
    UTC on the way out gives the same aware values on both backends.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"datetime {value!r} must be timezone-aware")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    # Named constraints: Alembic's batch mode on SQLite can only alter constraints it can name.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Movie(Base):
    __tablename__ = "movies"

    movie_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String)
    year: Mapped[int | None] = mapped_column(Integer)
    genres: Mapped[str] = mapped_column(String, default="")  # 'Action|Comedy'; '' for none
    n_ratings: Mapped[int] = mapped_column(Integer, default=0)
    mean_rating: Mapped[float | None] = mapped_column(Double)
    imdb_id: Mapped[str | None] = mapped_column(String)  # kept as text: '0114709' has a zero
    tmdb_id: Mapped[int | None] = mapped_column(Integer)

    @property
    def genre_list(self) -> list[str]:
        return self.genres.split("|") if self.genres else []

    def __repr__(self) -> str:
        return f"Movie({self.movie_id}, {self.title!r}, {self.year})"


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String, primary_key=True)  # '20261129-105500-ab12cd'
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    dataset_name: Mapped[str] = mapped_column(String)
    dataset_fingerprint: Mapped[str] = mapped_column(String)
    config: Mapped[dict] = mapped_column(JSON)
    metrics: Mapped[dict] = mapped_column(JSON)
    artifact_path: Mapped[str] = mapped_column(String)

    def __repr__(self) -> str:
        return f"Run({self.id!r}, {self.dataset_name!r})"


class Publication(Base):
    __tablename__ = "publications"
    __table_args__ = (
        # "Which collection does alias X point to now, and what was before it": the query
        # behind status and rollback.
        Index(None, "alias", "status"),
        Index(None, "run_id"),
        CheckConstraint(f"backend IN {BACKENDS!r}", name="backend"),
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"))
    backend: Mapped[str] = mapped_column(String(16))  # edge | server
    alias: Mapped[str] = mapped_column(String)  # 'movies'
    collection: Mapped[str] = mapped_column(String)  # 'movies__<run_id>'
    points: Mapped[int | None] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)

    def __repr__(self) -> str:
        return f"Publication({self.id}, {self.alias!r} -> {self.collection!r}, {self.status})"


# --- engine and schema ---------------------------------------------------------------------


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
    shown = sa_url.render_as_string(hide_password=True)
    backend = sa_url.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise StoreError(f"the catalog must be SQLite or Postgres (sqlite:///... or postgresql://...), not {shown}")

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
        raise StoreError(f"cannot open the catalog {shown}: {_reason(exc, sa_url)}") from None
    return engine


def _reason(exc: BaseException, url: Any) -> str:
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


def _alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    # ConfigParser interpolates '%': escape it in the path.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
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
        raise StoreError(f"migrating the catalog {shown} failed: {_reason(exc, engine.url)}") from None


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
        raise StoreError(f"cannot read the catalog {shown}: {_reason(exc, engine.url)}") from None
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


# --- runs ----------------------------------------------------------------------------------


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


def get_run(session: Session, run_id: str) -> Run | None:
    return session.get(Run, run_id)


# --- movies --------------------------------------------------------------------------------

_MOVIE_COLUMNS = tuple(c.name for c in Movie.__table__.columns)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _opt(value: Any, convert: Any) -> Any:
    return None if _missing(value) else convert(value)


def _movie_row(row: dict) -> dict:
    """One complete row of plain Python values (rows often come from pandas: NumPy ints, NaN)."""
    unknown = set(row) - set(_MOVIE_COLUMNS)
    if unknown:
        raise ValueError(f"unknown movie columns: {sorted(unknown)}")
    genres = row.get("genres")
    if _missing(genres):
        genres = ""
    elif not isinstance(genres, str):
        genres = "|".join(str(g) for g in genres)
    return {
        "movie_id": int(row["movie_id"]),
        "title": str(row["title"]),
        "year": _opt(row.get("year"), int),
        "genres": genres,
        "n_ratings": _opt(row.get("n_ratings"), int) or 0,
        "mean_rating": _opt(row.get("mean_rating"), float),
        "imdb_id": _opt(row.get("imdb_id"), str),
        "tmdb_id": _opt(row.get("tmdb_id"), int),
    }


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def upsert_movies(session: Session, rows: Iterable[dict]) -> int:
    """Insert or update movies by movie_id (INSERT ... ON CONFLICT DO UPDATE, executemany).

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
        index_elements=[table.c.movie_id],
        set_={c: stmt.excluded[c] for c in _MOVIE_COLUMNS if c != "movie_id"},
    )
    count = 0
    for chunk in _chunks((_movie_row(r) for r in rows), _CHUNK):
        session.execute(stmt, chunk)
        count += len(chunk)
    return count


def movie_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Movie)) or 0


def movie_titles(session: Session) -> list[tuple[int, str, int | None]]:
    """(movie_id, title, year) of every movie, by movie_id: what title resolution needs."""
    rows = session.execute(select(Movie.movie_id, Movie.title, Movie.year).order_by(Movie.movie_id))
    return [tuple(r) for r in rows]  # type: ignore[misc]


def get_movies(session: Session, movie_ids: Iterable[int]) -> dict[int, Movie]:
    """Movies by id; ids not in the catalog are simply absent from the result."""
    ids = sorted({int(i) for i in movie_ids})
    found: dict[int, Movie] = {}
    # Chunked: each id is one bound parameter, and SQLite allows 32766 of them.
    for chunk in _chunks(ids, 5000):
        for movie in session.scalars(select(Movie).where(Movie.movie_id.in_(chunk))):
            found[movie.movie_id] = movie
    return found


# --- publications --------------------------------------------------------------------------


def start_publication(session: Session, *, run_id: str, backend: str, alias: str, collection: str) -> int:
    """Record that publishing `collection` (for `alias`) began; returns the publication id."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if session.get(Run, run_id) is None:
        raise NotFoundError(f"run {run_id} is not in the catalog; record the run before publishing it")
    publication = Publication(
        run_id=run_id, backend=backend, alias=alias, collection=collection, status="running", started_at=_now()
    )
    session.add(publication)
    session.flush()
    return publication.id


def finish_publication(
    session: Session, publication_id: int, *, status: str, points: int | None = None, error: str | None = None
) -> None:
    """Close a publication: succeeded, failed or rolled_back, with its point count or error."""
    if status not in STATUSES or status == "running":
        raise ValueError(f"status must be one of {STATUSES[1:]}, not {status!r}")
    publication = session.get(Publication, publication_id)
    if publication is None:
        raise NotFoundError(f"publication {publication_id} is not in the catalog")
    publication.status = status
    publication.finished_at = _now()
    if points is not None:
        publication.points = int(points)
    if error is not None:
        publication.error = error
    session.flush()


def publications(session: Session, alias: str | None = None, status: str | None = None) -> list[Publication]:
    """Publications, newest first, optionally only one alias and/or status."""
    query = select(Publication).order_by(Publication.id.desc())
    if alias is not None:
        query = query.where(Publication.alias == alias)
    if status is not None:
        query = query.where(Publication.status == status)
    return list(session.scalars(query))
