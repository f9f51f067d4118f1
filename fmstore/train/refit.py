"""The refit: after validation chose the number of epochs, the rating model and the ranking model
(warm started from the validated one) trained again on every rating, so that the published model knows every rating (the manifest keeps
the validation figures beside the refit's)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from fmstore.config import TrainConfig
from fmstore.datasets import Dataset
from fmstore.train.loop import (
    BatchProgressFn,
    ProgressFn,
    TrainResult,
    fit_epochs,
    fit_ranking_model,
    prepare,
    resolve_device,
)


def refit(
    dataset: Dataset,
    config: TrainConfig,
    validated: TrainResult,
    *,
    progress: ProgressFn | None = None,
    engine: str = "auto",
    batch_progress: BatchProgressFn | None = None,
) -> TrainResult:
    """The model of `config` trained on every rating of `dataset` for the number of epochs the
    validation chose (`validated.best_epoch`), with the ranking model refitted on every rating
    too. The result keeps `validated`'s metrics (measured on the validation split) and adds
    `refit`; its train_ratings are all the ratings, its valid_ratings the validation split."""
    device = resolve_device(config.device)
    started = time.perf_counter()
    epochs = max(validated.best_epoch, 1)
    all_ratings = dataset.ratings
    no_ratings = all_ratings.take(np.arange(0))
    vocab, model, rows, empty = prepare(dataset, all_ratings, no_ratings, config, device)
    fit_config = dataclasses.replace(config, epochs=epochs)
    history = []  # implicit-only data: no rating model to refit
    if config.rating_model:
        history, _, _ = fit_epochs(
            model, fit_config, device, engine, rows, empty, progress, batch_progress
        )
    fm_seconds = time.perf_counter() - started
    ranking = fit_ranking_model(
        all_ratings, vocab, dataset, config, progress, init=validated.ranking
    )
    metrics = dict(validated.metrics)
    metrics["refit"] = {
        "epochs": epochs,
        "n_train": len(all_ratings),
        "train_rmse": history[-1].train_rmse if history else None,
        "fm_seconds": round(fm_seconds, 3),
        "ranking_seconds": round(ranking.seconds, 3) if ranking is not None else None,
        # warm started from the validated ranking model, with a quarter of its sweeps (loop.py)
        "ranking_warm_start": validated.ranking is not None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    return TrainResult(
        model.cpu(),
        vocab,
        validated.history,
        validated.best_epoch,
        metrics,
        all_ratings,
        validated.valid_ratings,
        str(device),
        ranking,
        refit=True,
    )
