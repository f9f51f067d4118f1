"""`fmstore publish`, `prune` and `status` as a user runs them: arguments checked before acting,
outcome reports that match what happened, the store lock and --wait."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from planted import copy_home

from fmstore import runs


@pytest.fixture
def home(live_home, tmp_path) -> Path:
    copy = tmp_path / "home"
    copy_home(live_home, copy)
    return copy


def _listing(home: Path) -> dict[str, str]:
    """Every file under home with its sha256 (the lock file aside: it holds the last pid)."""
    return {
        str(p.relative_to(home)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(home.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _live_run(fmstore_cli, home) -> str:
    result = fmstore_cli(home, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["live_run"]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--prune", "0"], ["fmstore prune --keep N"]),
        (["--prune", "2"], ["fmstore prune --keep N"]),
        (["--force", "--batch-size", "-5"], ["--batch-size -5"]),
        (["--rollback", "--force"], ["--rollback takes no"]),
        (["--batch-size", "0"], ["--batch-size 0"]),
        (["--wait", "-1"], ["--wait -1"]),
    ],
)
def test_bad_flags_are_refused_before_anything_changes(
    home, planted_runs, fmstore_cli, assert_one_line_error, args, fragments
):
    before = _listing(home)
    assert_one_line_error(fmstore_cli(home, "publish", planted_runs[0].name, *args), *fragments)
    assert _listing(home) == before
    assert _live_run(fmstore_cli, home) == planted_runs[0].name


def test_prune_keep_zero_is_refused(home, fmstore_cli, assert_one_line_error):
    before = _listing(home)
    assert_one_line_error(fmstore_cli(home, "prune", "--keep", "0"), "--keep 0")
    assert _listing(home) == before


def test_publish_names_the_run_it_picks_then_prune_and_status(home, planted_runs, fmstore_cli):
    # the two runs may share a creation second: ask which one "latest" means, and make the
    # other one live first
    newest = runs.resolve_run(home / "runs", None).name
    other = next(run.name for run in planted_runs if run.name != newest)
    assert fmstore_cli(home, "publish", other).returncode == 0
    result = fmstore_cli(home, "publish")
    assert result.returncode == 0, result.stderr
    assert f"publishing the latest run, {newest}" in result.stderr
    assert f"run {newest} published" in result.stdout
    state = json.loads(fmstore_cli(home, "status", "--json").stdout)
    assert state["live_run"] == newest and state["rollback_target"] == other
    # keep 1: the live one and the rollback target both stay. When the fixture's live run sorts
    # as the newest (both runs made in one second), its first publication is a third one, older
    # than both, and is the one to go.
    first_publication_pruned = newest == planted_runs[0].name
    result = fmstore_cli(home, "prune", "--keep", "1")
    assert result.returncode == 0, result.stderr
    if first_publication_pruned:
        assert result.stdout.startswith(f"pruned movies__{newest}__"), result.stdout
    else:
        assert "nothing to prune" in result.stdout, result.stdout
    after = json.loads(fmstore_cli(home, "status", "--json").stdout)
    assert after["aliases"] == state["aliases"] and after["rollback_target"] == other
    query = fmstore_cli(home, "query", "--movie", "Action Movie 1", "--json")
    assert query.returncode == 0, query.stderr


def test_a_second_process_is_told_who_holds_the_store_and_may_wait(
    home, planted_runs, fmstore_cli, assert_one_line_error
):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from fmstore.vectors import EdgeStore\n"
            f"store = EdgeStore({str(home / 'qdrant')!r}); store.lock()\n"
            # holds the lock until told (its stdin closes): no race with a slow machine
            "print('locked', flush=True); sys.stdin.readline(); store.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused = fmstore_cli(home, "publish", planted_runs[1].name)
        assert_one_line_error(
            refused, f"store in use by process {holder.pid}", "--wait SECONDS", code=3
        )
        # let go of the lock while the next publish is waiting for it
        threading.Timer(3.0, holder.stdin.close).start()
        waited = fmstore_cli(home, "publish", planted_runs[1].name, "--wait", "120")
        assert waited.returncode == 0, waited.stderr
    finally:
        if not holder.stdin.closed:
            holder.stdin.close()
        holder.wait(timeout=60)
    assert _live_run(fmstore_cli, home) == planted_runs[1].name


def test_status_repairs_a_publication_killed_after_the_switch(home, planted_runs, fmstore_cli):
    from fmstore.publish import KILL_AT_ENV

    new = planted_runs[1].name
    killed = fmstore_cli(
        home, "publish", new, env={KILL_AT_ENV: "after_switch:SIGKILL"}, process=True
    )
    assert killed.returncode < 0
    state = json.loads(fmstore_cli(home, "status", "--json").stdout)
    assert state["live_run"] == new and state["rollback_target"] == planted_runs[0].name
    assert len(state["repaired"]) == 2 and all("succeeded" in r for r in state["repaired"])
    again = json.loads(fmstore_cli(home, "status", "--json").stdout)
    assert again["repaired"] == []  # repaired once, for good
