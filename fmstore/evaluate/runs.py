"""Evaluating a trained model: the model and the baselines on one held-out set, from a training
result in memory or from a saved run folder (whose held-out split is recomputed from its manifest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from fmstore import datasets, runs, serving
from fmstore.datasets import Dataset, Movies, Ratings
from fmstore.datasets.splits import split_of
from fmstore.errors import ConfigError, DataError
from fmstore.evaluate.baselines import MODEL, SERVED, BiasedMF, Predictor, Served, baselines
from fmstore.evaluate.indexing import Rows
from fmstore.evaluate.metrics import NDCG_K, RECALL_KS, RELEVANT_MIN, HeldOut


def evaluate_predictors(
    predictors: dict[str, Predictor],
    train: Ratings,
    test: Ratings,
    rows: Rows,
    *,
    relevant_min: float = RELEVANT_MIN,
    recall_ks: Sequence[int] = RECALL_KS,
    ndcg_k: int = NDCG_K,
) -> dict[str, dict]:
    """RMSE, MAE, Recall@k and NDCG@k of each predictor on `test`; the ranking excludes each
    user's `train` movies. Predictors index users by `rows` (unknown users: the last row)."""
    held = HeldOut.build(
        (rows.users(train.user_id), rows.items(train.movie_id)),
        rows.users(test.user_id),
        rows.items(test.movie_id),
        test.rating.astype(np.float64),
        rows.n_users + 1,
        relevant_min,
    )
    return {
        name: held.metrics(predictor, rows.n_items, recall_ks=recall_ks, ndcg_k=ndcg_k)
        for name, predictor in predictors.items()
    }


@dataclass
class Report:
    """Metrics of the model and the baselines on one held-out set."""

    rows: dict[str, dict]  # name -> {rmse, mae, recall@10, recall@20, ndcg@10, users_ranked}
    n_train: int
    n_test: int
    test_source: str  # "valid split (seed S, fraction F)" or a file name
    run_id: str | None = None
    relevant_min: float = RELEVANT_MIN  # serving.liked_at of the run's rating scale

    def to_json(self) -> dict:
        """The report as JSON: run, test source, counts, the relevance threshold and the metric rows."""
        return {
            "run_id": self.run_id,
            "test": self.test_source,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "relevant_min": self.relevant_min,
            "metrics": self.rows,
        }


def evaluate_serving(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    user_ids: np.ndarray,
    user_vectors: np.ndarray,
    user_bias: np.ndarray,
    w0: float,
    *,
    movies: Movies,
    train: Ratings,
    test: Ratings,
    link: str = "identity",
    rating_range=(0.5, 5.0),
    test_source: str = "test",
    run_id: str | None = None,
) -> Report:
    """The model (from its serving form) and both baselines, evaluated on `test`."""
    model = BiasedMF.from_serving(
        item_vectors, item_bias, user_vectors, user_bias, w0, link=link, rating_range=rating_range
    )
    return _evaluate_model(model, user_ids, movies, train, test, test_source, run_id)


def evaluate_result(result, dataset: Dataset, config, test: Ratings | None = None) -> Report:
    """Evaluate a train.TrainResult on its validation ratings (or on `test`)."""
    rating_range = (config.rating_min, config.rating_max)
    model = BiasedMF.of_form(
        result.model.serving_form(), link=config.link, rating_range=rating_range
    )
    if test is not None:
        source = "test ratings"
    else:
        test, source = result.valid_ratings, _split_label(config.to_dict())
    return _evaluate_model(
        model,
        result.vocab.user_ids,
        dataset.movies,
        result.train_ratings,
        test,
        source,
        ranking=result.ranking,
    )


def valid_predictions(result, dataset: Dataset, config) -> dict[str, np.ndarray]:
    """A train.TrainResult's validation ratings and its predictions of them, {"actual",
    "predicted"} (float32): what the report draws, kept in the run folder from before a refit."""
    rating_range = (config.rating_min, config.rating_max)
    form = result.model.serving_form()
    model = BiasedMF.of_form(form, link=config.link, rating_range=rating_range)
    rows = Rows(result.vocab.user_ids, dataset.movies.movie_id)
    valid = result.valid_ratings
    predicted = model.predict(rows.users(valid.user_id), rows.items(valid.movie_id))
    return {
        "actual": valid.rating.astype(np.float32),
        "predicted": np.asarray(predicted, np.float32),
    }


def evaluate_run(
    run_dir: Path,
    *,
    dataset: Dataset | None = None,
    test_ratings: Path | None = None,
    cache_dir: Path | None = None,
) -> Report:
    """Evaluate a saved run: on its own held-out ratings (the seeded split of training, recomputed
    from the manifest) or on a ratings file. The dataset is read from the manifest's source unless
    given; its fingerprint must match the one the run was trained on."""
    manifest = runs.load_manifest(run_dir)
    run_id, config = manifest["run_id"], manifest["config"]
    dataset = _run_dataset(manifest, dataset, cache_dir)
    serving = runs.load_serving(run_dir, manifest)
    if not np.array_equal(serving.movie_ids, dataset.movies.movie_id):
        raise DataError(
            f"run {run_id}: its movies differ from {dataset.source}'s movies.csv; "
            "the run folder does not belong to this dataset"
        )

    train_idx, valid_idx = split_of(dataset.ratings, config)
    if manifest.get("refit"):
        if test_ratings is None:
            return _validation_report(manifest)
        train_idx, valid_idx = np.arange(len(dataset.ratings)), valid_idx[:0]
    train = dataset.ratings.take(train_idx)
    if not np.array_equal(np.unique(train.user_id), serving.user_ids):
        raise DataError(
            f"run {run_id}: the recomputed training split does not match the "
            "run's users; the run was not trained by this fmstore's split"
        )
    if test_ratings is not None:
        test = datasets.load_ratings_file(test_ratings, dataset.movies)
        source = str(test_ratings)
    else:
        if len(valid_idx) == 0:
            raise ConfigError(
                f"run {run_id} was trained with --valid-fraction 0, so it "
                "has no held-out ratings; pass --test-ratings FILE"
            )
        test = dataset.ratings.take(valid_idx)
        source = _split_label(config)
    model = BiasedMF.of_form(serving, link=serving.link, rating_range=serving.rating_range)
    ranking = runs.load_ranking(run_dir, manifest)
    return _evaluate_model(
        model, serving.user_ids, dataset.movies, train, test, source, run_id, ranking
    )


def _validation_report(manifest: dict) -> Report:
    """A refitted run saw its validation ratings: its figures are the ones measured on the
    validation split before the refit, kept in the manifest."""
    validation = manifest.get("validation")
    run_id = manifest["run_id"]
    if not validation:
        raise ConfigError(
            f"run {run_id} was refitted on every rating and keeps no validation figures; "
            "pass --test-ratings FILE"
        )
    label = validation["test"] + ", measured before the refit on every rating"
    relevant = validation.get("relevant_min", RELEVANT_MIN)
    return Report(
        validation["metrics"], validation["n_train"], validation["n_test"], label, run_id, relevant
    )


def _evaluate_model(
    model: BiasedMF,
    user_ids: np.ndarray,
    movies: Movies,
    train: Ratings,
    test: Ratings,
    test_source: str,
    run_id: str | None = None,
    ranking=None,
) -> Report:
    """`model` (whose user rows are `user_ids`, then the unknown user), what is served (the
    ranking model's order, when there is one) and both baselines."""
    rows = Rows(user_ids, movies.movie_id)
    predictors: dict[str, Predictor] = {MODEL: model}
    if ranking is not None:
        predictors[SERVED] = Served.of(model, ranking)
    predictors |= baselines(train, rows, model.rating_range)
    liked = serving.liked_at(model.rating_range)  # RELEVANT_MIN on MovieLens's 0.5..5
    metrics = evaluate_predictors(predictors, train, test, rows, relevant_min=liked)
    return Report(metrics, len(train), len(test), test_source, run_id, liked)


def _run_dataset(manifest: dict, dataset: Dataset | None, cache_dir: Path | None) -> Dataset:
    """The dataset a run was trained on: `dataset` if given, else the manifest's source; either
    way its fingerprint must be the run's."""
    run_id = manifest["run_id"]
    if dataset is None:
        source = manifest["dataset"]["source"]
        if not Path(source).exists():
            raise DataError(
                f"run {run_id} was trained on {source}, which is no longer "
                "there; pass the dataset with --data PATH"
            )
        read_as = manifest["dataset"].get("read_as")
        dataset = datasets.load_dataset(source, cache_dir=cache_dir, read_as=read_as)
    if dataset.fingerprint != manifest["dataset"]["fingerprint"]:
        raise DataError(
            f"{dataset.source} is not the dataset run {run_id} was trained on "
            "(its fingerprint differs); pass the original with --data PATH"
        )
    return dataset


def _split_label(config: dict) -> str:
    """'valid split (seed 0, fraction 0.1)'; another kind than random is named first."""
    kind = config.get("split") or "random"
    if kind == "leave-last-n":
        return f"valid split (each user's last {config.get('split_n', 1)})"
    named = "" if kind == "random" else f"{kind}, "
    return f"valid split ({named}seed {config['seed']}, fraction {config['valid_fraction']:g})"
