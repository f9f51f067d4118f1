"""Offline evaluation: rating error, ranking quality and cold start, side by side with baselines.

Everything here works on the serving form (DESIGN.md), as NumPy arrays:

    rating = clamp(link(w0 + b_u + b_i + <p_u, q_i>))

with the link and clamp of fmstore.serving. One file per section:

- indexing: the user-row and movie-column space of the score matrices (`Rows`, `CSR`).
- metrics: RMSE, MAE, Recall@K, NDCG@K, and all of them on one held-out set.
- baselines: the `Predictor` protocol, the model's `BiasedMF` form, the popularity and
  global-mean+biases baselines, and `Reranked` (serving-time re-rankings).
- runs: the model and the baselines on a training result or a saved run (`Report`); the
  validated model's predictions of its held-out ratings (`valid_predictions`).
- cold_start: users and movies held out of training entirely.

Nothing here imports torch, except `run_cold_start` when it trains.
"""

from fmstore.evaluate.baselines import (
    BASELINE_REG_ITEM,
    BASELINE_REG_USER,
    BASELINE_SWEEPS,
    BIASES,
    MODEL,
    POPULARITY,
    SERVED,
    BiasedMF,
    Popularity,
    Predictor,
    Reranked,
    Served,
    baselines,
    fit_biases,
    fit_popularity,
)
from fmstore.evaluate.cold_start import (
    COLD_SIZES,
    FOLD_IN,
    WEIGHTED,
    ColdStartReport,
    ColdStartSplit,
    cold_start_split,
    evaluate_cold_movies,
    evaluate_cold_users,
    run_cold_start,
)
from fmstore.evaluate.indexing import CSR, Rows
from fmstore.evaluate.metrics import (
    NDCG_K,
    RECALL_KS,
    RELEVANT_MIN,
    HeldOut,
    capped_recall_at_k,
    mae,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
    rmse,
    top_k,
    user_ndcg,
)
from fmstore.evaluate.runs import (
    Report,
    evaluate_predictors,
    evaluate_result,
    evaluate_run,
    evaluate_serving,
    valid_predictions,
)

__all__ = [
    "BASELINE_REG_ITEM",
    "BASELINE_REG_USER",
    "BASELINE_SWEEPS",
    "BIASES",
    "COLD_SIZES",
    "CSR",
    "FOLD_IN",
    "MODEL",
    "NDCG_K",
    "POPULARITY",
    "RECALL_KS",
    "RELEVANT_MIN",
    "SERVED",
    "WEIGHTED",
    "BiasedMF",
    "ColdStartReport",
    "ColdStartSplit",
    "HeldOut",
    "Popularity",
    "Predictor",
    "Report",
    "Reranked",
    "Rows",
    "Served",
    "baselines",
    "cold_start_split",
    "evaluate_cold_movies",
    "evaluate_cold_users",
    "evaluate_predictors",
    "evaluate_result",
    "evaluate_run",
    "evaluate_serving",
    "fit_biases",
    "fit_popularity",
    "mae",
    "ndcg_at_k",
    "ranking_metrics",
    "user_ndcg",
    "recall_at_k",
    "capped_recall_at_k",
    "rmse",
    "run_cold_start",
    "top_k",
    "valid_predictions",
]
