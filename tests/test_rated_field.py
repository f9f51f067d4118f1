"""The implicit `rated` field (SVD++ in FM form): each user's side also holds the movies they
rated, at weight 1/sqrt(n), as features of their own.

- the model's score equals the textbook FM over all of a rating's features (user id, every
  rated movie, movie id, genres, year), so the serving form stays exact;
- the torch engine's closed-form step with the field follows torch.optim.Adam on the autograd
  loss, the field's L2 penalty included;
- features.rated_rows builds the field from ratings (each movie once, 1/sqrt(n));
- training with the field uses the torch engine (numba says why it cannot) and a run saves and
  loads with it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fmstore.config import TrainConfig
from fmstore.features import FeatureRows, RatedRows, Vocabulary, rated_rows
from fmstore.model import FactorizationMachine
from fmstore.train import CATCH_UP_EVERY, LazyAdam, TorchEngine, feature_reg, numba_engine

N_USERS, N_MOVIES, K = 9, 11, 5


def rated_problem(seed: int = 0, link: str = "identity"):
    """An FM over 9 users (id + rated movies) and 11 movies (id + one of 3 genres), 300 ratings;
    the rated sets are the users' distinct rated movies, as training builds them."""
    rng = np.random.default_rng(seed)
    user_off, movie_off = 1, 1 + N_USERS
    genre_off = movie_off + N_MOVIES
    rated_off = genre_off + 3
    n_features = rated_off + N_MOVIES
    users = FeatureRows(
        np.concatenate([user_off + np.arange(N_USERS), [0]])[:, None].astype(np.int64),
        np.concatenate([np.ones(N_USERS), [0.0]])[:, None].astype(np.float32),
    )
    items = FeatureRows(
        np.stack([movie_off + np.arange(N_MOVIES), genre_off + rng.integers(0, 3, N_MOVIES)], 1),
        np.ones((N_MOVIES, 2), np.float32),
    )
    n = 300
    u = rng.integers(0, N_USERS, n)
    i = (rng.random(n) ** 2 * N_MOVIES).astype(np.int64)
    r = rng.integers(1, 11, n) * 0.5
    sets = [np.unique(i[u == row]) for row in range(N_USERS)] + [np.zeros(0, np.int64)]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in sets])]).astype(np.int64)
    weight = np.concatenate([np.full(len(s), 1 / np.sqrt(max(len(s), 1))) for s in sets])
    rated = RatedRows(
        indptr,
        rated_off + np.concatenate(sets).astype(np.int64),
        weight.astype(np.float32),
        np.array([rated_off, N_MOVIES], np.int64),
        rated_off + np.arange(N_MOVIES, dtype=np.int64),
    )
    torch.manual_seed(seed)
    model = FactorizationMachine(n_features, K, users, items, link=link, init_std=0.1, rated=rated)
    with torch.no_grad():
        model.w0.fill_(0.2 if link == "sigmoid" else 3.0)
        model.w.normal_(0, 0.1)
    model.requires_grad_(False)
    as_t = torch.as_tensor
    return model, as_t(u, dtype=torch.int32), as_t(i, dtype=torch.int32), as_t(r).float()


def all_features(model, user_row: int, item_row: int):
    """(feature, weight) of one rating: the user's row, their rated movies, the movie's row."""
    lo, hi = (int(x) for x in model.rated_indptr[user_row : user_row + 2])
    feats = [model.user_index[user_row], model.rated_index[lo:hi], model.item_index[item_row]]
    weights = [model.user_weight[user_row], model.rated_weight[lo:hi], model.item_weight[item_row]]
    return torch.cat(feats), torch.cat(weights).double()


def textbook(model, user_row: int, item_row: int) -> float:
    """w0 + sum_j w_j x_j + sum_{j<l} <v_j, v_l> x_j x_l, by a double loop."""
    f, x = all_features(model, user_row, item_row)
    v, w = model.v.detach().double()[f], model.w.detach().double()[f]
    y = float(model.w0) + float((w * x).sum())
    for a in range(len(f)):
        for b in range(a + 1, len(f)):
            y += float(v[a] @ v[b] * x[a] * x[b])
    return y


def test_score_is_the_textbook_fm_over_every_feature():
    model, u, i, _ = rated_problem()
    form = model.serving_form()
    for user_row in range(N_USERS):
        for item_row in (0, 3, 10):
            expected = textbook(model, user_row, item_row)
            served = (
                form.w0
                + form.user_bias[user_row]
                + form.item_bias[item_row]
                + form.user_vectors[user_row] @ form.item_vectors[item_row]
            )
            assert served == pytest.approx(expected, abs=1e-4)
            raw = model.raw_score(torch.tensor([user_row]), torch.tensor([item_row]))
            assert float(raw) == pytest.approx(expected, abs=1e-4)


def test_serving_form_gives_a_new_user_side_from_the_rated_vectors():
    """A user's z_u and its bias, rebuilt from the published y_j and w_j alone."""
    model, *_ = rated_problem()
    form = model.serving_form()
    z, b_z = model.rated_terms()
    for row in range(N_USERS):
        lo, hi = (int(x) for x in model.rated_indptr[row : row + 2])
        movies = model.rated_index[lo:hi].numpy() - int(model.rated_block[0])
        x = 1 / np.sqrt(len(movies))
        y, w = form.rated_vectors[movies].astype(np.float64), form.rated_bias[movies]
        z_new = x * y.sum(0)
        b_new = x * w.sum() + 0.5 * (z_new @ z_new - x * x * np.square(y).sum())
        np.testing.assert_allclose(z_new, z[row].numpy(), atol=1e-5)
        assert b_new == pytest.approx(float(b_z[row]), abs=1e-5)


def reference_loss(model, u, i, r, reg):
    """Mean squared error + per-occurrence L2 of every feature of each rating, by autograd."""
    dense = torch.zeros(N_USERS + 1, model.v.shape[0], dtype=torch.float64)
    for row in range(N_USERS):
        f, x = all_features(model, row, 0)
        dense[row, f[1:-2]] = x[1:-2]  # the rated movies only
    u, i = u.long(), i.long()
    p, b_u = model.user_side(u)
    q, b_i = model.side(model.item_index[i], model.item_weight[i])
    err = model.apply_link(model.w0 + b_u + b_i + (p * q).sum(-1)) - r
    squares = model.v.square().sum(-1) + model.w.square()  # per feature
    penalty = 0.0
    for index, weight in (
        (model.user_index[u], model.user_weight[u]),
        (model.item_index[i], model.item_weight[i]),
    ):
        penalty = penalty + (reg[index] * weight.square() * squares[index]).sum()
    rated_pen = (dense.square() @ (reg * squares).double())[u].sum()
    return (err.square().sum() + penalty + rated_pen) / len(r)


@pytest.mark.parametrize("link", ["identity", "sigmoid"])
def test_torch_engine_is_dense_adam_with_the_rated_field(link):
    lr, batch_size, steps = 0.01, 16, CATCH_UP_EVERY + 20
    model, u, i, r = rated_problem(seed=1, link=link)
    reg = feature_reg(model, u, i, weight_decay=0.05, prior_reg=0.5)
    reference = copy.deepcopy(model)
    reference.requires_grad_(True)
    optimizer = torch.optim.Adam(reference.parameters(), lr=lr)
    model.requires_grad_(False)
    engine = TorchEngine(model, LazyAdam(model, lr), reg, batch_size, u, i, r)
    g = torch.Generator().manual_seed(2)
    for _ in range(steps):
        b = torch.randperm(len(r), generator=g)[:batch_size]
        loss = reference_loss(reference, u[b], i[b], r[b], reg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        engine.step(u[b], i[b], r[b])
    engine.catch_up_all()
    torch.testing.assert_close(model.v[1:], reference.v.detach()[1:], rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(model.w[1:], reference.w.detach()[1:], rtol=2e-3, atol=2e-4)


def test_feature_reg_counts_a_rated_movie_once_per_rating_of_its_users():
    model, u, i, _ = rated_problem()
    reg = feature_reg(model, u, i, weight_decay=0.0, prior_reg=1.0)
    per_user = np.bincount(u.numpy(), minlength=N_USERS + 1)
    first = int(model.rated_block[0])
    for movie in range(N_MOVIES):
        raters = {int(x) for x in u[i == movie]}
        expected = sum(per_user[row] for row in raters)
        assert float(reg[first + movie]) == pytest.approx(1.0 / max(expected, 1), rel=1e-5)


def test_rated_rows_from_ratings(planted_dataset):
    dataset = planted_dataset
    vocab = Vocabulary.build(dataset.ratings, dataset.movies, ("user", "movie", "rated"))
    rows = rated_rows(vocab, dataset.ratings, dataset.movies)
    assert rows.block.tolist() == [vocab.offsets()["rated"], len(vocab.movie_ids)]
    assert vocab.n_features == rows.block.sum()  # the field is the table's last
    user = vocab.user_ids[0]
    mine = np.unique(dataset.ratings.movie_id[dataset.ratings.user_id == user])
    got = rows.index[rows.indptr[0] : rows.indptr[1]] - rows.block[0]
    assert sorted(vocab.movie_ids[got]) == sorted(mine)
    np.testing.assert_allclose(rows.weight[rows.indptr[0] : rows.indptr[1]], 1 / np.sqrt(len(mine)))
    assert rows.indptr[-1] == rows.indptr[-2]  # the unseen-user row is empty
    assert (
        rated_rows(
            Vocabulary.build(dataset.ratings, dataset.movies, ("user",)),
            dataset.ratings,
            dataset.movies,
        )
        is None
    )


def test_numba_engine_says_why_it_cannot_train_the_field():
    model, *_ = rated_problem()
    assert "rated" in numba_engine.cannot_train(model)


def test_a_run_with_the_field_trains_saves_and_loads(planted_dataset, planted_train, tmp_path):
    from fmstore import runs
    from fmstore.train import train

    fields = ("user", "movie", "genre", "year", "rated")
    config = TrainConfig(**planted_train | dict(epochs=3, ranking=False), fields=fields)
    result = train(planted_dataset, config)
    run_dir = runs.save_run(result, planted_dataset, config, tmp_path)
    loaded = runs.load_model(run_dir)
    assert loaded.has_rated
    u = torch.arange(5)
    i = torch.arange(5)
    torch.testing.assert_close(loaded.predict(u, i), result.model.predict(u, i))


def test_cli_trains_publishes_and_queries_a_run_with_the_field(
    tmp_path, fmstore_cli, assert_one_line_error
):
    from planted import write_planted

    home, data = tmp_path / "home", write_planted(tmp_path / "data")
    small = ["--epochs", "3", "--factors", "8", "--lr", "0.03", "--batch-size", "256"]
    trained = fmstore_cli(home, "train", "--data", str(data), *small, "--rated-field", "--json")
    assert trained.returncode == 0, trained.stderr
    manifest = json.loads((Path(json.loads(trained.stdout)["path"]) / "manifest.json").read_text())
    assert "rated" in manifest["config"]["fields"] and manifest["config"]["rated_reg"] == 100.0
    assert fmstore_cli(home, "publish").returncode == 0
    answer = fmstore_cli(home, "query", "--user", "1", "--json")
    assert answer.returncode == 0, answer.stderr
    assert len(json.loads(answer.stdout)["results"]) == 10
    refused = fmstore_cli(home, "train", "--data", str(data), "--rated-reg", "-1")
    assert_one_line_error(refused, "--rated-reg")
