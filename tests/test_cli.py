"""The CLI end to end in subprocesses: real exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from planted import write_planted

SMALL = ["--epochs", "5", "--factors", "8", "--lr", "0.03", "--batch-size", "256"]


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory, fmstore_cli):
    home = tmp_path_factory.mktemp("home")
    data = write_planted(tmp_path_factory.mktemp("data"))
    result = fmstore_cli(home, "train", "--data", str(data), *SMALL, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["valid_rmse"] > 0 and (Path(summary["path"]) / "manifest.json").is_file()
    return home


def test_runs_lists_the_run(trained_home, fmstore_cli):
    result = fmstore_cli(trained_home, "runs", "--json")
    runs = json.loads(result.stdout)
    assert result.returncode == 0 and len(runs) == 1 and runs[0]["factors"] == 8


def test_publish_then_rollback_refused(trained_home, fmstore_cli, assert_one_line_error):
    result = fmstore_cli(trained_home, "publish", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["movies"] == 42 and summary["users"] == 90
    assert_one_line_error(fmstore_cli(trained_home, "publish", "--rollback"), "roll back")


def test_missing_data_is_one_line(tmp_path, fmstore_cli, assert_one_line_error):
    assert_one_line_error(fmstore_cli(tmp_path, "train", "--data", str(tmp_path / "nope")), "nope")
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_bad_ratings_file_is_one_line(tmp_path, fmstore_cli, assert_one_line_error):
    data = write_planted(tmp_path / "data")
    with open(data / "ratings.csv", "a") as f:
        f.write("1,2,7.0,123\n")
    assert_one_line_error(
        fmstore_cli(tmp_path / "home", "train", "--data", str(data)), "ratings.csv", "7.0"
    )
    assert not (tmp_path / "home" / "runs").exists()


def test_bad_flag_value_is_one_line(tmp_path, fmstore_cli, assert_one_line_error):
    data = write_planted(tmp_path / "data")
    assert_one_line_error(
        fmstore_cli(tmp_path, "train", "--data", str(data), "--epochs", "0"), "--epochs"
    )


def test_unknown_run_and_no_runs(tmp_path, fmstore_cli, assert_one_line_error):
    assert_one_line_error(fmstore_cli(tmp_path, "publish"), "no runs")
    assert_one_line_error(fmstore_cli(tmp_path, "publish", "nope"), "nope")


def test_database_password_is_never_printed(trained_home, fmstore_cli):
    url = "postgresql://someone:s3cret-pw@127.0.0.1:1/db"
    result = fmstore_cli(trained_home, "publish", env={"FMSTORE_DATABASE_URL": url})
    assert result.returncode == 3 and "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_usage_errors_are_one_line(tmp_path, fmstore_cli, assert_one_line_error):
    assert_one_line_error(fmstore_cli(tmp_path, "train"), "--data")
    assert_one_line_error(fmstore_cli(tmp_path, "query", "--no-such-flag"), "--no-such-flag")


def test_rollback_on_an_empty_home_is_one_line(tmp_path, fmstore_cli, assert_one_line_error):
    assert_one_line_error(fmstore_cli(tmp_path, "publish", "--rollback"), "roll back")
