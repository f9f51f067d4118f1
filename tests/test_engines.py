"""The training engines learn what dense Adam on the autograd loss learns, and agree.

- the torch engine (closed-form gradients + row-wise Adam with catch-up) follows torch.optim.Adam
  on the autograd loss, step by step, over more steps than the catch-up table holds;
- the numba engine follows the torch engine;
- evaluation through per-row sides equals model.predict;
- the speed benchmark runs end to end on a tiny synthetic set, and refuses --device cuda cleanly
  when there is no GPU.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from fmstore.features import FeatureRows
from fmstore.model import FactorizationMachine
from fmstore.train import (
    CATCH_UP_EVERY,
    LazyAdam,
    TorchEngine,
    evaluate_rmse_mae,
    feature_reg,
    numba_engine,
    validation,
)

REPO = Path(__file__).resolve().parent.parent


def small_problem(link: str, seed: int = 0, k: int = 6, user_columns: bool = False):
    """An FM over 12 users and 15 movies with shared genre/year features, and 400 ratings;
    `user_columns`: two user side fields too, shared by many users (a category at weight 1, and
    a multi-valued one at 1/n that some users lack), as features.SideField builds them."""
    rng = np.random.default_rng(seed)
    n_users, n_movies, n_genres = 12, 15, 4
    user_off, movie_off, genre_off = 1, 1 + n_users, 1 + n_users + n_movies
    year_off = genre_off + n_genres
    n_features = year_off + 3
    users = FeatureRows(
        np.concatenate([user_off + np.arange(n_users), [0]])[:, None].astype(np.int64),
        np.concatenate([np.ones(n_users), [0.0]])[:, None].astype(np.float32),
    )
    if user_columns:
        users, n_features = _with_user_columns(users, n_features, seed)
    index = np.zeros((n_movies, 4), np.int64)
    weight = np.zeros((n_movies, 4), np.float32)
    for m in range(n_movies):
        genres = rng.choice(n_genres, rng.integers(0, 3), replace=False)
        index[m, 0], weight[m, 0] = movie_off + m, 1.0
        for j, g in enumerate(genres):
            index[m, 1 + j], weight[m, 1 + j] = genre_off + g, 1.0 / len(genres)
        index[m, 3], weight[m, 3] = year_off + rng.integers(3), 1.0
    items = FeatureRows(index, weight)
    torch.manual_seed(seed)
    model = FactorizationMachine(n_features, k, users, items, link=link, init_std=0.1)
    with torch.no_grad():
        model.w0.fill_(0.2 if link == "sigmoid" else 3.0)
    n = 400
    u = torch.as_tensor(rng.integers(0, n_users, n), dtype=torch.int32)
    i = torch.as_tensor((rng.random(n) ** 2 * n_movies).astype(np.int32))  # popular movies repeat
    r = torch.as_tensor(rng.integers(1, 11, n) * 0.5, dtype=torch.float32)
    return model, u, i, r


def _with_user_columns(users: FeatureRows, n_features: int, seed: int):
    """`users` plus a category of 3 values (weight 1) and a multi-valued field of 4 values
    (0 to 2 of them at 1/n); returns the rows and the new number of features."""
    rng = np.random.default_rng(seed + 100)
    n_rows = len(users.index)
    index = np.zeros((n_rows, 4), np.int64)
    weight = np.zeros((n_rows, 4), np.float32)
    index[:, :1], weight[:, :1] = users.index, users.weight
    category, multi = n_features, n_features + 3
    for r in range(n_rows - 1):  # the last row: the unseen-user padding, left empty
        index[r, 1], weight[r, 1] = category + rng.integers(3), 1.0
        values = rng.choice(4, rng.integers(0, 3), replace=False)
        for j, value in enumerate(values):
            index[r, 2 + j], weight[r, 2 + j] = multi + value, 1.0 / len(values)
    return FeatureRows(index, weight), n_features + 7


def reference_loss(model, u, i, r, reg_scale):
    """The loss the trainer minimises, by autograd: mean squared error + per-occurrence L2 with
    each feature's own coefficient (fmstore.train.feature_reg)."""
    u, i = u.long(), i.long()
    p, b_u, _ = model.side_terms(model.user_index[u], model.user_weight[u])
    q, b_i, _ = model.side_terms(model.item_index[i], model.item_weight[i])
    err = model.apply_link(model.w0 + b_u + b_i + (p * q).sum(-1)) - r
    penalty = 0.0
    for index, weight in (
        (model.user_index[u], model.user_weight[u]),
        (model.item_index[i], model.item_weight[i]),
    ):
        vx, wx = model.v[index] * weight[..., None], model.w[index] * weight
        penalty = penalty + (reg_scale[index] * (vx.square().sum(-1) + wx.square())).sum()
    return (err.square().sum() + penalty) / len(r)


def batches(n, batch_size, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    out = []
    while len(out) < steps:
        order = torch.randperm(n, generator=g)
        out += [order[s : s + batch_size] for s in range(0, n - batch_size + 1, batch_size)]
    return out[:steps]


@pytest.mark.parametrize(
    ("link", "user_columns"), [("identity", False), ("sigmoid", False), ("identity", True)]
)
def test_torch_engine_is_dense_adam(link, user_columns):
    lr, batch_size = 0.01, 16
    steps = CATCH_UP_EVERY + 60  # past one table-bounding catch-up of every row
    model, u, i, r = small_problem(link, user_columns=user_columns)
    reg = feature_reg(model, u, i, weight_decay=0.05, prior_reg=0.5)
    reference = copy.deepcopy(model)
    optimizer = torch.optim.Adam(reference.parameters(), lr=lr)
    model.requires_grad_(False)
    lazy = LazyAdam(model, lr)
    engine = TorchEngine(model, lazy, reg, batch_size, u, i, r)
    for b in batches(len(r), batch_size, steps):
        loss = reference_loss(reference, u[b], i[b], r[b], reg)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        engine.step(u[b], i[b], r[b])
        if lazy.t % CATCH_UP_EVERY == 0:
            engine.catch_up_all()
    engine.catch_up_all()
    # the padding row 0 is never used (weight 0): leave it out
    torch.testing.assert_close(model.v[1:], reference.v.detach()[1:], rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(model.w[1:], reference.w.detach()[1:], rtol=2e-3, atol=2e-4)
    torch.testing.assert_close(model.w0, reference.w0.detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("link", "user_columns"), [("identity", False), ("sigmoid", False), ("identity", True)]
)
def test_numba_engine_matches_torch_engine(link, user_columns):
    """With user side columns too: user features shared by many user rows, gathered over the
    batch and updated once per step, as the item side's."""
    lr, batch_size = 0.01, 8 if user_columns else 32  # small batches: features skip steps
    model_t, u, i, r = small_problem(link, seed=3, user_columns=user_columns)
    reg = feature_reg(model_t, u, i, weight_decay=0.05, prior_reg=0.5)
    model_n = copy.deepcopy(model_t)
    for m in (model_t, model_n):
        m.requires_grad_(False)
    torch_run = TorchEngine(model_t, LazyAdam(model_t, lr), reg, batch_size, u, i, r)
    assert numba_engine.cannot_train(model_n) is None
    numba_run = numba_engine.NumbaEngine(model_n, LazyAdam(model_n, lr), reg, batch_size, u, i, r)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(3):  # 3 epochs of 12 steps (50 with user columns)
        sse_t = torch_run.epoch(torch.randperm(len(r), generator=g1), CATCH_UP_EVERY)
        sse_n = numba_run.epoch(torch.randperm(len(r), generator=g2), CATCH_UP_EVERY)
        torch_run.catch_up_all()
        numba_run.catch_up_all()
        assert sse_n == pytest.approx(sse_t, rel=1e-4)
    # the torch engine is dense Adam; numba's lazy catch-up of untouched rows leaves out eps
    # (lazy_adam.py): a few rows differ in the fourth digit
    for name in ("v", "w", "w0"):
        torch.testing.assert_close(
            getattr(model_n, name), getattr(model_t, name), rtol=2e-3, atol=1e-4
        )


def test_numba_engine_with_user_columns_repeats_itself():
    """Shared user features' gradients are summed in thread order: two runs with the same
    threads give the same bits."""
    lr, batch_size = 0.01, 32
    model, u, i, r = small_problem("identity", seed=3, user_columns=True)
    model.requires_grad_(False)
    models = [copy.deepcopy(model) for _ in range(2)]
    for m in models:
        run = numba_engine.NumbaEngine(
            m, LazyAdam(m, lr), feature_reg(m, u, i, 0.05, 0.5), batch_size, u, i, r
        )
        for seed in range(2):
            run.epoch(torch.randperm(len(r), generator=torch.Generator().manual_seed(seed)), 7)
        run.catch_up_all()
    for name in ("v", "w", "w0"):
        assert torch.equal(getattr(models[0], name), getattr(models[1], name))


@pytest.mark.parametrize("sums", ["numba", "torch"])
def test_evaluation_equals_predict(sums, monkeypatch):
    """Both ways of summing the errors (numba on CPU, torch on any other device) give
    model.predict's RMSE and MAE."""
    if sums == "torch":  # the path a GPU takes, here on CPU tensors
        torch_sums = partial(validation._error_sums_torch, chunk=64)
        monkeypatch.setattr(validation, "_error_sums_numba", torch_sums)
    model, u, i, r = small_problem("sigmoid")
    rmse, mae = evaluate_rmse_mae(model, u, i, r, chunk=64)
    err = (model.predict(u.long(), i.long()) - r).double()
    assert rmse == pytest.approx(float(err.square().mean().sqrt()), rel=1e-5)
    assert mae == pytest.approx(float(err.abs().mean()), rel=1e-5)


def test_benchmark_runs_on_a_tiny_synthetic_set(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "train_speed.py"),
        "--work",
        str(tmp_path),
        "--ratings",
        "20000",
        "--users",
        "300",
        "--movies",
        "200",
        "--batch-size",
        "4096",
        "--epochs",
        "2",
        "--notebook-steps",
        "2",
        "--factors",
        "8",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio fmstore / notebook" in proc.stdout and "| cached |" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_benchmark_without_cuda_says_so(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "train_speed.py"),
        "--device",
        "cuda",
        "--work",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr
