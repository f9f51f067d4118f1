"""Training on a planted fixture finds the planted groups; runs are reproducible and round-trip."""

import json

import numpy as np
import pytest
import torch
from planted import (
    GROUPS,
    group_of_movie,
    group_of_user,
    rated_movie_ids,
    unrated_movie_ids,
    write_planted,
)

from fmstore import datasets, runs
from fmstore.config import TrainConfig
from fmstore.datasets.splits import split_indices
from fmstore.errors import ConfigError, DataError
from fmstore.train import train

FAST = dict(
    epochs=40,
    factors=8,
    lr=0.03,
    batch_size=256,
    weight_decay=0.02,
    patience=40,
    valid_fraction=0.1,
)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return datasets.load_dataset(write_planted(tmp_path_factory.mktemp("planted")))


@pytest.fixture(scope="module")
def planted_run(planted):
    config = TrainConfig(**FAST)
    return train(planted, config), config


def test_model_ranks_each_groups_movies_first(planted, planted_run):
    result, _ = planted_run
    form = result.model.serving_form()
    scores = (
        form.user_bias[:, None] + form.item_bias[None, :] + form.user_vectors @ form.item_vectors.T
    )
    movie_ids = planted.movies.movie_id
    rated = np.isin(movie_ids, [m for g in range(len(GROUPS)) for m in rated_movie_ids(g)])
    for row, user in enumerate(result.vocab.user_ids):
        top = movie_ids[rated][np.argsort(-scores[row, rated])][:6]
        assert all(group_of_movie(int(m)) == group_of_user(int(user)) for m in top), (user, top)
    assert result.metrics["valid_rmse"] < 0.6  # ratings are 1-2 or 4.5-5: random would be ~1.8


def test_unrated_movies_get_vectors_from_their_genre(planted, planted_run):
    result, _ = planted_run
    form = result.model.serving_form()
    index = {int(m): i for i, m in enumerate(planted.movies.movie_id)}
    for g in range(len(GROUPS)):
        group_users = [r for r, u in enumerate(result.vocab.user_ids) if group_of_user(int(u)) == g]
        other_users = [r for r, u in enumerate(result.vocab.user_ids) if group_of_user(int(u)) != g]
        for m in unrated_movie_ids(g):
            i = index[m]
            s = form.item_bias[i] + form.user_vectors @ form.item_vectors[i] + form.user_bias
            assert s[group_users].mean() > s[other_users].mean() + 1.0, (g, m)


def test_same_seed_same_metrics(planted):
    config = TrainConfig(**(FAST | dict(epochs=5)))
    a, b = train(planted, config), train(planted, config)
    assert a.metrics["valid_rmse"] == b.metrics["valid_rmse"]
    assert torch.equal(a.model.v, b.model.v)


def test_split_is_deterministic_and_disjoint():
    tr1, va1 = split_indices(1000, 0.1, seed=3)
    tr2, va2 = split_indices(1000, 0.1, seed=3)
    _, va3 = split_indices(1000, 0.1, seed=4)
    assert np.array_equal(va1, va2) and not np.array_equal(va1, va3)
    assert len(va1) == 100 and len(np.intersect1d(tr1, va1)) == 0 and len(tr1) + len(va1) == 1000


def test_test_ratings_are_reported(planted, tmp_path):
    test_file = tmp_path / "test.csv"
    test_file.write_text("userId,movieId,rating,timestamp\n1,1,5.0,1\n31,1,1.0,2\n")
    test = datasets.load_ratings_file(test_file, planted.movies)
    result = train(planted, TrainConfig(**(FAST | dict(epochs=3))), test_ratings=test)
    assert result.metrics["n_test"] == 2 and result.metrics["test_rmse"] > 0


@pytest.mark.parametrize(
    "bad",
    [
        dict(epochs=0),
        dict(lr=-1.0),
        dict(link="tanh"),
        dict(valid_fraction=1.0),
        dict(device="tpu"),
    ],
)
def test_bad_config_is_refused(planted, bad):
    with pytest.raises(ConfigError):
        train(planted, TrainConfig(**(FAST | bad)))


def test_artifact_round_trip(planted, planted_run, tmp_path):
    result, config = planted_run
    run_dir = runs.save_run(result, planted, config, tmp_path / "runs")
    manifest = runs.load_manifest(run_dir)
    assert manifest["metrics"]["valid_rmse"] == result.metrics["valid_rmse"]
    assert manifest["dataset"]["fingerprint"] == planted.fingerprint
    assert set(manifest["files"]) == {
        "model.safetensors",
        "serving.safetensors",
        "ranking.safetensors",
        "seen.safetensors",
        "movies.json",
        "history.csv",
    }

    model = runs.load_model(run_dir)
    u, i = torch.arange(10), torch.arange(10)
    torch.testing.assert_close(model.predict(u, i), result.model.predict(u, i))

    serving = runs.load_serving(run_dir)
    form = result.model.serving_form()
    np.testing.assert_array_equal(serving.item_vectors, form.item_vectors)
    assert len(serving.movie_ids) == len(planted.movies)  # unrated movies included

    seen_ids, seen_ratings = runs.seen_movies(run_dir, 1)
    in_train = result.train_ratings.movie_id[result.train_ratings.user_id == 1]
    assert sorted(seen_ids.tolist()) == sorted(in_train.tolist()) and len(seen_ratings) == len(
        seen_ids
    )
    assert runs.resolve_run(tmp_path / "runs", None) == run_dir
    assert not list((tmp_path / "runs").glob(".tmp-*"))


def test_tampered_weights_are_refused(planted, planted_run, tmp_path):
    result, config = planted_run
    run_dir = runs.save_run(result, planted, config, tmp_path / "runs")
    with open(run_dir / "serving.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(DataError, match="sha256"):
        runs.load_manifest(run_dir)


def test_manifest_is_plain_json(planted, planted_run, tmp_path):
    result, config = planted_run
    run_dir = runs.save_run(result, planted, config, tmp_path / "runs")
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["config"]["factors"] == config.factors
    assert {"torch", "numpy", "fmstore"} <= set(manifest["versions"])


def test_a_diverging_fit_stops_with_one_line(planted_dataset, planted_train):
    """issue 18, Medium 7: --lr 1e30 was an internal error after the last epoch (no best
    weights); now the epoch loop sees the non-finite error and says what to change."""
    config = TrainConfig(**planted_train | {"lr": 1e30, "epochs": 3})
    with pytest.raises(ConfigError, match=r"diverged in epoch 1 .*use a lower --lr"):
        train(planted_dataset, config)


def test_a_diverging_point_loses_the_search(planted_dataset, planted_train):
    """tune: a grid point that diverges is recorded as lost (inner RMSE inf), never chosen."""
    from fmstore.config import TuneGrid
    from fmstore.train.tune import tune

    config = TrainConfig(**planted_train | {"epochs": 2, "lr": 1e30})
    grid = TuneGrid(factors=(planted_train["factors"],), weight_decay=(0.01,), prior_reg=(1.0,))
    result = tune(planted_dataset, config, grid)
    assert result.points[0].inner_rmse == float("inf")
