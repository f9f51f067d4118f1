"""report.html: one self-contained page (figures embedded as base64 PNG, no external file,
font or script), so it opens offline and can be mailed as a single file."""

from __future__ import annotations

import base64
import html

from fmstore.report.collect import ReportData

CONFIG_KEYS = (
    "factors",
    "epochs",
    "lr",
    "batch_size",
    "weight_decay",
    "prior_reg",
    "link",
    "seed",
    "valid_fraction",
    "patience",
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
        f"{_t(m.get('created_at', ''))} on {_t(m.get('device', '?'))} in "
        f"{m['metrics'].get('train_seconds', 0):.1f} s.</p>",
        "<h2>Configuration</h2>",
        _table(
            ["setting", "value"], [[k, m["config"].get(k)] for k in CONFIG_KEYS if k in m["config"]]
        ),
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


def _refit_text(refit: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in refit.items() if not isinstance(v, (list, dict)))


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{_t(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_t(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(x) -> str:
    return "" if x is None else f"{x:.4f}"


def _t(value) -> str:
    return html.escape("" if value is None else str(value))
