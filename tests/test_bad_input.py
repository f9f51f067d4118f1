"""The bad-input corpus (tests/bad_input_cases.py) run through the real CLI: every case exits
2 (input) or 3 (environment) with exactly one 'error:' line on stderr, no traceback, nothing on
stdout, and FMSTORE_HOME byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from bad_input_cases import CASES, Ctx
from planted import copy_home


def tree(root: Path) -> dict[str, str]:
    """Every path under root with the sha256 of its content (a link: its target).

    Inside a Qdrant Edge collection folder only the folder itself is listed: Edge rewrites its
    own shard config and journal whenever it opens a shard, even to read it."""
    listing = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if (
            Path(dirpath).parent.name == "collections"
            and Path(dirpath).parent.parent.name == "qdrant"
        ):
            dirnames.clear()
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                listing[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                listing[rel] = "dir"
            else:
                listing[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return listing


@pytest.fixture
def case_ctx(planted_home, tmp_path) -> Ctx:
    home, data, run_id = planted_home
    copy = tmp_path / "home"
    copy_home(home, copy)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return Ctx(home=copy, tmp=scratch, data=data, run_id=run_id)


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, case_ctx, fmstore_cli, assert_one_line_error):
    args, env = case.setup(case_ctx)
    before = tree(case_ctx.home)
    result = fmstore_cli(case_ctx.home, *args, env=env)
    assert_one_line_error(result, *case.fragments, code=case.code)
    assert result.stdout == ""
    assert len(result.stderr.splitlines()[0]) <= 2100  # long values are clipped
    assert tree(case_ctx.home) == before, "FMSTORE_HOME changed"


# ---- the promises the corpus cannot express as "one line, nothing changed" ---------------------


def test_read_only_home_is_refused_before_training(tmp_path, planted_home, fmstore_cli):
    import subprocess

    _, data, _ = planted_home
    home = tmp_path / "ro"
    home.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: a read-only file system is the only refusal
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(home)])
        if mounted.returncode:
            pytest.skip("running as root without permission to mount a read-only tmpfs")
    else:
        home.chmod(0o555)
    try:
        result = fmstore_cli(home, "train", "--data", str(data), "--epochs", "1")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(home)])
    lines = result.stderr.splitlines()
    assert result.returncode == 3 and len(lines) == 1 and "not writable" in lines[0], result.stderr
    assert "epoch" not in result.stderr  # refused before training


def test_control_characters_are_never_printed_raw(tmp_path, fmstore_cli):
    """A title carrying ESC ]0; (retitle the terminal), BEL and a C1 CSI is shown escaped."""
    from planted import write_planted

    data = write_planted(tmp_path / "data")
    movies = (data / "movies.csv").read_text()
    evil = "Evil \x1b]0;owned\x07 \x9b31m Film (1991)"
    (data / "movies.csv").write_text(movies.replace("Action Movie 1 (1991)", evil))
    home = tmp_path / "home"
    assert fmstore_cli(home, "train", "--data", str(data), "--epochs", "2").returncode == 0
    assert fmstore_cli(home, "publish").returncode == 0
    table = fmstore_cli(home, "query", "--movie-id", "1", "--min-ratings", "0")
    as_json = fmstore_cli(home, "query", "--movie-id", "1", "--min-ratings", "0", "--json")
    missing = fmstore_cli(home, "query", "--movie", "\x1b[2J nothing like it")
    for result in (table, as_json, missing):
        shown = result.stdout + result.stderr
        assert not any(c in shown for c in "\x1b\x07\x9b"), shown
    assert "\\x1b]0;owned\\x07" in table.stdout
    assert "\\u001b]0;owned\\u0007" in as_json.stdout and "\\u009b31m" in as_json.stdout


def test_ascii_output_encoding_still_works(planted_home, tmp_path, fmstore_cli):
    home, _, _ = planted_home
    for args in (["runs"], ["query", "--movie-id", "1"]):
        result = fmstore_cli(home, *args, env={"PYTHONIOENCODING": "ascii"}, process=True)
        assert result.returncode == 0 and result.stdout.strip(), result.stderr


def test_runs_reports_a_corrupt_run_and_publish_refuses_it(case_ctx, fmstore_cli):
    newer = case_ctx.home / "runs" / "29991231-000000-ffffff"
    newer.mkdir()
    (newer / "manifest.json").write_text("{half")
    listed = fmstore_cli(case_ctx.home, "runs")
    assert listed.returncode == 0 and case_ctx.run_id in listed.stdout
    assert "warning: run 29991231-000000-ffffff is unreadable" in listed.stderr
    published = fmstore_cli(case_ctx.home, "publish")
    assert published.returncode == 2 and "newest run 29991231-000000-ffffff" in published.stderr


def test_a_run_without_validation_ratings_is_saved_with_a_warning(tmp_path, fmstore_cli):
    data = tmp_path / "one"
    data.mkdir()
    (data / "movies.csv").write_text("movieId,title,genres\n1,Alone (2000),Drama\n")
    (data / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n")
    result = fmstore_cli(
        tmp_path / "home",
        *("train", "--data", str(data), "--valid-fraction", "0", "--epochs", "1", "--json"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["valid_rmse"] is None  # JSON has no NaN
    assert (
        "has no validation ratings" in result.stderr and "valid RMSE is undefined" in result.stderr
    )


def test_stale_temporary_runs_are_cleaned_live_ones_kept(tmp_path, planted_dataset, planted_train):
    import subprocess
    import sys

    from fmstore import runs as run_folders
    from fmstore.config import TrainConfig
    from fmstore.train import train

    runs = tmp_path / "runs"
    runs.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    killed = runs / f".tmp-20200101-000000-aaaaaa@{dead.stdout.strip()}"
    live = runs / f".tmp-20200101-000000-bbbbbb@{os.getppid()}"
    for folder in (killed, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"half")
    config = TrainConfig(**planted_train | {"epochs": 1})
    run_folders.save_run(train(planted_dataset, config), planted_dataset, config, runs)
    assert not killed.exists() and live.exists()


def test_the_data_cache_follows_content_not_size_and_mtime(tmp_path):
    from planted import write_planted

    from fmstore import datasets

    data = write_planted(tmp_path / "data")
    cache = tmp_path / "cache"
    first = datasets.load_dataset(data, cache_dir=cache)
    ratings = data / "ratings.csv"
    stat = ratings.stat()
    text = ratings.read_bytes()
    edited = text.replace(b",4.5,", b",5.0,", 1)  # same size
    assert len(edited) == len(text) and edited != text
    ratings.write_bytes(edited)
    os.utime(ratings, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    second = datasets.load_dataset(data, cache_dir=cache)
    assert second.fingerprint != first.fingerprint
    assert second.ratings.rating.sum() == first.ratings.rating.sum() + 0.5


def test_runs_lists_the_rest_when_a_manifest_has_fields_of_the_wrong_type(case_ctx, fmstore_cli):
    """issue 18, Medium 7: one hand-edited manifest no longer crashes the whole listing."""
    import shutil

    runs_dir = case_ctx.home / "runs"
    edits = {
        "29991231-000000-aaaaaa": lambda m: m | {"config": m["config"] | {"lr": "fast"}},
        "29991231-000000-bbbbbb": lambda m: m | {"metrics": [1, 2]},
        "29991231-000000-cccccc": lambda m: m | {"dataset": "ml"},
    }
    for name, change in edits.items():
        shutil.copytree(runs_dir / case_ctx.run_id, runs_dir / name)
        path = runs_dir / name / "manifest.json"
        path.write_text(json.dumps(change(json.loads(path.read_text())) | {"run_id": name}))
    listed = fmstore_cli(case_ctx.home, "runs")
    assert listed.returncode == 0 and case_ctx.run_id in listed.stdout, listed.stderr
    for name in edits:
        assert f"warning: run {name} is unreadable" in listed.stderr
    assert "lr is 'fast'" in listed.stderr
    as_json = fmstore_cli(case_ctx.home, "runs", "--json")
    assert as_json.returncode == 0
    assert {r["run_id"] for r in json.loads(as_json.stdout)} == {case_ctx.run_id, *edits}


def test_reads_and_refusals_never_create_a_mistyped_home(tmp_path, fmstore_cli):
    """issue 18 (Low): query, status, runs, --rollback and prune on a home that does not exist
    leave it not existing."""
    home = tmp_path / "typo"
    for args in (
        ["query", "--movie-id", "1"],
        ["publish", "--rollback"],
        ["prune", "--keep", "1"],
        ["runs"],
    ):
        fmstore_cli(home, *args)
        assert not home.exists(), args


def test_an_empty_fmstore_home_means_the_default(tmp_path, fmstore_cli):
    """FMSTORE_HOME='' is unset (./.fmstore), not the current folder."""
    from fmstore.config import Settings

    assert Settings.from_env({"FMSTORE_HOME": ""}).home == Path(".fmstore")
