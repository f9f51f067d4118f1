"""The ranking model at given settings on one split of ml-latest-small: its held-out NDCG@10 /
Recall@10 (fitted on the split's training ratings) beside its inner NDCG@10 (fitted on the inner
split the ranking search judges on, with the search's sweeps). What README's "why EASE led on the
half-users split" quotes: a probe of settings, not a search (the test split chooses nothing).

    python benchmarks/ranking_probe.py half "" "nu=0.75,reg=0.03" "iterations=16"
    python benchmarks/ranking_probe.py 1 "" "nu=0.75,reg=0.03"     # random 90/10, seed 1
    python benchmarks/ranking_probe.py time ""                     # each user's last 10%

Splits: half (the half-users split of ranking_splits.py), time, or a seed of a random 90/10
split. Settings: RankingConfig fields as NAME=VALUE, comma-separated; reg is the model's (raw).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from bench_data import ML_SMALL
from ranking_splits import Held

from fmstore import datasets
from fmstore.config import RankingConfig, TrainConfig
from fmstore.datasets.splits import last_by_time, split_indices
from fmstore.features import Vocabulary
from fmstore.ranking_search import SEARCH_SWEEPS, _InnerProblem
from fmstore.train.ranking import fit_ratings
from fmstore.train.tune import search_split


def make_split(data, which: str):
    """(train, test, seed) as benchmarks/ranking_splits.py builds them."""
    r = data.ratings
    if which == "time":
        last = last_by_time(r.user_id, r.timestamp, 0.1)
        return r.take(~last), r.take(last), 0
    seed = 3 if which == "half" else int(which)
    if which == "half":
        users = np.unique(r.user_id)
        half = np.random.default_rng(7).choice(users, len(users) // 2, replace=False)
        r = r.take(np.isin(r.user_id, half))
    tr, te = split_indices(len(r), 0.1, seed)
    return r.take(tr), r.take(te), seed


def parse(text: str) -> dict:
    values = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        kind = type(getattr(RankingConfig(), name))
        values[name] = value.lower() == "true" if kind is bool else kind(value)
    return values


def main(argv: list[str]) -> int:
    data = datasets.load_dataset(str(ML_SMALL))
    train, test, seed = make_split(data, argv[0])
    only = dataclasses.replace(data, ratings=train)
    config = TrainConfig(seed=seed, valid_fraction=0.0)
    held = Held(train, test, data.movies, np.unique(train.user_id))
    vocab = Vocabulary.build(train, data.movies, config.fields)
    inner = _InnerProblem(only, config, search_split(only, config))
    print(f"split {argv[0]}: {len(train):,} training ratings; load {os.getloadavg()[0]:.1f}\n")
    print("| settings | held-out NDCG@10 / Recall@10 | inner NDCG@10 | seconds |")
    print("| --- | --- | --- | --- |")
    for text in argv[1:]:
        ranking = dataclasses.replace(RankingConfig(), **parse(text))
        t0 = time.perf_counter()
        nd, rc, _ = held.score(fit_ratings(train, vocab, data.movies, ranking, seed=seed).scores)
        searched = dataclasses.replace(ranking, iterations=SEARCH_SWEEPS)
        inner_ndcg = inner.ndcg(inner.fit(fit_ratings, searched)).mean()
        print(
            f"| {text or 'defaults'} | {nd:.4f} / {rc:.4f} | {inner_ndcg:.4f} | "
            f"{time.perf_counter() - t0:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
