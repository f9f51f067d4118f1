"""`fmstore report`: pictures of a trained run, as one self-contained report.html and PNGs.

- collect: what the report shows, read from the run folder and its dataset (NumPy).
- embedding: the 2-D map of the served movie vectors (PCA, main genres, labels, its caption).
- figures: the figures, drawn with matplotlib (Agg), as PNG bytes. matplotlib is the optional
  extra `report`; without it `build_report` raises MissingDependencyError in one line.
- page: the HTML page with the figures embedded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fmstore.evaluate import MODEL, SERVED
from fmstore.fileio import atomic_write_bytes, atomic_write_text
from fmstore.report.collect import PUBLISHED, VALIDATED, ReportData, collect
from fmstore.report.embedding import embedding_map

__all__ = ["ReportData", "ReportResult", "build_report", "collect"]


@dataclass
class ReportResult:
    """What `build_report` wrote: the page and the PNGs beside it."""

    run_id: str
    html: Path
    figures: list[Path]


def build_report(run_dir: Path, out_dir: Path, *, dataset=None, cache_dir=None) -> ReportResult:
    """Write report.html and one PNG per figure into `out_dir`; returns their paths. Each file
    is written whole (temp file + rename), the page last, so a page never shows missing
    figures."""
    from fmstore.report import figures
    from fmstore.report.page import render

    figures.pyplot()  # a missing matplotlib fails before any work
    data = collect(Path(run_dir), dataset=dataset, cache_dir=cache_dir)
    emap = embedding_map(data.movie_rows, data.item_vectors)
    drawn = [
        (
            "learning_curves.png",
            "Learning curves",
            _curves_caption(data),
            figures.learning_curves(data),
        ),
        (
            "ratings.png",
            "Predicted and actual ratings",
            _ratings_caption(data),
            figures.rating_distribution(data),
        ),
        (
            "ranking.png",
            "Ranking against the baselines",
            _ranking_caption(data),
            figures.ranking(data),
        ),
        (
            "embeddings.png",
            "Movie vectors as served",
            emap.caption(data.vectors_from),
            figures.embedding_map(emap),
        ),
    ]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, _, _, png in drawn:
        atomic_write_bytes(out_dir / name, png)
        paths.append(out_dir / name)
    page = out_dir / "report.html"
    atomic_write_text(page, render(data, drawn))
    for path in [*paths, page]:
        _readable(path)
    return ReportResult(data.run_id, page, paths)


def _readable(path: Path) -> None:
    """The atomic write leaves a private (0600) file; a report is for sharing: use the umask."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _curves_caption(data: ReportData) -> str:
    text = (
        f"RMSE after each epoch on the training ratings and on the held-out split; the run "
        f"keeps the weights of epoch {data.best_epoch}, the best on the held-out split."
    )
    if data.refit:
        text += " The shaded span: the refit on all ratings for that many epochs."
    return text


def _ratings_caption(data: ReportData) -> str:
    """Which model predicted the held-out ratings drawn, and whether it had seen them."""
    n = f"{len(data.valid_actual):,}"
    if data.predictions_from == VALIDATED:
        who = (
            "the model as validated, before the refit on all ratings (the published, refitted "
            "model has seen these ratings; this one had not)"
            if data.refit
            else "the run's model, which never saw them"
        )
    elif data.predictions_from == PUBLISHED:
        who = "the run's model, which never saw them"
    else:
        who = (
            "the published model. NOTE: this run was refitted on all ratings, these included, and "
            "was saved before fmstore kept the validated model's predictions, so this fit is "
            "optimistic, not a held-out measure (train it again for one)"
        )
    return (
        f"The {n} held-out ratings of the validation split and the predictions of {who}, "
        "clamped to the rating scale. Boxes: quartiles of the predictions for each actual "
        "rating; whiskers 1.5 IQR."
    )


def _ranking_caption(data: ReportData) -> str:
    text = (
        "Recall@K and NDCG@10 of the model and of the baselines, as fmstore evaluate reports "
        "them on the held-out ratings"
    )
    if SERVED in data.evaluation.rows:
        text += (
            f": {SERVED} is the ranking publish serves (the ranking model's order), {MODEL} "
            "the rating model's score alone"
        )
    text += "."
    if data.refit:
        text += " Measured before the refit on all ratings, with the models that had not seen them."
    return text
