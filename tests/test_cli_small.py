"""Small things a new user meets first: --version, dataset names, --rated by id, filters that
cannot match, errors as JSON under --json, refit lines without "valid nan"."""

from __future__ import annotations

import json

from planted import write_planted

from fmstore import __version__


def test_version(tmp_path, fmstore_cli):
    result = fmstore_cli(tmp_path, "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"fmstore {__version__}"


def test_a_dataset_name_is_the_fetched_copy(tmp_path, fmstore_cli, assert_one_line_error):
    from conftest import PLANTED_CLI_TRAIN

    home = tmp_path / "home"
    missing = fmstore_cli(home, "train", "--data", "ml-latest-small")
    assert_one_line_error(missing, "fmstore data fetch ml-latest-small")
    write_planted(home / "data" / "ml-latest-small")  # where `fmstore data fetch` unpacks
    trained = fmstore_cli(home, "train", "--data", "ml-latest-small", *PLANTED_CLI_TRAIN)
    assert trained.returncode == 0, trained.stderr
    assert "refitting on every rating" in trained.stderr and "valid nan" not in trained.stderr


def test_query_flags(planted_home, fmstore_cli, assert_one_line_error):
    home, _, _ = planted_home
    by_id = fmstore_cli(home, "query", "--rated", "id:1=5", "--rated", "id:2=4.5", "--json")
    assert by_id.returncode == 0, by_id.stderr
    rated = json.loads(by_id.stdout)["query"]["ratings"]
    assert [r["movie_id"] for r in rated] == [1, 2]
    bad_id = fmstore_cli(home, "query", "--rated", "id:x=5")
    assert_one_line_error(bad_id, "id:x is not a movie id")
    years = fmstore_cli(
        home, "query", "--movie-id", "1", "--year-min", "2000", "--year-max", "1990"
    )
    assert_one_line_error(years, "--year-min 2000 is after --year-max 1990")


def test_errors_are_json_under_json(planted_home, fmstore_cli, assert_one_line_error):
    home, _, _ = planted_home
    result = fmstore_cli(home, "query", "--movie-id", "999999", "--json")
    assert_one_line_error(result, "999999", code=3 if result.returncode == 3 else 2)
    error = json.loads(result.stdout)
    assert "999999" in error["error"] and error["exit_code"] == result.returncode
