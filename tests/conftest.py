"""Shared fixtures.

Postgres: a throwaway server started once per test session from the initdb/pg_ctl found on
PATH or under /usr/lib/postgresql/*/bin. Without them the Postgres tests are skipped, except
under CI (env CI set), where they fail: CI must provide Postgres.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

# A role that must log in with a password (everyone else is trusted), so tests can see a real
# "wrong password" error: see postgres_password_url.
PG_PASSWORD_ROLE = ("fmstore_pw", "right-password")


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_run(bindir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(bindir / args[0]), *args[1:]]
    # Postgres refuses to run as root: drop to the postgres user.
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _maintenance(url: str):
    """An autocommit psycopg connection to the server's 'postgres' database."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, dbname="postgres", autocommit=True
    )


@pytest.fixture(scope="session")
def postgres_url():
    """URL of a database `fmstore_test` on a throwaway Postgres server (trust auth, localhost)."""
    bindir = _pg_bindir()
    if bindir is None:
        reason = (
            "Postgres binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must provide Postgres")
        pytest.skip(reason)
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("running as root but there is no 'postgres' user to run Postgres as")

    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="fmstore-pg-"))
    if os.geteuid() == 0:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
    data = tmp / "data"
    stopped = False
    try:
        res = _pg_run(
            bindir,
            "initdb",
            "-D",
            str(data),
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )
        if res.returncode:
            pytest.fail(f"initdb failed: {res.stderr.strip()[-2000:]}")
        hba = data / "pg_hba.conf"
        first_line = f"host all {PG_PASSWORD_ROLE[0]} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(first_line + hba.read_text())  # first match wins
        port = _free_port()
        # Durability is worthless for a throwaway test server: fsync off makes it quick.
        opts = (
            f"-k {tmp} -c listen_addresses=127.0.0.1 -p {port} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        res = _pg_run(
            bindir,
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(tmp / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            opts,
            "start",
        )
        if res.returncode:
            log = (tmp / "log").read_text() if (tmp / "log").exists() else ""
            pytest.fail(
                f"pg_ctl start failed: {res.stdout.strip()} {res.stderr.strip()}\n{log[-2000:]}"
            )
        base = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
        with _maintenance(f"{base}/postgres") as conn:
            conn.execute("CREATE DATABASE fmstore_test")
            role, password = PG_PASSWORD_ROLE
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        print(f"\nthrowaway Postgres on port {port} ready in {time.perf_counter() - started:.2f} s")
        yield f"{base}/fmstore_test"
        _pg_run(bindir, "pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        stopped = True
    finally:
        if not stopped and (data / "postmaster.pid").exists():
            _pg_run(bindir, "pg_ctl", "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def postgres_password_url(postgres_url):
    """Like postgres_url, but for a role that needs its password (which this URL contains)."""
    from sqlalchemy.engine import make_url

    role, password = PG_PASSWORD_ROLE
    return (
        make_url(postgres_url)
        .set(username=role, password=password)
        .render_as_string(hide_password=False)
    )


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_url(request, tmp_path):
    """URL of a fresh, empty catalog database, on SQLite and on Postgres."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
        return
    # Looked up lazily so that a run with only SQLite tests never starts Postgres.
    server = request.getfixturevalue("postgres_url")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _maintenance(server) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield server.rsplit("/", 1)[0] + f"/{name}"
    with _maintenance(server) as conn:
        # FORCE: an engine a test forgot to dispose still holds connections.
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def engine(catalog_url):
    """A SQLAlchemy engine on a fresh catalog database of each backend (sqlite, postgres)."""
    from fmstore import catalog

    engine = catalog.make_engine(catalog_url)
    yield engine
    engine.dispose()


# ---- the CLI, as a user runs it -----------------------------------------------------------------


def _cli_env(home: Path, env: dict | None) -> dict:
    """The caller's environment without FMSTORE_* variables, plus FMSTORE_HOME=home and `env`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FMSTORE_")}
    return full_env | {"FMSTORE_HOME": str(home), "COLUMNS": "200"} | (env or {})


def _run_fmstore(
    home: Path, *args: str, env: dict | None = None, timeout: int = 300, process: bool = False
):
    """`fmstore ARGS` with FMSTORE_HOME=home and no other FMSTORE_* variable from the caller's
    environment: exit code, stdout and stderr as a user sees them (a CompletedProcess).

    In this process by default (cli.main with the environment, argv and standard streams
    swapped for the call: no interpreter start-up, no torch import per call); `process=True`
    runs `python -m fmstore` in a subprocess, for tests where the process boundary is the point
    (signals, locks held by another process, output encodings, real start-up)."""
    # The kill hook kills its own process; PYTHON* variables act only when an interpreter starts.
    startup = any(k.startswith("PYTHON") or k == "FMSTORE_TEST_KILL_AT" for k in env or {})
    if process or startup:
        return subprocess.run(
            [sys.executable, "-m", "fmstore", *args],
            capture_output=True,
            text=True,
            env=_cli_env(home, env),
            timeout=timeout,
        )
    return _run_in_process(_cli_env(home, env), list(args))


def _run_in_process(env: dict, args: list[str]) -> subprocess.CompletedProcess:
    import importlib
    import io

    import fmstore.cli  # noqa: F401  (registers the commands)

    cli_app = importlib.import_module("fmstore.cli.app")  # the module, not the Typer app

    saved_env, saved_argv = dict(os.environ), sys.argv
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_width, saved_quiet = cli_app.out._width, cli_app.err.quiet
    stdout, stderr = io.StringIO(), io.StringIO()
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["fmstore", *args]
    sys.stdin, sys.stdout, sys.stderr = io.StringIO(""), stdout, stderr
    cli_app.out._width = None  # as in a fresh process with COLUMNS set: follow it
    code = 0
    try:
        cli_app.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        cli_app.out._width, cli_app.err.quiet = saved_width, saved_quiet
    return subprocess.CompletedProcess(
        ["fmstore", *args], code, stdout.getvalue(), stderr.getvalue()
    )


def _assert_one_line_error(result, *fragments: str, code: int = 2) -> None:
    """What a user must see on bad input: exit `code`, one line starting 'error:', no traceback."""
    assert result.returncode == code, result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.fixture(scope="session")
def fmstore_cli():
    """The one CLI harness: `fmstore_cli(home, "query", "--movie", "x", env={...})`, in this
    process unless `process=True`."""
    return _run_fmstore


@pytest.fixture(scope="session")
def assert_one_line_error():
    """`assert_one_line_error(result, "fragment", ...)`: exit 2, one 'error:' line, no traceback."""
    return _assert_one_line_error


# ---- trained runs shared by the publish and query tests ----------------------------------------


def _planted_ranking():
    """The planted users rate movies at random (which they rate says nothing), so the ranking
    model learns their taste only from its confidence in liked movies: weigh those more."""
    from fmstore.config import RankingConfig

    return RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=8)


PLANTED_TRAIN = dict(
    epochs=40,
    factors=8,
    lr=0.03,
    batch_size=256,
    weight_decay=0.02,
    patience=40,
    ranking_config=_planted_ranking(),
    tune_ranking=False,  # the planted ranking settings are chosen for its planted structure
)


@pytest.fixture(scope="session")
def planted_train() -> dict:
    """TrainConfig arguments that fit the planted data in a second."""
    return dict(PLANTED_TRAIN)


def _train_and_save(dataset, runs_dir: Path, seed: int) -> Path:
    from fmstore import runs
    from fmstore.config import TrainConfig
    from fmstore.train import train

    config = TrainConfig(**PLANTED_TRAIN, seed=seed)
    return runs.save_run(train(dataset, config), dataset, config, runs_dir)


@pytest.fixture(scope="session")
def planted_dataset(tmp_path_factory):
    from planted import write_planted

    from fmstore import datasets

    return datasets.load_dataset(write_planted(tmp_path_factory.mktemp("planted")))


@pytest.fixture(scope="session")
def planted_runs(planted_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """Two runs of the planted data (seeds 0 and 1), to publish one after the other."""
    runs_dir = tmp_path_factory.mktemp("runs")
    return _train_and_save(planted_dataset, runs_dir, 0), _train_and_save(
        planted_dataset, runs_dir, 1
    )


@pytest.fixture(params=["edge", "server"])
def vector_store(request, tmp_path):
    """An empty store of each engine: Qdrant Edge in a folder, qdrant-client's local mode."""
    from qdrant_client import QdrantClient

    from fmstore.vectors import EdgeStore, ServerStore

    store = (
        EdgeStore(tmp_path / "qdrant")
        if request.param == "edge"
        else ServerStore(QdrantClient(":memory:"))
    )
    yield store
    store.close()


# ---- a home trained and published by the CLI (bad-input corpus, secrets) ---------------------

PLANTED_CLI_TRAIN = ["--epochs", "3", "--factors", "8", "--lr", "0.03", "--batch-size", "256"]


@pytest.fixture(scope="session")
def planted_home(tmp_path_factory, fmstore_cli) -> tuple[Path, Path, str]:
    """(home, data, run id): the planted data trained and published by the CLI, once."""
    import json

    from planted import write_planted

    data = write_planted(tmp_path_factory.mktemp("planted-data"))
    home = tmp_path_factory.mktemp("planted-home") / "home"
    trained = fmstore_cli(home, "train", "--data", str(data), *PLANTED_CLI_TRAIN, "--json")
    assert trained.returncode == 0, trained.stderr
    published = fmstore_cli(home, "publish")
    assert published.returncode == 0, published.stderr
    return home, data, json.loads(trained.stdout)["run_id"]


@pytest.fixture(scope="module")
def planted_recommender(planted_runs, tmp_path_factory):
    """A Recommender on planted run 0 published to Qdrant Edge and SQLite (one per module)."""
    from fmstore import catalog
    from fmstore.publish import publish
    from fmstore.recommend import Recommender
    from fmstore.vectors import EdgeStore

    folder = tmp_path_factory.mktemp("recommender")
    url = f"sqlite:///{folder / 'catalog.db'}"
    engine = catalog.make_engine(url)
    store = EdgeStore(folder / "qdrant")
    publish(planted_runs[0], store, engine)
    engine.dispose()
    with Recommender(store, url) as recommender:
        yield recommender
    store.close()


@pytest.fixture(scope="module")
def planted_published_home(planted_runs, tmp_path_factory) -> Path:
    """An FMSTORE_HOME with planted run 0 published to the embedded store and SQLite."""
    from fmstore import catalog
    from fmstore.config import Settings
    from fmstore.publish import publish
    from fmstore.vectors import EdgeStore

    home = tmp_path_factory.mktemp("home")
    settings = Settings(home=home)
    engine = catalog.make_engine(settings.catalog_url)
    with EdgeStore(settings.qdrant_path) as store:
        publish(planted_runs[0], store, engine)
    engine.dispose()
    return home


@pytest.fixture(scope="session")
def live_home(planted_runs, tmp_path_factory) -> Path:
    """A home (FMSTORE_HOME) with both planted runs and the first one published (embedded store,
    SQLite catalog): copy it (`shutil.copytree`) before changing it."""
    from fmstore import catalog
    from fmstore.publish import publish
    from fmstore.vectors import EdgeStore

    home = tmp_path_factory.mktemp("live-home")
    for run in planted_runs:
        shutil.copytree(run, home / "runs" / run.name)
    engine = catalog.make_engine(f"sqlite:///{home / 'catalog.db'}")
    with EdgeStore(home / "qdrant") as store:
        publish(home / "runs" / planted_runs[0].name, store, engine)
    engine.dispose()
    return home
