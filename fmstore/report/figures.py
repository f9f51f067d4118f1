"""The report's figures, drawn with matplotlib's Agg backend (no display needed) and returned as
PNG bytes. Each function takes plain data and draws one figure."""

from __future__ import annotations

import io

import numpy as np

from fmstore.report.collect import SEEN, VALIDATED, ReportData
from fmstore.report.embedding import OTHER, EmbeddingMap

DPI = 80
METRICS = (("recall@10", "Recall@10"), ("recall@20", "Recall@20"), ("ndcg@10", "NDCG@10"))


def pyplot():
    """matplotlib.pyplot on the Agg backend; a one-line error when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        from fmstore.errors import MissingDependencyError

        raise MissingDependencyError(
            "fmstore report needs matplotlib: pip install 'fmstore[report]'"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def learning_curves(data: ReportData) -> bytes:
    """Train and valid RMSE per epoch; the best epoch marked, and the refit when there is one."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    epochs = [e.epoch for e in data.history]
    ax.plot(epochs, [e.train_rmse for e in data.history], "o-", ms=3, label="train RMSE")
    ax.plot(epochs, [e.valid_rmse for e in data.history], "o-", ms=3, label="valid RMSE")
    if data.best_epoch:
        best = data.manifest["metrics"].get("valid_rmse")
        ax.axvline(data.best_epoch, color="grey", ls="--", lw=1)
        label = f"best epoch {data.best_epoch}" + (f" (valid {best:.4f})" if best else "")
        ax.annotate(
            label,
            (data.best_epoch, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(4, -14),
            textcoords="offset points",
            fontsize=9,
            color="dimgrey",
        )
    refit_epochs = (data.refit or {}).get("epochs")
    if refit_epochs:
        ax.axvspan(
            0.5,
            refit_epochs + 0.5,
            color="tab:green",
            alpha=0.08,
            label=f"refit on all ratings: {refit_epochs} epochs",
        )
        if data.refit.get("train_rmse") is not None:
            ax.plot(
                [refit_epochs],
                [data.refit["train_rmse"]],
                "*",
                ms=12,
                color="tab:green",
                label="refit: final train RMSE",
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.set_title("Learning curves")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def rating_distribution(data: ReportData) -> bytes:
    """Left: the distribution of the held-out ratings and of their predictions. Right: the
    predictions for each actual rating (a box per star value)."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    lo, hi = data.manifest["serving"]["rating_range"]
    bins = np.arange(lo - 0.25, hi + 0.5, 0.5)
    left.hist(
        [data.valid_actual, data.valid_predicted],
        bins=bins,
        label=["actual", "predicted"],
        color=["tab:blue", "tab:orange"],
    )
    left.set_xlabel("rating (predictions in half-star bins)")
    left.set_ylabel("ratings of the validation split")
    left.set_title("Validation ratings and their predictions")
    left.legend()
    values = np.unique(data.valid_actual)
    groups = [data.valid_predicted[data.valid_actual == v] for v in values]
    right.boxplot(groups, positions=values, widths=0.3, showfliers=False)
    right.plot([lo, hi], [lo, hi], color="grey", ls="--", lw=1, label="perfect")
    right.set_xticks(values, [f"{v:g}" for v in values], fontsize=8)
    fig.suptitle(
        _whose_predictions(data),
        fontsize=9,
        color="firebrick" if data.predictions_from == SEEN else "black",
    )
    right.set_xlabel("actual rating")
    right.set_ylabel("predicted rating")
    right.set_title("Predicted per actual rating")
    right.legend(loc="upper left")
    return _png(fig)


def _whose_predictions(data: ReportData) -> str:
    if data.predictions_from == SEEN:
        return "predictions of the refitted model, which was trained on these ratings: optimistic"
    if data.predictions_from == VALIDATED and data.refit:
        return "predictions of the model as validated, before the refit on all ratings"
    return "predictions of the run's model, which was not trained on these ratings"


def ranking(data: ReportData) -> bytes:
    """Recall@10, Recall@20 and NDCG@10 of the model beside the baselines of `fmstore evaluate`."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    names = list(data.evaluation.rows)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(METRICS))
    for n, name in enumerate(names):
        values = [data.evaluation.rows[name].get(key) or 0.0 for key, _ in METRICS]
        bars = ax.bar(x + (n - (len(names) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    ax.set_xticks(x, [label for _, label in METRICS])
    ax.set_ylabel("score (higher is better)")
    ax.set_title("Ranking quality on the held-out ratings")
    ax.margins(y=0.15)
    ax.legend()
    return _png(fig)


def embedding_map(emap: EmbeddingMap) -> bytes:
    """The movies on the first two principal components of their served vectors, by main
    genre (embedding_figure), as PNG bytes."""
    return _png(embedding_figure(emap))


def embedding_figure(emap: EmbeddingMap):
    """The map as a matplotlib figure: a colour per named main genre (the legend's entries, in
    that order, then "other" in grey), the labelled movies circled, labels placed apart."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 6.5))
    genre = np.array(emap.genre)
    colours = plt.get_cmap("tab10").colors
    for colour, name in zip(colours, emap.genres_shown, strict=False):
        pick = genre == name
        ax.scatter(*emap.xy[pick].T, s=7, color=colour, label=name, alpha=0.8, linewidths=0)
    other = genre == OTHER
    if other.any():
        ax.scatter(*emap.xy[other].T, s=5, color="lightgrey", label=OTHER, linewidths=0, zorder=0)
    rows = [row for row, _ in emap.labels]
    ax.scatter(*emap.xy[rows].T, s=22, facecolors="none", edgecolors="black", linewidths=0.8)
    ax.set_xlabel(f"PC1 ({emap.explained[0]:.0%} of the variance)")
    ax.set_ylabel(f"PC2 ({emap.explained[1]:.0%} of the variance)")
    ax.set_title(f"Served movie vectors: {emap.n_movies:,} movies by main genre")
    # beside the map, not on it: the labels then have the whole map
    ax.legend(
        title="main genre",
        fontsize=8,
        title_fontsize=8,
        markerscale=2,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    fig.tight_layout()
    place_labels(fig, ax, [(emap.xy[row], text) for row, text in emap.labels])
    return fig


# Where a label may go around its point, nearest first: beside it, then further out with a
# leader line. (offset in points, horizontal and vertical alignment)
_SIDES = [
    ((1, 0.8), "left", "bottom"),
    ((-1, 0.8), "right", "bottom"),
    ((1, -0.8), "left", "top"),
    ((-1, -0.8), "right", "top"),
    ((0, 1.6), "center", "bottom"),
    ((0, -1.6), "center", "top"),
    ((1.2, 0), "left", "center"),
    ((-1.2, 0), "right", "center"),
]
_SPOTS = [((dx * r, dy * r), ha, va) for r in (5, 14, 26, 40) for (dx, dy), ha, va in _SIDES]
LABEL_SIZE = 8


def place_labels(fig, ax, labels: list[tuple[np.ndarray, str]], avoid: list = ()) -> list:
    """Write each (point, text) label beside its point where it overlaps no label written
    before it nor a box in `avoid` and stays inside the axes (else where it overlaps least),
    with a leader line when it sits away from the point; returns the labels' display boxes.
    Greedy, most important label first."""
    from matplotlib import patheffects

    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed: list = []
    for (x, y), text in labels:
        best = None
        for offset, ha, va in _SPOTS:
            style = {"xytext": offset, "textcoords": "offset points", "ha": ha, "va": va}
            note = ax.annotate(text, (x, y), fontsize=LABEL_SIZE, **style)
            box = note.get_window_extent(renderer).expanded(1.04, 1.15)
            note.remove()
            clash = sum(box.overlaps(b) for b in [*placed, *avoid]) + (not _within(box, inside))
            if best is None or clash < best[0]:
                best = (clash, style, box)
            if clash == 0:
                break
        _, style, box = best
        far = abs(style["xytext"][0]) + abs(style["xytext"][1]) > 10
        line = {"arrowstyle": "-", "color": "grey", "lw": 0.6} if far else None
        halo = [patheffects.withStroke(linewidth=2.5, foreground="white")]  # over the points
        ax.annotate(text, (x, y), fontsize=LABEL_SIZE, arrowprops=line, path_effects=halo, **style)
        placed.append(box)
    return placed


def _within(box, outer) -> bool:
    return box.x0 >= outer.x0 and box.x1 <= outer.x1 and box.y0 >= outer.y0 and box.y1 <= outer.y1


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    pyplot().close(fig)
    return buffer.getvalue()
