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
