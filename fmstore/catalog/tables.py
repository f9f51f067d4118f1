"""The catalog's tables as SQLAlchemy 2.0 models: movies, training runs and publications, and
the live updates (fmstore.updates): recorded ratings, added movies, what each collection holds.

Migrations (migrations/versions) must produce exactly this schema; a test compares the two.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

BACKENDS = ("edge", "server")
STATUSES = ("running", "succeeded", "failed", "rolled_back")


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


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    # Named constraints: Alembic's batch mode on SQLite can only alter constraints it can name.
    """The declarative base of the catalog's tables, with named constraints (Alembic needs
    names to alter constraints on SQLite)."""

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
    """A movie as one run knows it: movie metadata is kept per run, so that what a query
    resolves always belongs to the live run, before and after a rollback."""

    __tablename__ = "movies"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    # 64-bit: MovieLens-style ids are validated as 64-bit integers, and Postgres' INTEGER is 32.
    movie_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str] = mapped_column(String)
    year: Mapped[int | None] = mapped_column(Integer)
    genres: Mapped[str] = mapped_column(String, default="")  # 'Action|Comedy'; '' for none
    n_ratings: Mapped[int] = mapped_column(Integer, default=0)
    mean_rating: Mapped[float | None] = mapped_column(Double)
    imdb_id: Mapped[str | None] = mapped_column(String)  # kept as text: '0114709' has a zero
    tmdb_id: Mapped[int | None] = mapped_column(BigInteger)

    @property
    def genre_list(self) -> list[str]:
        """The genres as a list ([] for none)."""
        return self.genres.split("|") if self.genres else []

    def __repr__(self) -> str:
        return f"Movie({self.movie_id}, {self.title!r}, {self.year}, run {self.run_id})"


class Run(Base):
    """A trained run: its dataset, config (train and serving), metrics and artifact folder."""

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
    """One publication of a run under an alias: backend, physical collection, status and
    times (the history that status and rollback read)."""

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
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="running")
    error: Mapped[str | None] = mapped_column(Text)
    # Who runs it: a `running` row whose process is gone is stale (killed mid-way), and the next
    # publish marks it (see fmstore.publish.history).
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String)

    def __repr__(self) -> str:
        return f"Publication({self.id}, {self.alias!r} -> {self.collection!r}, {self.status})"


class RecordedRating(Base):
    """A rating given after training (`fmstore rate`, Recommender.add_ratings): append-only, one
    row per change; a user's rating of a movie is their newest row (a re-rating appends)."""

    __tablename__ = "recorded_ratings"
    __table_args__ = (Index(None, "user_id", "movie_id"),)

    # BigInteger on Postgres, INTEGER on SQLite (its autoincrementing rowid)
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    user_id: Mapped[int] = mapped_column(BigInteger)
    movie_id: Mapped[int] = mapped_column(BigInteger)
    rating: Mapped[float] = mapped_column(Double)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    source: Mapped[str] = mapped_column(String, default="api")  # cli | api | a file's name

    def __repr__(self) -> str:
        return f"RecordedRating(user {self.user_id}, movie {self.movie_id}, {self.rating})"


class AddedMovie(Base):
    """A movie added after training (`fmstore movies add`): served from its genres and year
    until a run trains on it. Append-only; `id` orders the additions."""

    __tablename__ = "added_movies"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    movie_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    title: Mapped[str] = mapped_column(String)
    year: Mapped[int | None] = mapped_column(Integer)
    genres: Mapped[str] = mapped_column(String, default="")  # 'Action|Comedy'; '' for none
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    source: Mapped[str] = mapped_column(String, default="api")

    def __repr__(self) -> str:
        return f"AddedMovie({self.movie_id}, {self.title!r})"


class AppliedUpdates(Base):
    """How far a physical collection has taken the recorded updates: the newest recorded_ratings
    id applied to a users collection, the newest added_movies id to a movies collection. Moved
    only after the points are written, so a crash in between is re-applied by the next command."""

    __tablename__ = "applied_updates"

    collection: Mapped[str] = mapped_column(String, primary_key=True)
    through: Mapped[int] = mapped_column(BigInteger, default=0)

    def __repr__(self) -> str:
        return f"AppliedUpdates({self.collection!r} through {self.through})"
