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
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """RMSE, MAE, Recall@10/20 (hits / relevant), capped Recall@10 (hits / min(10, relevant), as
    implicit divides) and NDCG@10 of a run on held-out ratings, beside two baselines."""
    from fmstore import datasets, runs
    from fmstore import evaluate as evaluation

    s = settings(home)
    folder = (
        Path(run)
        if run and (Path(run) / runs.MANIFEST).is_file()
        else runs.resolve_run(s.runs_dir, run)
    )
    with err.status(f"evaluating run {folder.name}"):
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
        f"rating >= {evaluation.RELEVANT_MIN:g}, over all movies they did not rate in training"
    )
    out.print(
        "Recall@K: hits in the top K / relevant; capped Recall@K: hits / min(K, relevant), "
        "as implicit's evaluation divides"
    )
