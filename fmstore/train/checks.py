"""Checks before training: a config that cannot work, and the device asked for, refused with a
message naming the flag."""

from __future__ import annotations

import math

import numpy as np
import torch

from fmstore.config import TrainConfig
from fmstore.datasets.splits import SPLITS
from fmstore.errors import ConfigError, EnvError
from fmstore.serving import LINKS


def check_config(config: TrainConfig) -> None:
    """Refuse a config that cannot work, with a message naming the flag."""
    checks = [
        (config.epochs >= 1, f"--epochs {config.epochs} must be at least 1"),
        (config.factors >= 1, f"--factors {config.factors} must be at least 1"),
        (
            config.lr is None or (config.lr > 0 and math.isfinite(config.lr)),
            f"--lr {config.lr} must be a positive, finite number",
        ),
        (
            all(
                math.isfinite(x) for x in (config.weight_decay, config.prior_reg, config.rated_reg)
            ),
            "--weight-decay, --prior-reg and --rated-reg must be finite numbers",
        ),
        (
            0 <= config.seed < 2**32,
            f"--seed {config.seed}: use a whole number from 0 to {2**32 - 1}",
        ),
        (
            config.batch_size is None or config.batch_size >= 1,
            f"--batch-size {config.batch_size} must be at least 1",
        ),
        (config.weight_decay >= 0, f"--weight-decay {config.weight_decay} must not be negative"),
        (config.prior_reg >= 0, f"--prior-reg {config.prior_reg} must not be negative"),
        (config.rated_reg >= 0, f"--rated-reg {config.rated_reg} must not be negative"),
        (config.link in LINKS, f"--link {config.link!r}: use identity or sigmoid"),
        (config.split in SPLITS, f"--split {config.split!r}: use one of {', '.join(SPLITS)}"),
        (config.split_n >= 1, f"--split-n {config.split_n} must be at least 1"),
        (
            0.0 <= config.valid_fraction < 1.0,
            f"--valid-fraction {config.valid_fraction} must be in [0, 1)",
        ),
        (
            config.ranking_config.factors >= 1,
            f"--ranking-factors {config.ranking_config.factors} must be at least 1",
        ),
        (
            config.ranking_config.iterations >= 1,
            f"--ranking-iterations {config.ranking_config.iterations} must be at least 1",
        ),
        (
            config.device in ("auto", "cpu", "cuda"),
            f"--device {config.device!r}: use auto, cpu or cuda",
        ),
    ]
    for name, multiplier in config.field_reg.items():
        shown = f"--field-reg {name}={multiplier}"
        checks.append((name in config.fields, f"{shown}: {name} is not one of --fields"))
        checks.append((multiplier >= 0, f"{shown} must not be negative"))
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def resolve_device(name: str) -> torch.device:
    """'auto' | 'cpu' | 'cuda' -> a torch device; ConfigError when CUDA is asked for but absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: use auto, cpu or cuda")
    return torch.device(name)


# Weights, their gradients and Adam's two moments, in float32; half of what is free is the most
# a training may plan on (activations, the data and the OS need the rest).
_BYTES_PER_WEIGHT = 4 * 4
# The ratings as a training holds them beside the model: the dataset's arrays (int64 user, movie
# and timestamp, float32 rating: 28 B), the split's copies of them and the encoded int32 rows
# (docs/scaling.md: ~3x the arithmetic was measured on the host).
_DATA_BYTES_PER_RATING = 3 * 28
# The ranking model's fit (train/ranking.py, docs/scaling.md "The ranking model's fit"): per
# rating its two CSR copies (int32 column + float32 weight each), the users' feature pairs
# (6 B each, 1.35 a rating at 27.75M) and the item step's plan for popular movies
# (ranking_blocks: 6 B per rating of a movie with over 512 raters plus 8 B per distinct rater of
# its group: 5.1 B per rating at 27.75M; 8 counted); per user its d floats and two float32 rows
# over ~48 genre/year columns (the feature step's Y, K); per movie about six rows of d floats
# (M, S, Q, the item step's residuals, temporaries).
_RANKING_BYTES_PER_RATING = 32


def ranking_bytes(n_ratings: int, n_users: int, n_movies: int, factors: int) -> int:
    """Bytes the ranking model's fit holds on top of the data (its model in docs/scaling.md)."""
    d = factors + 1
    return n_ratings * _RANKING_BYTES_PER_RATING + n_users * (4 * d + 8 * 48) + n_movies * 24 * d


def check_memory(dataset, config: TrainConfig, device: torch.device) -> None:
    """Refuse, before allocating, a training that cannot fit in memory (EnvError): the FM's tables
    with Adam's state on `device`, and on the host the ratings and the ranking model's fit."""
    n_users, n_movies = len(np.unique(dataset.ratings.user_id)), len(dataset.movies)
    n_features = n_users + n_movies + 1_000  # + genres and years, generously
    fm = n_features * (config.factors + 1) * _BYTES_PER_WEIGHT
    free = free_memory(device)
    if free is not None and fm > free // 2:
        raise EnvError(
            f"out of memory: --factors {config.factors} needs about {fm / 2**30:,.1f} GiB for "
            f"{n_features:,} features on {device}, {free / 2**30:,.1f} GiB are free; "
            "use fewer --factors"
        )
    n_ratings = len(dataset.ratings)
    host = n_ratings * _DATA_BYTES_PER_RATING + (fm if device.type == "cpu" else 0)
    rank_k = config.ranking_config.factors
    ranking = ranking_bytes(n_ratings, n_users, n_movies, rank_k) if config.ranking else 0
    free = free_memory(torch.device("cpu"))
    if free is not None and host + ranking > free:
        raise EnvError(
            f"out of memory: {n_ratings:,} ratings with --factors {config.factors}"
            + (f" and the ranking model (--ranking-factors {rank_k})" if ranking else "")
            + f" need about {(host + ranking) / 2**30:,.1f} GiB, {free / 2**30:,.1f} GiB are "
            "free; use fewer --factors"
            + (" or --ranking-factors, or --no-ranking" if ranking else "")
        )


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device`: GPU memory, or the machine's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    import psutil

    return int(psutil.virtual_memory().available)
