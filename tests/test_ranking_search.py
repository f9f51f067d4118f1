"""The ranking model's settings searched on the user's own data (fmstore/ranking_search.py): it
finds what the planted data needs, never looks at the validation split, keeps pinned values, and
a run records the search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted import write_planted

from fmstore import datasets, pipeline
from fmstore.config import RankingConfig, TrainConfig
from fmstore.datasets.splits import split_indices
from fmstore.ranking_search import search_ranking
from fmstore.train.tune import search_split

# conf_alpha 0 weighs every rated pair alike: the planted users rate movies at random, so which
# movies they rated says nothing of their taste; only a confidence in liked movies shows it.
BLIND = RankingConfig(factors=8, reg=0.1, conf_alpha=0.0, iterations=8)
FAST = dict(epochs=4, lr=0.03, batch_size=256, refit=False)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return datasets.load_dataset(write_planted(tmp_path_factory.mktemp("planted")))


def test_the_search_finds_the_confidence_the_planted_data_needs(planted):
    found = search_ranking(planted, TrainConfig(ranking_config=BLIND), inner_fraction=0.25)
    start, best = found.points[0], found.points[found.best]
    assert start.values == {"reg": 0.1, "alpha0": 1.0, "conf_alpha": 0.0}
    assert found.chosen["conf_alpha"] >= 3.0
    assert best.ndcg > start.ndcg + 0.2  # from about chance (0.24) to the planted groups (0.6)
    assert best.gain_se > 1.0  # it replaced an incumbent by more than one standard error
    assert (
        found.apply(TrainConfig(ranking_config=BLIND)).ranking_config.conf_alpha
        == (found.chosen["conf_alpha"])
    )


def test_pinned_settings_are_not_searched(planted):
    config = TrainConfig(ranking_config=BLIND, ranking_pinned=("conf_alpha",))
    found = search_ranking(planted, config, inner_fraction=0.25)
    assert {p.values["conf_alpha"] for p in found.points} == {0.0}
    assert len({p.values["reg"] for p in found.points}) > 1  # the others still move


def test_the_search_never_sees_the_validation_split(planted):
    config = TrainConfig(ranking_config=BLIND)
    split = search_split(planted, config)
    _, valid = split_indices(len(planted.ratings), config.valid_fraction, config.seed)
    searched = np.concatenate([split.train_rows, split.valid_rows])
    assert not np.isin(searched, valid).any()


def test_a_run_records_the_search_and_trains_with_its_choice(planted, tmp_path):
    config = TrainConfig(**FAST, ranking_config=BLIND)
    trained = pipeline.run(planted, config, runs_dir=tmp_path)
    search = trained.metrics["ranking_search"]
    assert trained.config.ranking_config.conf_alpha == search["chosen"]["conf_alpha"] >= 3.0
    manifest = json.loads((trained.run_dir / "manifest.json").read_text())
    assert manifest["config"]["ranking_config"]["conf_alpha"] == search["chosen"]["conf_alpha"]
    assert manifest["metrics"]["ranking_search"]["n_search_valid"] > 0


def test_no_search_when_asked(planted):
    config = TrainConfig(**FAST, ranking_config=BLIND, tune_ranking=False)
    trained = pipeline.run(planted, config)
    assert "ranking_search" not in trained.metrics
    assert trained.config.ranking_config == BLIND


@pytest.mark.parametrize(
    "value, fragment",
    [("reg", "NAME=VALUE"), ("beta=1", "NAME=VALUE"), ("reg=-1", ">= 0"), ("reg=x", ">= 0")],
)
def test_bad_ranking_set_is_one_line(tmp_path, value, fragment, fmstore_cli, assert_one_line_error):
    data = write_planted(tmp_path / "data")
    result = fmstore_cli(tmp_path / "home", "train", "--data", str(data), "--ranking-set", value)
    assert_one_line_error(result, "--ranking-set", fragment)


def test_ranking_set_pins_values_from_the_cli(tmp_path, fmstore_cli):
    data = write_planted(tmp_path / "data")
    args = ["--epochs", "2", "--factors", "4", "--lr", "0.03", "--batch-size", "256"]
    result = fmstore_cli(
        tmp_path / "home",
        "train",
        "--data",
        str(data),
        *args,
        "--ranking-factors",
        "8",
        "--ranking-set",
        "reg=0.1,alpha0=1,conf_alpha=5",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "ranking_search" not in summary  # all three pinned: nothing to search
    manifest = json.loads(
        (tmp_path / "home" / "runs" / summary["run_id"] / "manifest.json").read_text()
    )
    assert manifest["config"]["ranking_config"]["conf_alpha"] == 5.0
    assert manifest["config"]["ranking_pinned"] == ["reg", "alpha0", "conf_alpha"]
