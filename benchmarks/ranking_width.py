"""Does the ranking model's width, or a wider regularisation grid, searched on the inner split fix
the half-users split where EASE leads fmstore on NDCG@10 (benchmarks/ranking_splits.py)?

For each width in WIDTHS the ranking search (fmstore/ranking_search.py) runs on an inner split of
the training ratings, with the default RankingGrid and with a wider one; the table shows the inner
NDCG@10 the search reached (what a width search would compare) and the held-out NDCG@10 /
Recall@10 of the model fitted on all the training ratings with the chosen values (what it would
earn). EASE's row for reference (lambda tuned on an inner split, as in ranking_splits.py).

    python benchmarks/ranking_width.py [DATA]        # the half-users split; ~25 min at load 10
    python benchmarks/ranking_width.py [DATA] --seed 1   # a random 90/10 split instead
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from bench_data import load_from_argv  # benchmarks/bench_data.py, beside this file
from ranking_splits import EASE_LAMBDAS, Held, ease_scores

from fmstore.config import RankingGrid, TrainConfig
from fmstore.datasets.splits import split_indices
from fmstore.features import Vocabulary
from fmstore.ranking_search import search_ranking
from fmstore.train.ranking import fit_ratings

WIDTHS = (64, 128, 256, 512)
WIDE = RankingGrid(
    reg=(0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0),
    alpha0=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    conf_alpha=(0.0, 1.0, 3.0, 10.0, 30.0),
)


def main(argv: list[str]) -> int:
    seed = None
    if "--seed" in argv:
        at = argv.index("--seed")
        seed, argv = int(argv[at + 1]), argv[:at] + argv[at + 2 :]
    data = load_from_argv(argv)
    r = data.ratings
    if seed is None:
        users = np.unique(r.user_id)
        half = np.random.default_rng(7).choice(users, len(users) // 2, replace=False)
        r = r.take(np.isin(r.user_id, half))
        seed, name = 3, "half the users, random seed 3"
    else:
        name = f"random, seed {seed}"
    tr, te = split_indices(len(r), 0.1, seed)
    train, test = r.take(tr), r.take(te)
    only_train = dataclasses.replace(data, ratings=train)
    user_ids = np.unique(train.user_id)
    held = Held(train, test, data.movies, user_ids)
    vocab = Vocabulary.build(train, data.movies, TrainConfig().fields)
    print(f"{name}: {len(train):,} training ratings; load {os.getloadavg()[0]:.1f}\n")
    print("| width | grid | chosen | inner NDCG@10 | NDCG@10 | Recall@10 | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for width in WIDTHS:
        for label, grid in (("default", RankingGrid()), ("wide", WIDE)):
            t0 = time.perf_counter()
            ranking = dataclasses.replace(TrainConfig().ranking_config, factors=width)
            config = TrainConfig(seed=seed, valid_fraction=0.0, ranking_config=ranking)
            found = search_ranking(only_train, config, grid)
            chosen = found.apply(config).ranking_config
            model = fit_ratings(train, vocab, data.movies, chosen, seed=seed)
            assert np.array_equal(np.asarray(vocab.user_ids), user_ids)
            nd, rc, _ = held.score(model.scores)
            values = ", ".join(f"{k} {v:g}" for k, v in found.chosen.items())
            inner = found.points[found.best].ndcg
            print(
                f"| {width} | {label} | {values} | {inner:.4f} | {nd:.4f} | {rc:.4f} | "
                f"{time.perf_counter() - t0:.0f} |",
                flush=True,
            )
    from fmstore.datasets.splits import split_indices as split

    inner, check = split(len(train), 0.1, seed + 1000)
    inner_held = Held(
        train.take(inner), train.take(check), data.movies, np.unique(train.user_id[inner])
    )
    lam = max(EASE_LAMBDAS, key=lambda x: inner_held.score(ease_scores(inner_held, x))[0])
    nd, rc, _ = held.score(ease_scores(held, lam))
    print(f"| EASE | lambda {lam:g} | | | {nd:.4f} | {rc:.4f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
