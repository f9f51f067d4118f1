"""Training: the loop (loop.py), the row-wise Adam it uses (lazy_adam.py) and the two engines
that run its step, torch index ops on any device (torch_engine.py) and fused numba kernels on CPU
(numba_engine.py, imported only when used: numba is slow to import); the search for
factors and regularisation (tune.py), the refit (refit.py) and the ranking model (ranking.py).

`from fmstore.train import train, split_indices, ...` keeps working for the callers of the old
single module.
"""

from fmstore.datasets.splits import split_indices
from fmstore.train.checks import check_memory, free_memory
from fmstore.train.lazy_adam import ADAM_BETAS, ADAM_EPS, CATCH_UP_EVERY, LazyAdam
from fmstore.train.loop import (
    ENGINES,
    EpochStats,
    ProgressFn,
    TrainingEngine,
    TrainResult,
    check_config,
    fit_epochs,
    make_engine,
    new_model,
    prepare,
    rating_tensors,
    resolve_device,
    train,
)
from fmstore.train.refit import refit
from fmstore.train.regularisation import feature_reg
from fmstore.train.torch_engine import TorchEngine
from fmstore.train.tune import TuneResult, search_split, tune
from fmstore.train.validation import evaluate_rmse_mae

__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "CATCH_UP_EVERY",
    "ENGINES",
    "EpochStats",
    "LazyAdam",
    "NumbaEngine",
    "ProgressFn",
    "TorchEngine",
    "TrainResult",
    "TrainingEngine",
    "TuneResult",
    "check_config",
    "check_memory",
    "free_memory",
    "fit_epochs",
    "new_model",
    "prepare",
    "rating_tensors",
    "evaluate_rmse_mae",
    "feature_reg",
    "make_engine",
    "refit",
    "resolve_device",
    "search_split",
    "split_indices",
    "train",
    "tune",
]


def __getattr__(name: str):
    """`NumbaEngine` on first use, so that importing fmstore.train does not import numba."""
    if name == "NumbaEngine":
        from fmstore.train.numba_engine import NumbaEngine

        return NumbaEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
