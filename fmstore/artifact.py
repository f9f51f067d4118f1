"""Run folders: everything a training run produced, in safetensors and JSON only (no pickle).

    runs/<run_id>/
      model.safetensors    FM weights and feature rows (torch state dict)
      serving.safetensors  the serving form (q_i, b_i for every movie; p_u, b_u for every user),
                           vocabulary arrays: what publish needs, readable without torch
      ranking.safetensors  the ranking model (train/ranking.py): r_u, [r_i, c_i], feature rows,
                           the Gramian of the [r_i, c_i]
      seen.safetensors     each user's training movies (CSR), to exclude already seen movies
      validation.safetensors  the validated model's predictions of its held-out ratings
      movies.json          catalog rows of every movie (title, year, genres, counts, links)
      history.csv          per-epoch metrics
      manifest.json        config, metrics, dataset fingerprint, versions, sha256 of every file

Written to a temporary sibling folder, then renamed (a crash never leaves half a run); loading
refuses any file whose sha256 differs from the manifest's. No torch here: publish stays NumPy-only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from fmstore.errors import DataError, NotFoundError
from fmstore.runfolder import (
    FORMAT_VERSION,
    SERVING_ARRAYS,
    TMP_PREFIX,
    VALID_PREDICTIONS,
    check_manifest,
    check_run_name,
    load_arrays,
    remove_stale_temp_runs,
    unreadable_run,
    versions,
)
from fmstore.runfolder import (
    load_valid_predictions as load_valid_predictions,  # re-exported for the report
)

MANIFEST = "manifest.json"


@dataclass
class ServingArtifact:
    """The published form of a run, as NumPy arrays (see model.ServingForm)."""

    run_id: str
    movie_ids: np.ndarray  # int64 [n_movies] every movie of movies.csv
    item_vectors: np.ndarray  # float32 [n_movies, k]
    item_bias: np.ndarray  # float32 [n_movies]
    user_ids: np.ndarray  # int64 [n_users] users with training ratings
    user_vectors: np.ndarray  # float32 [n_users, k]
    user_bias: np.ndarray  # float32 [n_users]
    w0: float
    link: str
    rating_range: tuple[float, float]
    weight_decay: float  # the training's L2 per rating, reused by fold-in

    @property
    def factors(self) -> int:
        """k, the width of the item and user vectors."""
        return self.item_vectors.shape[1]

    @property
    def reg(self) -> float:
        """The old name of `weight_decay`."""
        return self.weight_decay


def new_run_id(now: datetime | None = None) -> str:
    """A new run id: UTC time to the second plus 6 random hex digits ('20261129-105500-ab12cd')."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class RankingArtifact:
    """The ranking model of a run (train/ranking.py) in the order of its ServingArtifact."""

    user_vectors: np.ndarray  # float32 [n_users, k_r]: r_u
    item_vectors: np.ndarray  # float32 [n_movies, k_r]: r_i
    item_scalar: np.ndarray  # float32 [n_movies]: c_i
    alpha0: float
    reg: float
    nu: float
    n_items_train: int
    confidence: str = "liked"
    conf_alpha: float = 1.0

    @property
    def item_rows(self) -> np.ndarray:
        """[r_i, c_i]: the served `rank` vector of each movie."""
        return np.hstack([self.item_vectors, self.item_scalar[:, None]]).astype(np.float32)


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
                str(tmp / "ranking.safetensors"),
            )
        if valid_predictions is not None:
            save_file(valid_predictions, str(tmp / VALID_PREDICTIONS))
        _save_seen(result.train_ratings, result.vocab.user_ids, tmp / "seen.safetensors")
        _write_json(tmp / "movies.json", movie_rows(dataset))
        _write_history(tmp / "history.csv", result.history)
        manifest = {
            "format_version": FORMAT_VERSION,
            "run_id": run_id,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": {
                "name": dataset.name,
                "source": dataset.source,
                "fingerprint": dataset.fingerprint,
                "n_ratings": len(dataset.ratings),
                "n_users": int(len(np.unique(dataset.ratings.user_id))),
                "n_movies": len(dataset.movies),
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


# ---- reading -----------------------------------------------------------------------------------


def load_manifest(run_dir: Path, verify: bool = True) -> dict:
    """The run's manifest, its format and keys checked; with `verify`, every listed file's
    sha256 must match. A manifest of a newer fmstore is refused, never half understood."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise NotFoundError(f"{run_dir}: no {MANIFEST}; not a run folder (see `fmstore runs`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DataError(
            f"{path}: unreadable manifest ({exc}); the run folder is corrupt, retrain"
        ) from None
    check_manifest(path, manifest)
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = Path(run_dir) / name
            if not file.is_file() or sha256_file(file) != expected:
                raise DataError(
                    f"{file}: missing or its sha256 does not match manifest.json; "
                    "the run folder is corrupt or was edited, retrain or restore it"
                )
    return manifest


def load_serving(run_dir: Path, manifest: dict | None = None) -> ServingArtifact:
    """The run's serving form (movie and user vectors and biases, w0, link) from
    serving.safetensors and the manifest."""
    manifest = manifest or load_manifest(run_dir)
    arrays = load_arrays(Path(run_dir) / "serving.safetensors", SERVING_ARRAYS)
    serving = manifest["serving"]
    return ServingArtifact(
        run_id=manifest["run_id"],
        movie_ids=arrays["movie_ids"],
        item_vectors=arrays["item_vectors"],
        item_bias=arrays["item_bias"],
        user_ids=arrays["user_ids"],
        user_vectors=arrays["user_vectors"],
        user_bias=arrays["user_bias"],
        w0=float(serving["w0"]),
        link=serving["link"],
        rating_range=tuple(serving["rating_range"]),
        weight_decay=float(serving.get("weight_decay", serving["reg"])),
    )


def load_ranking(run_dir: Path, manifest: dict | None = None) -> RankingArtifact | None:
    """The run's ranking model, or None for a run trained without one."""
    manifest = manifest or load_manifest(run_dir)
    meta = manifest.get("ranking")
    if not meta:
        return None
    arrays = load_file(str(Path(run_dir) / "ranking.safetensors"))
    config = meta["config"]
    return RankingArtifact(
        user_vectors=arrays["user_vectors"],
        item_vectors=arrays["item_vectors"],
        item_scalar=arrays["item_scalar"],
        alpha0=float(config["alpha0"]),
        reg=float(config["reg"]),
        nu=float(config["nu"]),
        n_items_train=int(meta["n_items_train"]),
        confidence=str(config["confidence"]),
        conf_alpha=float(config["conf_alpha"]),
    )


def load_movie_rows(run_dir: Path) -> list[dict]:
    """The run's movies.json: one dict per movie (id, title, year, genres, counts) for the catalog."""
    path = Path(run_dir) / "movies.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); the run folder is corrupt, retrain") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: not a list of movies; the run folder is corrupt, retrain")
    return rows


def seen_movies(run_dir: Path, user_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(movie ids, ratings) the user rated in the run's training data; empty if unknown.

    Reads only that user's slice of the CSR, so it stays fast for ml-latest-sized runs."""
    from safetensors import safe_open

    path = Path(run_dir) / "seen.safetensors"
    try:
        with safe_open(str(path), framework="numpy") as f:
            user_ids = f.get_tensor("user_ids")
            row = np.searchsorted(user_ids, user_id)
            if row >= len(user_ids) or user_ids[row] != user_id:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            start, end = (int(x) for x in f.get_slice("indptr")[row : row + 2])
            return f.get_slice("movie_ids")[start:end], f.get_slice("ratings")[start:end]
    except Exception as exc:  # SafetensorError (damaged file, missing tensor), OSError
        raise DataError(f"{path}: unreadable ({exc}); the run folder is corrupt, retrain") from None


def load_model(run_dir: Path, manifest: dict | None = None):
    """The trained FactorizationMachine (torch), weights loaded without unpickling."""
    from safetensors.torch import load_file as load_torch

    from fmstore.features import FeatureRows, RatedRows
    from fmstore.model import FactorizationMachine

    manifest = manifest or load_manifest(run_dir)
    try:
        state = load_torch(str(Path(run_dir) / "model.safetensors"))
    except Exception as exc:  # SafetensorError, OSError
        raise DataError(
            f"{run_dir}/model.safetensors: unreadable ({exc}); the run folder is corrupt, retrain"
        ) from None
    config = manifest["config"]
    model = FactorizationMachine(
        state["v"].shape[0],
        state["v"].shape[1],
        FeatureRows(state["user_index"].numpy(), state["user_weight"].numpy()),
        FeatureRows(state["item_index"].numpy(), state["item_weight"].numpy()),
        link=config["link"],
        rating_range=(config["rating_min"], config["rating_max"]),
        rated=RatedRows.from_state(state),
    )
    model.load_state_dict(state)
    return model


def list_runs(runs_dir: Path) -> list[dict]:
    """Manifests of all runs (unverified, for listing), oldest first. A run folder whose manifest
    cannot be read is listed too, as {"run_id", "path", "created_at", "error"}: never hidden."""
    if not Path(runs_dir).is_dir():
        return []
    manifests = []
    for path in sorted(Path(runs_dir).iterdir()):
        if path.name.startswith(".") or not (path / MANIFEST).is_file():
            continue
        try:
            manifests.append(load_manifest(path, verify=False) | {"path": str(path)})
        except DataError as exc:
            manifests.append(unreadable_run(path, MANIFEST, exc))
    return sorted(manifests, key=lambda m: (str(m.get("created_at", "")), str(m["run_id"])))


def resolve_run(runs_dir: Path, run_id: str | None) -> Path:
    """Folder of `run_id` (a name inside runs_dir, never a path out of it), or of the latest run
    when None; a latest run that cannot be read is refused, never skipped for an older one."""
    if run_id:
        path = check_run_name(runs_dir, run_id)
        if not (path / MANIFEST).is_file():
            raise NotFoundError(f"no run {run_id!r} in {runs_dir}; `fmstore runs` lists them")
        return path
    runs = list_runs(runs_dir)
    if not runs:
        raise NotFoundError(
            f"no runs in {runs_dir}; train one first with `fmstore train --data PATH`"
        )
    if "error" in runs[-1]:
        raise DataError(
            f"the newest run {runs[-1]['run_id']} is unreadable, so there is no latest run to "
            f"use: {runs[-1]['error']}; name a run (`fmstore runs` lists them) or remove it"
        )
    return Path(runs[-1]["path"])
