"""The SQL catalog, on SQLite and on a real Postgres (see conftest.catalog_url)."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fmstore import catalog
from fmstore.catalog import Base, writes
from fmstore.catalog.readers import SqlAlchemyReader, SqliteReader, open_reader
from fmstore.errors import NotFoundError, StoreError

RUN = "20261129-105500-ab12cd"
CREATED = datetime(2026, 11, 29, 10, 55, tzinfo=timezone(timedelta(hours=1)))


@pytest.fixture
def db(engine):
    """An up-to-date catalog."""
    catalog.ensure_schema(engine)
    return engine


def _record(session, run_id="20261129-105500-ab12cd", **changes):
    kwargs = dict(
        run_id=run_id,
        created_at=CREATED,
        dataset_name="ml-latest-small",
        dataset_fingerprint="sha256:abc",
        config={"factors": 64, "fields": ["user", "movie"]},
        metrics={"rmse": 0.87},
        artifact_path="/runs/" + run_id,
    )
    catalog.record_run(session, **{**kwargs, **changes})


def test_migrations_produce_the_models_schema(engine):
    assert catalog.current_revision(engine) is None
    catalog.upgrade(engine)
    assert catalog.current_revision(engine) == catalog.head_revision() is not None
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    assert diff == []
    names = {ix["name"] for ix in inspect(engine).get_indexes("publications")}
    assert "ix_publications_alias_status" in names


def test_ensure_schema_is_idempotent(engine):
    catalog.ensure_schema(engine)
    catalog.ensure_schema(engine)
    assert catalog.current_revision(engine) == catalog.head_revision()


def test_ensure_schema_refuses_a_newer_catalog(db):
    with db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'from_the_future'")
    with pytest.raises(StoreError, match="from_the_future"):
        catalog.ensure_schema(db)


def test_record_run_is_idempotent(db):
    with Session(db) as s, s.begin():
        _record(s)
        _record(s)  # same session: merge finds the pending row
    with Session(db) as s, s.begin():
        _record(s, metrics={"rmse": 0.85, "mae": float("nan")})
    with Session(db) as s:
        runs = s.query(catalog.Run).all()
        assert len(runs) == 1
        run = catalog.get_run(s, "20261129-105500-ab12cd")
        assert run.metrics == {"rmse": 0.85, "mae": None}  # NaN is not JSON
        assert run.config["fields"] == ["user", "movie"]
        assert run.created_at == CREATED and run.created_at.tzinfo is not None
        assert catalog.get_run(s, "nope") is None


def test_record_run_wants_an_aware_datetime(db):
    with Session(db) as s, pytest.raises(ValueError, match="timezone-aware"):
        _record(s, created_at=datetime(2026, 11, 29))


def _movies(n, suffix=""):
    return [
        {
            "movie_id": i,
            "title": f"Movie {i}{suffix}",
            "year": None if i % 10 == 0 else 1950 + i % 70,
            "genres": ["Action", "Comedy"][: i % 3],
            "n_ratings": i % 50 + (7 if suffix else 0),
            "mean_rating": 3.5,
            "imdb_id": f"{i:07d}",
            "tmdb_id": None if i % 2 else i * 3,
        }
        for i in range(1, n + 1)
    ]


def test_upsert_movies_inserts_then_updates(db, monkeypatch):
    monkeypatch.setattr(writes, "_CHUNK", 300)  # several chunks, some mixing old and new rows
    with Session(db) as s, s.begin():
        _record(s)
        assert catalog.upsert_movies(s, _movies(1500), run_id=RUN) == 1500
    with Session(db) as s, s.begin():
        # The second half changes and 200 new movies arrive.
        assert catalog.upsert_movies(s, _movies(1700, suffix=" (new)")[700:], run_id=RUN) == 1000
    with Session(db) as s:
        assert catalog.movie_count(s, RUN) == 1700
        got = catalog.get_movies(s, [1, 3, 10, 800, 1700, 99999], RUN)
        assert sorted(got) == [1, 3, 10, 800, 1700]
        assert got[1].title == "Movie 1" and got[1].n_ratings == 1
        assert got[800].title == "Movie 800 (new)" and got[800].n_ratings == 800 % 50 + 7
        assert got[1].genre_list == ["Action"] and got[1].genres == "Action"
        assert got[3].genre_list == [] and got[3].genres == ""
        assert got[800].genre_list == ["Action", "Comedy"]
        assert got[10].year is None and got[3].year == 1953
        assert got[10].imdb_id == "0000010" and got[10].tmdb_id == 30 and got[1].tmdb_id is None
        titles = catalog.movie_titles(s, RUN)
        assert len(titles) == 1700
        assert titles[:2] == [(1, "Movie 1", 1951), (2, "Movie 2", 1952)]
        assert titles[9] == (10, "Movie 10", None)


def test_upsert_movies_accepts_pandas_like_values(db):
    np = pytest.importorskip("numpy")
    row = {
        "movie_id": np.int64(5),
        "title": "Heat",
        "year": float("nan"),
        "genres": "Action|Crime",
        "n_ratings": np.int64(3),
        "mean_rating": np.float64(4.5),
    }
    with Session(db) as s, s.begin():
        _record(s)
        assert catalog.upsert_movies(s, [row], run_id=RUN) == 1
    with Session(db) as s:
        heat = catalog.get_movies(s, [5], RUN)[5]
        assert (heat.year, heat.genre_list, heat.mean_rating, heat.imdb_id) == (
            None,
            ["Action", "Crime"],
            4.5,
            None,
        )
    with Session(db) as s, pytest.raises(ValueError, match="bias"):
        catalog.upsert_movies(s, [{"movie_id": 1, "title": "x", "bias": 0.1}], run_id=RUN)


def test_publication_lifecycle(db):
    with Session(db) as s, s.begin():
        _record(s, "run-a")
        _record(s, "run-b")
        m1 = catalog.start_publication(
            s, run_id="run-a", backend="edge", alias="movies", collection="movies__run-a"
        )
        u1 = catalog.start_publication(
            s, run_id="run-a", backend="edge", alias="users", collection="users__run-a"
        )
        catalog.finish_publication(s, m1, status="succeeded", points=1700)
        catalog.finish_publication(s, u1, status="succeeded", points=610)
        m2 = catalog.start_publication(
            s, run_id="run-b", backend="server", alias="movies", collection="movies__run-b"
        )
    with Session(db) as s:
        running = catalog.publications(s, status="running")
        assert [p.id for p in running] == [m2]
        assert running[0].finished_at is None and running[0].points is None
    with Session(db) as s, s.begin():
        catalog.finish_publication(s, m2, status="failed", error="qdrant said no")
    with Session(db) as s:
        assert [p.id for p in catalog.publications(s)] == [m2, u1, m1]  # newest first
        movies = catalog.publications(s, alias="movies")
        assert [p.collection for p in movies] == ["movies__run-b", "movies__run-a"]
        done = catalog.publications(s, alias="movies", status="succeeded")
        assert len(done) == 1 and done[0].points == 1700 and done[0].run_id == "run-a"
        assert done[0].started_at <= done[0].finished_at and done[0].finished_at.tzinfo is not None
        failed = catalog.publications(s, status="failed")[0]
        assert (failed.backend, failed.error, failed.status) == (
            "server",
            "qdrant said no",
            "failed",
        )


def test_publication_errors(db):
    with Session(db) as s:
        with pytest.raises(NotFoundError, match="no-such-run"):
            catalog.start_publication(
                s, run_id="no-such-run", backend="edge", alias="movies", collection="c"
            )
        with pytest.raises(ValueError):
            catalog.start_publication(
                s, run_id="r", backend="cloud", alias="movies", collection="c"
            )
        with pytest.raises(NotFoundError):
            catalog.finish_publication(s, 12345, status="succeeded")
        with pytest.raises(ValueError):
            catalog.finish_publication(s, 1, status="done")


def test_readers_read_what_the_orm_reads(db, catalog_url):
    with Session(db) as s, s.begin():
        _record(s)
        catalog.upsert_movies(s, _movies(12), run_id=RUN)
        _record(s, "other-run")  # another run's movies are never read for this one
        catalog.upsert_movies(s, _movies(3, suffix=" (other)"), run_id="other-run")
    with Session(db) as s:
        run = catalog.get_run(s, "20261129-105500-ab12cd")
        expected_run = (run.config, run.artifact_path)
        titles = catalog.movie_titles(s, RUN)
    sqlite = catalog_url.startswith("sqlite")
    # The caller's Engine, and the URL (SQLite: read with sqlite3, without SQLAlchemy).
    for reader, kind in (
        (open_reader(db), SqlAlchemyReader),
        (open_reader(catalog_url), SqliteReader if sqlite else SqlAlchemyReader),
    ):
        try:
            assert isinstance(reader, kind)
            assert reader.run("20261129-105500-ab12cd") == expected_run
            assert reader.run("nope") is None
            assert reader.movie_titles(RUN) == titles and len(titles) == 12
            assert sorted(reader.genres(RUN)) == ["", "Action", "Action|Comedy"]
            assert [t[1] for t in reader.movie_titles("other-run")][0] == "Movie 1 (other)"
        finally:
            reader.close()


def test_reading_a_sqlite_catalog_imports_no_sqlalchemy(tmp_path):
    engine = catalog.make_engine(f"sqlite:///{tmp_path}/catalog.db")
    catalog.ensure_schema(engine)
    with Session(engine) as s, s.begin():
        _record(s)
        catalog.upsert_movies(s, _movies(3), run_id=RUN)
    engine.dispose()
    script = (
        "import sys\n"
        "from fmstore.catalog.readers import open_reader\n"
        f"reader = open_reader('sqlite:///{tmp_path}/catalog.db')\n"
        f"assert len(reader.movie_titles({RUN!r})) == 3 and reader.run('nope') is None\n"
        "reader.close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_foreign_keys_are_enforced(db):
    # On SQLite only because make_engine turns them on: both backends must refuse orphans.
    with Session(db) as s, pytest.raises(IntegrityError):
        s.add(catalog.Publication(run_id="ghost", backend="edge", alias="movies", collection="c"))
        s.flush()


def test_make_engine_creates_the_sqlite_folder(tmp_path):
    engine = catalog.make_engine(f"sqlite:///{tmp_path}/a/b/catalog.db")
    catalog.ensure_schema(engine)
    engine.dispose()
    assert (tmp_path / "a" / "b" / "catalog.db").exists()


def test_make_engine_errors_for_sqlite(tmp_path):
    (tmp_path / "file").write_text("not a folder, not a database" * 100)
    with pytest.raises(StoreError, match="cannot open the catalog"):
        catalog.make_engine(f"sqlite:///{tmp_path}/file/catalog.db")
    with pytest.raises(StoreError, match="not a database"):
        catalog.make_engine(f"sqlite:///{tmp_path}/file")
    with pytest.raises(StoreError, match="SQLite or Postgres") as info:
        catalog.make_engine("mysql://me:hunter2-secret@host/db")
    assert "hunter2-secret" not in str(info.value)


@pytest.mark.parametrize("problem", ["wrong password", "nothing listening"])
def test_make_engine_errors_never_show_the_password(postgres_password_url, problem):
    url = make_url(postgres_password_url).set(password="hunter2-secret")
    if problem == "nothing listening":
        with socket.socket() as sock:  # a port that was free a moment ago
            sock.bind(("127.0.0.1", 0))
            url = url.set(port=sock.getsockname()[1])
    # Also the plain 'postgresql://' spelling, which must get the psycopg driver.
    text = url.render_as_string(hide_password=False).replace(
        "postgresql+psycopg://", "postgresql://"
    )
    with pytest.raises(StoreError) as info:
        catalog.make_engine(text)
    message = str(info.value)
    assert "hunter2-secret" not in message and "***" in message
    assert "\n" not in message
    assert (
        "password authentication failed" if problem == "wrong password" else "refused"
    ) in message


def test_make_engine_with_the_right_password(postgres_password_url):
    from conftest import PG_PASSWORD_ROLE
    from sqlalchemy import text

    engine = catalog.make_engine(postgres_password_url)
    try:
        with engine.connect() as connection:  # logged in as the role that needs its password
            assert connection.execute(text("select current_user")).scalar() == PG_PASSWORD_ROLE[0]
    finally:
        engine.dispose()


def test_movie_and_tmdb_ids_above_32_bits(db):
    big = 2**31 + 5  # Postgres' INTEGER stops at 2^31-1; the catalog's ids are 64-bit
    row = {"movie_id": big, "title": "Far Away (2001)", "tmdb_id": 2**40}
    with Session(db) as s, s.begin():
        _record(s)
        catalog.upsert_movies(s, [row], run_id=RUN)
    with Session(db) as s:
        assert catalog.get_movies(s, [big], RUN)[big].tmdb_id == 2**40
        assert catalog.movie_titles(s, RUN) == [(big, "Far Away (2001)", None)]


def test_migration_0002_keeps_the_movies_for_every_run(engine):
    """A catalog at 0001 (one shared movies table) upgrades with its movies copied to each run,
    which is what each run read before; publication rows gain pid and host."""
    from alembic import command

    with catalog.migration_connection(engine) as conn:
        command.upgrade(catalog.schema._alembic_config(conn), "0001")
    with engine.begin() as conn:
        for run_id in ("run-a", "run-b"):
            conn.exec_driver_sql(
                "INSERT INTO runs (id, created_at, dataset_name, dataset_fingerprint, config, "
                f"metrics, artifact_path) VALUES ('{run_id}', '2026-11-29 10:00:00+00:00', 'd', "
                "'f', '{}', '{}', '/x')"
            )
        conn.exec_driver_sql(
            "INSERT INTO movies (movie_id, title, genres, n_ratings) VALUES (1, 'Heat', '', 3)"
        )
    catalog.ensure_schema(engine)
    assert catalog.current_revision(engine) == catalog.head_revision()
    with Session(engine) as s:
        assert catalog.movie_titles(s, "run-a") == catalog.movie_titles(s, "run-b")
        assert catalog.movie_titles(s, "run-b") == [(1, "Heat", None)]
