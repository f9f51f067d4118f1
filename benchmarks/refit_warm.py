"""Does the refit need to fit the ranking model from scratch? On a random 90/10 split (seed 0,
1, 2) of ml-latest-small: a "validated" ranking model fitted on 90% of the training ratings, then
the refit on all of them either from scratch (the configured sweeps) or warm started from the
validated model (`fit_ranking(init=...)`) with fewer sweeps; each scored by the served NDCG@10 /
Recall@10 on the held-out 10%, with seconds per refit.

    python benchmarks/refit_warm.py [DATA]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from bench_data import load_from_argv  # benchmarks/bench_data.py, beside this file

from fmstore.config import TrainConfig
from fmstore.datasets.splits import split_indices
from fmstore.evaluate.indexing import CSR
from fmstore.evaluate.metrics import RELEVANT_MIN, ranking_metrics
from fmstore.features import Vocabulary, encode
from fmstore.train.ranking import fit_ratings


def main(argv: list[str]) -> int:
    data = load_from_argv(argv)
    config = TrainConfig()
    rc = config.ranking_config
    print(
        f"load {os.getloadavg()[0]:.1f}; ranking config: {rc.iterations} sweeps, k {rc.factors}\n"
    )
    print("| split seed | refit | sweeps | NDCG@10 | Recall@10 | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed in (0, 1, 2):
        train_idx, valid_idx = split_indices(len(data.ratings), 0.1, seed)
        train, valid = data.ratings.take(train_idx), data.ratings.take(valid_idx)
        inner, _ = split_indices(len(train), 0.1, seed + 100)
        vocab = Vocabulary.build(train, data.movies, config.fields)
        validated = fit_ratings(train.take(inner), vocab, data.movies, rc, seed=seed)
        seen = encode(train, vocab, data.movies)
        held = encode(valid, vocab, data.movies)
        n_users = len(vocab.user_ids)
        good = (held.user < n_users) & (held.rating >= RELEVANT_MIN)
        exclude = CSR.build(seen.user, seen.item, n_users)
        relevant = CSR.build(held.user[good], held.item[good], n_users)
        users = np.unique(held.user[good])
        runs = [("scratch", rc.iterations, None)] + [("warm", n, validated) for n in (2, 3, 4)]
        for name, sweeps, init in runs:
            t0 = time.perf_counter()
            model = fit_ratings(
                train, vocab, data.movies, dataclasses.replace(rc, iterations=sweeps),
                seed=seed, init=init,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
            m = ranking_metrics(model, exclude, relevant, users, len(data.movies), recall_ks=(10,))
            print(
                f"| {seed} | {name} | {sweeps} | {m['ndcg@10']:.4f} | {m['recall@10']:.4f} | {seconds:.1f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
