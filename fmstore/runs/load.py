"""Reading a run folder's arrays and rows: safetensors and JSON only, never a pickle, each damaged
file a one-line DataError. No torch at import: publish and the query path read runs without it
(only load_model, which rebuilds the torch model, imports it)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fmstore.errors import DataError
from fmstore.runs.manifest import load_manifest

SERVING_ARRAYS = ("movie_ids", "item_vectors", "item_bias", "user_ids", "user_vectors", "user_bias")
# The validated model's predictions of the held-out ratings (before any refit); runs saved before
# fmstore kept them lack the file.
VALID_PREDICTIONS = "validation.safetensors"
SEEN = "seen.safetensors"
RANKING = "ranking.safetensors"
KEYS = "keys.json"  # a person's own ids (datasets.from_frames), absent for whole-number ids


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
    liked_at: float = 4.0

    @property
    def item_rows(self) -> np.ndarray:
        """[r_i, c_i]: the served `rank` vector of each movie."""
        return np.hstack([self.item_vectors, self.item_scalar[:, None]]).astype(np.float32)


def _corrupt(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: unreadable ({exc}); the run folder is corrupt, retrain")


def load_arrays(path: Path, wanted: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A safetensors file (never a pickle) holding at least `wanted`; a damaged one is a
    one-line DataError."""
    try:
        arrays = load_file(str(path))
    except Exception as exc:  # safetensors' SafetensorError, OSError
        raise _corrupt(path, exc) from None
    if missing := [name for name in wanted if name not in arrays]:
        raise DataError(f"{path} lacks {missing}; the run folder is corrupt, retrain")
    return arrays


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
    arrays = load_file(str(Path(run_dir) / RANKING))
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
        liked_at=float(config.get("liked_at", 4.0)),
    )


def ranking_gramian(run_dir: Path) -> np.ndarray:
    """Q^T Q over every movie's [r_i, c_i] (explanations need it), float64: saved in
    ranking.safetensors; computed from the movies' rows for runs saved before it was."""
    from safetensors import safe_open

    path = Path(run_dir) / RANKING
    try:
        with safe_open(str(path), framework="numpy") as f:
            if "gramian" in f.keys():
                return f.get_tensor("gramian").astype(np.float64)
            r = f.get_tensor("item_vectors").astype(np.float64)
            c = f.get_tensor("item_scalar").astype(np.float64)
    except Exception as exc:  # SafetensorError (damaged, missing tensor), OSError
        raise DataError(f"{path}: unreadable ({exc}); the run folder is corrupt") from None
    q = np.hstack([r, c[:, None]])
    return q.T @ q


def load_valid_predictions(run_dir: Path) -> dict[str, np.ndarray] | None:
    """{"actual", "predicted"}: the held-out ratings and the validated model's predictions of
    them, kept from before a refit; None for a run that has no such file."""
    path = Path(run_dir) / VALID_PREDICTIONS
    return load_arrays(path, ("actual", "predicted")) if path.is_file() else None


def load_movie_rows(run_dir: Path) -> list[dict]:
    """The run's movies.json: one dict per movie (id, title, year, genres, counts) for the catalog."""
    path = Path(run_dir) / "movies.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise _corrupt(path, exc) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError(f"{path}: not a list of movies; the run folder is corrupt, retrain")
    return rows


def load_keys(run_dir: Path) -> tuple[list | None, list | None]:
    """(user keys, movie keys) of a run trained on a person's own ids: keys[i] is the id behind
    the whole number i; (None, None) for a run whose ids are whole numbers."""
    path = Path(run_dir) / KEYS
    if not path.is_file():
        return None, None
    try:
        keys = json.loads(path.read_text(encoding="utf-8"))
        return keys.get("user"), keys.get("movie")
    except (OSError, ValueError, AttributeError) as exc:
        raise _corrupt(path, exc) from None


def has_seen(run_dir: Path | None) -> bool:
    """Whether the run folder (None: unknown) is on this machine with its users' movies."""
    return run_dir is not None and (Path(run_dir) / SEEN).is_file()


def seen_movies(run_dir: Path, user_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(movie ids, ratings) the user rated in the run's training data; empty if unknown.

    Reads only that user's slice of the CSR, so it stays fast for ml-latest-sized runs."""
    from safetensors import safe_open

    path = Path(run_dir) / SEEN
    try:
        with safe_open(str(path), framework="numpy") as f:
            user_ids = f.get_tensor("user_ids")
            row = np.searchsorted(user_ids, user_id)
            if row >= len(user_ids) or user_ids[row] != user_id:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            start, end = (int(x) for x in f.get_slice("indptr")[row : row + 2])
            return f.get_slice("movie_ids")[start:end], f.get_slice("ratings")[start:end]
    except Exception as exc:  # SafetensorError (damaged file, missing tensor), OSError
        raise _corrupt(path, exc) from None


def seen_user_ids(run_dir: Path) -> np.ndarray:
    """Every user with training ratings, ascending (the rows of seen.safetensors), int64."""
    from safetensors import safe_open

    path = Path(run_dir) / SEEN
    try:
        with safe_open(str(path), framework="numpy") as f:
            return np.asarray(f.get_tensor("user_ids"), dtype=np.int64)
    except Exception as exc:  # SafetensorError, OSError
        raise _corrupt(path, exc) from None


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
