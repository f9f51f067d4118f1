"""The training loop: deterministic split, one epoch after another on device-resident tensors,
validation after each, early stopping on the best validation RMSE.

All ratings live on the training device as int32/float32 tensors; an epoch is one random
permutation and a loop over slices of it, so there is no DataLoader and no per-sample Python work.

Loss: mean squared error of the linked score, plus an L2 penalty on the (x-weighted) parameters of
the features each rating touches, with feature j's coefficient weight_decay + prior_reg / n_j
(`feature_reg`): weight_decay per occurrence, as in SGD matrix factorisation, and prior_reg per
epoch whatever the feature's frequency, a Gaussian prior that keeps a movie with one enthusiastic
rating from looking like the best movie there is.

The step does not use autograd: FM gradients have closed forms and the optimizer is Adam applied
row by row (lazy_adam.py), which is dense Adam computed sparsely. Two engines run that step
(`make_engine` chooses): fused numba kernels on CPU (numba_engine.py) and plain torch index ops on
any device (torch_engine.py; the reference, and the GPU path).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Callable, Protocol

import torch

from fmstore.config import TrainConfig
from fmstore.datasets import Dataset, Ratings
from fmstore.datasets.splits import split_of
from fmstore.errors import ConfigError
from fmstore.features import (
    EncodedRatings,
    Vocabulary,
    encode,
    item_rows,
    rated_rows,
    user_rows,
)
from fmstore.model import FactorizationMachine
from fmstore.serving import link_inverse
from fmstore.threads import serial_below
from fmstore.train.checks import check_config, resolve_device
from fmstore.train.defaults import resolve_defaults
from fmstore.train.lazy_adam import CATCH_UP_EVERY, LazyAdam
from fmstore.train.regularisation import config_reg
from fmstore.train.torch_engine import TorchEngine
from fmstore.train.validation import evaluate_rmse_mae

if TYPE_CHECKING:
    from fmstore.train.distributed import Parallel

ENGINES = ("auto", "numba", "torch")


@dataclass
class EpochStats:
    """One epoch of training: train and validation RMSE, seconds, learning rate."""

    epoch: int
    train_rmse: float
    valid_rmse: float
    seconds: float  # the whole epoch: shuffle, training pass, catch-up, validation
    lr: float


@dataclass
class TrainResult:
    """What train() returns: the model, its vocabulary, the history, the best epoch, metrics, the
    train/validation ratings and the device used."""

    model: FactorizationMachine
    vocab: Vocabulary
    history: list[EpochStats]
    best_epoch: int
    metrics: dict  # valid_rmse, valid_mae, (test_rmse, test_mae), n_train, n_valid, seconds
    train_ratings: Ratings  # the ratings the model saw (needed to exclude seen movies later)
    valid_ratings: Ratings
    device: str
    ranking: object | None = None  # ranking.RankingModel on the same users and movies
    refit: bool = False  # trained on every rating for the validated number of epochs
    # the config as trained: batch_size and lr filled in (metrics["defaults"] says how)
    config: TrainConfig | None = None


ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)
# (epoch, ratings done in this epoch, ratings per epoch): called every few batches
BatchProgressFn = Callable[..., None]  # (epoch, done, total=...)
BATCH_REPORTS_PER_EPOCH = 200  # how often an epoch reports at most


class TrainingEngine(Protocol):
    """What TorchEngine and NumbaEngine both are (constructed with the arguments of make_engine)."""

    def epoch(self, order: torch.Tensor, catch_up_every: int) -> float:
        """One pass over the training ratings in `order`; the sum of squared errors."""

    def catch_up_all(self) -> None:
        """Bring every row's lazy Adam state up to the current step."""


def train(
    dataset: Dataset,
    config: TrainConfig,
    *,
    test_ratings: Ratings | None = None,
    progress: ProgressFn | None = None,
    engine: str = "auto",
    batch_progress: BatchProgressFn | None = None,
    parallel: Parallel | None = None,
) -> TrainResult:
    """Train on `dataset`. `engine`: auto (numba on CPU when it can, else torch), numba or
    torch (see make_engine). `progress` hears after each epoch, `batch_progress` every few
    batches within one. `parallel`: this process's place in a data-parallel run
    (distributed.py); then only rank 0 validates and its result is the one to save."""
    config = config.for_dataset(dataset)  # (pipeline.run has done it; a direct call too)
    check_config(config)
    device = resolve_device(config.device)
    if parallel is not None:
        device = parallel.device_for(device)
    started = time.perf_counter()
    _release_parser_memory()

    train_idx, valid_idx = split_of(dataset.ratings, config)
    train_ratings, valid_ratings = dataset.ratings.take(train_idx), dataset.ratings.take(valid_idx)
    del train_idx, valid_idx
    config, chosen = resolve_defaults(config, len(train_ratings))
    vocab, model, train_rows, valid_rows = prepare(
        dataset, train_ratings, valid_ratings, config, device
    )

    history, pass_seconds, best_epoch = [], [], 0  # implicit-only data: no rating model
    if config.rating_model:
        history, pass_seconds, best_epoch = fit_epochs(
            model,
            config,
            device,
            engine,
            train_rows,
            valid_rows,
            progress,
            batch_progress,
            parallel,
        )

    validates = parallel is None or parallel.rank == 0
    nan = (float("nan"), float("nan"))
    valid_rmse, valid_mae = evaluate_rmse_mae(model, *valid_rows) if validates else nan
    metrics = {
        "valid_rmse": valid_rmse,
        "valid_mae": valid_mae,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "n_train": len(train_ratings),
        "n_valid": len(valid_ratings),
        "epoch_train_seconds": [round(x, 3) for x in pass_seconds],
        "defaults": chosen,
    }
    if parallel is not None:
        metrics["distributed"] = parallel.describe()
    if test_ratings is not None and validates:
        test_rows = rating_tensors(encode(test_ratings, vocab, dataset.movies), device)
        metrics["test_rmse"], metrics["test_mae"] = evaluate_rmse_mae(model, *test_rows)
        metrics["n_test"] = len(test_ratings)
    ranking = (
        fit_ranking_model(train_ratings, vocab, dataset, config, progress) if validates else None
    )
    if ranking is not None:
        metrics["ranking_seconds"] = round(ranking.seconds, 3)
    metrics["train_seconds"] = time.perf_counter() - started
    return TrainResult(
        model.cpu(),
        vocab,
        history,
        best_epoch,
        metrics,
        train_ratings,
        valid_ratings,
        str(device),
        ranking,
        config=config,
    )


def fit_ranking_model(
    ratings: Ratings, vocab, dataset: Dataset, config: TrainConfig, progress, init=None
):
    """The ranking model of `ratings` when the config asks for one (ranking.py; numba kernels);
    `progress` hears after each of its sweeps. `init`: a model to warm start from, given a
    quarter of the sweeps, at least 2 (the refit: benchmarks/refit_warm.py measured 2 warm
    sweeps from the validated model as good as 8 from scratch on 3 splits of ml-latest-small,
    NDCG@10 higher on all 3, Recall@10 within 0.002; at ml-latest size a sweep is ~30 s)."""
    if not config.ranking or len(ratings) == 0:
        return None
    from fmstore.train.ranking import fit_ratings

    ranking_config = config.ranking_config
    if init is not None:
        sweeps = max(2, ranking_config.iterations // 4)
        ranking_config = dataclasses.replace(ranking_config, iterations=sweeps)
    if progress:
        progress("fitting the ranking model", 0, ranking_config.iterations)
    on_gpu = resolve_device(config.device).type == "cuda"
    return fit_ratings(
        ratings,
        vocab,
        dataset.movies,
        ranking_config,
        seed=config.seed,
        progress=progress,
        init=init,
        torch_device="cuda" if on_gpu else None,  # the rows' CG half steps in torch there
    )


def prepare(dataset: Dataset, train_ratings: Ratings, valid_ratings: Ratings, config, device):
    """The one setup of every fit (train, refit, each point of tune): (vocabulary of
    `train_ratings`, a fresh model seeded by the config, training rows, validation rows), the
    rows as tensors on `device`."""
    torch.manual_seed(config.seed)
    vocab = Vocabulary.build(train_ratings, dataset.movies, config.fields, dataset.users)
    model = new_model(vocab, dataset, train_ratings, config, device)
    train_rows = rating_tensors(encode(train_ratings, vocab, dataset.movies), device)
    valid_rows = rating_tensors(encode(valid_ratings, vocab, dataset.movies), device)
    return vocab, model, train_rows, valid_rows


def new_model(
    vocab: Vocabulary, dataset: Dataset, ratings: Ratings, config: TrainConfig, device
) -> FactorizationMachine:
    """A freshly initialised FM on `device` for training on `ratings`, its w0 at their mean
    rating so that early epochs learn structure, not the offset."""
    model = FactorizationMachine(
        vocab.n_features,
        config.factors,
        user_rows(vocab, dataset.users),
        item_rows(vocab, dataset.movies),
        link=config.link,
        rating_range=(config.rating_min, config.rating_max),
        init_std=config.init_std if config.rating_model else 0.0,  # (untrained: all zeros)
        rated=rated_rows(vocab, ratings, dataset.movies),
    ).to(device)
    model.requires_grad_(False)  # gradients are computed in closed form, not by autograd
    offsets = vocab.offsets()
    model.field_spans = {name: (offsets[name], size) for name, size in vocab.sizes().items()}
    with torch.no_grad():
        model.w0.fill_(float(link_inverse(float(ratings.rating.mean()), config.link)))
    return model


def fit_epochs(
    model,
    config: TrainConfig,
    device,
    engine: str,
    train_rows,
    valid_rows,
    progress,
    on_batches,
    parallel: Parallel | None = None,
):
    """The epochs, stopped early after `patience` epochs without a better valid RMSE; leaves
    `model` with the best epoch's weights. Returns (history, seconds of each training pass,
    best epoch). Data-parallel: rank 0 validates and tells the others the RMSE, so that all
    stop at the same epoch and keep the same weights."""
    if config.batch_size is None or config.lr is None:  # a caller that did not resolve them
        config, _ = resolve_defaults(config, len(train_rows[2]))
    with serial_below(config.batch_size):
        return _fit_epochs(
            model, config, device, engine, train_rows, valid_rows, progress, on_batches, parallel
        )


def _fit_epochs(
    model, config, device, engine, train_rows, valid_rows, progress, on_batches, parallel
):
    optimizer = LazyAdam(model, config.lr)
    if parallel is None:
        runner = make_engine(engine, model, optimizer, config, device, *train_rows)
    else:
        runner = parallel.engine(model, optimizer, config, *train_rows)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    n_train, n_valid = len(train_rows[2]), len(valid_rows[2])

    history: list[EpochStats] = []
    pass_seconds: list[float] = []  # per epoch: shuffle + training pass, without validation
    best = _BestEpoch(config.patience)
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        optimizer.lr = lr = _lr_at(config, epoch)
        # (int32 draws the same permutation as int64, in less memory)
        index_type = torch.int32 if n_train < 2**31 else torch.int64
        order = torch.randperm(n_train, generator=generator, device=device, dtype=index_type)
        report = None if on_batches is None else partial(on_batches, epoch, total=n_train)
        sse = _epoch(runner, order, config.batch_size, report)
        train_rmse = math.sqrt(sse / max(n_train, 1))
        del order
        runner.catch_up_all()  # every row as dense Adam would have it now
        if device.type == "cuda":
            torch.cuda.synchronize()
        pass_seconds.append(time.perf_counter() - t0)
        if parallel is None:
            valid_rmse, _ = evaluate_rmse_mae(model, *valid_rows)
        else:
            validated = evaluate_rmse_mae(model, *valid_rows)[0] if parallel.rank == 0 else 0.0
            valid_rmse = parallel.from_rank0(validated)
        _check_converging(epoch, train_rmse, valid_rmse if n_valid else 0.0, config)
        history.append(EpochStats(epoch, train_rmse, valid_rmse, time.perf_counter() - t0, lr))
        if progress and (parallel is None or parallel.rank == 0):
            message = f"epoch {epoch}: train {train_rmse:.4f}"
            if n_valid:  # the refit has no validation ratings: no "valid nan"
                message += f" valid {valid_rmse:.4f}"
            progress(message, epoch, config.epochs)
        if best.stop_after(epoch, valid_rmse, model, always_keep=n_valid == 0):
            break
    if parallel is not None:
        parallel.check_identical(model, optimizer)
    del optimizer, runner  # the Adam state: free it before the best weights come back
    model.load_state_dict(best.state)
    return history, pass_seconds, best.epoch


class DivergedError(ConfigError):
    """The fit's error stopped being a finite number (tune records such a point as lost)."""


def _check_converging(epoch: int, train_rmse: float, valid_rmse: float, config) -> None:
    """A fit whose error is no longer a finite number has diverged (a learning rate or a
    regularisation far too large): stop at once with what to change, not after the last epoch."""
    if not (math.isfinite(train_rmse) and math.isfinite(valid_rmse)):
        raise DivergedError(
            f"the fit diverged in epoch {epoch} (RMSE {train_rmse:g}): --lr {config.lr:g}, "
            f"--weight-decay {config.weight_decay:g}, --prior-reg {config.prior_reg:g}; "
            "use a lower --lr or a smaller regularisation"
        )


def _epoch(runner, order, batch_size: int, report: Callable[[int], None] | None) -> float:
    """One epoch's pass; with `report`, in slices of whole batches, reporting after each. The
    engines step batch by batch and count steps across calls, so the slices train exactly what
    one call would."""
    if report is None:
        return runner.epoch(order, CATCH_UP_EVERY)
    n_batches = -(-len(order) // batch_size)
    per_slice = batch_size * max(1, -(-n_batches // BATCH_REPORTS_PER_EPOCH))
    sse = 0.0
    for start in range(0, len(order), per_slice):
        sse += runner.epoch(order[start : start + per_slice], CATCH_UP_EVERY)
        report(min(start + per_slice, len(order)))
    return sse


class _BestEpoch:
    """Early stopping: keeps a copy of the weights of the epoch with the lowest valid RMSE and
    says when `patience` epochs in a row have not beaten it."""

    def __init__(self, patience: int):
        self.patience = patience
        self.rmse, self.epoch, self.state, self.stale = float("inf"), 0, None, 0

    def stop_after(self, epoch: int, valid_rmse: float, model, always_keep: bool) -> bool:
        """Record `epoch`; True when training should stop. `always_keep`: no validation set,
        so the latest epoch is the best one."""
        if always_keep or valid_rmse < self.rmse:
            self.rmse, self.epoch, self.stale = valid_rmse, epoch, 0
            self.state = {k: t.detach().clone() for k, t in model.state_dict().items()}
            return False
        self.stale += 1
        return self.stale >= self.patience


# ---- the engine -------------------------------------------------------------------------------


def make_engine(
    name: str, model, optimizer, config: TrainConfig, device: torch.device, users, items, ratings
) -> TrainingEngine:
    """The training engine `name` asks for: "numba" (CPU only), "torch", or "auto": numba on CPU
    when it can train this model (numba_engine.cannot_train), torch otherwise (and always on a
    GPU)."""
    reg_scale = config_reg(model, users, items, config)
    if name not in ENGINES:
        raise ConfigError(f"engine {name!r}: use one of {', '.join(ENGINES)}")
    if name in ("auto", "numba") and device.type == "cpu":
        from fmstore.train import numba_engine  # numba is slow to import: only when used

        reason = numba_engine.cannot_train(model)
        if reason is None:
            return numba_engine.NumbaEngine(
                model, optimizer, reg_scale, config.batch_size, users, items, ratings
            )
        if name == "numba":
            raise ConfigError(f"the numba engine cannot run: {reason}")
    elif name == "numba":
        raise ConfigError("the numba engine runs on CPU only; use --device cpu or engine torch")
    return TorchEngine(model, optimizer, reg_scale, config.batch_size, users, items, ratings)


# ---- checks and small helpers -----------------------------------------------------------------


def rating_tensors(enc: EncodedRatings, device: torch.device):
    """(user rows, movie rows, ratings) of encoded ratings as tensors on `device`."""
    return (
        torch.as_tensor(enc.user, device=device),
        torch.as_tensor(enc.item, device=device),
        torch.as_tensor(enc.rating, device=device),
    )


def _release_parser_memory() -> None:
    """pyarrow's allocator keeps what the CSV parser freed (about 1.3 GB after reading ml-latest);
    hand it back to the OS before training allocates its own, so the two do not add up."""
    try:
        import pyarrow

        pyarrow.default_memory_pool().release_unused()
    except Exception:  # pragma: no cover - an allocator without it: nothing to release
        pass


def _lr_at(config: TrainConfig, epoch: int) -> float:
    """The lr of `epoch` (1-based): lr x gamma for each milestone already passed (MultiStepLR)."""
    passed = sum(1 for m in config.lr_milestones if m <= epoch - 1)
    return config.lr * config.lr_gamma**passed
