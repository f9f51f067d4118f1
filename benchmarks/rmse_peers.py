"""Rating RMSE against myFM (Bayesian FM, Gibbs sampling: a regularisation per group of features
learnt from the data through hyperpriors) on splits of ml-latest-small the defaults were not
chosen on. Each system learns from the split's training ratings only and is scored once on the
held-out ones:

- fmstore defaults: the rating model as `fmstore train` publishes it (early stopping on a random
  10% of the training ratings, then the refit on all of them for the epochs chosen);
- fmstore --tune: the same after `fmstore tune`'s search (train/tune.py) on an inner split of the
  training ratings;
- fmstore --tune --field-steps 0.333,3: the same search with its per-field stage (TuneGrid.field_steps:
  each field's L2 multiplied by 1/3 and 3 in turn, a step repeated while it wins);
- myFM ids only: user id + movie id, rank 32, 512 Gibbs iterations, the first 112 dropped as
  burn-in (myFM's defaults otherwise: its hyperpriors, one group per field);
- myFM groups: also each user's rated movies and each movie's raters (from the training ratings,
  1/sqrt(n) each) as relation blocks, one group each, as in myFM's MovieLens examples
  (Rendle's "SVD++ flipped" features without the date).

myFM is given no genres or years (fmstore is); its settings are fixed, not tuned.

Splits: random 90/10 with seeds 1 and 2; each user's last 10% by time; a random 90/10 split
(seed 3) of half the users (benchmarks/ranking_splits.py's splits); `0` adds seed 0 (the split
the defaults were chosen on) for reference.

    pip install myfm      # the `bench` extra
    python benchmarks/rmse_peers.py                   # 1 2 time half: ~75 min at load 10 on 2 cores (myFM groups ~10 min a split)
    python benchmarks/rmse_peers.py 1 time            # some splits
    python benchmarks/rmse_peers.py --rank 10 ...     # myFM's width
    python benchmarks/rmse_peers.py --systems defaults,myfm-groups   # some systems
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")  # myFM's progress bar (read when tqdm is imported)

import numpy as np  # noqa: E402
from bench_data import ML_SMALL  # benchmarks/bench_data.py, beside this file
from scipy import sparse

from fmstore import datasets
from fmstore.config import TrainConfig, TuneGrid
from fmstore.datasets import Dataset, Ratings
from fmstore.datasets.splits import last_by_time, split_indices
from fmstore.features import encode
from fmstore.train import train
from fmstore.train.loop import rating_tensors
from fmstore.train.refit import refit
from fmstore.train.tune import tune
from fmstore.train.validation import evaluate_rmse_mae

N_ITER, BURN_IN = 512, 112
SYSTEMS = ("defaults", "tune", "per-field", "myfm", "myfm-groups")
FIELD_STEPS = (1 / 3, 3.0)  # the per-field stage's steps (TuneGrid.field_steps)
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


def splits(dataset: Dataset, wanted: list[str]):
    """(name, training ratings, held-out ratings, seed) of each split asked for."""
    r = dataset.ratings
    for name in wanted:
        if name == "time":
            last = last_by_time(r.user_id, r.timestamp, 0.1)
            yield "time: each user's last 10%", r.take(~last), r.take(last), 0
        elif name == "half":
            users = np.unique(r.user_id)
            half = np.random.default_rng(7).choice(users, len(users) // 2, replace=False)
            sub = r.take(np.isin(r.user_id, half))
            tr, te = split_indices(len(sub), 0.1, 3)
            yield "half the users, random seed 3", sub.take(tr), sub.take(te), 3
        else:
            seed = int(name)
            tr, te = split_indices(len(r), 0.1, seed)
            note = " (defaults chosen here)" if seed == 0 else ""
            yield f"random, seed {seed}{note}", r.take(tr), r.take(te), seed


def fmstore_rmse(dataset: Dataset, config: TrainConfig, test: Ratings) -> float:
    """The published rating model (validated, then refitted on every training rating) on test."""
    validated = train(dataset, config)
    published = refit(dataset, validated.config or config, validated)
    users, items, ratings = rating_tensors(encode(test, published.vocab, dataset.movies), "cpu")
    return evaluate_rmse_mae(published.model, users, items, ratings)[0]


def myfm_rmse(train_r: Ratings, test: Ratings, groups: bool, rank: int, seed: int) -> float:
    """myFM's Bayesian FM on user and movie ids, with the implicit groups when `groups`."""
    import myfm

    users, movies = np.unique(train_r.user_id), np.unique(train_r.movie_id)
    u_train = np.searchsorted(users, train_r.user_id)
    m_train = np.searchsorted(movies, train_r.movie_id)
    ones = np.ones(len(train_r))
    # user x movie incidence of the training ratings, rows scaled by 1/sqrt(their count)
    rated = sparse.csr_matrix((ones, (u_train, m_train)), shape=(len(users), len(movies)))
    by_user = sparse.diags(1 / np.sqrt(np.maximum(rated.getnnz(1), 1))) @ rated
    by_movie = sparse.diags(1 / np.sqrt(np.maximum(rated.getnnz(0), 1))) @ rated.T.tocsr()

    def block(ids, known, implicit):
        """A RelationBlock of `ids`: one-hot (a zero row when unseen in training), then the
        implicit part."""
        unique, inverse = np.unique(ids, return_inverse=True)
        at = np.minimum(np.searchsorted(known, unique), len(known) - 1)
        seen = known[at] == unique
        one_hot = sparse.csr_matrix(
            (np.ones(seen.sum()), (np.flatnonzero(seen), at[seen])),
            shape=(len(unique), len(known)),
        )
        parts = [one_hot]
        if groups:
            pick = sparse.csr_matrix(
                (np.ones(seen.sum()), (np.flatnonzero(seen), at[seen])),
                shape=(len(unique), len(known)),
            )
            parts.append(pick @ implicit)
        return myfm.RelationBlock(inverse.astype(np.int64), sparse.hstack(parts, "csr"))

    def blocks(r: Ratings):
        return [
            block(r.user_id, users, by_user),
            block(r.movie_id, movies, by_movie),
        ]

    sizes = (
        [len(users), len(movies), len(movies), len(users)] if groups else [len(users), len(movies)]
    )
    grouping = np.repeat(np.arange(len(sizes)), sizes).tolist()
    fm = myfm.MyFMRegressor(rank=rank, random_seed=seed)
    fm.fit(
        None,
        train_r.rating.astype(np.float64),
        X_rel=blocks(train_r),
        grouping=grouping,
        n_iter=N_ITER,
        n_kept_samples=N_ITER - BURN_IN,
    )
    predicted = np.clip(fm.predict(None, blocks(test)), 0.5, 5.0)
    return float(np.sqrt(np.mean((predicted - test.rating) ** 2)))


def run_split(dataset: Dataset, train_r, test, seed, rank, systems) -> list[tuple]:
    """(system, RMSE, seconds) of each system asked for on one split."""
    only_train = dataclasses.replace(dataset, ratings=train_r)
    config = TrainConfig(seed=seed, ranking=False)
    search_config = dataclasses.replace(config, refit=False)
    runs = {
        "defaults": ("fmstore defaults", lambda: fmstore_rmse(only_train, config, test)),
        "tune": (
            "fmstore --tune",
            lambda: fmstore_rmse(only_train, tune(only_train, search_config).apply(config), test),
        ),
        "myfm": ("myFM ids only", lambda: myfm_rmse(train_r, test, False, rank, seed)),
        "myfm-groups": ("myFM groups", lambda: myfm_rmse(train_r, test, True, rank, seed)),
    }

    def per_field() -> float:
        found = tune(only_train, search_config, TuneGrid(field_steps=FIELD_STEPS))
        print(f"    per field: chose {found.chosen} in {len(found.points)} fits", flush=True)
        return fmstore_rmse(only_train, found.apply(config), test)

    runs["per-field"] = ("fmstore --tune, per field", per_field)
    rows = []
    for key in systems:
        if key in runs:
            label, measure = runs[key]
            t0 = time.perf_counter()
            rows.append((label, measure(), time.perf_counter() - t0))
    return rows


def main(argv: list[str]) -> int:
    rank = 32
    if "--rank" in argv:
        at = argv.index("--rank")
        rank = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2 :]
    systems = SYSTEMS
    if "--systems" in argv:
        at = argv.index("--systems")
        systems = tuple(argv[at + 1].split(","))
        argv = argv[:at] + argv[at + 2 :]
    data = next((a for a in argv if os.path.isdir(a)), str(ML_SMALL))
    wanted = [a for a in argv if a != data] or ["1", "2", "time", "half"]
    dataset = datasets.load_dataset(data)
    print(
        f"{dataset.name}: {len(dataset.ratings):,} ratings; myFM rank {rank}, {N_ITER} "
        f"iterations ({BURN_IN} burn-in); load {os.getloadavg()[0]:.1f}\n"
    )
    table: dict[str, dict[str, float]] = {}
    for name, train_r, test, seed in splits(dataset, wanted):
        for system, rmse, seconds in run_split(dataset, train_r, test, seed, rank, systems):
            table.setdefault(name, {})[system] = rmse
            print(f"  {name}: {system} {rmse:.4f} ({seconds:.0f} s)", flush=True)
    systems = list(next(iter(table.values())))
    print("\n| split | " + " | ".join(systems) + " |")
    print("| --- |" + " --- |" * len(systems))
    for name, row in table.items():
        best = min(row.values())
        cells = [f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in row.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n(load at the end {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
