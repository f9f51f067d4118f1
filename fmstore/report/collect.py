"""What a report shows, gathered from a run folder and its dataset: the per-epoch history, the
validation ratings beside their predictions, the ranking metrics of `fmstore evaluate`, and the
movie vectors publish serves with their titles and genres. NumPy only; no plotting here."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmstore import datasets, runs
from fmstore.datasets.splits import split_of
from fmstore.errors import ConfigError, DataError
from fmstore.evaluate import BiasedMF, Report, Rows, evaluate_run

VALIDATED, PUBLISHED, SEEN = "validated", "published", "seen"
# Which served vectors the embedding map draws (ReportData.vectors_from)
RANKING_VECTORS = 'the ranking model\'s movie vectors r_i (published in "rank" as [r_i, c_i])'
RATING_VECTORS = 'the rating model\'s movie vectors q_i (published as "item": no ranking model)'


@dataclass
class Epoch:
    """One row of a run's history.csv."""

    epoch: int
    train_rmse: float
    valid_rmse: float


@dataclass
class ReportData:
    """Everything a report draws for one run (see `collect`)."""

    manifest: dict
    history: list[Epoch]
    valid_actual: np.ndarray  # float32 [n_valid] held-out ratings
    valid_predicted: np.ndarray  # float32 [n_valid] the prediction of each (see predictions_from)
    evaluation: Report  # the model and the baselines, as `fmstore evaluate` prints them
    movie_rows: list[dict]  # movies.json: title, genres, n_ratings, ...
    # float32 [n_movies, k] in movie_rows order: the served movie vectors (see vectors_from)
    item_vectors: np.ndarray
    refit: dict | None = field(default=None)  # the manifest's refit section, when there is one
    # Whose predictions valid_predicted holds: VALIDATED (the model before any refit, kept in the
    # run folder), PUBLISHED (the run's model, recomputed: held out from it only without a
    # refit) or SEEN (a refitted run saved before fmstore kept the validated predictions: the
    # published model was trained on these ratings too).
    predictions_from: str = "validated"
    vectors_from: str = RANKING_VECTORS  # or RATING_VECTORS, for a run without a ranking model

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.manifest["run_id"]

    @property
    def best_epoch(self) -> int:
        """The epoch whose weights the run kept (the best valid RMSE); 0 when unknown."""
        return int(self.manifest["metrics"].get("best_epoch") or 0)


def collect(
    run_dir: Path, *, dataset: datasets.Dataset | None = None, cache_dir: Path | None = None
) -> ReportData:
    """Everything the report draws, for the run in `run_dir`. The dataset is read from the
    manifest's source unless given; either way it must be the one the run was trained on."""
    manifest = runs.load_manifest(run_dir)
    dataset = dataset or _read_dataset(manifest, cache_dir)
    evaluation = evaluate_run(run_dir, dataset=dataset)  # checks the fingerprint and the split
    serving = runs.load_serving(run_dir, manifest)
    kept = runs.load_valid_predictions(run_dir)
    if kept is not None:
        actual, predicted, source = kept["actual"], kept["predicted"], VALIDATED
    else:
        actual, predicted = _validation_predictions(manifest, dataset, serving)
        source = SEEN if refit_of(manifest) else PUBLISHED
    rows = runs.load_movie_rows(run_dir)
    if [r["movie_id"] for r in rows] != serving.movie_ids.tolist():
        raise DataError(f"run {manifest['run_id']}: movies.json and the serving form disagree")
    ranking = runs.load_ranking(run_dir, manifest)  # in the serving form's movie order
    vectors, vectors_from = (
        (ranking.item_vectors, RANKING_VECTORS)
        if ranking is not None
        else (serving.item_vectors, RATING_VECTORS)
    )
    return ReportData(
        manifest=manifest,
        history=read_history(Path(run_dir) / "history.csv"),
        valid_actual=actual,
        valid_predicted=predicted,
        evaluation=evaluation,
        movie_rows=rows,
        item_vectors=vectors,
        refit=refit_of(manifest),
        predictions_from=source,
        vectors_from=vectors_from,
    )


def refit_of(manifest: dict) -> dict | None:
    """The refit a run had (epochs on all ratings, final train RMSE, ...), or None: a dict under
    metrics["refit"] or the manifest's own "refit" key, whichever the run has."""
    for found in (manifest.get("metrics", {}).get("refit"), manifest.get("refit")):
        if isinstance(found, dict):
            return found
    return None


def read_history(path: Path) -> list[Epoch]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [
            Epoch(int(r["epoch"]), float(r["train_rmse"]), float(r["valid_rmse"]))
            for r in csv.DictReader(f)
        ]


def _read_dataset(manifest: dict, cache_dir: Path | None) -> datasets.Dataset:
    source = manifest["dataset"]["source"]
    if not Path(source).exists():
        raise DataError(
            f"run {manifest['run_id']} was trained on {source}, which is no longer there; "
            "pass the dataset with --data PATH"
        )
    read_as = manifest["dataset"].get("read_as")
    return datasets.load_dataset(source, cache_dir=cache_dir, read_as=read_as)


def _validation_predictions(manifest: dict, dataset, serving) -> tuple[np.ndarray, np.ndarray]:
    """The run's held-out ratings (its seeded split, recomputed) and the run's prediction of
    each: for a run without the validated model's predictions in its folder."""
    config = manifest["config"]
    train_idx, valid_idx = split_of(dataset.ratings, config)
    if len(valid_idx) == 0:
        raise ConfigError(
            f"run {manifest['run_id']} was trained with --valid-fraction 0: "
            "it has no held-out ratings to draw"
        )
    valid = dataset.ratings.take(valid_idx)
    rows = Rows(serving.user_ids, dataset.movies.movie_id)
    model = BiasedMF.of_form(serving, link=serving.link, rating_range=serving.rating_range)
    predicted = model.predict(rows.users(valid.user_id), rows.items(valid.movie_id))
    return valid.rating.astype(np.float32), np.asarray(predicted, np.float32)
