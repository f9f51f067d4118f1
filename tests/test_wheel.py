"""What a user installs: the built wheel, without the `train` extra (what a service that only
queries installs: no torch, numba or SciPy), carries the migrations (fmstore db upgrade works from
it), answers queries and says in one line which extra `fmstore train` needs; and the
embedded-store query path leaves qdrant-client, SQLAlchemy and torch unimported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from planted import write_planted

pytestmark = pytest.mark.slow  # builds a wheel and installs it into a fresh venv

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("qdrant_client", "sqlalchemy", "torch")
# The CLI in-process, then the heavy modules it imported (none expected on the embedded store).
QUERY_AND_LIST_IMPORTS = """
import sys
from fmstore.cli import main
sys.argv = ["fmstore", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & {%s})
print("HEAVY", ",".join(heavy))
""" % ", ".join(repr(m) for m in HEAVY)


def _clean_env(**extra) -> dict:
    """No PYTHONPATH (the venv must use its installed fmstore) and no FMSTORE_* of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FMSTORE_")}
    env.pop("PYTHONPATH", None)
    return env | extra


@pytest.fixture(scope="module")
def published_home(tmp_path_factory, fmstore_cli):
    """A home with a small planted run trained and published (by this checkout)."""
    root = tmp_path_factory.mktemp("published")
    data = write_planted(root / "planted")
    home = root / "home"
    for args in (
        ("train", "--data", str(data), "--epochs", "3", "--factors", "8", "--lr", "0.03"),
        ("publish",),
    ):
        result = fmstore_cli(home, *args)
        assert result.returncode == 0, result.stderr
    return home


def test_embedded_query_path_imports_no_server_client(published_home):
    result = subprocess.run(
        [sys.executable, "-c", QUERY_AND_LIST_IMPORTS, "query", "--movie", "Action Movie 2"],
        capture_output=True,
        text=True,
        env=_clean_env(FMSTORE_HOME=str(published_home), PYTHONPATH=str(ROOT)),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1] == "HEAVY", result.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """`pip wheel --no-deps` of a copy of this checkout, installed in a fresh venv without
    extras (its dependencies from the configured index): the light install of a service."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("fmstore", "migrations"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)

    def run(*cmd, timeout=900):
        result = subprocess.run(
            cmd, capture_output=True, text=True, cwd=root, env=_clean_env(), timeout=timeout
        )
        assert result.returncode == 0, f"{cmd}: {result.stderr[-3000:]}"
        return result

    dist = root / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", str(dist), str(source))  # fmt: skip
    (wheel,) = dist.glob("fmstore-*.whl")
    venv = root / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run(*pip, str(wheel))
    return venv


def test_the_wheel_migrates_a_catalog_and_answers_a_query(wheel_venv, published_home, tmp_path):
    python = str(wheel_venv / "bin" / "python")
    fmstore = str(wheel_venv / "bin" / "fmstore")
    where = subprocess.run(
        [python, "-c", "import fmstore.catalog.schema as s; print(s.MIGRATIONS_DIR)"],
        capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), check=True,
    )  # fmt: skip
    assert str(wheel_venv) in where.stdout and "_migrations" in where.stdout

    catalog = tmp_path / "fresh.db"
    upgrade = subprocess.run(
        [fmstore, "db", "upgrade"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=_clean_env(FMSTORE_HOME=str(tmp_path / "home"),
                       FMSTORE_DATABASE_URL=f"sqlite:///{catalog}"),
    )  # fmt: skip
    assert upgrade.returncode == 0, upgrade.stderr
    assert catalog.is_file()

    query = subprocess.run(
        [python, "-c", QUERY_AND_LIST_IMPORTS, "query", "--movie", "Action Movie 2", "--json"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=_clean_env(FMSTORE_HOME=str(published_home)),
    )  # fmt: skip
    assert query.returncode == 0, query.stderr
    assert "Action Movie" in query.stdout
    assert query.stdout.rstrip().splitlines()[-1] == "HEAVY", query.stdout


def test_the_light_install_has_no_torch_and_train_names_the_extra(wheel_venv, tmp_path):
    python = str(wheel_venv / "bin" / "python")
    for module in ("torch", "numba", "scipy"):
        found = subprocess.run(
            [python, "-c", f"import importlib.util as u; print(u.find_spec({module!r}) is None)"],
            capture_output=True, text=True, env=_clean_env(), check=True,
        )  # fmt: skip
        assert found.stdout.strip() == "True", f"{module} was installed without the extra"
    data = write_planted(tmp_path / "planted")
    train = subprocess.run(
        [str(wheel_venv / "bin" / "fmstore"), "train", "--data", str(data)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env=_clean_env(FMSTORE_HOME=str(tmp_path / "home")),
    )  # fmt: skip
    assert train.returncode == 3 and "Traceback" not in train.stderr, train.stderr
    assert "pip install 'fmstore[train]'" in train.stderr and len(train.stderr.splitlines()) == 1
