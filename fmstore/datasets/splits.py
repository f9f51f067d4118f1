"""Deterministic train/validation splits of a dataset's ratings, in plain NumPy.

Training, evaluation and the benchmarks must agree on which rows were held out, and evaluation
and the query path must not import torch to find out: so the split lives here, beside the data.
"""

from __future__ import annotations

import numpy as np

from fmstore.errors import ConfigError


def split_indices(n: int, valid_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random split: same (n, fraction, seed) -> same rows, on any machine."""
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"--valid-fraction {valid_fraction} must be in [0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_valid = int(round(n * valid_fraction))
    valid = np.zeros(n, bool)  # (a mask instead of sorting: the same sorted rows, faster)
    valid[order[:n_valid]] = True
    return np.flatnonzero(~valid), np.flatnonzero(valid)


def last_by_time(user_id: np.ndarray, timestamp: np.ndarray, fraction: float) -> np.ndarray:
    """Mask of each user's last `fraction` of ratings by time (rounded per user; ties in time
    broken by position): the time-based split, where the future is predicted from the past."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"fraction {fraction} must be in [0, 1)")
    order = np.lexsort((timestamp, user_id))
    users = user_id[order]
    _, start, count = np.unique(users, return_index=True, return_counts=True)
    rank = np.arange(len(users)) - np.repeat(start, count)
    n_last = np.round(fraction * count).astype(int)
    is_last = np.zeros(len(user_id), bool)
    is_last[order] = rank >= np.repeat(count - n_last, count)
    return is_last


# The train/validation splits `--split` names (split_rows).
SPLITS = ("random", "time", "leave-last-n", "users")


def split_rows(
    kind: str,
    user_id: np.ndarray,
    timestamp: np.ndarray,
    valid_fraction: float,
    seed: int,
    last_n: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows) of a split, deterministic:
    random: `valid_fraction` of the ratings at random (split_indices);
    time: each user's last `valid_fraction` of ratings by time (last_by_time);
    leave-last-n: each user's last `last_n` ratings by time (users with more than `last_n`);
    users: every rating of `valid_fraction` of the users, chosen at random (people the model
    never saw: their figures are an unknown user's)."""
    if kind not in SPLITS:
        raise ConfigError(f"--split {kind!r}: use one of {', '.join(SPLITS)}")
    if not 0.0 <= valid_fraction < 1.0:
        raise ConfigError(f"--valid-fraction {valid_fraction} must be in [0, 1)")
    n = len(user_id)
    if kind == "random" or valid_fraction == 0:
        return split_indices(n, valid_fraction, seed)
    if kind == "time":
        held = last_by_time(user_id, timestamp, valid_fraction)
    elif kind == "leave-last-n":
        if last_n < 1:
            raise ConfigError(f"--split-n {last_n} must be at least 1")
        held = _last_n(user_id, timestamp, last_n)
    else:
        users = np.unique(user_id)
        order = np.random.default_rng(seed).permutation(len(users))
        chosen = users[order[: int(round(len(users) * valid_fraction))]]
        held = np.isin(user_id, chosen)
    return np.flatnonzero(~held), np.flatnonzero(held)


def _last_n(user_id: np.ndarray, timestamp: np.ndarray, n: int) -> np.ndarray:
    """Mask of each user's last n ratings by time, for users with more than n."""
    order = np.lexsort((timestamp, user_id))
    users = user_id[order]
    _, start, count = np.unique(users, return_index=True, return_counts=True)
    rank = np.arange(len(users)) - np.repeat(start, count)
    from_end = np.repeat(count, count) - rank
    held = np.zeros(len(user_id), bool)
    held[order] = (from_end <= n) & (np.repeat(count, count) > n)
    return held


def split_of(ratings, config) -> tuple[np.ndarray, np.ndarray]:
    """The split a TrainConfig (or a manifest's config dict) trains on: split_rows with its
    split, valid_fraction, seed and split_n (a run saved before `split` existed: random)."""
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    return split_rows(
        get("split", "random") or "random",
        ratings.user_id,
        ratings.timestamp,
        get("valid_fraction"),
        get("seed"),
        get("split_n", 1) or 1,
    )
