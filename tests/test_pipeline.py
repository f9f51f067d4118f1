"""The pipeline is one library call (fmstore.pipeline.run): `fmstore train` only wraps it with
flags and progress, so a notebook gets the same run, and every stage reports to one callback."""

from __future__ import annotations

import json

import pytest
from planted import write_planted

from fmstore import datasets, pipeline
from fmstore.config import TrainConfig

FLAGS = ["--epochs", "3", "--factors", "8", "--lr", "0.03", "--batch-size", "256"]
CONFIG = dict(epochs=3, factors=8, lr=0.03, batch_size=256)


@pytest.fixture(scope="module")
def planted_folder(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("planted"))


def test_the_cli_and_a_notebook_get_the_same_run(planted_folder, tmp_path, fmstore_cli):
    shown = fmstore_cli(tmp_path / "home", "train", "--data", str(planted_folder), *FLAGS, "--json")
    assert shown.returncode == 0, shown.stderr
    cli = json.loads(shown.stdout)

    messages = []
    trained = pipeline.run(
        datasets.load_dataset(planted_folder),
        TrainConfig(**CONFIG),
        runs_dir=tmp_path / "runs",
        progress=lambda message, done, total: messages.append(message),
    )
    for key in ("valid_rmse", "valid_recall@10", "valid_ndcg@10", "best_epoch"):
        assert trained.metrics[key] == pytest.approx(cli[key], rel=1e-6), key
    assert trained.metrics["ranking_search"]["chosen"] == cli["ranking_search"]["chosen"]
    assert trained.metrics["refit"]["ranking_warm_start"] is True
    saved = json.loads((trained.run_dir / "manifest.json").read_text())
    assert saved["metrics"]["valid_rmse"] == pytest.approx(cli["valid_rmse"], rel=1e-6)
    # one callback heard every stage, in order
    stages = ["ranking search", "epoch 1", "ranking sweep", "measuring", "refitting"]
    firsts = [next(i for i, m in enumerate(messages) if m.startswith(s)) for s in stages]
    assert firsts == sorted(firsts), messages


def test_without_runs_dir_nothing_is_saved(planted_folder, tmp_path):
    config = TrainConfig(**CONFIG, refit=False, tune_ranking=False)
    trained = pipeline.run(datasets.load_dataset(planted_folder), config)
    assert trained.run_dir is None and trained.validation is not None
    assert trained.config.batch_size == 256 and "refit" not in trained.metrics
