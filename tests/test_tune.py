"""The search of `fmstore tune` / `fmstore train --tune`: it picks the point that clearly wins,
never looks at the validation split the run reports, and its runs record what was searched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from planted import write_planted

from fmstore import datasets
from fmstore.config import TrainConfig, TuneGrid
from fmstore.datasets.splits import last_by_time, split_indices
from fmstore.errors import ConfigError
from fmstore.train.tune import choose, search_split, tune

# Small fits: the planted data has 1,800 ratings.
FAST = dict(epochs=8, lr=0.03, batch_size=256, ranking=False, refit=False)
FAST_FLAGS = ["--epochs", "8", "--lr", "0.03", "--batch-size", "256"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder = write_planted(tmp_path_factory.mktemp("planted"))
    return folder, datasets.load_dataset(folder)


def test_full_search_picks_the_point_that_clearly_wins(planted):
    # A weight decay of 50 per occurrence holds every weight at zero (the model predicts the mean,
    # RMSE ~1.7 on ratings that are 1-2 or 4.5-5 stars); so does a prior of 10,000 per feature.
    _, dataset = planted
    grid = TuneGrid(factors=(4,), weight_decay=(50.0, 0.001), prior_reg=(10_000.0, 0.1))
    result = tune(dataset, TrainConfig(**FAST), grid, full=True)
    assert [p.values() for p in result.points] == grid.points()
    assert result.chosen == {"factors": 4, "weight_decay": 0.001, "prior_reg": 0.1}
    rmse = {(p.weight_decay, p.prior_reg): p.inner_rmse for p in result.points}
    assert rmse[(0.001, 0.1)] < 0.7 < 1.2 < min(rmse[(50.0, 0.1)], rmse[(0.001, 10_000.0)])
    assert result.apply(TrainConfig(**FAST)).weight_decay == 0.001


def test_staged_search_fits_regularisation_then_widths(planted):
    _, dataset = planted
    grid = TuneGrid(factors=(2, 4, 8), weight_decay=(50.0, 0.001), prior_reg=(0.1,))
    result = tune(dataset, TrainConfig(**FAST), grid)
    # stage 1 at the middle width (4), stage 2: the other widths at the winning regularisation
    assert [(p.stage, p.factors, p.weight_decay) for p in result.points] == [
        (1, 4, 50.0),
        (1, 4, 0.001),
        (2, 2, 0.001),
        (2, 8, 0.001),
    ]
    assert result.chosen["weight_decay"] == 0.001
    # no incumbent in stage 1 (the given values are not in the grid); in stage 2, stage 1's
    # winner, which a width replaces only by more than one SE
    # here width 8 ends a little below stage 1's winner (width 4), by far less than one standard
    # error: within noise, so the incumbent stays although its inner RMSE is not the lowest
    width_2, width_8 = result.points[2:]
    assert width_8.inner_rmse < result.points[1].inner_rmse and 0.0 < width_8.gain_se < 1.0
    assert width_2.gain_se < -1.0  # clearly worse
    assert result.best == 1 and result.chosen["factors"] == 4
    summary = result.to_json()
    assert summary["search"] == "staged" and summary["chosen"] == result.chosen
    assert summary["n_search_train"] + summary["n_search_valid"] == summary["n_outer_train"]


def test_the_incumbent_gives_way_only_to_a_gain_beyond_noise():
    rng = np.random.default_rng(0)
    incumbent = rng.normal(0.0, 1.0, 10_000) ** 2
    noise = rng.normal(0.0, 0.3, 10_000)
    slightly = incumbent + noise - 0.001  # lower mean squared error, well within one SE
    clearly = incumbent * 0.9  # 10% lower, tens of standard errors
    assert np.mean(slightly) < np.mean(incumbent)
    assert choose([incumbent, slightly], [0, 1], incumbent=0) == 0
    assert choose([incumbent, slightly, clearly], [0, 1, 2], incumbent=0) == 2
    assert choose([incumbent, slightly], [0, 1], incumbent=None) == 1  # no incumbent: the lowest
    assert choose([incumbent, np.full(10_000, np.nan)], [0, 1], incumbent=None) == 0


def test_the_search_keeps_the_given_values_against_noise(planted):
    # the config's own point is in the grid: a neighbour must beat it by more than one SE
    _, dataset = planted
    config = TrainConfig(**FAST, factors=4, weight_decay=0.001, prior_reg=0.1)
    grid = TuneGrid(factors=(4,), weight_decay=(0.001, 0.0011), prior_reg=(0.1,))
    result = tune(dataset, config, grid)
    assert result.chosen == {"factors": 4, "weight_decay": 0.001, "prior_reg": 0.1}
    assert result.points[0].gain_se is None and abs(result.points[1].gain_se) < 1.0


def test_the_inner_split_never_overlaps_the_reported_validation(planted):
    _, dataset = planted
    for seed in (0, 3):
        config = TrainConfig(seed=seed, valid_fraction=0.2)
        outer_train, outer_valid = split_indices(len(dataset.ratings), 0.2, seed)
        split = search_split(dataset, config)
        searched = np.concatenate([split.train_rows, split.valid_rows])
        assert not np.intersect1d(searched, outer_valid).size
        assert np.array_equal(np.sort(searched), outer_train)  # all of the training part, once
        assert len(split.valid_rows) == round(0.1 * len(outer_train))
        assert split.sampled_users is None
        again = search_split(dataset, config)
        assert np.array_equal(again.valid_rows, split.valid_rows)  # deterministic


def test_a_large_training_part_is_searched_on_a_sample_of_whole_users(planted):
    _, dataset = planted
    config = TrainConfig()
    outer_train, outer_valid = split_indices(len(dataset.ratings), 0.1, 0)
    split = search_split(dataset, config, max_ratings=500)
    searched = np.concatenate([split.train_rows, split.valid_rows])
    assert not np.intersect1d(searched, outer_valid).size
    users = np.unique(dataset.ratings.user_id[searched])
    assert split.sampled_users == len(users) < split.n_users == 90
    # every training rating of a sampled user, and about max_ratings in all
    of_sampled = outer_train[np.isin(dataset.ratings.user_id[outer_train], users)]
    assert np.array_equal(np.sort(searched), of_sampled)
    assert 500 <= len(searched) < 500 + 20


def test_bad_grids_and_splits_are_refused():
    for grid, fragment in (
        (TuneGrid(factors=()), "--factors: give at least one value"),
        (TuneGrid(factors=(0, 8)), "--factors 0,8"),
        (TuneGrid(weight_decay=(-0.1,)), "--weight-decay -0.1"),
        (TuneGrid(prior_reg=(1.0, 1.0)), "given twice"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            grid.check()


def test_time_split_holds_out_each_users_last_ratings():
    user = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2])
    when = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 5, 7, 6])
    last = last_by_time(user, when, 0.2)
    # user 1: 2 of 10, the two latest; user 2: round(0.6) = 1, the latest
    assert last.tolist() == [True, True] + [False] * 8 + [False, True, False]
    # user 2: round(0.3) = 0 ratings
    assert last_by_time(user, when, 0.1).tolist() == [True] + [False] * 12


# ---- the CLI -----------------------------------------------------------------------------------


def test_tune_prints_a_table_and_json_and_writes_nothing(planted, fmstore_cli, tmp_path):
    folder, _ = planted
    home = tmp_path / "home"
    grid = ["--factors", "4", "--weight-decay", "50,0.001", "--prior-reg", "0.1"]
    shown = fmstore_cli(home, "tune", "--data", str(folder), *grid, *FAST_FLAGS)
    assert shown.returncode == 0, shown.stderr
    rating_table, ranking_table = shown.stdout.split("the ranking model at each point")
    marked = [line for line in rating_table.splitlines() if line.startswith("│ *")]
    assert len(marked) == 1 and "0.001" in marked[0]
    assert "* chosen: --factors 4 --weight-decay 0.001 --prior-reg 0.1" in shown.stdout
    assert len([line for line in ranking_table.splitlines() if line.startswith("│ *")]) == 1
    assert "* chosen: --ranking-set nu=" in ranking_table
    printed = fmstore_cli(home, "tune", "--data", str(folder), *grid, *FAST_FLAGS, "--json")
    assert printed.returncode == 0, printed.stderr
    result = json.loads(printed.stdout)
    assert result["chosen"] == {"factors": 4, "weight_decay": 0.001, "prior_reg": 0.1}
    assert len(result["points"]) == 2
    assert set(result["ranking"]["chosen"]) == {"nu", "reg", "alpha0", "conf_alpha"}
    rating_only = fmstore_cli(
        home, "tune", "--data", str(folder), *grid, *FAST_FLAGS, "--no-ranking"
    )
    assert "ranking model" not in rating_only.stdout
    assert not home.exists()  # no runs, no cache, no catalog


def test_train_tune_records_the_search_in_the_manifest(planted, fmstore_cli, tmp_path):
    folder, _ = planted
    home = tmp_path / "home"
    trained = fmstore_cli(
        home, "train", "--data", str(folder), "--tune", *FAST_FLAGS, "--no-ranking", "--json"
    )
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    manifest = json.loads((Path(summary["path"]) / "manifest.json").read_text())
    search = manifest["metrics"]["tune"]
    assert search == summary["tune"]
    assert search["grid"] == TuneGrid().to_dict() and search["search"] == "staged"
    assert len(search["points"]) == 11
    for name, value in search["chosen"].items():
        assert manifest["config"][name] == value  # trained with what was chosen
    # the reported validation split is the run's own, of which the search saw nothing
    assert search["n_outer_train"] == summary["n_train"]


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["tune", "--factors", "32,abc"], ["--factors '32,abc'", "'abc' is not a whole number"]),
        (["tune", "--weight-decay", "0.1,-1"], ["--weight-decay 0.1,-1", "-1 is negative"]),
        (["tune", "--prior-reg", "nan"], ["--prior-reg 'nan'", "not a finite number"]),
        (["tune", "--max-ratings", "0"], ["--max-ratings 0 must be at least 1"]),
        (["tune", "--inner-fraction", "1.5"], ["--inner-fraction 1.5"]),
        (["tune", "--epochs", "0"], ["--epochs 0 must be at least 1"]),
        (["train", "--tune", "--factors", "32"], ["--tune chooses --factors"]),
        (["train", "--tune", "--nproc", "2"], ["--tune with --nproc"]),
        (["tune", "--field-steps", "0.3,1"], ["--field-steps 0.3,1", "not 1"]),
        (["train", "--field-reg", "genre"], ["--field-reg 'genre': use FIELD=NUMBER"]),
        (["train", "--field-reg", "gnere=2"], ["--field-reg gnere=2.0", "not one of --fields"]),
    ],
)
def test_bad_tune_flags_are_one_line_errors(
    planted, fmstore_cli, assert_one_line_error, tmp_path, args, fragments
):
    folder, _ = planted
    result = fmstore_cli(tmp_path / "home", *args, "--data", str(folder))
    assert_one_line_error(result, *fragments)


def test_field_stage_frees_a_field_held_at_zero_and_walks_while_it_wins(planted):
    # Given: the movie and genre fields held at zero (10,000 x the L2): the item side learns
    # nothing and the model predicts each user's mean. Stage 3 divides each field's L2 by 100 in
    # turn, again while that keeps winning by more than one standard error.
    _, dataset = planted
    held = {"movie": 10_000.0, "genre": 10_000.0}
    config = TrainConfig(**FAST, weight_decay=0.001, prior_reg=0.1, field_reg=held)
    grid = TuneGrid(
        factors=(4,), weight_decay=(0.001,), prior_reg=(0.1,), field_steps=(0.01, 100.0)
    )
    result = tune(dataset, config, grid)
    given = result.points[0]
    assert given.stage == 1 and given.field_reg == held and given.inner_rmse > 1.2
    assert {p.stage for p in result.points[1:]} == {3}
    chosen = result.chosen
    assert chosen["field_reg"].get("movie", 1.0) <= 100.0  # freed, at least one step
    assert chosen["field_reg"].get("genre", 1.0) <= 100.0
    assert result.points[result.best].inner_rmse < 0.7
    # every accepted step beat its incumbent by more than one standard error
    assert result.points[result.best].gain_se > 1.0
    assert result.apply(config).field_reg == chosen["field_reg"]
    assert result.to_json()["grid"]["field_steps"] == [0.01, 100.0]


def test_field_reg_multiplies_the_l2_of_its_fields_features_only(planted):
    import torch

    from fmstore.features import Vocabulary
    from fmstore.train import feature_reg
    from fmstore.train.loop import new_model

    _, dataset = planted
    config = TrainConfig(**FAST)
    vocab = Vocabulary.build(dataset.ratings, dataset.movies, config.fields)
    model = new_model(vocab, dataset, dataset.ratings, config, torch.device("cpu"))
    users = torch.as_tensor(vocab.user_index(dataset.ratings.user_id))
    items = torch.arange(len(dataset.ratings)) % len(dataset.movies.movie_id)
    plain = feature_reg(model, users, items, 0.03, 5.0)
    scaled = feature_reg(model, users, items, 0.03, 5.0, field_reg={"genre": 0.5, "user": 4.0})
    ratio = (scaled / plain).numpy()
    for name, (first, size) in model.field_spans.items():
        expected = {"genre": 0.5, "user": 4.0}.get(name, 1.0)
        assert np.allclose(ratio[first : first + size], expected), name
    assert sum(size for _, size in model.field_spans.values()) == len(ratio) - 1  # 0: padding


def test_bad_field_regularisation_is_refused(planted):
    from fmstore.train.checks import check_config

    for field_reg, fragment in (
        ({"gnere": 0.5}, "--field-reg gnere=0.5: gnere is not one of --fields"),
        ({"genre": -1.0}, "--field-reg genre=-1.0 must not be negative"),
    ):
        with pytest.raises(ConfigError, match=fragment):
            check_config(TrainConfig(field_reg=field_reg))
    with pytest.raises(ConfigError, match="--field-steps 0.3,1: 1 must be positive and not 1"):
        TuneGrid(field_steps=(0.3, 1.0)).check()
    restored = TrainConfig.from_dict(
        json.loads(json.dumps(TrainConfig(field_reg={"year": 3.0}).to_dict()))
    )
    assert restored.field_reg == {"year": 3.0}


def test_tune_field_steps_and_train_field_reg_from_the_cli(planted, fmstore_cli, tmp_path):
    folder, _ = planted
    home = tmp_path / "home"
    grid = ["--factors", "4", "--weight-decay", "0.001", "--prior-reg", "0.1"]
    steps = ["--field-steps", "0.01,100"]
    shown = fmstore_cli(home, "tune", "--data", str(folder), *grid, *steps, *FAST_FLAGS)
    assert shown.returncode == 0, shown.stderr
    assert "per field" in shown.stdout and "user x0.01" in shown.stdout
    printed = fmstore_cli(
        home, "tune", "--data", str(folder), *grid, *steps, *FAST_FLAGS, "--no-ranking", "--json"
    )
    result = json.loads(printed.stdout)
    assert result["grid"]["field_steps"] == [0.01, 100.0]
    assert {p["stage"] for p in result["points"]} == {1, 3} and len(result["points"]) >= 9
    trained = fmstore_cli(
        home, "train", "--data", str(folder), "--field-reg", "genre=0.5,year=2", *FAST_FLAGS,
        "--no-ranking", "--json",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((Path(json.loads(trained.stdout)["path"]) / "manifest.json").read_text())
    assert manifest["config"]["field_reg"] == {"genre": 0.5, "year": 2.0}
