"""Training speed: fmstore's trainer against the original notebook's recipe, same data, same run.

    python benchmarks/train_speed.py                      # ml-latest-shaped synthetic data, CPU
    python benchmarks/train_speed.py --ratings 2000000    # a quick run on a smaller synthetic set
    python benchmarks/train_speed.py --device cuda        # the same on a GPU
    python benchmarks/train_speed.py --json               # the figures as JSON

Data: --data PATH (a MovieLens folder), else a synthetic set of --ratings ratings shaped like
ml-latest (283,228 users, 53,889 movies at full size; datasets.synthesize, seed 0), written under
--work (default /tmp/fmstore-bench) the first time and reused after.

Each measurement runs in its own process, so peak RSS is that step's own:

1. load, no cache: read + validate + fingerprint ratings.csv and movies.csv, write the binary cache.
   (The CSV files themselves are in the OS page cache after the first run: this is the cost of
   parsing, not of the disk.)
2. load, cached: the same call again, served from the binary cache.
3. fmstore: reads the CSV files (no cache, like a first `fmstore train`) and runs a full `train()`
   (split, vocabulary, encoding, --epochs epochs with validation) with k = --factors and the
   large-batch settings below; ratings/s counts the best training pass (shuffle included,
   validation not), from metrics["epoch_train_seconds"]. Its peak RSS covers all of that.
4. notebook: its recipe (as in benchmarks/quality.py's notes): one nn.Embedding over all features
   (user, movie, genres, year) for v and one for w, sigmoid(y) * 5.5, torch DataLoader over a
   TensorDataset of per-rating feature rows, batch 1024, shuffle, dense torch.optim.Adam over the
   full tables, k = --factors. It runs --notebook-steps steps (after 3 warm-up steps), since a
   full epoch takes over an hour here; its TensorDataset holds only the ratings those steps draw
   from (building it for all 25M ratings would take 4+ GB and change nothing per step).

The ratio (fmstore ratings/s / notebook ratings/s) is the robust figure on a shared machine:
both sides see the same load.

Batch size and lr: fmstore's defaults, which follow the data size (fmstore/train/defaults.py:
batch 1024 and lr 0.003 below 1M training ratings, as tuned on ml-latest-small; at ml-latest
scale batch 2^19 and lr 0.03, since the step is bound by the rows it touches and batches of 2^19
ratings touch each row for many ratings at once). --batch-size and --lr override them.

--device cuda: the same measurements on the GPU (the torch engine: data and model resident on
the device, no host synchronisation inside a step; the notebook's recipe on the GPU as well).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FULL = dict(ratings=27_753_444, users=283_228, movies=53_889)
EPOCH_RATINGS = 25_000_000  # "seconds per epoch" is quoted for 25M training ratings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", type=Path, help="MovieLens folder; default: synthetic data under --work"
    )
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fmstore-bench")
    ap.add_argument("--ratings", type=int, default=FULL["ratings"])
    ap.add_argument(
        "--users", type=int, help="default: scaled with --ratings from ml-latest's shape"
    )
    ap.add_argument(
        "--movies", type=int, help="default: scaled with --ratings from ml-latest's shape"
    )
    ap.add_argument("--factors", type=int, default=120)
    ap.add_argument("--batch-size", type=int, help="default: fmstore's (follows the data size)")
    ap.add_argument("--lr", type=float, help="default: fmstore's (follows the data size)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--engine", default="auto", help="auto | numba | torch (fmstore's step)")
    ap.add_argument("--notebook-steps", type=int, default=30)
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--skip-load", action="store_true", help="do not measure loading")
    ap.add_argument("--skip-notebook", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        result = CHILDREN[args.child](args)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "--device cuda: no CUDA GPU is visible to torch (torch.cuda.is_available() is False); "
                "run on a machine with one, or use --device cpu",
                file=sys.stderr,
            )
            return 2
    elif args.device != "cpu":
        print(f"--device {args.device!r}: use cpu or cuda", file=sys.stderr)
        return 2

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or synthetic(args)
    report: dict = {
        "data": str(data),
        "device": args.device,
        "factors": args.factors,
        "cpus": os.cpu_count(),
    }
    cache = args.work / "cache"
    fresh = Path(tempfile.mkdtemp(prefix="cache-", dir=args.work))
    try:
        if not args.skip_load:
            report["load_cold"] = child("load", args, data, fresh)
            report["load_cached"] = child("load", args, data, fresh)
            shutil.rmtree(fresh)
            fresh.mkdir()
        # from the CSV files, as a first `fmstore train` does: its peak RSS includes the parse
        report["fmstore"] = child("fmstore", args, data, fresh)
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    if not args.skip_notebook:
        report["notebook"] = child("notebook", args, data, cache)
        report["ratio"] = report["fmstore"]["ratings_per_s"] / report["notebook"]["ratings_per_s"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table(report, args))
    return 0


def synthetic(args) -> Path:
    from fmstore import datasets

    scale = args.ratings / FULL["ratings"]
    users = args.users or max(100, round(FULL["users"] * scale))
    movies = args.movies or max(100, round(FULL["movies"] * scale**0.5))
    out = args.work / f"synth-{args.ratings}-{users}-{movies}"
    if not (out / "ratings.csv").is_file():
        print(f"writing synthetic data to {out} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        datasets.synthesize(out, n_ratings=args.ratings, n_users=users, n_movies=movies, seed=0)
        print(f"  done in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return out


def child(kind: str, args, data: Path, cache: Path) -> dict:
    """Run one measurement in a fresh process; returns its RESULT dict."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--data",
        str(data),
        "--cache",
        str(cache),
        "--factors",
        str(args.factors),
        *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
        *(["--lr", str(args.lr)] if args.lr else []),
        "--epochs",
        str(args.epochs),
        "--engine",
        args.engine,
        "--device",
        args.device,
        "--notebook-steps",
        str(args.notebook_steps),
    ]
    print(f"running {kind} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(
            f"the {kind} measurement failed (exit {proc.returncode}); see its output above"
        )
    return json.loads(lines[-1][len("RESULT ") :])


# ------------------------------------------------------------------------------------------------
# Children
# ------------------------------------------------------------------------------------------------


def child_load(args) -> dict:
    from fmstore import datasets

    t = time.perf_counter()
    ds = datasets.load_dataset(args.data, cache_dir=args.cache)
    return {
        "seconds": time.perf_counter() - t,
        "ratings": len(ds.ratings),
        "movies": len(ds.movies),
    }


def child_fmstore(args) -> dict:
    from fmstore import datasets
    from fmstore.config import TrainConfig
    from fmstore.train import train

    ds = datasets.load_dataset(args.data, cache_dir=args.cache)
    config = TrainConfig(
        factors=args.factors,
        batch_size=args.batch_size,
        lr=args.lr,
        epochs=args.epochs,
        patience=args.epochs,
        device=args.device,
    )
    cpu_seconds = _time_engine_cpu()
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    result = train(ds, config, engine=args.engine)
    total = time.perf_counter() - t
    passes = result.metrics["epoch_train_seconds"]
    n_train = result.metrics["n_train"]
    best = min(passes)
    return {
        "ratings_per_s": n_train / best,
        # on a shared machine: ratings per CPU-second of this process x its CPUs estimates
        # what an idle machine would do (the engines use every core)
        "ratings_per_cpu_s": n_train / min(cpu_seconds) if cpu_seconds else None,
        "load_average": [load_before, os.getloadavg()[0]],
        "epoch_train_seconds": passes,
        "epoch_seconds": [h.seconds for h in result.history],
        "train_call_seconds": total,
        "n_train": n_train,
        "valid_rmse": result.metrics["valid_rmse"],
        "batch_size": result.config.batch_size,
        "lr": result.config.lr,
        "chosen": result.metrics["defaults"]["batch_size"]["chosen"],
        "engine": args.engine,
        "device": result.device,
    }


def _time_engine_cpu() -> list[float]:
    """CPU seconds (all threads of this process) of each training pass, filled in as train()
    runs: the engine's epoch is wrapped (validation and setup are left out)."""
    from fmstore.train import loop

    seconds: list[float] = []
    make_engine = loop.make_engine

    def timed_engine(*args, **kwargs):
        engine = make_engine(*args, **kwargs)
        epoch = engine.epoch

        def timed_epoch(order, catch_up_every):
            start = time.process_time()
            sse = epoch(order, catch_up_every)
            seconds.append(time.process_time() - start)
            return sse

        engine.epoch = timed_epoch
        return engine

    loop.make_engine = timed_engine
    return seconds


def child_notebook(args) -> dict:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from fmstore import datasets
    from fmstore.config import TrainConfig
    from fmstore.datasets.splits import split_indices
    from fmstore.features import Vocabulary, encode, item_rows, user_rows

    device = torch.device(args.device)
    ds = datasets.load_dataset(args.data, cache_dir=args.cache)
    train_idx, _ = split_indices(len(ds.ratings), 0.1, 0)
    ratings = ds.ratings.take(train_idx)
    vocab = Vocabulary.build(ratings, ds.movies, TrainConfig.fields)
    users, items = user_rows(vocab), item_rows(vocab, ds.movies)
    # the ratings the timed steps draw from (see the module docstring)
    need = min(len(ratings), (args.notebook_steps + 3) * 1024 * 4)
    pick = np.random.default_rng(0).choice(len(ratings), need, replace=False)
    enc = encode(ratings.take(pick), vocab, ds.movies)
    index = torch.as_tensor(np.concatenate([users.index[enc.user], items.index[enc.item]], axis=1))
    weight = torch.as_tensor(
        np.concatenate([users.weight[enc.user], items.weight[enc.item]], axis=1)
    )
    target = torch.as_tensor(enc.rating)
    loader = DataLoader(TensorDataset(index, weight, target), batch_size=1024, shuffle=True)

    class NotebookFM(nn.Module):
        def __init__(self, n_features: int, k: int):
            super().__init__()
            self.w0 = nn.Parameter(torch.zeros(1))
            self.w = nn.Embedding(n_features, 1)
            self.v = nn.Embedding(n_features, k)
            nn.init.normal_(self.v.weight, std=0.01)
            nn.init.zeros_(self.w.weight)

        def forward(self, idx, wt):
            vx = self.v(idx) * wt.unsqueeze(-1)
            linear = (self.w(idx).squeeze(-1) * wt).sum(1)
            pairs = 0.5 * (vx.sum(1).square() - vx.square().sum(1)).sum(1)
            return torch.sigmoid(self.w0 + linear + pairs) * 5.5

    model = NotebookFM(vocab.n_features, args.factors).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-5)
    loss_fn = nn.MSELoss()
    done, started = 0, None
    for step, (idx, wt, r) in enumerate(loader):
        if step == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        if step == 3 + args.notebook_steps:
            break
        idx, wt, r = idx.to(device), wt.to(device), r.to(device)
        loss = loss_fn(model(idx, wt), r)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step >= 3:
            done += len(r)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {
        "ratings_per_s": done / seconds,
        "steps": args.notebook_steps,
        "seconds": seconds,
        "n_features": vocab.n_features,
    }


CHILDREN = {"load": child_load, "fmstore": child_fmstore, "notebook": child_notebook}


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------


def table(report: dict, args) -> str:
    fm = report["fmstore"]
    lines = [
        f"Data: {report['data']} ({fm['n_train']:,} training ratings); device {report['device']}, "
        f"{report['cpus']} CPUs; k = {report['factors']}",
        "",
    ]
    if "load_cold" in report:
        lines += [
            "| load | seconds | peak RSS (GiB) |",
            "| --- | ---: | ---: |",
            f"| no cache (parse, validate, fingerprint, write cache) | {report['load_cold']['seconds']:.1f} | "
            f"{report['load_cold']['peak_rss_gb']:.2f} |",
            f"| cached | {report['load_cached']['seconds']:.1f} | {report['load_cached']['peak_rss_gb']:.2f} |",
            "",
        ]
    lines += [
        "| recipe | batch | measured | ratings/s | s per 25M-rating epoch | peak RSS (GiB) |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
        f"| fmstore (engine {fm['engine']} on {fm['device']}, lr {fm['lr']}"
        f"{', defaults' if fm['chosen'] else ''}) | {fm['batch_size']:,} | "
        f"{len(fm['epoch_train_seconds'])} epoch(s), best pass {min(fm['epoch_train_seconds']):.2f} s "
        f"(with validation {min(fm['epoch_seconds']):.2f} s) | {fm['ratings_per_s']:,.0f} | "
        f"{EPOCH_RATINGS / fm['ratings_per_s']:.1f} | {fm['peak_rss_gb']:.2f} |",
    ]
    if "notebook" in report:
        nb = report["notebook"]
        lines += [
            f"| notebook (DataLoader, dense Adam, sigmoid) | 1,024 | {nb['steps']} steps, {nb['seconds']:.1f} s | "
            f"{nb['ratings_per_s']:,.0f} | {EPOCH_RATINGS / nb['ratings_per_s']:,.0f} | {nb['peak_rss_gb']:.2f} |",
            f"| **ratio fmstore / notebook** | | | **{report['ratio']:,.0f}x** | | |",
        ]
    lines += [
        "",
        f"fmstore: valid RMSE {fm['valid_rmse']:.4f} after {len(fm['epoch_seconds'])} epoch(s); "
        f"the whole train() call (with setup and validation) took {fm['train_call_seconds']:.1f} s",
    ]
    if fm.get("ratings_per_cpu_s") and report["device"] == "cpu":
        cpus = report["cpus"]
        lines.append(
            f"load average {fm['load_average'][0]:.1f} -> {fm['load_average'][1]:.1f} on "
            f"{cpus} CPUs; {fm['ratings_per_cpu_s']:,.0f} ratings per CPU-second of the best pass, "
            f"x {cpus} CPUs = {fm['ratings_per_cpu_s'] * cpus:,.0f} ratings/s on an idle machine "
            "(estimate)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
