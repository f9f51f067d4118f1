"""Speed of the Python query API on a published home, as one markdown table.

    python benchmarks/query_api.py --home PATH      # a home with a published run (fmstore publish)

Each call is timed warm (after one untimed call that fills the Recommender's caches), best of
--repeat. The store is the embedded Qdrant Edge of the home and the catalog its SQLite file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def _best(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from fmstore.config import Settings
    from fmstore.recommend import Recommender
    from fmstore.vectors import EdgeStore

    settings = Settings(home=args.home)
    with EdgeStore(settings.qdrant_path) as store, Recommender(store, settings.catalog_url) as rec:
        users = rec.user_ids
        heavy = int(users[0])
        for user in users[:2000].tolist():  # the heaviest of the first users: the slow case
            if len(rec._training_ratings(user)) > len(rec._training_ratings(heavy)):
                heavy = user
        light = int(users[0])
        ids, _ = rec.recommend(light, N=10)
        heavy_ids, _ = rec.recommend(heavy, N=10)
        n_light, n_heavy = len(rec._training_ratings(light)), len(rec._training_ratings(heavy))
        rows = [
            (
                "match_title, exact words ('toy story 1995')",
                lambda: rec.match_title("toy story 1995"),
            ),
            ("match_title, fuzzy ('Termnator 2')", lambda: rec.match_title("Termnator 2")),
            (f"recommend(user {light}, N=10)", lambda: rec.recommend(light, N=10)),
            ("recommend(100 users, N=10)", lambda: rec.recommend(users[:100].tolist(), N=10)),
            (
                f"explain(user {light}: {n_light} ratings, 10 movies)",
                lambda: rec.explain(light, ids),
            ),
            (
                f"explain(user {heavy}: {n_heavy} ratings, 10 movies)",
                lambda: rec.explain(heavy, heavy_ids),
            ),
            (
                f"similar_users({light}, N=10) over {len(users)} users",
                lambda: rec.similar_users(light),
            ),
            (f"predict(user {light}, 100 movies)", lambda: rec.predict(light, rec.item_ids[:100])),
            (f"item_factors ({len(rec.item_ids)} movies)", lambda: rec.item_factors),
            (f"user_factors ({len(users)} users)", lambda: rec.user_factors),
        ]
        print(f"run {rec.run_id}, best of {args.repeat}\n")
        print("| call | ms |\n| --- | ---: |")
        for name, call in rows:
            print(f"| {name} | {_best(call, args.repeat):.1f} |")


if __name__ == "__main__":
    main()
