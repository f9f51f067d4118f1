"""Many readers at once, as a helper the tests and benchmarks/many_readers.py share.

`drive` runs a writer (publishes, rollbacks and prunes, one after the other) beside readers that
each ask `queries` questions through a fresh Recommender (it reads the alias every time, as one
`fmstore query` does), and returns what they saw: latencies, errors, the switches each reader
saw. Readers are processes on the embedded store (this file run as a script is one) or threads
sharing one qdrant-client local-mode client.

    python tests/many_readers.py HOME QUERIES MOVIE_ID   # one reader process: JSON on stdout
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Seen:
    latencies: list[float] = field(default_factory=list)  # seconds per query
    errors: list[str] = field(default_factory=list)
    switches: int = 0  # times a reader's next query answered from another publication
    runs: set[str] = field(default_factory=set)

    def add(self, other: dict) -> None:
        self.latencies += other["latencies"]
        self.errors += other["errors"]
        self.switches += other["switches"]
        self.runs |= set(other["runs"])

    def table(self, what: str, readers: int, writes: list[str]) -> str:
        ms = sorted(x * 1000 for x in self.latencies)
        pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")  # noqa: E731
        return (
            f"{what}: {readers} readers, {len(ms)} queries, {len(self.errors)} errors, "
            f"p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, {self.switches} alias switches "
            f"seen, runs seen {sorted(self.runs)}; writer: {', '.join(writes)}"
        )


def ask(store, catalog, movie_id: int, queries: int) -> dict:
    """`queries` questions, each through a new Recommender (closed after it: its shards too)."""
    from fmstore.recommend import Recommender

    seen = Seen()
    last = None
    for _ in range(queries):
        t0 = time.perf_counter()
        try:
            with Recommender(store, catalog) as rec:
                ids, _ = rec.similar_items(movie_id, N=5)
                payloads = rec.movie_info([int(i) for i in ids])
                assert {p["run_id"] for p in payloads.values()} == {rec.run_id}
                collection = rec.movies_collection
        except Exception as exc:  # noqa: BLE001 - counted, the point of the test
            seen.errors.append(f"{type(exc).__name__}: {exc}")
            continue
        seen.latencies.append(time.perf_counter() - t0)
        seen.runs.add(collection.split("__")[1])
        seen.switches += last is not None and collection != last
        last = collection
    return {**vars(seen), "runs": sorted(seen.runs)}


def writer(store, engine, runs: tuple[Path, Path], publishes: int, rollbacks: int) -> list[str]:
    """Publishes alternating the two runs (forced: always a new publication), a rollback after
    every other publish while rollbacks are left, and a prune keeping 2 after each."""
    from fmstore.publish import prune, publish, rollback

    done = []
    for i in range(publishes):
        publish(runs[i % 2], store, engine, force=True)
        done.append("publish")
        if i % 2 == 1 and done.count("rollback") < rollbacks:
            rollback(store, engine)
            done.append("rollback")
        prune(store, engine, keep=2)
        done.append("prune")
    return done


def drive_processes(home: Path, engine, runs, movie_id: int, readers: int, queries: int, **w):
    """Edge: `readers` processes query HOME while this process writes through its own store."""
    from fmstore.vectors import EdgeStore

    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(home), str(queries), str(movie_id)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(readers)
    ]
    time.sleep(0.5)  # the readers are importing; let them start querying
    with EdgeStore(home / "qdrant") as store:
        writes = writer(store, engine, runs, **w)
    seen = Seen()
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        seen.add(json.loads(out))
    return seen, writes


def drive_threads(store, engine, runs, movie_id: int, readers: int, queries: int, **w):
    """Server path: `readers` threads share `store` while this thread writes through it."""
    results: list[dict] = []
    threads = [
        threading.Thread(target=lambda: results.append(ask(store, engine, movie_id, queries)))
        for _ in range(readers)
    ]
    for t in threads:
        t.start()
    writes = writer(store, engine, runs, **w)
    for t in threads:
        t.join(timeout=900)
    seen = Seen()
    for r in results:
        seen.add(r)
    return seen, writes


if __name__ == "__main__":
    from fmstore.config import Settings
    from fmstore.vectors import EdgeStore

    home, queries, movie_id = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    s = Settings(home=home)
    print(json.dumps(ask(EdgeStore(s.qdrant_path), s.catalog_url, movie_id, queries)))
