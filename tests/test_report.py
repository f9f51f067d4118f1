"""`fmstore report`: the figures' data, the self-contained page, and the page as a browser shows
it (headless Chromium: every image decoded, the screenshot not blank)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from fmstore.report import build_report
from fmstore.report.embedding import OTHER, main_genres, pca_2d

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURES = ["learning_curves.png", "ratings.png", "ranking.png", "embeddings.png"]


def chromium() -> str:
    """The Chromium binary; skipped without one, except in CI, which must have it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI must have it (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def run_chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def test_pca_finds_the_direction_of_most_variance():
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    points = np.outer(t, [3.0, 4.0, 0.0]) / 5 + rng.normal(scale=0.01, size=(500, 3))
    xy, explained = pca_2d(points)
    assert explained[0] > 0.99 and explained[1] < 0.01
    assert abs(np.corrcoef(xy[:, 0], t)[0, 1]) > 0.999


def test_main_genre_is_the_least_common_one():
    lists = [["Comedy", "Animation"], ["Comedy"], ["Comedy", "Drama"], ["Drama"], []]
    assert main_genres(lists) == ["Animation", "Comedy", "Drama", "Drama", OTHER]


@pytest.fixture(scope="module")
def report(planted_runs, planted_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report(planted_runs[0], out, dataset=planted_dataset), out


def test_report_is_one_self_contained_page_with_pngs_beside_it(report):
    result, out = report
    assert sorted(p.name for p in out.iterdir()) == sorted([*FIGURES, "report.html"])
    page = result.html.read_text(encoding="utf-8")
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(FIGURES)
    for name, data in zip(FIGURES, embedded, strict=True):
        png = base64.b64decode(data)
        assert png.startswith(PNG_MAGIC) and png == (out / name).read_bytes()
    # nothing fetched from anywhere: no external src, href or stylesheet
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert result.run_id in page and "global-mean+biases" in page


@pytest.mark.slow  # starts headless Chromium
def test_report_renders_in_a_browser(report):
    result, _ = report
    dom = run_chromium(result.html, "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout).group(1)
    total = re.search(r'data-images-total="(\d+)"', body)
    loaded = re.search(r'data-images-loaded="(\d+)"', body)
    assert total and loaded, f"the page's load check did not run: {body!r}"
    assert int(total.group(1)) == len(FIGURES) == int(loaded.group(1))

    shot = result.html.parent / "screenshot.png"
    run = run_chromium(
        result.html, "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1000,2400"
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    not_white = (pixels < 0.95).any(axis=-1).mean()
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert not_white > 0.05 and colours > 50, (not_white, colours)


def test_report_cli(planted_runs, fmstore_cli, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(planted_runs[0], home / "runs" / planted_runs[0].name)
    result = fmstore_cli(home, "report", "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["run_id"] == planted_runs[0].name
    assert Path(summary["html"]).is_file() and len(summary["figures"]) == len(FIGURES)


def test_report_without_matplotlib_is_one_line(
    planted_runs, fmstore_cli, assert_one_line_error, tmp_path
):
    # A matplotlib that fails to import, first on the path: as if it were not installed.
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    home = tmp_path / "home"
    shutil.copytree(planted_runs[0], home / "runs" / planted_runs[0].name)
    path = os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])
    result = fmstore_cli(home, "report", env={"PYTHONPATH": path})
    assert_one_line_error(result, "matplotlib", "fmstore[report]", code=3)
    assert not (home / "reports").exists()


def test_a_refit_is_marked(planted_runs, planted_dataset, tmp_path):
    import shutil as sh

    run = tmp_path / "runs" / planted_runs[0].name
    sh.copytree(planted_runs[0], run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["metrics"]["refit"] = {"epochs": 3, "n_train": 1800, "train_rmse": 0.5}
    (run / "manifest.json").write_text(json.dumps(manifest))
    result = build_report(run, tmp_path / "out", dataset=planted_dataset)
    page = result.html.read_text(encoding="utf-8")
    assert "Refit: 3 epochs, on 1,800 ratings, final train RMSE 0.5" in page
    assert "refit on all ratings" in page


# ---- a refitted run: the validated model's predictions, not the refitted one's -----------------


def test_refitted_run_draws_the_validated_models_predictions(planted_home, tmp_path):
    from fmstore import datasets, runs
    from fmstore.evaluate.metrics import rmse
    from fmstore.report import collect

    home, data, run_id = planted_home
    run = home / "runs" / run_id
    manifest = runs.load_manifest(run)
    assert manifest["refit"] and (run / "validation.safetensors").is_file()
    report = collect(run, dataset=datasets.load_dataset(data))
    assert report.predictions_from == "validated"
    # the validated model's own valid RMSE, as the manifest recorded it before the refit
    validated = manifest["validation"]["metrics"]["model"]["rmse"]
    assert rmse(report.valid_actual, report.valid_predicted) == pytest.approx(validated, rel=1e-4)
    # the refitted model has seen these ratings: it predicts them better, which is why it is not
    # what the report draws
    (tmp_path / "old").mkdir()
    old = _without_kept_predictions(run, tmp_path / "old" / run_id)
    seen = collect(old, dataset=datasets.load_dataset(data))
    assert seen.predictions_from == "seen"
    np.testing.assert_array_equal(seen.valid_actual, report.valid_actual)
    assert rmse(seen.valid_actual, seen.valid_predicted) < validated

    page = build_report(run, tmp_path / "out", dataset=datasets.load_dataset(data))
    text = page.html.read_text(encoding="utf-8")
    assert "the model as validated, before the refit on all ratings" in text
    assert "optimistic" not in text


def test_old_refitted_run_still_reports_with_a_note(planted_home, tmp_path):
    from fmstore import datasets

    home, data, run_id = planted_home
    old = _without_kept_predictions(home / "runs" / run_id, tmp_path / "runs" / run_id)
    page = build_report(old, tmp_path / "out", dataset=datasets.load_dataset(data))
    text = page.html.read_text(encoding="utf-8")
    assert "NOTE: this run was refitted on all ratings, these included" in text
    assert "optimistic, not a held-out measure" in text


def test_run_without_refit_draws_its_own_model(planted_runs, planted_dataset):
    from fmstore.report import collect

    report = collect(planted_runs[0], dataset=planted_dataset)
    assert not report.refit and report.predictions_from == "published"


def _without_kept_predictions(run: Path, to: Path) -> Path:
    """A copy of `run` as fmstore saved refitted runs before it kept the validated predictions."""
    shutil.copytree(run, to)
    (to / "validation.safetensors").unlink()
    manifest = json.loads((to / "manifest.json").read_text())
    del manifest["files"]["validation.safetensors"]
    (to / "manifest.json").write_text(json.dumps(manifest))
    return to


# ---- the embedding map: the served vectors, a legend and caption that agree, readable labels ----


def test_the_map_draws_the_vectors_publish_serves(planted_runs, planted_dataset):
    from fmstore import runs
    from fmstore.publish.points import served_vectors
    from fmstore.report import collect
    from fmstore.report.collect import RANKING_VECTORS

    data = collect(planted_runs[0], dataset=planted_dataset)
    manifest = runs.load_manifest(planted_runs[0])
    served = served_vectors(
        runs.load_serving(planted_runs[0], manifest), runs.load_ranking(planted_runs[0], manifest)
    )
    # the ranking model's r_i, as publish writes them in `rank` = [r_i, c_i]
    np.testing.assert_array_equal(data.item_vectors, served.movies["rank"][:, :-1])
    assert data.vectors_from == RANKING_VECTORS and '"rank"' in data.vectors_from


def test_legend_caption_and_labels_agree(planted_runs, planted_dataset):
    from fmstore.report import collect, figures
    from fmstore.report.embedding import embedding_map

    data = collect(planted_runs[0], dataset=planted_dataset)
    emap = embedding_map(data.movie_rows, data.item_vectors)
    fig = figures.embedding_figure(emap)
    ax = fig.axes[0]
    legend = ax.get_legend()
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries == emap.genres_shown + ([OTHER] if OTHER in emap.genre else [])
    assert legend.get_title().get_text() == "main genre" and "main genre" in ax.get_title()
    caption = emap.caption(data.vectors_from)
    assert f"the {emap.n_movies:,} movies with at least {emap.min_ratings} ratings" in caption
    assert f"the {len(emap.genres_shown)} most frequent main genres are named in the legend" in (
        caption
    )
    assert f"labelled: the {len(emap.labels)} most rated movies" in caption
    assert ('grey as "other"' in caption) == (OTHER in emap.genre)
    assert caption.startswith("The ranking model's movie vectors r_i")
    written = sorted(t.get_text() for t in ax.texts)
    assert written == sorted(text for _, text in emap.labels) and len(written) == 12
    _assert_apart(fig)
    figures.pyplot().close(fig)


def test_labels_keep_apart_where_points_crowd():
    """Twelve long labels on points closer together than a label is wide."""
    from fmstore.report import figures

    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    xy = np.array([[0.1 * i, 0.05 * (i % 3)] for i in range(12)])
    ax.scatter(*xy.T)
    ax.set_xlim(-1, 2.2)
    ax.set_ylim(-1, 1)
    fig.tight_layout()
    boxes = figures.place_labels(
        fig, ax, [(p, f"A Rather Long Movie Title {i} (1999)") for i, p in enumerate(xy)]
    )
    assert len(boxes) == 12
    _assert_apart(fig)
    plt.close(fig)


def _assert_apart(fig) -> None:
    """The figure's labels as drawn (their text; a leader line may cross): no two overlap, each
    inside the axes."""
    from matplotlib.text import Text

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    inside = ax.get_window_extent(renderer)
    boxes = [(t.get_text(), Text.get_window_extent(t, renderer)) for t in ax.texts]
    for i, (text, box) in enumerate(boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, text
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, text
        for other, second in boxes[i + 1 :]:
            assert not box.overlaps(second), (text, other)


@pytest.mark.parametrize(
    "title, label",
    [
        ("Shawshank Redemption, The (1994)", "The Shawshank Redemption (1994)"),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "The City of Lost Children (1995)",
        ),
        ("Star Wars: Episode IV - A New Hope (1977)", "Star Wars: Episode IV - A New Hope"),
        (
            "Dr. Strangelove or: How I Learned to Stop Worrying and Love the Bomb (1964)",
            "Dr. Strangelove or: How I Learned…",
        ),
    ],
)
def test_map_labels_are_short_display_titles(title, label):
    from fmstore.report.embedding import LABEL_CHARS, label_text

    assert label_text(title) == label and len(label) <= LABEL_CHARS


# ---- the page: both models' settings, the search's choice, numbers rounded ----------------------


def test_config_table_has_both_models_and_what_the_search_chose(
    planted_runs, planted_dataset, tmp_path
):
    run = tmp_path / "runs" / planted_runs[0].name
    shutil.copytree(planted_runs[0], run)
    manifest = json.loads((run / "manifest.json").read_text())
    ranking = manifest["config"]["ranking_config"]
    manifest["metrics"]["ranking_search"] = {
        "chosen": {"reg": ranking["reg"], "alpha0": ranking["alpha0"]},
        "grid": {"reg": [0.0003, 0.003, 0.03], "alpha0": [0.3, 1.0, 3.0]},
        "inner_ndcg@10": 0.203208609976,
        "points": [{}] * 7,
        "seconds": 93.367,
    }
    manifest["metrics"]["refit"] = {"epochs": 13, "n_train": 100836, "train_rmse": 0.6515905}
    (run / "manifest.json").write_text(json.dumps(manifest))
    page = build_report(run, tmp_path / "out", dataset=planted_dataset).html.read_text("utf-8")
    text = re.sub(r"<img [^>]*>", "", page)
    assert "rating model (Factorization Machine)" in text
    assert "ranking model (iALS in FM form)" in text
    table = text[text.index("<h2>Configuration") : text.index("<h2>Metrics")]
    for key in ("factors", "reg", "alpha0", "conf_alpha", "confidence", "iterations"):
        assert f'<td class="setting">{key}</td>' in table
    assert "(chosen from 0.0003, 0.003, 0.03)" in table and "(chosen from 0.3, 1.0, 3.0)" in table
    assert "inner NDCG@10 0.2032, 7 points, 93.4 s" in table
    assert "Refit: 13 epochs, on 100,836 ratings, final train RMSE 0.6516" in text
    # numbers for people: no float printed with more than 4 decimals, a date without seconds
    assert not re.search(r"\d\.\d{5,}", text), re.findall(r"[\d.]*\d\.\d{5,}", text)
    assert re.search(r"trained \d{4}-\d\d-\d\d \d\d:\d\d UTC on", text)


def test_human_numbers():
    from fmstore.report.page import human

    assert [human(v) for v in (0.651590506, 100836, 0.003, 5.0, 14.941, True, "liked")] == [
        "0.6516",
        "100,836",
        "0.003",
        "5.0",
        "14.94",
        "yes",
        "liked",
    ]


def test_report_draws_the_live_run_by_default(planted_runs, fmstore_cli, tmp_path):
    home = tmp_path / "home"
    for run in planted_runs:  # run 1 is the latest
        shutil.copytree(run, home / "runs" / run.name)
    out = tmp_path / "out"
    latest = fmstore_cli(home, "report", "--out", str(out / "a"), "--json")
    assert latest.returncode == 0, latest.stderr
    assert (
        json.loads(latest.stdout) | {}
        and json.loads(latest.stdout)["run_id"] == planted_runs[1].name
    )
    assert json.loads(latest.stdout)["chosen"] == "latest"
    published = fmstore_cli(home, "publish", planted_runs[0].name)
    assert published.returncode == 0, published.stderr
    live = fmstore_cli(home, "report", "--out", str(out / "b"), "--json")
    assert live.returncode == 0, live.stderr
    summary = json.loads(live.stdout)
    assert (summary["run_id"], summary["chosen"]) == (planted_runs[0].name, "live")
    named = fmstore_cli(home, "report", "latest", "--out", str(out / "c"), "--json")
    assert json.loads(named.stdout)["run_id"] == planted_runs[1].name
    table = fmstore_cli(home, "report", "--out", str(out / "d"))
    assert f"report of run {planted_runs[0].name} (the live run)" in table.stdout
