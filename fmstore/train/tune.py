"""The search behind `fmstore tune` and `fmstore train --tune`: the rating model's number of
factors and its two regularisation weights chosen by the data instead of fixed constants.

The defaults (TrainConfig) were tuned once on the seed-0 split of ml-latest-small. The search
fits the rating model alone (no ranking model, no refit) at each point of a small grid and keeps
the point with the lowest RMSE on an *inner* validation split carved from the training ratings
only: the validation split that `fmstore train` reports (and stops early on) is never looked at,
so its figure stays an honest estimate of the tuned model. On an inner split of ~10,000 ratings
the grid's neighbours differ by noise as often as by merit, so a point replaces the incumbent (the
values given, i.e. the defaults, then each stage's winner) only when its inner MSE is lower by
more than one standard error of the paired difference (choose()): measured over 5 random splits
and a time-based one (benchmarks/rmse_splits.py), the plain lowest inner RMSE chose worse than the
defaults on 3 of 6 splits; with the rule, never.

Large datasets: every fit of the search is a full training of the rating model, so above
`max_ratings` training ratings the search runs on a random sample of users (all their training
ratings) of about that many ratings; the values it finds are then those of the sample.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from fmstore.config import INNER_FRACTION, MAX_SEARCH_RATINGS, TrainConfig, TuneGrid
from fmstore.datasets import Dataset
from fmstore.datasets.splits import split_of
from fmstore.errors import ConfigError
from fmstore.train.checks import check_config, resolve_device
from fmstore.train.defaults import resolve_defaults
from fmstore.train.loop import DivergedError, ProgressFn, fit_epochs, new_model, prepare
from fmstore.train.validation import evaluate_rmse_mae

# The inner split's and the user sample's random streams: seeded by the run's seed, but never the
# same draws as its outer split.
_INNER_STREAM, _SAMPLE_STREAM = 0x7475, 0x6E65
_MAX_EXTRA_STEPS = 8  # stage 3: steps beyond the first of each field, all fields together


@dataclass
class SearchSplit:
    """Which of the dataset's ratings the search trains and validates on (positions in
    dataset.ratings), all inside the training part of the run's own split."""

    train_rows: np.ndarray
    valid_rows: np.ndarray
    n_outer_train: int  # the run's training ratings, the search's pool
    sampled_users: int | None  # users in the sample when the pool was larger than max_ratings
    n_users: int  # users in the pool


@dataclass
class PointResult:
    """One grid point: its values, the inner validation RMSE of its best epoch, that epoch."""

    factors: int
    weight_decay: float
    prior_reg: float
    inner_rmse: float
    best_epoch: int
    epochs_run: int
    seconds: float
    stage: int = 0  # staged search: 1 regularisation, 2 factors; 0 in a full grid; 3 per field
    # how many standard errors its inner MSE is below its stage's incumbent's (choose())
    gain_se: float | None = None
    field_reg: dict = dataclasses.field(default_factory=dict)  # TrainConfig.field_reg

    def values(self) -> dict:
        """{factors, weight_decay, prior_reg} of this point, and field_reg unless empty."""
        values = {
            "factors": self.factors,
            "weight_decay": self.weight_decay,
            "prior_reg": self.prior_reg,
        }
        return {**values, "field_reg": dict(self.field_reg)} if self.field_reg else values


@dataclass
class TuneResult:
    """The search: every point fitted, which one won, on what ratings."""

    grid: TuneGrid
    points: list[PointResult]
    best: int  # index into points
    staged: bool  # True: regularisation first, then factors; False: every combination
    split: SearchSplit
    seconds: float

    @property
    def chosen(self) -> dict:
        """{factors, weight_decay, prior_reg} of the best point."""
        return self.points[self.best].values()

    def apply(self, config: TrainConfig) -> TrainConfig:
        """`config` with the chosen values."""
        return dataclasses.replace(config, **self.chosen)

    def to_json(self) -> dict:
        """What `fmstore tune --json` prints and a tuned run's manifest keeps (metrics.tune)."""
        split = self.split
        return {
            "chosen": self.chosen,
            "inner_rmse": self.points[self.best].inner_rmse,
            "grid": self.grid.to_dict(),
            "search": "staged" if self.staged else "full",
            "points": [dataclasses.asdict(p) for p in self.points],
            "selection": "lowest RMSE on an inner split of the training ratings, if more "
            "than one standard error below the incumbent's (the given values, then each "
            "stage's winner)",
            "n_search_train": int(len(split.train_rows)),
            "n_search_valid": int(len(split.valid_rows)),
            "n_outer_train": split.n_outer_train,
            "sampled_users": split.sampled_users,
            "n_users": split.n_users,
            "seconds": round(self.seconds, 3),
        }


def search_split(
    dataset: Dataset,
    config: TrainConfig,
    inner_fraction: float = INNER_FRACTION,
    max_ratings: int = MAX_SEARCH_RATINGS,
) -> SearchSplit:
    """The search's ratings: the run's training part (split_indices with the config's
    valid_fraction and seed, as train() splits), sampled by user when larger than `max_ratings`,
    then split again at random, `inner_fraction` of it to validate on."""
    if not 0.0 < inner_fraction < 1.0:
        raise ConfigError(f"--inner-fraction {inner_fraction} must be between 0 and 1")
    if max_ratings < 1:
        raise ConfigError(f"--max-ratings {max_ratings} must be at least 1")
    outer_train, _ = split_of(dataset.ratings, config)
    users = dataset.ratings.user_id[outer_train]
    unique_users, per_user = np.unique(users, return_counts=True)
    pool, sampled = outer_train, None
    if len(outer_train) > max_ratings:
        rng = np.random.default_rng([config.seed, _SAMPLE_STREAM])
        order = rng.permutation(len(unique_users))
        enough = int(np.searchsorted(np.cumsum(per_user[order]), max_ratings)) + 1
        keep = unique_users[order[:enough]]
        pool, sampled = outer_train[np.isin(users, keep)], len(keep)
    rng = np.random.default_rng([config.seed, _INNER_STREAM])
    is_valid = np.zeros(len(pool), bool)
    is_valid[rng.permutation(len(pool))[: int(round(len(pool) * inner_fraction))]] = True
    if is_valid.all() or not is_valid.any():
        raise ConfigError(
            f"{len(pool)} training ratings are too few to tune on: the search needs some to "
            "train and some to validate"
        )
    return SearchSplit(
        pool[~is_valid], pool[is_valid], len(outer_train), sampled, len(unique_users)
    )


def tune(
    dataset: Dataset,
    config: TrainConfig,
    grid: TuneGrid | None = None,
    *,
    inner_fraction: float = INNER_FRACTION,
    max_ratings: int = MAX_SEARCH_RATINGS,
    full: bool = False,
    engine: str = "auto",
    progress: ProgressFn | None = None,
) -> TuneResult:
    """Fit the rating model of `config` on the search split (search_split) at the points of
    `grid` (TuneGrid() by default) and return them all with the best: the lowest inner validation
    RMSE, the earlier point on a tie, when it beats the incumbent by more than one standard
    error (choose(): the incumbent is the config's own values when the grid has them, then
    each stage's winner).

    Staged (the default): weight_decay x prior_reg at the grid's middle width, then the other
    widths at the regularisation chosen (9 + 2 fits for the default grid instead of 27; on
    ml-latest-small the width moves the RMSE by a few ten-thousandths where the regularisation
    moves it by hundredths). `full`: every combination. With `grid.field_steps`, stage 3 then
    walks each field's L2 multiplier (TrainConfig.field_reg) from the winner: each step fitted,
    a winning step repeated (at most _MAX_EXTRA_STEPS repeats in all). Epochs, patience, lr, batch size, link,
    seed and device are the config's; lr and batch size, when not given, follow the size of the
    search's training ratings as train() would."""
    grid = grid or TuneGrid()
    grid.check()
    check_config(config)
    started = time.perf_counter()
    split = search_split(dataset, config, inner_fraction, max_ratings)
    train_ratings = dataset.ratings.take(split.train_rows)
    valid_ratings = dataset.ratings.take(split.valid_rows)
    base, _ = resolve_defaults(config, len(train_ratings))
    device = resolve_device(config.device)
    vocab, _, train_rows, valid_rows = prepare(dataset, train_ratings, valid_ratings, base, device)

    stages = [(0, grid.points())] if full else [(1, grid.regularisation_points()), (2, None)]
    total = (
        len(grid.points()) if full else len(grid.regularisation_points()) + len(grid.factors) - 1
    )
    fields = [f for f in config.fields if f != "rated"] if grid.field_steps else []
    total += len(fields) * len(grid.field_steps)
    given = {name: getattr(config, name) for name in ("factors", "weight_decay", "prior_reg")}
    if config.field_reg:
        given["field_reg"] = dict(config.field_reg)
    results: list[PointResult] = []
    errors: list[np.ndarray] = []  # each point's squared errors on the inner validation ratings
    winner: int | None = None

    def fit(values: dict, stage: int) -> None:
        if progress:
            done = len(results)
            progress(f"tuning: {_describe(values)} ({done + 1}/{total})", done, total)
        point, squared = _fit_point(
            dataclasses.replace(base, **values),
            vocab,
            dataset,
            train_ratings,
            device,
            engine,
            train_rows,
            valid_rows,
        )
        results.append(dataclasses.replace(point, stage=stage))
        errors.append(squared)

    for stage, points in stages:
        if points is None:  # stage 2: the other widths at stage 1's regularisation
            points = grid.factor_points(results[winner].values())
        first = len(results)
        for values in points:
            fit(values, stage)
        # the incumbent: the previous stage's winner, else the config's own values if fitted
        incumbent = winner
        if incumbent is None:
            incumbent = next(
                (i for i in range(first, len(results)) if results[i].values() == given), None
            )
        candidates = list(range(first, len(results))) + ([winner] if winner is not None else [])
        winner = choose(errors, candidates, incumbent)
        for i in range(first, len(results)):
            results[i].gain_se = gain_in_standard_errors(errors, i, incumbent)
    extra = 0
    for field in fields:  # stage 3: each field's L2 multiplier, a walk from the winner's
        incumbent, step = winner, None
        for factor in grid.field_steps:
            fit(_with_field(results[incumbent].values(), field, factor), 3)
        candidates = list(range(len(results) - len(grid.field_steps), len(results)))
        winner = choose(errors, candidates + [incumbent], incumbent)
        for i in candidates:
            results[i].gain_se = gain_in_standard_errors(errors, i, incumbent)
        if winner != incumbent:  # it moved: one more step the same way while that keeps winning
            step = grid.field_steps[candidates.index(winner)]
        while step is not None and extra < _MAX_EXTRA_STEPS:
            incumbent, extra, total = winner, extra + 1, total + 1
            fit(_with_field(results[incumbent].values(), field, step), 3)
            winner = choose(errors, [len(results) - 1, incumbent], incumbent)
            results[-1].gain_se = gain_in_standard_errors(errors, len(results) - 1, incumbent)
            step = step if winner != incumbent else None
    if progress:
        progress(f"tuning: chose {_describe(results[winner].values())}", total, total)
    return TuneResult(grid, results, winner, not full, split, time.perf_counter() - started)


def _with_field(values: dict, field: str, factor: float) -> dict:
    """`values` with `field`'s L2 multiplier multiplied by `factor` (a multiplier of 1 dropped)."""
    field_reg = dict(values.get("field_reg", {}))
    field_reg[field] = round(field_reg.get(field, 1.0) * factor, 6)
    if field_reg[field] == 1.0:
        del field_reg[field]
    return {**values, "field_reg": field_reg}


def choose(errors: list[np.ndarray], candidates: list[int], incumbent: int | None) -> int:
    """The candidate with the lowest mean squared error (the earlier on a tie, NaN never), unless
    it does not beat the incumbent by more than one standard error of their paired difference:
    then the incumbent. Differences of a few ten-thousandths in RMSE are noise on an inner split
    of ~10,000 ratings, and the incumbent (the defaults, measured over many splits) should not
    give way to noise."""

    def mse(i):
        value = float(np.mean(errors[i]))
        return value if value == value else float("inf")

    best = min(candidates, key=lambda i: (mse(i), i))
    if incumbent is None or best == incumbent:
        return best
    gain = gain_in_standard_errors(errors, best, incumbent)
    return best if gain is not None and gain > 1.0 else incumbent


def gain_in_standard_errors(errors: list[np.ndarray], point: int, incumbent: int | None):
    """How many standard errors `point`'s inner MSE is below the incumbent's (paired over the
    same ratings); None for the incumbent itself or without one."""
    if incumbent is None or point == incumbent:
        return None
    difference = errors[incumbent] - errors[point]
    se = float(np.std(difference, ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0
    mean = float(np.mean(difference))
    if not np.isfinite(mean):
        return None
    return mean / se if se > 0 else (0.0 if mean == 0 else float("inf") * np.sign(mean))


def _fit_point(config, vocab, dataset, ratings, device, engine, train_rows, valid_rows):
    """One grid point: the rating model fitted as train() fits it (same seed, early stopping),
    on the search split; (its PointResult, its squared errors on the inner validation)."""
    import torch

    t0 = time.perf_counter()
    torch.manual_seed(config.seed)
    model = new_model(vocab, dataset, ratings, config, device)
    try:
        history, _, best_epoch = fit_epochs(
            model, config, device, engine, train_rows, valid_rows, None, None
        )
    except DivergedError:  # a point that diverges loses; the search goes on
        seconds = round(time.perf_counter() - t0, 3)
        lost = PointResult(config.factors, config.weight_decay, config.prior_reg, *_LOST, seconds)
        return lost, np.full(len(valid_rows[2]), np.inf)
    rmse, _ = evaluate_rmse_mae(model, *valid_rows)
    users, items, ratings = valid_rows
    squared = torch.cat(
        [
            (model.predict(users[s : s + 65536], items[s : s + 65536]) - ratings[s : s + 65536])
            .double()
            .square()
            .cpu()
            for s in range(0, len(ratings), 65536)
        ]
    ).numpy()
    point = PointResult(
        config.factors,
        config.weight_decay,
        config.prior_reg,
        rmse,
        best_epoch,
        len(history),
        round(time.perf_counter() - t0, 3),
        field_reg=dict(config.field_reg),
    )
    return point, squared


_LOST = (float("inf"), 0, 0)  # inner RMSE, best epoch, epochs run of a diverged point


def _describe(values: dict) -> str:
    fields = "".join(f", {name} x{m:g}" for name, m in values.get("field_reg", {}).items())
    return (
        f"factors {values['factors']}, weight decay {values['weight_decay']:g}, "
        f"prior reg {values['prior_reg']:g}{fields}"
    )
