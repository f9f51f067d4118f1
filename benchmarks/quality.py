"""Quality benchmark: fmstore's default model, the original notebook's recipe and two baselines on
ml-latest-small (seed-0 90/10 split), as one markdown table ready for the README.

    python benchmarks/quality.py                         # the table (2 trainings, ~1 min on CPU)
    python benchmarks/quality.py --seeds 0 1 2 3 4       # + valid RMSE mean/spread over seeds
    python benchmarks/quality.py --cold-start            # + cold-start users and movies
    python benchmarks/quality.py --candidate batch_size=4096,lr=0.01,weight_decay=0.05
                                                         # + another config, in every table
    python benchmarks/quality.py --json                  # everything as JSON

Data: --data PATH, else $FMSTORE_DATA, else ../shared/data/ml-latest-small beside the repo.

The notebook's recipe, re-expressed in fmstore: k=120, Adam lr 1e-3, batch 1024, 10 epochs,
sigmoid(y)*5.5 link, lr x0.1 at epoch 7, no early stop (the best epoch is kept, as for any run).
Its regulariser was Adam's weight_decay=1e-5: the gradient of every parameter gets + wd * theta at
every step, i.e. (wd/2)|theta|^2 added to each batch's mean loss, N (wd/2) |theta|^2 per epoch in
sum-of-squared-errors units (N training ratings), whatever the feature's frequency. That is exactly
fmstore's `prior_reg` (L2 per feature and epoch, spread over its occurrences): prior_reg =
N * wd / 2 ~= 0.45 on ml-latest-small, with the per-occurrence weight_decay 0. (Adam's coupling of
the decay through its normalisation is not reproduced: fmstore's penalty is part of the loss.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fmstore import datasets
from fmstore import evaluate as ev
from fmstore.config import TrainConfig
from fmstore.datasets.splits import split_indices
from fmstore.train import train

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_WEIGHT_DECAY = 1e-5


def default_data() -> Path:
    if os.environ.get("FMSTORE_DATA"):
        return Path(os.environ["FMSTORE_DATA"])
    return REPO.parent / "shared" / "data" / "ml-latest-small"


def notebook_config(dataset, seed: int = 0) -> TrainConfig:
    """The notebook's recipe; its weight decay mapped to fmstore's per-occurrence L2 (see above)."""
    train_idx, _ = split_indices(len(dataset.ratings), TrainConfig.valid_fraction, seed)
    n_train = len(train_idx)
    return TrainConfig(
        epochs=10,
        factors=120,
        lr=1e-3,
        batch_size=1024,
        link="sigmoid",
        lr_milestones=(7,),
        lr_gamma=0.1,
        patience=10,
        weight_decay=0.0,
        prior_reg=round(NOTEBOOK_WEIGHT_DECAY * n_train / 2, 4),
        seed=seed,
    )


def parse_candidate(text: str) -> TrainConfig:
    """'batch_size=4096,lr=0.01' -> TrainConfig with those fields changed."""
    config = TrainConfig()
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not hasattr(config, key):
            sys.exit(f"--candidate: unknown TrainConfig field {key!r}")
        current = getattr(config, key)
        if isinstance(current, tuple):
            parsed = tuple(int(v) for v in value.split("/") if v)
        else:
            parsed = type(current)(value)
        config = replace(config, **{key: parsed})
    return config


def describe(config: TrainConfig) -> str:
    d = config
    text = f"k={d.factors} lr={d.lr:g} batch={d.batch_size} wd={d.weight_decay:g} prior={d.prior_reg:g} epochs<={d.epochs}"
    if d.link != "identity":
        text += f" {d.link}"
    if d.lr_milestones:
        text += f" lr x{d.lr_gamma:g}@{'/'.join(map(str, d.lr_milestones))}"
    return text


def metrics_row(name: str, config_text: str, m: dict, seconds: float, best_epoch=None) -> dict:
    return {
        "name": name,
        "config": config_text,
        "rmse": m["rmse"],
        "mae": m["mae"],
        "recall@10": m["recall@10"],
        "recall@20": m["recall@20"],
        "ndcg@10": m["ndcg@10"],
        "train_seconds": seconds,
        "best_epoch": best_epoch,
    }


def markdown(headers: list[str], rows: list[list]) -> str:
    def cell(x):
        if isinstance(x, float):
            return "" if np.isnan(x) else f"{x:.4f}"
        return "" if x is None else str(x)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=None,
        help="also train the default (and each --candidate) with these seeds",
    )
    ap.add_argument("--cold-start", action="store_true", help="also the cold-start tables")
    ap.add_argument(
        "--candidate",
        action="append",
        default=[],
        help="another config, as field=value,... (repeatable)",
    )
    ap.add_argument("--no-notebook", action="store_true", help="skip the notebook recipe")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    data = args.data or default_data()
    dataset = datasets.load_dataset(data)
    log(f"{dataset.name}: {len(dataset.ratings):,} ratings, {len(dataset.movies):,} movies")

    configs: list[tuple[str, TrainConfig]] = [
        ("fmstore default", TrainConfig(device=args.device, refit=False))
    ]
    if not args.no_notebook:
        notebook = replace(notebook_config(dataset), device=args.device, ranking=False, refit=False)
        configs.append(("notebook recipe", notebook))
    for i, text in enumerate(args.candidate, 1):
        candidate = replace(parse_candidate(text), device=args.device, ranking=False, refit=False)
        configs.append((f"candidate {i}", candidate))

    out: dict = {"dataset": dataset.name, "n_ratings": len(dataset.ratings), "rows": []}
    default_result = None
    trained: dict = {}  # (name, seed) -> (valid RMSE, Recall@10), reused by --seeds
    for name, config in configs:
        log(f"training {name}: {describe(config)}")
        result = train(dataset, config)
        report = ev.evaluate_result(result, dataset, config)
        m = result.metrics
        trained[name, config.seed] = (m["valid_rmse"], report.rows[ev.MODEL]["recall@10"])
        out["rows"].append(
            metrics_row(
                name,
                describe(config),
                report.rows[ev.MODEL],
                m["train_seconds"],
                f"{m['best_epoch']}/{m['epochs_run']}",
            )
        )
        if default_result is None:
            default_result, default_report = result, report
    # Baselines on the default's (seed-0) split; their "train" time is the fit.
    t0 = time.perf_counter()
    rows = ev.Rows(default_result.vocab.user_ids, dataset.movies.movie_id)
    fitted = ev.baselines(default_result.train_ratings, rows)
    fit_seconds = time.perf_counter() - t0
    for name, label in (
        (ev.POPULARITY, "movie count; RMSE via movie mean"),
        (ev.BIASES, "ALS biases, reg_i 10, reg_u 15, 10 sweeps"),
    ):
        out["rows"].append(metrics_row(name, label, default_report.rows[name], fit_seconds))

    # The ranking fmstore publishes (the ranking model; served through a store in
    # benchmarks/ranking.py), the rating model's own order with a support floor, and popularity.
    model = ev.BiasedMF.from_serving(*_form(default_result))
    counts = fitted[ev.POPULARITY].counts
    variants = {
        "served: the ranking model": ev.Served.of(model, default_result.ranking),
        "rating model, movies with >= 20 ratings only": ev.Reranked(model, counts, min_count=20),
        "popularity": fitted[ev.POPULARITY],
    }
    out["rerank"] = ev.evaluate_predictors(
        variants, default_result.train_ratings, default_result.valid_ratings, rows
    )

    if args.seeds:
        out["seeds"] = []
        for name, config in [c for c in configs if c[0] != "notebook recipe"]:
            values, recalls = [], []
            for seed in args.seeds:
                if (name, seed) not in trained:
                    log(f"training {name} seed {seed}")
                    seeded = replace(config, seed=seed, ranking=False)  # RMSE only
                    result = train(dataset, seeded)
                    recall = ev.evaluate_result(result, dataset, seeded).rows[ev.MODEL]["recall@10"]
                    trained[name, seed] = (result.metrics["valid_rmse"], recall)
                values.append(trained[name, seed][0])
                recalls.append(trained[name, seed][1])
            out["seeds"].append(
                {
                    "name": name,
                    "config": describe(config),
                    "seeds": args.seeds,
                    "valid_rmse": values,
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                    "recall@10_mean": statistics.fmean(recalls),
                }
            )

    if args.cold_start:
        log("training for cold start (10% of users and 10% of movies held out)")
        cold = ev.run_cold_start(dataset, TrainConfig(device=args.device))
        out["cold_start"] = cold.to_json()

    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print_tables(out)
    return 0


def _form(result):
    f = result.model.serving_form()
    return f.item_vectors, f.item_bias, f.user_vectors, f.user_bias, f.w0


def print_tables(out: dict) -> None:
    print(
        f"### {out['dataset']}, seed-0 90/10 split: held-out ratings; relevant = rated >= 4, ranked "
        "among all movies the user did not rate in training\n"
    )
    print(
        markdown(
            [
                "model",
                "config",
                "RMSE",
                "MAE",
                "Recall@10",
                "Recall@20",
                "NDCG@10",
                "train s",
                "best epoch",
            ],
            [
                [
                    r["name"],
                    r["config"],
                    r["rmse"],
                    r["mae"],
                    r["recall@10"],
                    r["recall@20"],
                    r["ndcg@10"],
                    f"{r['train_seconds']:.1f}",
                    r["best_epoch"],
                ]
                for r in out["rows"]
            ],
        )
    )
    print(
        "\n### Ranking: what is served (the ranking model), the rating model with a support floor, and popularity\n"
    )
    print(
        markdown(
            ["ranking", "Recall@10", "Recall@20", "NDCG@10"],
            [[k, v["recall@10"], v["recall@20"], v["ndcg@10"]] for k, v in out["rerank"].items()],
        )
    )
    if "seeds" in out:
        print("\n### Valid RMSE over seeds (each seed: its own split, init and order)\n")
        print(
            markdown(
                ["model", "config", "seeds", "mean", "std", "min", "max", "Recall@10 mean"],
                [
                    [
                        s["name"],
                        s["config"],
                        " ".join(map(str, s["seeds"])),
                        s["mean"],
                        s["std"],
                        s["min"],
                        s["max"],
                        s["recall@10_mean"],
                    ]
                    for s in out["seeds"]
                ],
            )
        )
    if "cold_start" in out:
        cold = out["cold_start"]
        sizes = sorted({r["n"] for r in cold["users"]})
        users = next((r["users"] for r in cold["users"]), 0)
        print(
            f"\n### Cold-start users: {cold['n_cold_users']} users held out of training; the "
            f"{users} with more than {max(sizes)} ratings, built from their first n ratings by "
            "time, scored on the rest\n"
        )
        methods = list(dict.fromkeys(r["method"] for r in cold["users"]))
        by = {(r["method"], r["n"]): r for r in cold["users"]}
        headers = ["method"] + [
            f"{m} n={n}" for n in sizes for m in ("RMSE", "Recall@10", "NDCG@10")
        ]
        print(
            markdown(
                headers,
                [
                    [m] + [by[m, n][key] for n in sizes for key in ("rmse", "recall@10", "ndcg@10")]
                    for m in methods
                ],
            )
        )
        print("\n(weighted has no calibrated rating scale: its RMSE uses w0 + b_i + <p, q_i>.)")
        print(
            f"\n### Cold-start movies: {cold['n_cold_movies']} movies held out of training "
            f"(all their ratings), scored on {cold['movies'][0]['ratings']:,} ratings by warm users\n"
        )
        print(
            markdown(
                ["method", "RMSE", "MAE"],
                [[r["method"], r["rmse"], r["mae"]] for r in cold["movies"]],
            )
        )
        print(
            f"\n(model trained on {cold['n_train']:,} ratings: valid RMSE {cold['valid_rmse']:.4f}, "
            f"{cold['train_seconds']:.1f} s)"
        )


if __name__ == "__main__":
    sys.exit(main())
