"""The ranking model's settings searched on the user's own data (fmstore/ranking_search.py): it
finds what the planted data needs, never looks at the validation split, keeps pinned values, and
a run records the search."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from planted import GROUPS, USERS_PER_GROUP, write_planted

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
    assert start.values == {"nu": 1.0, "reg": 0.1, "alpha0": 1.0, "conf_alpha": 0.0}
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
        "nu=1,reg=0.1,alpha0=1,conf_alpha=5",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert "ranking_search" not in summary  # all four pinned: nothing to search
    manifest = json.loads(
        (tmp_path / "home" / "runs" / summary["run_id"] / "manifest.json").read_text()
    )
    assert manifest["config"]["ranking_config"]["conf_alpha"] == 5.0
    assert manifest["config"]["ranking_pinned"] == ["nu", "reg", "alpha0", "conf_alpha"]


def with_rare_movies(folder, n_movies=400, raters=2, seed=1):
    """The planted data plus `n_movies` documentaries, each loved (5 stars) by `raters` users
    drawn at random: many more movies than users, most of them rare. At nu 1 the movies' L2
    (reg (n_i + alpha0 n_users)) is far below the users' (reg (n_u + alpha0 n_items)); nu
    below 1 at the same L2 for an average user moves L2 onto the movies."""
    rng = np.random.default_rng(seed)
    n_users = USERS_PER_GROUP * len(GROUPS)
    with open(folder / "movies.csv", "a", newline="") as f:
        csv.writer(f).writerows(
            [1000 + j, f"Rare {j} (2000)", "Documentary"] for j in range(n_movies)
        )
    with open(folder / "ratings.csv", "a", newline="") as f:
        csv.writer(f).writerows(
            [int(u) + 1, 1000 + j, 5.0, 2_000_000 + j]
            for j in range(n_movies)
            for u in rng.choice(n_users, raters, replace=False)
        )
    return folder


def test_the_search_lowers_nu_where_the_movies_need_more_l2(tmp_path):
    data = datasets.load_dataset(with_rare_movies(write_planted(tmp_path / "data")))
    ranking = RankingConfig(factors=8, reg=0.03, conf_alpha=3.0, iterations=8)
    config = TrainConfig(ranking_config=ranking, ranking_pinned=("alpha0", "conf_alpha"))
    found = search_ranking(data, config, inner_fraction=0.25)
    start, best = found.points[0], found.points[found.best]
    assert start.values["nu"] == 1.0 and start.fitted_reg == 0.03  # nu 1: reg as given
    assert found.chosen["nu"] <= 0.5
    assert best.ndcg > start.ndcg + 0.02
    # each step down nu gained more than one standard error over the incumbent of its time
    steps = [
        p for p in found.points if p.values["reg"] == 0.03 and p.values["nu"] >= best.values["nu"]
    ]
    assert all(p.gain_se > 1.0 for p in steps if p is not start)
    # the walk's reg is an average user's L2 at any nu: reg S = fitted_reg S^nu
    n_users = len(np.unique(data.ratings.user_id))
    split = search_split(data, config, 0.25)
    scale = len(data.movies) + len(split.train_rows) / n_users  # alpha0 1
    for p in found.points:
        assert p.fitted_reg * scale ** p.values["nu"] == pytest.approx(p.values["reg"] * scale)
    applied = found.apply(config).ranking_config
    assert (applied.nu, applied.reg) == (found.chosen["nu"], best.fitted_reg)


def test_a_pinned_reg_is_fitted_as_given_at_every_nu(tmp_path):
    data = datasets.load_dataset(with_rare_movies(write_planted(tmp_path / "data")))
    ranking = RankingConfig(factors=8, reg=0.03, conf_alpha=3.0, iterations=4)
    config = TrainConfig(ranking_config=ranking, ranking_pinned=("reg", "alpha0", "conf_alpha"))
    found = search_ranking(data, config, inner_fraction=0.25)
    assert len({p.values["nu"] for p in found.points}) > 1
    assert {p.fitted_reg for p in found.points} == {0.03}
