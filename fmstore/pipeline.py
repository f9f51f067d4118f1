"""The training pipeline as one library call: check -> (tune the rating model) -> search the
ranking model's settings -> train both models -> measure the served ranking on the validation
split -> refit on every rating -> save the run folder.

`fmstore train` is this call with flags and a progress bar; a notebook calls it directly:

    from pathlib import Path
    from fmstore import datasets, pipeline
    from fmstore.config import RANKING_SEARCHED, TrainConfig

    data = datasets.load_dataset("../shared/data/ml-latest-small")
    trained = pipeline.run(data, TrainConfig(), runs_dir=Path(".fmstore/runs"))
    print(trained.metrics["valid_ndcg@10"], trained.run_dir)

Every stage reports to one `progress(message, done, total)` callback; nothing here prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmstore.config import RANKING_SEARCHED, TrainConfig
from fmstore.datasets import Dataset, Ratings

if TYPE_CHECKING:
    from fmstore.ranking_search import RankingSearch
    from fmstore.train import TrainResult, TuneResult
    from fmstore.train.distributed import Parallel
    from fmstore.train.loop import BatchProgressFn, ProgressFn


@dataclass
class Trained:
    """What `run` returns: the model as saved and everything measured on the way."""

    result: TrainResult  # refitted on every rating unless the config says --no-refit
    config: TrainConfig  # as trained: batch size and learning rate filled in
    validation: dict | None  # the validation split's evaluation (evaluate.Report.to_json())
    valid_predictions: dict | None  # the validated model's predictions of its held-out ratings
    search: TuneResult | None  # the search that chose the config, when asked for
    ranking_search: RankingSearch | None  # the search that chose the ranking model's settings
    run_dir: Path | None  # the run folder, when saved

    @property
    def metrics(self) -> dict:
        """valid_rmse, valid_recall@10, valid_ndcg@10, refit, ... as the manifest keeps them."""
        return self.result.metrics


def run(
    dataset: Dataset,
    config: TrainConfig,
    *,
    runs_dir: Path | None = None,
    test_ratings: Ratings | None = None,
    tune: bool = False,
    progress: ProgressFn | None = None,
    batch_progress: BatchProgressFn | None = None,
    parallel: Parallel | None = None,
    engine: str = "auto",
) -> Trained:
    """Train `config` on `dataset` the way `fmstore train` does and, with `runs_dir`, save the
    run there. `tune`: first choose factors and regularisation on an inner split of the training
    ratings (train.tune). `parallel`: this process's place in a data-parallel run; ranks other
    than 0 only train and get a Trained without validation or run folder."""
    from fmstore.train import check_config, check_memory, resolve_device, train

    config = config.for_dataset(dataset)  # its rating scale; implicit data: no rating model
    tune = tune and config.rating_model
    check_config(config)
    device = resolve_device(config.device)
    check_memory(dataset, config, device)
    search = _tune(dataset, config, engine, progress) if tune else None
    if search is not None:
        config = search.apply(config)
        check_memory(dataset, config, device)
    ranking_search = None
    if _searches_ranking(config, parallel):
        ranking_search = _search_ranking(dataset, config, progress)
        if ranking_search is not None:
            config = ranking_search.apply(config)

    result = train(
        dataset,
        config,
        test_ratings=test_ratings,
        progress=progress,
        batch_progress=batch_progress,
        parallel=parallel,
        engine=engine,
    )
    config = result.config or config
    if parallel is not None and parallel.rank != 0:
        return Trained(result, config, None, None, search, None, None)

    validation, predictions = _validate(result, dataset, config, progress)
    if config.refit and len(result.valid_ratings):
        result = _refit(result, dataset, config, engine, progress, batch_progress)
    if search is not None:
        result.metrics["tune"] = search.to_json()
    if ranking_search is not None:
        result.metrics["ranking_search"] = ranking_search.to_json()
    run_dir = None
    if runs_dir is not None:
        from fmstore import runs

        run_dir = runs.save_run(
            result,
            dataset,
            config,
            runs_dir,
            validation=validation,
            valid_predictions=predictions,
        )
    return Trained(result, config, validation, predictions, search, ranking_search, run_dir)


def _tune(dataset: Dataset, config: TrainConfig, engine: str, progress) -> TuneResult:
    """The search of `fmstore tune` (its default grid), reporting its points and its choice."""
    from fmstore.train.tune import tune

    search = tune(dataset, config, engine=engine, progress=progress)
    if progress:
        chosen, best = search.chosen, search.points[search.best]
        progress(
            f"tuned: --factors {chosen['factors']} --weight-decay {chosen['weight_decay']:g} "
            f"--prior-reg {chosen['prior_reg']:g} (inner RMSE {best.inner_rmse:.4f}, "
            f"{search.seconds:.0f}s)",
            0,
            config.epochs,
        )
    return search


def _searches_ranking(config: TrainConfig, parallel) -> bool:
    """Whether the ranking model's settings are searched: it is fitted, the search is on, some
    setting is not pinned, and this process fits it (rank 0 of a data-parallel run)."""
    unpinned = set(RANKING_SEARCHED) - set(config.ranking_pinned)
    rank0 = parallel is None or parallel.rank == 0
    return config.ranking and config.tune_ranking and bool(unpinned) and rank0


def _search_ranking(dataset: Dataset, config: TrainConfig, progress) -> RankingSearch | None:
    """The ranking model's nu, reg, alpha0 and conf_alpha searched on an inner split of the training
    ratings (ranking_search), reporting its choice."""
    from fmstore.ranking_search import search_ranking

    found = search_ranking(dataset, config, progress=progress)
    if found is None:
        if progress:
            progress("ranking model: too few ratings to search its settings, kept as given", 0, 1)
        return None
    if progress:
        chosen = found.chosen
        progress(
            f"ranking model: nu {chosen['nu']:g}, reg {chosen['reg']:g}, alpha0 {chosen['alpha0']:g}, conf_alpha "
            f"{chosen['conf_alpha']:g} (inner NDCG@10 {found.points[found.best].ndcg:.4f}, "
            f"{len(found.points)} points, {found.seconds:.0f}s)",
            0,
            config.epochs,
        )
    return found


def _validate(result, dataset: Dataset, config: TrainConfig, progress):
    """(the validation split's evaluation, the validated model's predictions), both None without
    validation ratings; the served Recall@10 and NDCG@10 are copied into the result's metrics."""
    if not len(result.valid_ratings):
        return None, None
    from fmstore import evaluate

    if progress:
        progress("measuring the validation split", config.epochs, config.epochs)
    validation = evaluate.evaluate_result(result, dataset, config).to_json()
    predictions = evaluate.valid_predictions(result, dataset, config)
    served = validation["metrics"].get(evaluate.SERVED)
    if served:
        result.metrics["valid_recall@10"] = served["recall@10"]
        result.metrics["valid_ndcg@10"] = served["ndcg@10"]
    return validation, predictions


def _refit(result, dataset: Dataset, config: TrainConfig, engine, progress, batch_progress):
    """Both models trained again on every rating for the validated number of epochs."""
    from fmstore.train import refit

    if progress:
        progress(f"refitting on every rating ({result.best_epoch} epochs)", 0, config.epochs)
    return refit(
        dataset, config, result, progress=progress, batch_progress=batch_progress, engine=engine
    )
