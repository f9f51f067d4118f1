"""Saving a training run as a run folder, in safetensors and JSON only (no pickle):

    runs/<run_id>/
      model.safetensors    FM weights and feature rows (torch state dict)
      serving.safetensors  the serving form (q_i, b_i for every movie; p_u, b_u for every user),
                           vocabulary arrays: what publish needs, readable without torch
      ranking.safetensors  the ranking model (train/ranking.py): r_u, [r_i, c_i], feature rows,
                           the Gramian of the [r_i, c_i]
      seen.safetensors     each user's training movies (CSR), to exclude already seen movies
      validation.safetensors  the validated model's predictions of its held-out ratings
      movies.json          catalog rows of every movie (title, year, genres, counts, links)
      keys.json            only for a person's own ids (text, ...): {"user": [...], "movie":
                           [...]}, the id behind each whole number the other files hold
      history.csv          per-epoch metrics
      manifest.json        config, metrics, dataset fingerprint, versions, sha256 of every file

Written to a temporary sibling folder, then renamed (a crash never leaves half a run). torch is
imported only while saving (the model's weights, the versions a run records).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from fmstore import __version__
from fmstore.runs.folders import TMP_PREFIX, new_run_id, remove_stale_temp_runs
from fmstore.runs.load import KEYS, RANKING, SEEN, VALID_PREDICTIONS
from fmstore.runs.manifest import FORMAT_VERSION, MANIFEST, sha256_file


def save_run(
    result,
    dataset,
    config,
    runs_dir: Path,
    run_id: str | None = None,
    validation: dict | None = None,
    valid_predictions: dict[str, np.ndarray] | None = None,
) -> Path:
    """Write a TrainResult as a run folder; returns its path. `validation`: the evaluation of
    the model on its validation split, `valid_predictions`: its {"actual", "predicted"} ratings
    there (both kept from before a refit: the refitted model has seen those ratings)."""
    run_id = run_id or new_run_id()
    final = runs_dir / run_id
    remove_stale_temp_runs(runs_dir)
    # The pid in the name tells a later training whether this folder is still being written.
    tmp = runs_dir / f"{TMP_PREFIX}{run_id}@{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        state = {k: t.detach().cpu().contiguous() for k, t in result.model.state_dict().items()}
        torch_save_safetensors(state, tmp / "model.safetensors")
        form = result.model.serving_form()
        save_file(
            {
                "movie_ids": dataset.movies.movie_id.astype(np.int64),
                "item_vectors": form.item_vectors,
                "item_bias": form.item_bias,
                "user_ids": result.vocab.user_ids.astype(np.int64),
                "user_vectors": form.user_vectors,
                "user_bias": form.user_bias,
                **result.vocab.arrays(),
            },
            str(tmp / "serving.safetensors"),
        )
        ranking = getattr(result, "ranking", None)
        if ranking is not None:
            rows = np.hstack([ranking.item_vectors, ranking.item_scalar[:, None]]).astype(
                np.float64
            )
            save_file(
                {
                    "user_vectors": ranking.user_vectors,
                    "item_vectors": ranking.item_vectors,
                    "item_scalar": ranking.item_scalar,
                    "feature_vectors": ranking.feature_vectors,
                    "gramian": rows.T @ rows,  # for explanations (recommend/explain.py)
                },
                str(tmp / RANKING),
            )
        if valid_predictions is not None:
            save_file(valid_predictions, str(tmp / VALID_PREDICTIONS))
        _save_seen(result.train_ratings, result.vocab.user_ids, tmp / SEEN)
        if getattr(dataset, "user_keys", None) or getattr(dataset, "movie_keys", None):
            _write_json(tmp / KEYS, {"user": dataset.user_keys, "movie": dataset.movie_keys})
        _write_json(tmp / "movies.json", movie_rows(dataset))
        _write_history(tmp / "history.csv", result.history)
        manifest = {
            "format_version": FORMAT_VERSION,
            "run_id": run_id,
            # to the microsecond: "the latest run" must not depend on two runs of one second
            "created_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "dataset": {
                "name": dataset.name,
                "source": dataset.source,
                "fingerprint": dataset.fingerprint,
                "n_ratings": len(dataset.ratings),
                "n_users": int(len(np.unique(dataset.ratings.user_id))),
                "n_movies": len(dataset.movies),
                **({"read_as": dataset.read_as} if getattr(dataset, "read_as", None) else {}),
                **_scale(dataset),
            },
            "config": config.to_dict(),
            "metrics": result.metrics,
            "device": result.device,
            "vocabulary": result.vocab.to_json(),
            "serving": {
                "factors": int(form.item_vectors.shape[1]),
                "w0": form.w0,
                "link": config.link,
                "rating_range": [config.rating_min, config.rating_max],
                # "reg" is the old name of weight_decay, kept for older readers
                "reg": config.weight_decay,
                "weight_decay": config.weight_decay,
                "prior_reg": config.prior_reg,
            },
            "ranking": None
            if ranking is None
            else {
                "config": ranking.config.to_dict(),
                "factors": int(ranking.item_vectors.shape[1]),
                "n_items_train": int(ranking.n_items_train),
                "seconds": round(ranking.seconds, 3),
            },
            "refit": bool(getattr(result, "refit", False)),
            "validation": validation,
            "versions": versions(),
            "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir())},
        }
        _write_json(tmp / MANIFEST, manifest)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _scale(dataset) -> dict:
    """The dataset's rating scale when it is not MovieLens's half stars."""
    scale = [float(v) for v in getattr(dataset, "rating_scale", (0.5, 5.0))]
    return {} if scale == [0.5, 5.0] else {"rating_scale": scale}


def torch_save_safetensors(state: dict, path: Path) -> None:
    """Save a dict of tensors as safetensors (no pickle)."""
    from safetensors.torch import save_file as save_torch

    save_torch(state, str(path))


def movie_rows(dataset) -> list[dict]:
    """Catalog rows for every movie: metadata plus rating counts over the whole dataset."""
    movies, ratings = dataset.movies, dataset.ratings
    order = np.argsort(movies.movie_id)
    pos = order[np.searchsorted(movies.movie_id[order], ratings.movie_id)]
    counts = np.bincount(pos, minlength=len(movies))
    sums = np.bincount(pos, weights=ratings.rating.astype(np.float64), minlength=len(movies))
    rows = []
    for m in range(len(movies)):
        year = int(movies.year[m])
        rows.append(
            {
                "movie_id": int(movies.movie_id[m]),
                "title": movies.title[m],
                "year": year or None,
                "genres": list(movies.genres[m]),
                "n_ratings": int(counts[m]),
                "mean_rating": round(float(sums[m] / counts[m]), 4) if counts[m] else None,
                "imdb_id": movies.imdb_id[m],
                "tmdb_id": movies.tmdb_id[m],
            }
        )
    return rows


def _save_seen(train_ratings, user_ids: np.ndarray, path: Path) -> None:
    """CSR of each vocabulary user's training movies (raw ids) and ratings."""
    order = np.lexsort((train_ratings.movie_id, train_ratings.user_id))
    users = train_ratings.user_id[order]
    indptr = np.searchsorted(users, user_ids, side="left")
    indptr = np.append(indptr, len(users)).astype(np.int64)
    save_file(
        {
            "user_ids": user_ids.astype(np.int64),
            "indptr": indptr,
            "movie_ids": train_ratings.movie_id[order].astype(np.int64),
            "ratings": train_ratings.rating[order].astype(np.float32),
        },
        str(path),
    )


def _write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, default=_json_default)


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _write_history(path: Path, history) -> None:
    with open(path, "w", newline="") as f:
        rows = [asdict(h) for h in history]
        writer = csv.DictWriter(
            f, fieldnames=["epoch", "train_rmse", "valid_rmse", "seconds", "lr"]
        )
        writer.writeheader()
        writer.writerows(rows)


def versions() -> dict:
    """The versions a run was trained with (manifest["versions"])."""
    import torch

    return {
        "fmstore": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
