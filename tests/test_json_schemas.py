"""docs/json.md: every command's --json output has a schema there, and real outputs match it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from planted import write_planted

jsonschema = pytest.importorskip("jsonschema")

DOC = Path(__file__).resolve().parents[1] / "docs" / "json.md"
SMALL = ["--epochs", "3", "--factors", "8", "--lr", "0.03", "--batch-size", "256"]


def schemas() -> dict[str, dict]:
    """'fmstore runs show' -> its schema, from the page's headings and json blocks."""
    text = DOC.read_text(encoding="utf-8")
    found = re.findall(r"^## `(fmstore [a-z ]+?) --json`\n.*?```json\n(.*?)```", text, re.M | re.S)
    return {name: json.loads(body) for name, body in found}


def json_commands() -> set[str]:
    """Every command of the CLI that takes --json, as 'fmstore group command'."""
    import typer

    from fmstore.cli import app

    found = set()

    def walk(command, path):
        if any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.add(" ".join(path))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), ["fmstore"])
    return found


def test_every_json_command_has_a_valid_schema():
    documented = schemas()
    assert json_commands() == set(documented)
    for schema in documented.values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.fixture(scope="module")
def home(tmp_path_factory, fmstore_cli):
    """Two trained runs, both published (the second is live, the first the rollback target)."""
    home = tmp_path_factory.mktemp("home")
    data = write_planted(tmp_path_factory.mktemp("data"))
    runs = []
    for seed in ("0", "1"):
        result = fmstore_cli(home, "train", "--data", str(data), *SMALL, "--seed", seed, "--json")
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout)["run_id"])
    for run in runs:
        assert fmstore_cli(home, "publish", run).returncode == 0
    return home, runs, data


def validate(name: str, result) -> object:
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    jsonschema.validate(output, schemas()[name], cls=jsonschema.Draft202012Validator)
    return output


def test_outputs_match_their_schemas(home, fmstore_cli, tmp_path):
    home, (a, b), data = home
    cli = lambda *args: fmstore_cli(home, *args, "--json")  # noqa: E731
    trained = validate("fmstore train", cli("train", "--data", str(data), *SMALL))
    assert validate("fmstore runs", cli("runs"))[-1]["run_id"] == trained["run_id"]
    assert validate("fmstore runs show", cli("runs", "show", a))["run_id"] == a
    assert validate("fmstore runs compare", cli("runs", "compare", a, b))["config"]
    validate("fmstore evaluate", cli("evaluate", a))
    validate("fmstore report", cli("report", a, "--out", str(tmp_path / "report")))
    fast = ["--epochs", "3", "--lr", "0.03", "--batch-size", "256"]
    grid = ["--factors", "4,8", "--weight-decay", "0.03", "--prior-reg", "1,5"]
    searched = validate("fmstore tune", cli("tune", "--data", str(data), *grid, *fast))
    assert len(searched["points"]) == 3  # staged: 2 regularisation points at width 4, then 8
    tuned = validate("fmstore train", cli("train", "--data", str(data), "--tune", *fast))
    assert tuned["tune"]["chosen"]["factors"] in (32, 64, 128)
    title = (data / "movies.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[1]
    for question in (["--movie", title], ["--user", "1"], ["--rated", f"{title}=5"]):
        answer = validate("fmstore query", cli("query", *question, "-n", "3"))
        assert len(answer["results"]) == 3
    rated = validate("fmstore rate", cli("rate", "--user", "99999", f"{title}=5"))
    assert rated["users"] == [99999]
    added = validate("fmstore movies add", cli("movies", "add", "--title", "New", "--year", "2030"))
    assert len(added["movies"]) == 1
    exported = validate("fmstore data export", cli("data", "export", str(tmp_path / "out")))
    assert exported["recorded_ratings"] == 1 and exported["added_movies"] == 1
    status = validate("fmstore status", cli("status"))
    assert status["live_run"] == b and status["rollback_target"] == a
    published = validate("fmstore publish", cli("publish", trained["run_id"]))
    assert published["run_id"] == trained["run_id"]
    assert published["updates"]["not_in_run"] == 2  # the rating and the movie above
    assert validate("fmstore publish", cli("publish", "--rollback"))["rolled_back_to"] == b
    # the rolled-back run: neither live nor the rollback target (that is still a)
    c = trained["run_id"]
    deleted = validate("fmstore runs delete", cli("runs", "delete", c, "--yes"))
    named = [name.split("__")[:2] for name in deleted["deleted_collections"]]
    assert named == [["movies", c], ["users", c]]  # movies__<run>__<publication>, users__...
