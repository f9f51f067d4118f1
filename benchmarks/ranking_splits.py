"""The served ranking on splits the defaults were not chosen on, every system tuned on an inner
split of its training ratings only, then scored once on the held-out ratings:

- fmstore: `pipeline.run` with the defaults, which search the ranking model's reg, alpha0 and
  conf_alpha on an inner split (fmstore/ranking_search.py);
- EASE (Steck 2019): lambda from {100, 300, 1000, 3000} on the same kind of inner split;
- implicit ALS: factors {64, 128, 256} x regularization {0.1, 1, 10} (alpha 1, 15 iterations),
  likewise.

Splits of ml-latest-small: random 90/10 with seeds 1 and 2 (seed 0 is the one the defaults were
chosen on, shown for reference), the last 10% of each user's ratings by time, and a random 90/10
split of a 50% sample of users (a sparser catalogue per movie). Relevant = held-out rating >= 4;
each user ranks every movie they did not rate in training. Recall@10 = hits / relevant (the
tables' definition; implicit's, hits / min(10, relevant), is printed beside it).

    python benchmarks/ranking_splits.py [DATA]      # ~15 minutes on 2 quiet cores, 100 at load 8
    python benchmarks/ranking_splits.py [DATA] --no-peers   # fmstore's rows only (the peers'
                                                            # rows do not change with fmstore)
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
from bench_data import load_from_argv  # benchmarks/bench_data.py, beside this file

from fmstore import pipeline
from fmstore.config import TrainConfig
from fmstore.datasets import Dataset
from fmstore.datasets.splits import last_by_time, split_indices
from fmstore.evaluate.indexing import CSR
from fmstore.evaluate.metrics import RELEVANT_MIN, ndcg_at_k, ranked_hits

EASE_LAMBDAS = (100.0, 300.0, 1000.0, 3000.0)
ALS_GRID = [(k, reg) for k in (64, 128, 256) for reg in (0.1, 1.0, 10.0)]


class Held:
    """Held-out ratings against training ratings, in the rows of `user_ids` x movies order."""

    def __init__(self, train, test, movies, user_ids):
        self.user_ids = user_ids
        row_of_movie = {m: r for r, m in enumerate(movies.movie_id)}
        self.n_items = len(movies.movie_id)
        users = lambda ids: np.searchsorted(user_ids, ids)  # noqa: E731
        items = lambda ids: np.array([row_of_movie[m] for m in ids], np.int64)  # noqa: E731
        self.tu, self.ti = users(train.user_id), items(train.movie_id)
        known = np.isin(test.user_id, user_ids) & (test.rating >= RELEVANT_MIN)
        hu, hi = users(test.user_id[known]), items(test.movie_id[known])
        n = len(user_ids)
        self.exclude, self.relevant = CSR.build(self.tu, self.ti, n), CSR.build(hu, hi, n)
        self.users = np.unique(hu)

    def score(self, scores_of) -> tuple[float, float, float]:
        """(NDCG@10, Recall@10 as hits/relevant, Recall@10 as hits/min(10, relevant))."""

        class P:
            scores = staticmethod(scores_of)

        nd, rc, ri, n = 0.0, 0.0, 0.0, 0
        for hits, n_rel in ranked_hits(P, self.exclude, self.relevant, self.users, 10):
            nd += float(ndcg_at_k(hits, n_rel, 10).sum())
            h = hits[:, :10].sum(1)
            rc += float((h / n_rel).sum())
            ri += float((h / np.minimum(10, n_rel)).sum())
            n += len(n_rel)
        return nd / n, rc / n, ri / n


def binary(held: Held) -> np.ndarray:
    X = np.zeros((len(held.user_ids), held.n_items), np.float32)
    X[held.tu, held.ti] = 1.0
    return X


def ease_scores(held: Held, lam: float):
    X = binary(held)
    G = X.T @ X
    G[np.diag_indices_from(G)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    B[np.diag_indices_from(B)] = 0.0
    return lambda rows: X[rows] @ B


def als_scores(held: Held, factors: int, reg: float):
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    ui = sp.csr_matrix(
        (np.ones(len(held.tu), np.float32), (held.tu, held.ti)),
        shape=(len(held.user_ids), held.n_items),
    )
    model = AlternatingLeastSquares(
        factors=factors, regularization=reg, alpha=1.0, iterations=15, random_state=0,
        num_threads=len(os.sched_getaffinity(0)),
    )  # fmt: skip
    model.fit(ui, show_progress=False)
    U, V = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda rows: U[rows] @ V.T


def run_split(name, data: Dataset, train, test, seed, peers: bool = True) -> list[tuple]:
    movies = data.movies
    user_ids = np.unique(train.user_id)
    held = Held(train, test, movies, user_ids)
    rows = []
    # fmstore: the pipeline on the training ratings alone (its own inner split inside)
    t0 = time.perf_counter()
    only_train = dataclasses.replace(data, ratings=train)
    trained = pipeline.run(
        only_train, TrainConfig(epochs=1, valid_fraction=0.0, refit=False, seed=seed)
    )
    ranking, vocab = trained.result.ranking, trained.result.vocab
    assert np.array_equal(np.asarray(vocab.user_ids), user_ids)
    chosen = trained.metrics["ranking_search"]["chosen"]
    rows.append(
        (name, "fmstore (defaults: searched " + ", ".join(f"{k} {v:g}" for k, v in chosen.items()) + ")",
         *held.score(ranking.scores), time.perf_counter() - t0)
    )  # fmt: skip
    if not peers:
        return rows
    # EASE and ALS: the grid judged on an inner split of `train`
    inner, check = split_indices(len(train), 0.1, seed + 1000)
    inner_held = Held(train.take(inner), train.take(check), movies, np.unique(train.user_id[inner]))
    t0 = time.perf_counter()
    lam = max(EASE_LAMBDAS, key=lambda x: inner_held.score(ease_scores(inner_held, x))[0])
    rows.append(
        (
            name,
            f"EASE (lambda {lam:g})",
            *held.score(ease_scores(held, lam)),
            time.perf_counter() - t0,
        )
    )
    t0 = time.perf_counter()
    k, reg = max(ALS_GRID, key=lambda p: inner_held.score(als_scores(inner_held, *p))[0])
    rows.append(
        (name, f"implicit ALS (factors {k}, reg {reg:g})", *held.score(als_scores(held, k, reg)),
         time.perf_counter() - t0)
    )  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    peers = "--no-peers" not in argv
    data = load_from_argv([a for a in argv if a != "--no-peers"])
    r = data.ratings
    splits = []
    for seed in (1, 2, 0):
        tr, te = split_indices(len(r), 0.1, seed)
        splits.append(
            (
                f"random, seed {seed}" + (" (defaults chosen here)" if seed == 0 else ""),
                r.take(tr),
                r.take(te),
                seed,
            )
        )
    last = last_by_time(r.user_id, r.timestamp, 0.1)
    splits.insert(2, ("time: each user's last 10%", r.take(~last), r.take(last), 0))
    users = np.unique(r.user_id)
    half = np.random.default_rng(7).choice(users, len(users) // 2, replace=False)
    sub = r.take(np.isin(r.user_id, half))
    tr, te = split_indices(len(sub), 0.1, 3)
    splits.insert(3, ("half the users, random seed 3", sub.take(tr), sub.take(te), 3))
    print(f"load {os.getloadavg()[0]:.1f}")
    print("| split | system | NDCG@10 | Recall@10 | Recall@10 (implicit's) | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, train, test, seed in splits:
        for row in run_split(name, data, train, test, seed, peers):
            print(
                f"| {row[0]} | {row[1]} | {row[2]:.4f} | {row[3]:.4f} | {row[4]:.4f} | {row[5]:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
