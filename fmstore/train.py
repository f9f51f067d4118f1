"""Training loop: deterministic split, minibatch Adam on device-resident tensors, early stopping.

All ratings live on the training device as index tensors; an epoch is one random permutation and a
loop over slices of it, so there is no DataLoader and no per-sample Python work.

Regularisation is per occurrence, as in SGD matrix factorisation: each batch penalises the squared
(x-weighted) parameters of the features it touches, already gathered for the forward pass, so a
parameter's penalty grows with how often it is seen and a rarely seen one is not crushed.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from fmstore.config import TrainConfig
from fmstore.datasets import Dataset, Ratings
from fmstore.errors import ConfigError
from fmstore.features import EncodedRatings, Vocabulary, encode, item_rows, user_rows
from fmstore.model import FactorizationMachine


@dataclass
class EpochStats:
    epoch: int
    train_rmse: float
    valid_rmse: float
    seconds: float
    lr: float


@dataclass
class TrainResult:
    model: FactorizationMachine
    vocab: Vocabulary
    history: list[EpochStats]
    best_epoch: int
    metrics: dict  # valid_rmse, valid_mae, (test_rmse, test_mae), n_train, n_valid, seconds
    train_ratings: Ratings  # the ratings the model saw (needed to exclude seen movies later)
    valid_ratings: Ratings
    device: str


ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def split_indices(n: int, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random split: same (n, fraction, seed) -> same rows, on any machine."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"--valid-fraction {valid_fraction} must be in [0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = int(round(n * valid_fraction))
    return np.sort(order[n_valid:]), np.sort(order[:n_valid])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


def _tensors(enc: EncodedRatings, device: torch.device):
    return (
        torch.as_tensor(enc.user, device=device),
        torch.as_tensor(enc.item, device=device),
        torch.as_tensor(enc.rating, device=device),
    )


@torch.no_grad()
def evaluate_rmse_mae(model: FactorizationMachine, users, items, ratings, chunk: int = 1 << 18) -> tuple[float, float]:
    if len(ratings) == 0:
        return float("nan"), float("nan")
    sq, ab = 0.0, 0.0
    for s in range(0, len(ratings), chunk):
        err = model.predict(users[s : s + chunk], items[s : s + chunk]) - ratings[s : s + chunk]
        sq += float(err.double().square().sum())
        ab += float(err.double().abs().sum())
    return math.sqrt(sq / len(ratings)), ab / len(ratings)


def train(
    dataset: Dataset,
    config: TrainConfig,
    *,
    test_ratings: Ratings | None = None,
    progress: ProgressFn | None = None,
) -> TrainResult:
    check_config(config)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    started = time.perf_counter()

    train_idx, valid_idx = split_indices(len(dataset.ratings), config.valid_fraction, config.seed)
    train_ratings, valid_ratings = dataset.ratings.take(train_idx), dataset.ratings.take(valid_idx)
    vocab = Vocabulary.build(train_ratings, dataset.movies, config.fields)
    model = FactorizationMachine(
        vocab.n_features,
        config.factors,
        user_rows(vocab),
        item_rows(vocab, dataset.movies),
        link=config.link,
        rating_range=(config.rating_min, config.rating_max),
        init_std=config.init_std,
    ).to(device)
    with torch.no_grad():  # start from the mean rating so early epochs learn structure, not the offset
        mean = float(train_ratings.rating.mean())
        model.w0.fill_(_inverse_link(mean, config.link))

    tr_u, tr_i, tr_r = _tensors(encode(train_ratings, vocab, dataset.movies), device)
    va_u, va_i, va_r = _tensors(encode(valid_ratings, vocab, dataset.movies), device)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.lr_milestones), config.lr_gamma)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    history: list[EpochStats] = []
    best_rmse, best_epoch, best_state, stale = float("inf"), 0, None, 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_rmse = _run_epoch(model, optimizer, tr_u, tr_i, tr_r, config, generator, progress, epoch)
        scheduler.step()
        valid_rmse, _ = evaluate_rmse_mae(model, va_u, va_i, va_r)
        history.append(EpochStats(epoch, train_rmse, valid_rmse, time.perf_counter() - t0, lr))
        if progress:
            progress(f"epoch {epoch}: train {train_rmse:.4f} valid {valid_rmse:.4f}", epoch, config.epochs)
        if len(va_r) == 0 or valid_rmse < best_rmse:
            best_rmse, best_epoch, stale = valid_rmse, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break

    model.load_state_dict(best_state)
    valid_rmse, valid_mae = evaluate_rmse_mae(model, va_u, va_i, va_r)
    metrics = {
        "valid_rmse": valid_rmse,
        "valid_mae": valid_mae,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "n_train": len(train_ratings),
        "n_valid": len(valid_ratings),
    }
    if test_ratings is not None:
        te_u, te_i, te_r = _tensors(encode(test_ratings, vocab, dataset.movies), device)
        metrics["test_rmse"], metrics["test_mae"] = evaluate_rmse_mae(model, te_u, te_i, te_r)
        metrics["n_test"] = len(test_ratings)
    metrics["train_seconds"] = time.perf_counter() - started
    return TrainResult(model.cpu(), vocab, history, best_epoch, metrics, train_ratings, valid_ratings, str(device))


def _run_epoch(model, optimizer, users, items, ratings, config, generator, progress, epoch) -> float:
    model.train()
    n = len(ratings)
    order = torch.randperm(n, generator=generator, device=ratings.device)
    sq_sum = 0.0
    for s in range(0, n, config.batch_size):
        batch = order[s : s + config.batch_size]
        u, i, r = users[batch], items[batch], ratings[batch]
        loss, sq = _loss(model, u, i, r, config.weight_decay)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sq_sum += float(sq)
    return math.sqrt(sq_sum / max(n, 1))


def _loss(model: FactorizationMachine, u, i, r, reg: float):
    """Mean squared error + L2 on the weights this batch touched; returns (loss, batch SSE)."""
    p, b_u, pen_u = _side_per_row(model, model.user_index, model.user_weight, u)
    q, b_i, pen_i = _side_per_row(model, model.item_index, model.item_weight, i)
    err = model.apply_link(model.w0 + b_u + b_i + (p * q).sum(-1)) - r
    sse = err.square().sum()
    loss = (sse + reg * (pen_u.sum() + pen_i.sum())) / len(r)
    return loss, sse.detach()


def _side_per_row(model, index, weight, rows):
    """side_terms for each entry of `rows`, computed once per distinct row: popular movies and
    active users recur within a batch, so this does a fraction of the gather and multiply work.
    The penalty stays per occurrence (indexed back to the batch)."""
    distinct, back = torch.unique(rows, return_inverse=True)
    vector, bias, penalty = model.side_terms(index[distinct], weight[distinct])
    return vector[back], bias[back], penalty[back]


def _inverse_link(rating: float, link: str) -> float:
    if link == "sigmoid":
        x = min(max(rating / 5.5, 1e-4), 1 - 1e-4)
        return math.log(x / (1 - x))
    return rating


def check_config(config: TrainConfig) -> None:
    checks = [
        (config.epochs >= 1, f"--epochs {config.epochs} must be at least 1"),
        (config.factors >= 1, f"--factors {config.factors} must be at least 1"),
        (config.lr > 0, f"--lr {config.lr} must be positive"),
        (config.batch_size >= 1, f"--batch-size {config.batch_size} must be at least 1"),
        (config.weight_decay >= 0, f"--weight-decay {config.weight_decay} must not be negative"),
        (config.link in ("identity", "sigmoid"), f"--link {config.link!r}: use identity or sigmoid"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
