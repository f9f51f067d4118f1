""" "Because you liked X" checked on a published home: for each sampled user, do the rated movies'
terms (Recommender.contributions) add up to the score that ranked each of their top movies?

    python benchmarks/explain.py --home PATH      # a home with a published run (fmstore publish)

Known users: the ranking model's closed form against the stored r_u. New users: five of a known
user's ratings, asked as someone new, with each method (weighted and fold-in). Prints one markdown
table: the worst and the median relative difference over the top-10 scores, and the time of one
`explain` call (warm).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.maximum(np.abs(b), 1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--users", type=int, default=200, help="users sampled (seed 0)")
    args = parser.parse_args()

    from fmstore import runs
    from fmstore.config import Settings
    from fmstore.recommend import Recommender
    from fmstore.vectors import EdgeStore

    settings = Settings(home=args.home)
    with EdgeStore(settings.qdrant_path) as store, Recommender(store, settings.catalog_url) as rec:
        users = rec.user_ids
        rng = np.random.default_rng(0)
        sample = rng.choice(users, min(args.users, len(users)), replace=False).tolist()
        rows: dict[str, list[np.ndarray]] = {
            "known user": [],
            "new, weighted": [],
            "new, fold-in": [],
        }
        times: dict[str, list[float]] = {name: [] for name in rows}
        for user in sample:
            ids, scores = rec.recommend(user, N=10)
            started = time.perf_counter()
            found = rec.contributions(user, ids)
            times["known user"].append(time.perf_counter() - started)
            rows["known user"].append(_relative(found.scores, scores))
            seen, stars = runs.seen_movies(rec.artifact_path, user)
            pick = rng.choice(len(seen), min(5, len(seen)), replace=False)
            picked = zip(seen[pick].tolist(), stars[pick].astype(float).tolist(), strict=True)
            ratings = dict(picked)
            for method in ("weighted", "fold-in"):
                ids, scores = rec.recommend_for_ratings(ratings, N=10, method=method)
                started = time.perf_counter()
                found = rec.contributions(ratings, ids, method)
                times[f"new, {method}"].append(time.perf_counter() - started)
                rows[f"new, {method}"].append(_relative(found.scores, scores))

    print(f"run {rec.run_id}: {len(sample)} users, their top 10 each\n")
    print("| user vector | worst relative difference | median | explain (ms, median) |")
    print("| --- | --- | --- | --- |")
    for name, diffs in rows.items():
        d = np.concatenate(diffs)
        ms = 1000 * float(np.median(times[name]))
        print(f"| {name} | {d.max():.2e} | {np.median(d):.2e} | {ms:.1f} |")


if __name__ == "__main__":
    main()
