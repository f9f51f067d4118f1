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
