"""Rating RMSE beyond one split: the defaults (TrainConfig, tuned once on the seed-0 split of
ml-latest-small) against `fmstore train --tune` (fmstore.train.tune: the search chooses factors,
weight_decay and prior_reg on an inner split of the training ratings; a point replaces the
defaults only when it beats them there by more than one standard error), on 5 random 90/10 splits
(seeds 0-4, as `fmstore train --seed N` splits) and on the time-based split (the last 10% of each
user's ratings by time held out; the model trains on the rest, validation and the search on a
random part of it). Rating model only (no ranking model, no refit), as in the search.

    python benchmarks/rmse_splits.py              # seeds 0-4 and time (2.5 min on a quiet 2-core box, 30 on a busy one)
    python benchmarks/rmse_splits.py 0 time       # some splits
    python benchmarks/rmse_splits.py --full       # the full 27-point grid instead of the staged search

Random splits report the valid RMSE (the held-out 10%); the time split reports the RMSE on the
last 10% by time. A split where the search chose the defaults is not trained twice (the same
values and seed train the same model).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from fmstore import datasets
from fmstore.config import TrainConfig
from fmstore.datasets import Dataset
from fmstore.datasets.splits import last_by_time
from fmstore.train import train
from fmstore.train.tune import tune

REPO = Path(__file__).resolve().parent.parent
SEEDS = (0, 1, 2, 3, 4)


def held_out_rmse(dataset: Dataset, config: TrainConfig, test) -> float:
    """The valid RMSE of the run's split, or with `test` ratings the RMSE on them."""
    m = train(dataset, config, test_ratings=test).metrics
    return m["test_rmse"] if test is not None else m["valid_rmse"]


def one_split(name: str, dataset: Dataset, seed: int, test, full: bool) -> tuple:
    config = TrainConfig(seed=seed, ranking=False, refit=False)
    default = held_out_rmse(dataset, config, test)
    search = tune(dataset, config, full=full)
    tuned_config = search.apply(config)
    same = tuned_config == config
    tuned = default if same else held_out_rmse(dataset, tuned_config, test)
    c = search.chosen
    chosen = f"{c['factors']} / {c['weight_decay']:g} / {c['prior_reg']:g}"
    return (
        name,
        default,
        tuned,
        tuned - default,
        chosen,
        len(search.points),
        round(search.seconds),
    )


def main(argv: list[str]) -> int:
    full = "--full" in argv
    wanted = [a for a in argv if a != "--full"] or [*map(str, SEEDS), "time"]
    data = Path(os.environ.get("FMSTORE_DATA", REPO.parent / "shared" / "data" / "ml-latest-small"))
    dataset = datasets.load_dataset(data)
    headers = [
        "split",
        "defaults RMSE",
        "--tune RMSE",
        "difference",
        "chosen factors / weight decay / prior reg",
        "fits",
        "search s",
    ]
    print(
        f"{dataset.name}: {len(dataset.ratings):,} ratings; search: {'full' if full else 'staged'}\n"
    )
    print("| " + " | ".join(headers) + " |")
    print("|" + " --- |" * len(headers))
    t0 = time.perf_counter()
    rows = []
    for split in wanted:
        if split == "time":
            r = dataset.ratings
            is_last = last_by_time(r.user_id, r.timestamp, 0.1)
            rest = Dataset(
                dataset.name, dataset.source, dataset.fingerprint, r.take(~is_last), dataset.movies
            )
            row = one_split("time (last 10%)", rest, 0, r.take(is_last), full)
        else:
            row = one_split(f"random, seed {split}", dataset, int(split), None, full)
        rows.append(row)
        print("| " + " | ".join(_cell(x) for x in row) + " |", flush=True)
    random_rows = [r for r in rows if r[0].startswith("random")]
    if len(random_rows) > 1:
        print()
        for column, label in ((1, "defaults"), (2, "--tune")):
            values = np.array([r[column] for r in random_rows])
            print(
                f"{label}: mean {values.mean():.4f} ± {values.std(ddof=1):.4f} (sd) over "
                f"{len(values)} random splits"
            )
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0


def _cell(x) -> str:
    if isinstance(x, float):
        return f"{x:+.4f}" if x < 0.5 else f"{x:.4f}"
    return str(x)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
