"""report.html: one self-contained page (figures embedded as base64 PNG, no external file,
font or script), so it opens offline and can be mailed as a single file."""

from __future__ import annotations

import base64
import html

from fmstore.report.collect import ReportData

# The settings the config table shows, per model, in this order (the rest are in the manifest).
FM_KEYS = (
    "factors",
    "epochs",
    "lr",
    "batch_size",
    "weight_decay",
    "prior_reg",
    "link",
    "seed",
    "split",
    "valid_fraction",
    "patience",
)
RANKING_KEYS = (
    "factors",
    "reg",
    "alpha0",
    "conf_alpha",
    "confidence",
    "liked_at",
    "nu",
    "iterations",
    "cg_steps",
    "features",
)
METRIC_COLUMNS = (
    ("rmse", "RMSE"),
    ("mae", "MAE"),
    ("recall@10", "Recall@10"),
    ("recall@20", "Recall@20"),
    ("ndcg@10", "NDCG@10"),
)

# Marks the body once every image has loaded (or failed): data-images-loaded is the number that
# decoded, so a headless browser can check the page the way a reader would see it.
_LOAD_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-total", imgs.length);
  document.body.setAttribute("data-images-loaded", ok);
});
</script>"""

_STYLE = """<style>
body { font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th.group { text-align: left; background: #f4f4f4; }
td.setting { text-align: left; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption, .note { color: #555; font-size: 0.9em; }
</style>"""


def render(data: ReportData, figures: list[tuple[str, str, str, bytes]]) -> str:
    """The page; `figures` are (file name, title, caption, PNG bytes)."""
    m = data.manifest
    e = data.evaluation
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>fmstore run {_t(data.run_id)}</title>",
        _STYLE,
        "</head><body>",
        f"<h1>fmstore run {_t(data.run_id)}</h1>",
        f'<p class="note">{_t(m["dataset"]["name"])}: {m["dataset"]["n_ratings"]:,} ratings, '
        f"{m['dataset']['n_users']:,} users, {m['dataset']['n_movies']:,} movies; trained "
        f"{_t(_when(m.get('created_at')))} on {_t(m.get('device', '?'))} in "
        f"{_t(_seconds(m['metrics'].get('train_seconds', 0)))}.</p>",
        "<h2>Configuration</h2>",
        _config_table(m),
        "<h2>Metrics</h2>",
        _table(
            [""] + [label for _, label in METRIC_COLUMNS],
            [
                [name] + [_number(row.get(key)) for key, _ in METRIC_COLUMNS]
                for name, row in e.rows.items()
            ],
        ),
        f'<p class="note">{e.n_test:,} held-out ratings ({_t(e.test_source)}), the same '
        "protocol as <code>fmstore evaluate</code>: a movie is relevant when rated at least "
        "4, ranked over all movies the user did not rate in training.</p>",
    ]
    if data.refit:
        parts.append(f'<p class="note">Refit: {_t(_refit_text(data.refit))}</p>')
    for name, title, caption, png in figures:
        encoded = base64.b64encode(png).decode("ascii")
        parts += [
            f"<h2>{_t(title)}</h2>",
            f'<figure><img src="data:image/png;base64,{encoded}" alt="{_t(title)}" '
            f'data-file="{_t(name)}"><figcaption>{_t(caption)}</figcaption></figure>',
        ]
    parts += [_LOAD_CHECK, "</body></html>"]
    return "\n".join(parts) + "\n"


def _config_table(m: dict) -> str:
    """Each model's settings under its own heading, as trained (a value a search chose says
    so, with the values it tried); "none" for a model the run does not have."""
    config = m["config"]
    metrics = m.get("metrics", {})
    groups = [
        (
            "rating model (Factorization Machine)",
            config if config.get("rating_model", True) else None,
            FM_KEYS,
            metrics.get("tune"),
        ),
        (
            "ranking model (iALS in FM form)",
            config.get("ranking_config") if config.get("ranking", True) else None,
            RANKING_KEYS,
            metrics.get("ranking_search"),
        ),
    ]
    rows = []
    for title, settings, keys, search in groups:
        rows.append(f'<tr><th class="group" colspan="2">{_t(title)}</th></tr>')
        if not settings:
            rows.append('<tr><td class="setting">(none in this run)</td><td></td></tr>')
            continue
        chosen = (search or {}).get("chosen") or {}
        tried = (search or {}).get("grid") or {}
        for key in keys:
            if key not in settings:
                continue
            value = human(settings[key])
            if key in chosen:
                values = ", ".join(human(v) for v in tried.get(key) or [])
                value += f" (chosen from {values})" if values else " (chosen by the search)"
            rows.append(f'<tr><td class="setting">{_t(key)}</td><td>{_t(value)}</td></tr>')
        if search:
            rows.append(
                f'<tr><td class="setting">the search</td><td>{_t(_search_text(search))}</td></tr>'
            )
    return f"<table><tr><th>setting</th><th>value</th></tr>{''.join(rows)}</table>"


def _search_text(search: dict) -> str:
    """One line on how a search chose its values: the inner-split score and its cost."""
    score = (
        f"inner NDCG@10 {human(search['inner_ndcg@10'])}"
        if "inner_ndcg@10" in search
        else f"inner RMSE {human(search['inner_rmse'])}"
        if "inner_rmse" in search
        else ""
    )
    points = len(search.get("points") or [])
    parts = [score, f"{points} points" if points else "", _seconds(search.get("seconds"))]
    return "on an inner split of the training ratings: " + ", ".join(p for p in parts if p)


def _refit_text(refit: dict) -> str:
    """The refit in words: epochs, ratings, final train RMSE, times (numbers rounded)."""
    words = {
        "epochs": lambda v: f"{human(v)} epochs",
        "n_train": lambda v: f"on {human(v)} ratings",
        "train_rmse": lambda v: f"final train RMSE {human(v)}",
        "fm_seconds": lambda v: f"rating model {_seconds(v)}",
        "ranking_seconds": lambda v: f"ranking model {_seconds(v)}",
        "ranking_warm_start": lambda v: "ranking model warm started" if v else "",
        "seconds": lambda v: f"{_seconds(v)} in all",
    }
    parts = [
        words.get(k, lambda v, k=k: f"{k} {human(v)}")(v)
        for k, v in refit.items()
        if not isinstance(v, (list, dict))
    ]
    return ", ".join(p for p in parts if p)


def human(value) -> str:
    """A number as people read it: whole numbers with thousands separators, others to 4
    significant digits (0.6516, 14.94, 0.0003); yes/no for booleans; text as it is."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            return f"{value:,.1f}" if abs(value) < 1e4 else f"{int(value):,}"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(human(v) for v in value)
    return "" if value is None else str(value)


def _seconds(value) -> str:
    if value is None:
        return ""
    return f"{value:.0f} s" if value >= 100 else f"{value:.1f} s"


def _when(created_at: str | None) -> str:
    """'2026-11-29T18:09:03.180585+00:00' -> '2026-11-29 18:09 UTC'."""
    from datetime import datetime, timezone

    try:
        moment = datetime.fromisoformat(created_at or "").astimezone(timezone.utc)
    except ValueError:
        return created_at or "?"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_t(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_t(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(x) -> str:
    return "" if x is None else f"{x:.4f}"


def _t(value) -> str:
    return html.escape("" if value is None else str(value))
