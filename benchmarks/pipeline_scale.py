"""The pipeline at ml-latest scale: seconds and peak RSS of each phase, and the ranking model's
sweep beside implicit's ALS sweep on the same ratings, same k, same CG steps.

    python benchmarks/pipeline_scale.py                       # 27,753,444 synthetic ratings
    python benchmarks/pipeline_scale.py --ratings 2000000     # a quick run on a smaller set
    python benchmarks/pipeline_scale.py --skip-fm --sweeps 2  # the ranking comparison only

Data: --data PATH (a MovieLens folder), else a synthetic ml-latest-shaped set of --ratings
ratings (283,228 users and 53,889 movies at full size, users scaled with the ratings and movies
with their square root, as benchmarks/train_speed.py does), written under --work the first time.

Each phase runs in its own process, so its peak RSS is its own:

1. load: read + validate + fingerprint the CSV files (no cache), as a first `fmstore train` does.
2. fm: `train()` of the rating FM for --fm-epochs epochs with the ranking model off.
3. ranking: load (from the binary cache), encode, then `fit_ratings` with --sweeps sweeps at
   k = --factors and the default CG steps; seconds of each sweep (progress callback), of the setup
   (CSR copies, feature weights) and of the final exact user step. Peak RSS is the fit's own
   (the process's high-water mark is reset after loading, /proc/self/clear_refs) and the whole
   process's.
4. implicit: implicit's ALS (`implicit.cpu.als.AlternatingLeastSquares`, use_cg, the same CG
   steps, float32, iterations=1) on the same user x movie matrix with fmstore's confidence
   weights, timed per `fit` call (= one sweep: users then movies), --sweeps times.
5. plain: as 3. with the item features off (the same model as implicit's, biases aside).

ratio = fmstore's mean seconds per sweep / implicit's, on the wall clock and in CPU seconds of
all threads (steadier when other work shares the machine; sweeps after the first). fmstore's sweep
also fits the genre and year embeddings (a few preconditioned CG steps on all of them), which implicit
has no part of, so a fit without features is measured too (5.; --skip-plain leaves it out).
Both use the same thread count (fmstore.threads: FMSTORE_THREADS, else the CPUs this process may
use). The load average before and after each phase says how busy the machine was.

implicit is a benchmark-only dependency: `pip install -e .[bench]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# fit_ranking's parts of a sweep (the others, setup and the final exact user step, run once)
SWEEP_PARTS = ("user", "item", "features")
FULL = dict(ratings=27_753_444, users=283_228, movies=53_889)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="MovieLens folder; default: synthetic, under --work")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fmstore-bench")
    ap.add_argument("--ratings", type=int, default=FULL["ratings"])
    ap.add_argument("--factors", type=int, default=256, help="the ranking model's k")
    ap.add_argument("--sweeps", type=int, default=3, help="ranking sweeps and implicit fits")
    ap.add_argument("--fm-epochs", type=int, default=1)
    ap.add_argument("--skip-fm", action="store_true")
    ap.add_argument("--skip-implicit", action="store_true")
    ap.add_argument("--skip-plain", action="store_true", help="no ranking fit without features")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        result = CHILDREN[args.child](args)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    args.work.mkdir(parents=True, exist_ok=True)
    args.data = args.data or synthetic(args)
    args.cache = args.work / "cache"
    report: dict = {"data": str(args.data), "factors": args.factors, "sweeps": args.sweeps}
    with tempfile.TemporaryDirectory(dir=args.work) as fresh:
        report["load"] = child("load", args, cache=Path(fresh))
    if not args.skip_fm:
        report["fm"] = child("fm", args)
    report["ranking"] = child("ranking", args)
    if not args.skip_plain:
        report["plain"] = child("plain", args)
    if not args.skip_implicit:
        report["implicit"] = child("implicit", args)
        for name in ("ranking", "plain"):
            if name in report:
                mine, theirs = report[name], report["implicit"]
                report[name]["ratio"] = mine["sweep_mean"] / theirs["sweep_mean"]
                report[name]["cpu_ratio"] = mine["sweep_cpu_mean"] / theirs["sweep_cpu_mean"]
    print(json.dumps(report, indent=2) if args.json else table(report))
    return 0


def synthetic(args) -> Path:
    from fmstore import datasets

    scale = args.ratings / FULL["ratings"]
    users = max(100, round(FULL["users"] * scale))
    movies = max(100, round(FULL["movies"] * scale**0.5))
    out = args.work / f"synth-{args.ratings}-{users}-{movies}"
    if not (out / "ratings.csv").is_file():
        print(f"writing synthetic data to {out} ...", file=sys.stderr, flush=True)
        datasets.synthesize(out, n_ratings=args.ratings, n_users=users, n_movies=movies, seed=0)
    return out


def child(kind: str, args, cache: Path | None = None) -> dict:
    """Run one phase in a fresh process; returns its RESULT dict with the load averages."""
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(args.data)]
    cmd += ["--cache", str(cache or args.cache), "--factors", str(args.factors)]
    cmd += ["--sweeps", str(args.sweeps), "--fm-epochs", str(args.fm_epochs)]
    print(f"running {kind} ...", file=sys.stderr, flush=True)
    env = dict(os.environ)
    if kind == "implicit":  # as implicit asks: its threads call BLAS, which must not start more
        env["OPENBLAS_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    before = os.getloadavg()[0]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"the {kind} phase failed (exit {proc.returncode}); see above")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["load_average"] = [round(before, 2), round(os.getloadavg()[0], 2)]
    return result


# ---- phases (children) ---------------------------------------------------------------------------


def _threads() -> int:
    from fmstore.threads import apply_threads

    return apply_threads(None)


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux >= 4.0), so the next peak is the phase's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_gb(field: str = "VmHWM") -> float:
    """This process's peak RSS (VmHWM) or current RSS (VmRSS) in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def child_load(args) -> dict:
    from fmstore import datasets

    started = time.perf_counter()
    ds = datasets.load_dataset(args.data, cache_dir=args.cache)
    return {"seconds": time.perf_counter() - started, "ratings": len(ds.ratings)}


def child_fm(args) -> dict:
    from fmstore import datasets
    from fmstore.config import TrainConfig
    from fmstore.train import train

    threads = _threads()
    ds = datasets.load_dataset(args.data, cache_dir=args.cache)
    config = TrainConfig(epochs=args.fm_epochs, patience=args.fm_epochs, ranking=False)
    started = time.perf_counter()
    result = train(ds, config)
    return {
        "seconds": time.perf_counter() - started,
        "epoch_seconds": result.metrics["epoch_train_seconds"],
        "factors": result.config.factors,
        "threads": threads,
    }


def _encoded(args):
    """(dataset, vocabulary, encoded ratings) as `fmstore train` builds them (all ratings)."""
    from fmstore import datasets
    from fmstore.config import TrainConfig
    from fmstore.features import Vocabulary, encode

    ds = datasets.load_dataset(args.data, cache_dir=args.cache)
    vocab = Vocabulary.build(ds.ratings, ds.movies, TrainConfig().fields)
    return ds, vocab, encode(ds.ratings, vocab, ds.movies)


def child_ranking(args, features_on: bool = True) -> dict:
    import numpy as np

    from fmstore.config import RankingConfig
    from fmstore.features import ranking_item_features
    from fmstore.train.ranking import fit_ranking

    threads = _threads()
    ds, vocab, enc = _encoded(args)
    features, n_features = ranking_item_features(vocab, ds.movies)
    features = features if features_on else None
    config = RankingConfig(factors=args.factors, iterations=args.sweeps)
    n_users, n_items = len(vocab.user_ids), len(ds.movies)
    # the kernels compile (or load from numba's cache) on a tiny fit first: not part of a sweep
    fit_ranking(enc.user[:100], enc.item[:100], enc.rating[:100], n_users, n_items, features,
                n_features, RankingConfig(factors=8, iterations=1))  # fmt: skip
    before_gb = _peak_rss_gb("VmRSS")  # the data and its encoding, held by the caller
    own = _reset_peak_rss()
    heard: list[float] = []
    cpu: list[float] = []

    def progress(*_):
        heard.append(time.perf_counter())
        cpu.append(time.process_time())

    started = time.perf_counter()
    model = fit_ranking(enc.user, enc.item, enc.rating, n_users, n_items, features, n_features,
                        config, progress=progress)  # fmt: skip
    total = time.perf_counter() - started
    sweeps = model.sweep_seconds
    setup = heard[0] - sweeps[0] - started
    # CPU seconds of all threads: steadier than the wall clock when other work shares the CPUs
    cpu_sweeps = list(np.diff(cpu))
    return {
        "features_on": features_on,
        "sweep_cpu_seconds": cpu_sweeps,
        "sweep_cpu_mean": float(np.mean(cpu_sweeps)) if cpu_sweeps else float("nan"),
        "seconds": total,
        "setup_seconds": setup,
        "sweep_seconds": sweeps,
        "sweep_mean": sum(sweeps) / len(sweeps),
        "final_user_seconds": total - (heard[-1] - started),
        "phase_cpu_seconds": model.phase_cpu_seconds,
        "fit_peak_rss_gb": _peak_rss_gb(),
        "fit_peak_is_own": own,
        "rss_before_fit_gb": before_gb,
        "ratings": len(enc.user),
        "users": n_users,
        "movies": n_items,
        "features": n_features,
        "cg_steps": config.cg_steps,
        "threads": threads,
    }


def child_implicit(args) -> dict:
    import numpy as np
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    from fmstore.config import RankingConfig
    from fmstore.serving import implicit_weight

    threads = _threads()
    ds, vocab, enc = _encoded(args)
    c = RankingConfig()
    w = implicit_weight(enc.rating, c.confidence, c.conf_alpha).astype(np.float32)
    shape = (len(vocab.user_ids), len(ds.movies))
    user_items = sp.csr_matrix((w, (enc.user, enc.item)), shape=shape)
    del w, enc
    own = _reset_peak_rss()
    model = AlternatingLeastSquares(
        factors=args.factors, iterations=1, use_cg=True, calculate_training_loss=False,
        num_threads=threads, random_state=0,
    )  # fmt: skip
    model.cg_steps = c.cg_steps  # an attribute in implicit 0.7, not a constructor argument
    seconds, cpu = [], []
    for _ in range(args.sweeps):  # each fit: one sweep, warm-started from the last one
        started, cpu_started = time.perf_counter(), time.process_time()
        model.fit(user_items, show_progress=False)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return {
        "sweep_seconds": seconds,
        "sweep_mean": sum(seconds) / len(seconds),
        "sweep_cpu_seconds": cpu,
        "sweep_cpu_mean": sum(cpu[1:]) / len(cpu[1:]) if len(cpu) > 1 else cpu[0],
        "fit_peak_rss_gb": _peak_rss_gb(),
        "fit_peak_is_own": own,
        "threads": threads,
    }


CHILDREN = {
    "load": child_load,
    "fm": child_fm,
    "ranking": child_ranking,
    "plain": lambda args: child_ranking(args, features_on=False),
    "implicit": child_implicit,
}


def table(report: dict) -> str:
    r = report["ranking"]
    lines = [
        f"data: {report['data']} ({r['ratings']:,} ratings, {r['users']:,} users, "
        f"{r['movies']:,} movies, {r['features']} item features), k={report['factors']}, "
        f"CG steps {r['cg_steps']}, {r['threads']} threads, {os.cpu_count()} CPUs on the machine",
        "",
        "| phase | seconds | peak RSS (GB) | load average (before, after) |",
        "| --- | ---: | ---: | --- |",
    ]

    def row(name, seconds, rss, phase):
        lines.append(f"| {name} | {seconds} | {rss} | {phase['load_average']} |")

    load = report["load"]
    row("load (CSV, no cache)", f"{load['seconds']:.1f}", f"{load['peak_rss_gb']:.2f}", load)
    if "fm" in report:
        fm = report["fm"]
        row(
            f"FM train ({len(fm['epoch_seconds'])} epoch, k={fm['factors']}, with validation)",
            f"{fm['seconds']:.1f}",
            f"{fm['peak_rss_gb']:.2f}",
            fm,
        )
    fit_rss = f"{r['fit_peak_rss_gb']:.2f} ({r['rss_before_fit_gb']:.2f} before the fit)"
    row("ranking fit: setup", f"{r['setup_seconds']:.1f}", fit_rss, r)
    sweeps = lambda x: " / ".join(f"{s:.1f}" for s in x["sweep_seconds"])  # noqa: E731
    cpu = lambda x: " / ".join(f"{s:.1f}" for s in x["sweep_cpu_seconds"])  # noqa: E731
    row(f"ranking fit: per sweep (CPU s: {cpu(r)})", sweeps(r), "", r)
    row("ranking fit: final user step (16 CG)", f"{r['final_user_seconds']:.1f}", "", r)
    if "plain" in report:
        p = report["plain"]
        rss = f"{p['fit_peak_rss_gb']:.2f} ({p['rss_before_fit_gb']:.2f} before the fit)"
        row(f"ranking fit without features: per sweep (CPU s: {cpu(p)})", sweeps(p), rss, p)
    if "implicit" in report:
        i = report["implicit"]
        rss = f"{i['fit_peak_rss_gb']:.2f} (process {i['peak_rss_gb']:.2f})"
        row(f"implicit ALS: per sweep (CPU s: {cpu(i)})", sweeps(i), rss, i)
        lines += ["", "fmstore / implicit, seconds per sweep (wall; CPU after the first sweep):"]
        for name, what in (("ranking", "the ranking model"), ("plain", "without features")):
            if name in report:
                x = report[name]
                lines.append(
                    f"- {what}: wall {x['sweep_mean']:.1f} / {i['sweep_mean']:.1f} = "
                    f"**{x['ratio']:.2f}**, CPU {x['sweep_cpu_mean']:.1f} / "
                    f"{i['sweep_cpu_mean']:.1f} = **{x['cpu_ratio']:.2f}** (goal <= 0.5)"
                )
    lines += ["", "fmstore's CPU seconds by part (a sweep's parts: mean over the sweeps):"]
    for name, what in (("ranking", "the ranking model"), ("plain", "without features")):
        parts = report.get(name, {}).get("phase_cpu_seconds", {})
        per = {p: s / (report["sweeps"] if p in SWEEP_PARTS else 1) for p, s in parts.items()}
        if per:
            lines.append(f"- {what}: " + ", ".join(f"{p} {s:.1f}" for p, s in per.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
