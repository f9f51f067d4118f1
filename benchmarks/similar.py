""" "Movies like X" and a new fan's list, measured: which item vectors put a movie's own series in
its top 10 (series Recall@10 over the 74 hand-checked series of benchmarks/series.py) and keep
its genres (mean Jaccard overlap of the top 10's genres), and what the notebook's action fan gets.

    python benchmarks/similar.py [DATA]          # ml-latest-small by default; ~2 min on 2 cores

Candidates, all from one fmstore run trained with the defaults on every rating (no validation
split: the proxy uses no held-out ratings) and EASE fitted on the same ratings:
- served: the published `item` vector (the ranking model's whitened r_i, queried by Dot);
- whitened cosine: the same vectors, normalised (a Cosine `item` vector in Qdrant);
- ranking cosine: the cosine of the ranking model's r_i;
- FM cosine: the cosine of the rating FM's q_i (the original notebook's "movies like");
- EASE: the item-item weights B (Steck 2019), lambda 500.
A new fan's list (In the Army Now, Terminator 2, Die Hard: With a Vengeance, all 5 stars): the
rating-weighted mean of ranking vectors (served default), the ranking model's fold-in, the sum of
the whitened-cosine neighbours' similarities (item-item), and EASE.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from bench_data import load_from_argv  # benchmarks/bench_data.py, beside this file
from series import series_scores  # benchmarks/series.py, beside this file

from fmstore import pipeline
from fmstore.config import TrainConfig
from fmstore.serving import implicit_weight, ranking_lambda, whiten_items, whitened_fold_in

FAN = (
    "In the Army Now (1994)",
    "Terminator 2: Judgment Day (1991)",
    "Die Hard: With a Vengeance (1995)",
)
EASE_LAMBDA = 500.0


def normalise(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def ease(user_rows: np.ndarray, item_rows: np.ndarray, n_items: int, lam: float) -> np.ndarray:
    """EASE's B (zero diagonal) from binary user x item data."""
    X = np.zeros((user_rows.max() + 1, n_items), np.float32)
    X[user_rows, item_rows] = 1.0
    G = (X.T @ X).astype(np.float64)
    G[np.diag_indices(n_items)] += lam
    P = np.linalg.inv(G)
    B = -P / np.diag(P)
    B[np.diag_indices(n_items)] = 0.0
    return B


def top(scores: np.ndarray, n: int = 11) -> np.ndarray:
    part = np.argpartition(-scores, n)[:n]
    return part[np.argsort(-scores[part], kind="stable")]


def main(argv: list[str]) -> int:
    data = load_from_argv(argv)
    started = time.perf_counter()
    trained = pipeline.run(data, TrainConfig(valid_fraction=0.0, refit=False))
    ranking, model = trained.result.ranking, trained.result.model
    train_seconds = time.perf_counter() - started
    titles = [str(t) for t in data.movies.title]
    genres = [set(str(g).split("|")) for g in data.movies.genres]
    row_of = {m: r for r, m in enumerate(data.movies.movie_id)}
    items = np.array([row_of[m] for m in data.ratings.movie_id])
    counts = np.bincount(items, minlength=len(titles))
    users = np.unique(data.ratings.user_id, return_inverse=True)[1]

    rc = trained.config.ranking_config
    lam = ranking_lambda(rc.reg, rc.alpha0, rc.nu, ranking.n_items_train)
    whitened = whiten_items(ranking.item_vectors, rc.alpha0, lam).astype(np.float64)
    q, _ = model.sides("item")
    started = time.perf_counter()
    B = ease(users, items, len(titles), EASE_LAMBDA)
    ease_seconds = time.perf_counter() - started
    candidates = {
        "served (whitened, Dot)": whitened,
        "whitened cosine": normalise(whitened),
        "ranking cosine": normalise(ranking.item_vectors),
        "FM cosine (notebook)": normalise(q.detach().numpy()),
    }

    def by_vectors(V):
        return lambda row: top(V @ V[row])

    rows = []
    for name, V in candidates.items():
        rows.append((name, series_scores(by_vectors(V), titles, genres, counts)))
    rows.append(
        (
            f"EASE (lambda {EASE_LAMBDA:g})",
            series_scores(lambda r: top(B[r]), titles, genres, counts),
        )
    )
    print(
        f"load {os.getloadavg()[0]:.1f}; fmstore trained in {train_seconds:.0f}s (ranking "
        f"reg {rc.reg:g} alpha0 {rc.alpha0:g} conf_alpha {rc.conf_alpha:g}); EASE {ease_seconds:.0f}s\n"
    )
    print("| movies like X | series Recall@10 | genre overlap | series | queries |")
    print("| --- | --- | --- | --- | --- |")
    for name, s in sorted(rows, key=lambda r: -r[1]["series_recall@10"]):
        print(
            f"| {name} | {s['series_recall@10']:.3f} | {s['genre_overlap']:.3f} | {s['series']} | {s['queries']} |"
        )

    toy = titles.index("Toy Story (1995)")
    print("\nMovies like Toy Story:")
    for name, V in candidates.items():
        print(f"- {name}: " + "; ".join(titles[j] for j in top(V @ V[toy]) if j != toy)[:400])
    print("- EASE: " + "; ".join(titles[j] for j in top(B[toy]) if j != toy)[:400])

    fan = np.array([titles.index(t) for t in FAN])
    stars = np.full(len(fan), 5.0)
    weights = implicit_weight(stars, rc.confidence, rc.conf_alpha)
    weighted = (stars @ ranking.item_vectors[fan]) / stars.sum()
    lists = {
        "weighted mean (served default)": ranking.item_vectors @ weighted + ranking.item_scalar,
        "fold-in": whitened @ whitened_fold_in(whitened[fan], weights),
        "item-item (whitened cosine)": normalise(whitened) @ normalise(whitened)[fan].sum(0),
        "EASE": B[fan].sum(0),
    }
    print("\nA fan of " + ", ".join(FAN) + ":")
    for name, scores in lists.items():
        scores = scores.astype(np.float64).copy()
        scores[fan] = -np.inf
        print(f"- {name}: " + "; ".join(titles[j] for j in top(scores, 10))[:400])
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main(sys.argv[1:]))
