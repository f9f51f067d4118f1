"""`fmstore evaluate`: a run's rating and ranking metrics on held-out ratings, as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fmstore.cli.app import (
    HomeOpt,
    JsonOpt,
    app,
    dataset_path,
    err,
    example,
    fmt_number,
    out,
    print_json,
    settings,
)


@app.command(
    epilog=example("fmstore evaluate", "fmstore evaluate RUN --test-ratings test.csv --json")
)
def evaluate(
    run: Optional[str] = typer.Argument(
        None, help="Run id or run folder [default: the latest run]."
    ),
    test_ratings: Optional[Path] = typer.Option(
        None,
        "--test-ratings",
        help="Ratings CSV to evaluate on instead of the run's held-out split.",
    ),
    data: Optional[Path] = typer.Option(
        None,
        "--data",
        help="The run's dataset, if it moved since training [default: the path in the manifest].",
    ),
    split: Optional[str] = typer.Option(
        None,
        "--split",
        help="The split to evaluate on: random | time | leave-last-n | users. A run is measured "
        "on the split it was validated on (its training never saw those ratings), so this "
        "checks that it is the one asked for [default: the run's, as `fmstore train --split` "
        "chose].",
    ),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """RMSE, MAE, Recall@10/20 (hits / relevant), capped Recall@10 (hits / min(10, relevant), as
    implicit divides) and NDCG@10 of a run on held-out ratings, beside two baselines."""
    from fmstore import datasets, runs
    from fmstore import evaluate as evaluation
    from fmstore.cli.live import resolve_run

    s = settings(home)
    folder = Path(run) if run and (Path(run) / runs.MANIFEST).is_file() else resolve_run(s, run)
    if split is not None and test_ratings is None:
        _check_split(folder, split)
    with err.status(f"evaluating run {folder.name}"):
        data = dataset_path(s, data) if data else None
        dataset = datasets.load_dataset(data, cache_dir=s.home / "cache") if data else None
        report = evaluation.evaluate_run(
            folder, dataset=dataset, test_ratings=test_ratings, cache_dir=s.home / "cache"
        )
    if as_json:
        return print_json(report.to_json())
    table = Table(
        "",
        "RMSE",
        "MAE",
        "Recall@10",
        "Recall@20",
        "capped Recall@10",
        "NDCG@10",
        title=f"run {report.run_id}",
    )
    for name, m in report.rows.items():
        table.add_row(
            name,
            fmt_number(m["rmse"]),
            fmt_number(m["mae"]),
            fmt_number(m["recall@10"]),
            fmt_number(m["recall@20"]),
            fmt_number(m["capped_recall@10"]),
            fmt_number(m["ndcg@10"]),
        )
    out.print(table)
    ranked = report.rows[evaluation.MODEL]["users_ranked"]
    eligible = report.rows[evaluation.MODEL].get("users_with_relevant", ranked)
    sample = f" (a seeded sample of {eligible:,})" if eligible > ranked else ""
    out.print(
        f"{report.n_test:,} held-out ratings ({report.test_source}); ranking: {ranked:,} users{sample} with a held-out "
        f"rating >= {report.relevant_min:g}, over all movies they did not rate in training"
    )
    out.print(
        "Recall@K: hits in the top K / relevant; capped Recall@K: hits / min(K, relevant), "
        "as implicit's evaluation divides"
    )


def _check_split(folder: Path, split: str) -> None:
    """--split names the run's own validation split, or is refused: any other split's held-out
    ratings overlap what the run was trained on."""
    from fmstore import runs
    from fmstore.datasets import SPLITS
    from fmstore.errors import ConfigError

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    config = runs.load_manifest(folder, verify=False).get("config", {})
    trained = config.get("split") or "random"
    if split != trained:
        raise ConfigError(
            f"--split {split}: run {folder.name} was validated on a {trained} split, and a "
            f"{split} split holds out ratings it was trained on; train one with "
            f"`fmstore train --split {split}`, or pass --test-ratings FILE"
        )
