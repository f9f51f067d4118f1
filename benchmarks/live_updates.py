"""Live updates (fmstore.updates, `fmstore rate`): latency, batch throughput and quality.

    python benchmarks/live_updates.py [DATASET]     # default: ml-latest-small
    python benchmarks/live_updates.py --home H DATASET   # latency and throughput on a published
                                                         # home, e.g. pipeline_cli.py's at 27.75M

10% of the users are held out of training (fmstore's cold_start_split, seed 0, as the cold-start
tables of benchmarks/ranking.py); the rest is trained with the default config (the ranking
search off: its default settings) and published to Qdrant Edge + SQLite in a temporary folder.

- latency: one user's update end to end (Updater.add_ratings: the checks, the catalog write,
  the closed form and fold-in, the upsert and flush, the marks), a warm Updater as a service
  keeps it: a held-out user's first 3 ratings (a new user), and one more rating of a known user
  (their point recomputed from all their ratings);
- throughput: one add_ratings call for 1,000 new users of 5 ratings each, and for 1,000 known
  users with one new rating each;
- quality: each held-out user with more than 20 ratings rates their first n by time through
  add_ratings (as `fmstore rate --method M` does); their `recommend` list against
  `recommend_for_ratings` of the same ratings and method (`query --rated --method M`; weighted
  is the default of both), and Recall@10 / NDCG@10 of the held-out likes (rating >= 4 among the
  rest) for each.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_data import load_from_argv

from fmstore import catalog, pipeline
from fmstore.config import TrainConfig
from fmstore.datasets import Dataset
from fmstore.evaluate.cold_start import cold_start_split
from fmstore.evaluate.metrics import ndcg_at_k, recall_at_k
from fmstore.publish import publish
from fmstore.recommend import Recommender
from fmstore.updates import Updater
from fmstore.updates.run import MovieRows
from fmstore.vectors import EdgeStore

SIZES = (3, 20)
NEW_USER_BASE = 10_000_000  # ids of users created here: far above MovieLens ids


def markdown(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(x) for x in row) + " |")
    return "\n".join(lines)


def _cell(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def histories(ratings) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each user's (movie ids, stars) ordered by time."""
    order = np.lexsort((ratings.movie_id, ratings.timestamp, ratings.user_id))
    users, movies, stars = ratings.user_id[order], ratings.movie_id[order], ratings.rating[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return {
        int(users[s]): (movies[s:e].astype(np.int64), stars[s:e].astype(np.float64))
        for s, e in zip(starts, ends, strict=True)
    }


def timed(fn) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def latency(updater: Updater, held_out, warm, rng) -> list[tuple]:
    rows = []
    new = [timed(lambda u=u, h=h: updater.add_ratings({NEW_USER_BASE + u: _first(h, 3)}))
           for u, h in held_out.items()]  # fmt: skip
    rows.append(("new user, 3 ratings", len(new), *_ms(new)))
    known = rng.choice(list(warm), size=200, replace=False)
    movies = np.unique(np.concatenate([h[0] for h in warm.values()]))
    once = []
    for u in known:
        unseen = np.setdiff1d(movies, warm[int(u)][0])
        movie = int(rng.choice(unseen))
        once.append(timed(lambda u=u, m=movie: updater.add_ratings({int(u): {m: 4.0}})))
    n_rated = np.mean([len(warm[int(u)][0]) + 1 for u in known])
    rows.append((f"known user, +1 rating (of {n_rated:.0f} on average)", len(once), *_ms(once)))
    rows.append(
        ("  of which the math (closed form + fold-in)", len(known), *_ms(math(updater, known)))
    )
    return rows


def math(updater: Updater, users) -> list[float]:
    """The compute of a known user's point alone: their movies' vectors read first, untimed."""
    from fmstore.threads import one_blas_thread

    movies_coll, _, run = updater._live()
    seconds = []
    with one_blas_thread():
        for u in users:
            ratings = run.training_ratings(int(u))
            found = updater.store.retrieve(movies_coll, list(ratings), vectors=["score", "rank"])
            vectors = MovieRows.of({m: v for m, (v, _) in found.items()})
            seconds.append(timed(lambda u=u, r=ratings, v=vectors: run.user_vectors(int(u), r, v)))
    return seconds


def _first(history, n) -> dict[int, float]:
    movies, stars = history
    return {int(m): float(s) for m, s in zip(movies[:n], stars[:n], strict=True)}


def _ms(seconds: list[float]) -> tuple[str, str]:
    s = np.array(seconds) * 1000
    return f"{np.percentile(s, 50):.1f}", f"{np.percentile(s, 99):.1f}"


def throughput(updater: Updater, warm, movie_ids, rng) -> list[tuple]:
    rows = []
    batch = {
        2 * NEW_USER_BASE + i: {int(m): float(rng.integers(1, 11)) / 2 for m in
                                rng.choice(movie_ids, 5, replace=False)}
        for i in range(1000)
    }  # fmt: skip
    seconds = timed(lambda: updater.add_ratings(batch))
    rows.append(("1,000 new users x 5 ratings", f"{seconds:.2f}", f"{1000 / seconds:,.0f}"))
    known = rng.choice(list(warm), size=min(1000, len(warm)), replace=False)
    batch = {}
    for u in known:
        unseen = np.setdiff1d(movie_ids, warm[int(u)][0])
        batch[int(u)] = {int(rng.choice(unseen)): 3.5}
    seconds = timed(lambda: updater.add_ratings(batch))
    rows.append(
        (
            f"{len(batch):,} known users x 1 new rating",
            f"{seconds:.2f}",
            f"{len(batch) / seconds:,.0f}",
        )
    )
    return rows


def quality(updater: Updater, store, engine, held_out) -> list[tuple]:
    eligible = {u: h for u, h in held_out.items() if len(h[0]) > max(SIZES)}
    rows = []
    for n in SIZES:
        for m, method in enumerate(("weighted", "fold-in")):
            base = (3 + 2 * n + m) * NEW_USER_BASE
            given = {base + u: _first(h, n) for u, h in eligible.items()}
            updater.add_ratings(given, method=method)
            rated, asked, relevant = [], [], []
            with Recommender(store, engine) as rec:
                for u, (movies, stars) in eligible.items():
                    rated.append(rec.recommend(base + u, 10)[0])
                    asked.append(rec.recommend_for_ratings(given[base + u], 10, method=method)[0])
                    relevant.append(set(movies[n:][stars[n:] >= 4.0].tolist()))
            keep = [i for i, r in enumerate(relevant) if r]
            same = np.mean([np.array_equal(a, b) for a, b in zip(rated, asked, strict=True)])
            for name, got in (
                (f"rate --method {method}", rated),
                (f"query --rated --method {method}", asked),
            ):
                hits = np.array([[x in relevant[i] for x in got[i]] for i in keep])
                n_rel = np.array([len(relevant[i]) for i in keep])
                rows.append(
                    (name, n, float(recall_at_k(hits, n_rel, 10).mean()),
                     float(ndcg_at_k(hits, n_rel, 10).mean()), f"{same:.2f}", len(keep))
                )  # fmt: skip
    return rows


def on_home(home: Path, argv: list[str]) -> None:
    """Latency and throughput on a home someone trained and published on DATASET: 200 of its
    users' first 3 ratings arrive as new users', known users rate one movie more."""
    data = load_from_argv(argv)
    rng = np.random.default_rng(0)
    everyone = histories(data.ratings)
    picked = rng.choice(list(everyone), size=200, replace=False)
    held_out = {int(u): everyone[int(u)] for u in picked}
    engine = catalog.make_engine(f"sqlite:///{home / 'catalog.db'}")
    with EdgeStore(home / "qdrant") as store:
        updater = Updater(store, engine)
        updater.sync()
        lat = latency(updater, held_out, everyone, rng)
        thr = throughput(updater, everyone, np.unique(data.ratings.movie_id), rng)
    engine.dispose()
    print(f"\n# Live updates on {data.name}, home {home} (load average {os.getloadavg()[0]:.1f})\n")
    print(markdown(["update", "users", "p50 ms", "p99 ms"], lat))
    print()
    print(markdown(["batch", "seconds", "updates/s"], thr))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--home"]:
        return on_home(Path(argv[1]), argv[2:])
    data = load_from_argv(argv)
    split = cold_start_split(data.ratings, user_fraction=0.1, movie_fraction=0.0)
    warm_data = Dataset(f"{data.name}-warm", data.source, "warm", split.train, data.movies)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="live-updates-") as work:
        work = Path(os.environ.get("LIVE_BENCH_DIR") or work)  # kept there, to profile
        began = time.perf_counter()
        trained = pipeline.run(warm_data, TrainConfig(tune_ranking=False), runs_dir=work / "runs")
        print(f"trained on {len(split.train):,} ratings in {time.perf_counter() - began:.0f} s")
        engine = catalog.make_engine(f"sqlite:///{work / 'catalog.db'}")
        with EdgeStore(work / "qdrant") as store:
            publish(trained.run_dir, store, engine)
            if os.environ.get("LIVE_BENCH_DIR"):
                return
            updater = Updater(store, engine)
            updater.sync()
            held_out, warm = histories(split.cold_users), histories(split.train)
            movie_ids = np.unique(split.train.movie_id)
            lat = latency(updater, held_out, warm, rng)
            thr = throughput(updater, warm, movie_ids, rng)
            qual = quality(updater, store, engine, held_out)
        engine.dispose()
    print(f"\n# Live updates on {data.name} (load average {os.getloadavg()[0]:.1f})\n")
    print("## One user's update, end to end (catalog + compute + upsert)\n")
    print(markdown(["update", "users", "p50 ms", "p99 ms"], lat))
    print("\n## Batch throughput (one add_ratings call)\n")
    print(markdown(["batch", "seconds", "updates/s"], thr))
    print("\n## Cold start through rate: held-out users, first n ratings by time\n")
    header = ["list", "n", "Recall@10", "NDCG@10", "same lists (rate = query)", "users"]
    print(markdown(header, qual))


if __name__ == "__main__":
    main(sys.argv[1:])
