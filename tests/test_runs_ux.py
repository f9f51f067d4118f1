"""Runs you can compare and publish safely: the served Recall@10 / NDCG@10 beside RMSE in `runs`
and `runs compare`, run ids by their start, `latest` and `live` everywhere, a readable `runs
show`, and `publish` of the latest run refused when it would serve a worse ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from planted import copy_home

from fmstore.errors import AmbiguousError, NotFoundError
from fmstore.runs import resolve_run


@pytest.fixture
def home(live_home, tmp_path) -> Path:
    return copy_home(live_home, tmp_path / "home")


def _set_metrics(home: Path, run: str, **metrics) -> None:
    """Give a run validated served figures (the planted runs are trained without the pipeline's
    validation); manifest.json is not among the files its sha256 table covers."""
    path = home / "runs" / run / "manifest.json"
    manifest = json.loads(path.read_text())
    if "ranking" in metrics:
        manifest["ranking"] = metrics.pop("ranking")
    manifest["metrics"].update({k.replace("_at_", "@"): v for k, v in metrics.items()})
    path.write_text(json.dumps(manifest))


def test_runs_and_compare_show_the_served_ranking(home, planted_runs, fmstore_cli):
    first, second = (r.name for r in planted_runs)
    _set_metrics(home, first, valid_recall_at_10=0.25, valid_ndcg_at_10=0.26)
    listing = fmstore_cli(home, "runs", "--json")
    rows = {r["run_id"]: r for r in json.loads(listing.stdout)}
    assert rows[first]["valid_ndcg@10"] == 0.26 and rows[second]["valid_ndcg@10"] is None
    table = fmstore_cli(home, "runs", env={"COLUMNS": "250"}).stdout
    assert "Recall@10" in table and "NDCG@10" in table and "0.2600" in table
    narrow = fmstore_cli(home, "runs", env={"COLUMNS": "60"}).stdout
    assert first in narrow and second in narrow  # a narrow terminal keeps the ids
    compared = json.loads(fmstore_cli(home, "runs", "compare", first, second, "--json").stdout)
    assert "valid_ndcg@10" in {m["key"] for m in compared["metrics"]}


def test_run_ids_by_their_start_latest_and_live(home, planted_runs, fmstore_cli):
    first, second = (r.name for r in planted_runs)
    runs_dir = home / "runs"
    assert resolve_run(runs_dir, first[:-2]).name == first
    assert resolve_run(runs_dir, "latest").name == second
    common = next(i for i in range(len(first)) if first[i] != second[i])
    with pytest.raises(AmbiguousError, match="is the start of 2 runs"):
        resolve_run(runs_dir, first[:common])
    with pytest.raises(NotFoundError, match="no run 'zzz'"):
        resolve_run(runs_dir, "zzz")
    shown = fmstore_cli(home, "runs", "show", "live", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run_id"] == first and json.loads(shown.stdout)["live"]
    latest = json.loads(fmstore_cli(home, "runs", "show", "latest", "--json").stdout)
    assert latest["run_id"] == second
    by_start = fmstore_cli(home, "runs", "compare", first[:-1], "live", "--json")
    assert json.loads(by_start.stdout)["a"] == first
    refused = fmstore_cli(home, "runs", "delete", "live", "--yes")
    assert refused.returncode == 2 and f"run {first} is live" in refused.stderr


def test_runs_show_is_grouped_and_readable(home, planted_runs, fmstore_cli):
    shown = fmstore_cli(home, "runs", "show", planted_runs[0].name[:-1])
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for section in ("dataset", "rating model", "ranking model", "validation", "metrics"):
        assert section in text
    assert "{" not in text and "[" not in text and "None" not in text and "'" not in text


def test_publish_of_the_latest_run_refuses_a_worse_ranking(
    home, planted_runs, fmstore_cli, assert_one_line_error
):
    first, second = (r.name for r in planted_runs)
    _set_metrics(home, first, valid_ndcg_at_10=0.30)
    _set_metrics(home, second, valid_ndcg_at_10=0.20)
    refused = fmstore_cli(home, "publish")
    assert_one_line_error(refused, f"latest run {second} serves a worse ranking", "--force")
    assert "NDCG@10 0.2000 < 0.3000" in refused.stderr
    forced = fmstore_cli(home, "publish", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "served NDCG@10 0.3000 -> 0.2000" in forced.stderr


def test_publish_of_the_latest_run_refuses_one_without_a_ranking_model(
    home, planted_runs, fmstore_cli, assert_one_line_error
):
    _set_metrics(home, planted_runs[1].name, ranking=None)
    refused = fmstore_cli(home, "publish")
    assert_one_line_error(refused, "has no ranking model", "--force")
    named = fmstore_cli(home, "publish", planted_runs[1].name[:-1])  # naming it is deliberate
    assert named.returncode == 0, named.stderr
