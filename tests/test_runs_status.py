"""The CLI around the runs: `runs` (live run, config columns), `runs show|compare|delete`,
`status` (secrets never printed), help texts, --quiet, and the per-batch training progress."""

from __future__ import annotations

import json

import pytest
from planted import write_planted

# (the ranking model's settings as given: a search per seed may choose differently, and `runs
# compare` below checks that the seed is the only difference)
SMALL = [
    "--epochs",
    "3",
    "--factors",
    "8",
    "--lr",
    "0.03",
    "--batch-size",
    "256",
    "--no-tune-ranking",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory, fmstore_cli):
    """Three runs: a published, then b published (live; a is the rollback target), c never."""
    home = tmp_path_factory.mktemp("home")
    data = write_planted(tmp_path_factory.mktemp("data"))
    runs = []
    for seed in ("0", "1", "2"):
        result = fmstore_cli(home, "train", "--data", str(data), *SMALL, "--seed", seed, "--json")
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout)["run_id"])
    for run in runs[:2]:
        assert fmstore_cli(home, "publish", run).returncode == 0
    return home, runs


def test_runs_marks_the_live_run_with_its_config(home, fmstore_cli):
    home, (a, b, c) = home
    listed = fmstore_cli(home, "runs")
    assert listed.returncode == 0, listed.stderr
    live_line = next(line for line in listed.stdout.splitlines() if b in line)
    assert "*" in live_line and "identity" in live_line and " 256 " in live_line
    assert f"* live: run {b}" in listed.stdout
    # (by run id: runs created in the same second list in run-id order, which is random)
    rows = {r["run_id"]: r for r in json.loads(fmstore_cli(home, "runs", "--json").stdout)}
    assert [rows[run]["live"] for run in (a, b, c)] == [False, True, False]
    assert [rows[run]["seed"] for run in (a, b, c)] == [0, 1, 2]
    assert {r["factors"] for r in rows.values()} == {8}


def test_runs_show_and_compare(home, fmstore_cli):
    home, (a, b, c) = home
    shown = fmstore_cli(home, "runs", "show", b)
    assert shown.returncode == 0 and "(live)" in shown.stdout and "valid_rmse" in shown.stdout
    detail = json.loads(fmstore_cli(home, "runs", "show", a, "--json").stdout)
    assert not detail["live"] and len(detail["history"]) == detail["metrics"]["epochs_run"]
    compared = json.loads(fmstore_cli(home, "runs", "compare", a, c, "--json").stdout)
    assert compared["config"] == [{"key": "seed", "a": 0, "b": 2}]
    rmse = next(m for m in compared["metrics"] if m["key"] == "valid_rmse")
    assert rmse["delta"] == pytest.approx(rmse["b"] - rmse["a"])
    table = fmstore_cli(home, "runs", "compare", a, c)
    assert table.returncode == 0 and "seed" in table.stdout and "B - A" in table.stdout


def test_runs_errors_are_one_line(home, fmstore_cli, assert_one_line_error):
    home, (a, b, c) = home
    assert_one_line_error(fmstore_cli(home, "runs", "show", "nope"), "no run 'nope'")
    assert_one_line_error(fmstore_cli(home, "runs", "compare", a, "nope"), "no run 'nope'")


def test_delete_refuses_the_live_run_and_the_rollback_target(
    home, fmstore_cli, assert_one_line_error
):
    home, (a, b, c) = home
    assert_one_line_error(fmstore_cli(home, "runs", "delete", b, "--yes"), f"run {b} is live")
    assert_one_line_error(fmstore_cli(home, "runs", "delete", a, "--yes"), "--rollback")
    # no terminal to ask on: refuse rather than delete unasked
    assert_one_line_error(fmstore_cli(home, "runs", "delete", c), "--yes")
    assert (home / "runs" / a).is_dir() and (home / "runs" / c).is_dir()


def test_status_reports_what_is_served(home, fmstore_cli):
    home, (a, b, c) = home
    status = json.loads(fmstore_cli(home, "status", "--json").stdout)
    assert status["live_run"] == b and status["rollback_target"] == a and status["runs"] == 3
    assert {x["alias"]: x["points"] for x in status["aliases"]} == {"movies": 42, "users": 90}
    assert status["catalog"]["revision"] == status["catalog"]["head"] is not None
    table = fmstore_cli(home, "status")
    assert table.returncode == 0 and f"run {b}" in table.stdout


def test_delete_removes_the_folder_and_collections(tmp_path, home, fmstore_cli):
    home, (a, b, c) = home
    deleted = fmstore_cli(home, "runs", "delete", c, "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert not (home / "runs" / c).exists()
    listed = json.loads(fmstore_cli(home, "runs", "--json").stdout)
    assert {r["run_id"] for r in listed} == {a, b}  # (same-second runs list in run-id order)


def test_status_never_prints_secrets(tmp_path, fmstore_cli):
    env = {
        "FMSTORE_DATABASE_URL": "postgresql+psycopg://alice:pg-s3cret@127.0.0.1:9/db?password=x2",
        "FMSTORE_QDRANT_URL": "http://bob:qd-s3cret@127.0.0.1:9",
        "FMSTORE_QDRANT_API_KEY": "key-s3cret",
    }
    for args in (["status"], ["status", "--json"]):
        result = fmstore_cli(tmp_path, *args, env=env)
        assert result.returncode == 3, result.stderr  # both backends unreachable
        shown = result.stdout + result.stderr
        assert "s3cret" not in shown and "alice" not in shown and "x2" not in shown
        assert "127.0.0.1" in result.stdout and "Traceback" not in shown
    report = json.loads(result.stdout)
    assert report["vectors"]["api_key"] == "set" and report["vectors"]["error"]


# ---- help, --quiet and progress ----------------------------------------------------------------


def test_help_keeps_brackets_shows_flags_and_ends_with_an_example(fmstore_cli, tmp_path):
    publish = fmstore_cli(tmp_path, "publish", "--help").stdout
    assert "[default: the latest]" in publish and "<bool>" not in publish
    assert "--json " in publish and "--rollback " in publish
    for command in (
        ["train"],
        ["query"],
        ["publish"],
        ["evaluate"],
        ["report"],
        ["status"],
        ["runs"],
        ["runs", "show"],
        ["runs", "compare"],
        ["runs", "delete"],
        ["data", "fetch"],
        ["data", "synth"],
        ["db", "upgrade"],
        [],
    ):
        text = fmstore_cli(tmp_path, *command, "--help").stdout
        tail = text.strip().split("\n\n")[-1]
        assert tail.lstrip().startswith("Example:"), (command, text)


def test_quiet_prints_only_the_result(tmp_path, fmstore_cli):
    data = write_planted(tmp_path / "data")
    result = fmstore_cli(tmp_path / "home", "--quiet", "train", "--data", str(data), *SMALL)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert result.stdout.startswith("run ")


def test_completion_script(tmp_path, fmstore_cli):
    # Typer reads the shell from the process tree unless told not to, and a run started detached
    # has no shell above it: name the shell, in a process of its own (typer decides at start-up)
    no_detection = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    result = fmstore_cli(tmp_path, "--show-completion", "bash", env=no_detection, process=True)
    assert result.returncode == 0 and "complete" in result.stdout


@pytest.mark.parametrize("engine", ["auto", "torch"])
def test_batch_progress_reports_without_changing_the_training(
    planted_dataset, planted_train, engine
):
    from fmstore.config import TrainConfig
    from fmstore.train import train

    config = TrainConfig(**(planted_train | {"epochs": 3}))
    heard = []
    with_reports = train(
        planted_dataset, config, engine=engine, batch_progress=lambda *a, **k: heard.append((a, k))
    )
    plain = train(planted_dataset, config, engine=engine)
    for name, tensor in plain.model.state_dict().items():
        assert (tensor == with_reports.model.state_dict()[name]).all(), name
    n_train = len(plain.train_ratings)
    epochs = [a[0] for a, _ in heard]
    assert epochs == sorted(epochs) and set(epochs) == {1, 2, 3}
    ends = [a[1] for a, k in heard if a[1] == k["total"] == n_train]
    assert len(ends) == 3  # each epoch reports its last rating


def test_a_group_alone_prints_its_help(tmp_path, fmstore_cli):
    for group in ([], ["data"], ["db"]):
        result = fmstore_cli(tmp_path, *group)
        assert (
            result.returncode == 2 and "Commands:" in result.stderr and "Example:" in result.stderr
        )


# ---- issue 18: a publish or rollback that finishes while `runs delete` asks --------------------


@pytest.fixture
def two_runs_home(tmp_path, planted_runs, fmstore_cli):
    """A home with planted runs A and B (copied), A published."""
    import shutil

    home = tmp_path / "home"
    for run_dir in planted_runs:
        shutil.copytree(run_dir, home / "runs" / run_dir.name)
    a, b = (run_dir.name for run_dir in planted_runs)
    published = fmstore_cli(home, "publish", a)
    assert published.returncode == 0, published.stderr
    return home, a, b


def _answer_yes_after(monkeypatch, meanwhile) -> None:
    """`runs delete` at a terminal: `meanwhile` happens while the prompt waits, then y."""
    import io

    import typer

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    def confirm(*args, **kwargs):
        meanwhile()
        return True

    monkeypatch.setattr("sys.stdin", Terminal(""))
    monkeypatch.setattr(typer, "confirm", confirm)


def test_delete_asks_again_under_the_lock_after_the_prompt(two_runs_home, fmstore_cli, monkeypatch):
    """Run B is not live when `runs delete B` asks; `fmstore publish B` finishes while the prompt
    waits; answering y must not delete the live collections."""
    from fmstore.cli import runs as runs_cli
    from fmstore.errors import ConfigError

    home, a, b = two_runs_home

    def publish_b():
        assert fmstore_cli(home, "publish", b).returncode == 0

    _answer_yes_after(monkeypatch, publish_b)
    with pytest.raises(ConfigError, match=f"run {b} is live"):
        runs_cli.delete(run=b, yes=False, home=home, as_json=False)
    monkeypatch.undo()
    assert (home / "runs" / b).is_dir()
    answered = fmstore_cli(home, "query", "--movie-id", "1", "--json")
    assert answered.returncode == 0, answered.stderr
    assert json.loads(fmstore_cli(home, "status", "--json").stdout)["live_run"] == b


def test_rollback_works_when_no_alias_is_live(two_runs_home, fmstore_cli):
    """The live collections are gone (deleted by an older fmstore, or by hand): rollback brings
    back the newest complete publication whose collections are still there."""
    from fmstore.config import Settings
    from fmstore.serving import run_id_of
    from fmstore.vectors import open_store

    home, a, b = two_runs_home
    assert fmstore_cli(home, "publish", b).returncode == 0
    with open_store(Settings(home=home)) as store:
        for name in store.list_collections():
            if run_id_of(name) == b:
                store.delete_collection(name)
    rolled = fmstore_cli(home, "publish", "--rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert f"aliases now point at run {a}" in rolled.stdout
    answered = fmstore_cli(home, "query", "--movie-id", "1", "--json")
    assert answered.returncode == 0, answered.stderr
