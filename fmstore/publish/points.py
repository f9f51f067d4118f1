"""The points of a publication: which named vectors are served (`served_vectors`), movies and
users as vectors + payloads, written in batches, and the probe that verifies a written
collection before any alias points at it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fmstore import runs
from fmstore.errors import StoreError
from fmstore.publish.checks import checkpoint
from fmstore.serving import ranking_lambda, whiten_items
from fmstore.vectors import CollectionSpec, movies_spec, users_spec

ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class Points:
    """One collection's worth of points, built in memory before anything is written."""

    ids: np.ndarray
    vectors: dict[str, np.ndarray]
    payloads: Sequence[dict]  # a list, or UserPayloads (built a batch at a time)
    cosine: tuple[str, ...] = ()  # vectors Qdrant stores normalised (Cosine distance)

    def __len__(self) -> int:
        return len(self.ids)


def payload_bytes(points: Points, sample: int = 1000) -> int:
    """About how many bytes the payloads take as JSON: an even sample, scaled (a users
    collection's `rated` lists can be most of a publication)."""
    import json

    n = len(points.payloads)
    if n == 0:
        return 0
    step = max(1, n // sample)
    chosen = points.payloads[::step]
    sampled = sum(len(json.dumps(p, default=str)) for p in chosen)
    return sampled * n // len(chosen)


@dataclass
class ServedVectors:
    """The named vectors publish writes, and the serving config that says how to read them."""

    movies: dict[str, np.ndarray]  # item, score, (rank)
    users: dict[str, np.ndarray]  # score, (rank)
    rank_k: int | None
    # merged into the catalog's serving config: "ranking", "item_distance", "item_norm_max", ...
    config: dict

    def movies_spec(self, k: int) -> CollectionSpec:
        item_size = self.movies["item"].shape[1]
        return movies_spec(k, self.rank_k, item_size, self.config["item_distance"])

    def users_spec(self, k: int) -> CollectionSpec:
        return users_spec(k, self.rank_k)


# "movies like x" and the whitened vectors: see serving.whiten_items. Dot, not Cosine: the dot
# product of whitened vectors is exactly the top list of someone who named only x, and it measured
# best (benchmarks/ranking.py, item-to-item table).
ITEM_DISTANCE = "dot"


def served_vectors(
    serving: runs.ServingArtifact, ranking: runs.RankingArtifact | None
) -> ServedVectors:
    """score = [q_i, b_i] / [p_u, 1]: the rating FM, exact. With a ranking model: rank =
    [r_i, c_i] / [r_u, 1] and item = the whitened r_i (Dot). Without one (a run trained with
    --no-ranking): item = q_i (Cosine) and the FM's score is the only ranking."""
    ones = np.ones((len(serving.user_ids), 1), np.float32)
    movies = {"score": np.hstack([serving.item_vectors, serving.item_bias[:, None]])}
    users = {"score": np.hstack([serving.user_vectors, ones])}
    if ranking is None:
        movies["item"] = serving.item_vectors
        config = {"ranking": None, "item_distance": "cosine", "item_norm_max": 1.0}
        return ServedVectors(movies, users, None, config)
    lam = ranking_lambda(ranking.reg, ranking.alpha0, ranking.nu, ranking.n_items_train)
    movies["item"] = whiten_items(ranking.item_vectors, ranking.alpha0, lam)
    movies["rank"] = ranking.item_rows
    users["rank"] = np.hstack([ranking.user_vectors, ones])
    rank_k = int(ranking.item_vectors.shape[1])
    config = {
        "ranking": {
            "factors": rank_k,
            "alpha0": ranking.alpha0,
            "reg": ranking.reg,
            "nu": ranking.nu,
            "n_items": ranking.n_items_train,
            "confidence": ranking.confidence,
            "conf_alpha": ranking.conf_alpha,
            "liked_at": ranking.liked_at,
        },
        "item_distance": ITEM_DISTANCE,
        "item_norm_max": longest_norm(movies["item"]),
    }
    return ServedVectors(movies, users, rank_k, config)


def longest_norm(vectors: np.ndarray) -> float:
    """The largest |row| of `vectors` (0 for none): with it a "movies like x" score reads as a
    similarity in [-1, 1] (serving.similarity)."""
    if len(vectors) == 0:
        return 0.0
    return float(np.linalg.norm(np.asarray(vectors, np.float64), axis=1).max())


def movie_points(
    serving: runs.ServingArtifact,
    vectors: ServedVectors,
    movie_rows: list[dict],
    keys: list | None = None,
) -> Points:
    """`keys`: a person's own movie ids (runs.load_keys), kept in each payload as `key` (point
    ids must be whole numbers; the answers give the person's ids back)."""
    payloads = [
        {
            "movie_id": row["movie_id"],
            "title": row["title"],
            "year": row["year"],
            "genres": row["genres"],
            "bias": float(serving.item_bias[m]),
            "n_ratings": row["n_ratings"],
            "mean_rating": row["mean_rating"],
            "run_id": serving.run_id,
        }
        for m, row in enumerate(movie_rows)
    ]
    _with_keys(payloads, serving.movie_ids, keys)
    movies = {name: v.astype(np.float32) for name, v in vectors.movies.items()}
    return Points(serving.movie_ids, movies, payloads, _cosine(vectors))


def _with_keys(payloads: list[dict], ids: np.ndarray, keys: list | None) -> None:
    if keys:
        for payload, point in zip(payloads, ids.tolist(), strict=True):
            payload["key"] = keys[point]


def user_points(
    serving: runs.ServingArtifact, vectors: ServedVectors, run_dir: Path, keys: list | None = None
) -> Points:
    """`keys`: a person's own user ids, kept in each payload as `key` (see movie_points)."""
    payloads = UserPayloads(serving, _rated_per_user(run_dir, serving.user_ids), keys)
    users = {name: v.astype(np.float32, copy=False) for name, v in vectors.users.items()}
    return Points(serving.user_ids, users, payloads)


class UserPayloads(Sequence):
    """The users' payloads, each built when its batch is written: at ml-latest size (283k users,
    27.75M rated movies) the `rated` lists held as Python objects all at once were gigabytes."""

    def __init__(
        self,
        serving: runs.ServingArtifact,
        rated: tuple[np.ndarray, np.ndarray],
        keys: list | None = None,
    ):
        self.user_ids, self.user_bias, self.run_id = (
            serving.user_ids,
            serving.user_bias,
            serving.run_id,
        )
        self.movie_ids, self.indptr = rated
        self.keys = keys  # a person's own user ids by point id, kept as `key` (movie_points)

    def __len__(self) -> int:
        return len(self.user_ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            rows = range(*index.indices(len(self)))
            if rows.step != 1:
                return [self[r] for r in rows]
            return self._rows(rows.start, max(rows.start, rows.stop))
        row = range(len(self))[index]  # a negative index counts from the end
        return self._rows(row, row + 1)[0]

    def _rows(self, first: int, end: int) -> list[dict]:
        """Payloads of users first..end-1, their movie lists from one tolist() of the span."""
        base = int(self.indptr[first])
        movies = self.movie_ids[base : int(self.indptr[end])].tolist()
        payloads = [
            {
                "user_id": int(self.user_ids[r]),
                "bias": float(self.user_bias[r]),
                "n_ratings": int(self.indptr[r + 1] - self.indptr[r]),
                "rated": movies[int(self.indptr[r]) - base : int(self.indptr[r + 1]) - base],
                "run_id": self.run_id,
            }
            for r in range(first, end)
        ]
        _with_keys(payloads, self.user_ids[first:end], self.keys)
        return payloads


def _cosine(vectors: ServedVectors) -> tuple[str, ...]:
    return ("item",) if vectors.config["item_distance"] == "cosine" else ()


def _rated_per_user(run_dir: Path, user_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(movie ids, indptr): user r's rated movie ids are movie_ids[indptr[r]:indptr[r + 1]]
    (everything the published model saw them rate)."""
    from safetensors.numpy import load_file

    seen = load_file(str(Path(run_dir) / "seen.safetensors"))
    if not np.array_equal(seen["user_ids"], user_ids):
        raise StoreError(
            f"{run_dir}: seen.safetensors and serving.safetensors disagree on users; retrain"
        )
    return seen["movie_ids"], seen["indptr"]


def write(store, coll: str, points: Points, batch_size: int, progress, what: str) -> None:
    """Upsert in batches; the crash tests may stop the process after the first batch."""
    n = len(points)
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        batch = {k: v[start:end] for k, v in points.vectors.items()}
        store.upsert(coll, points.ids[start:end], batch, points.payloads[start:end])
        if progress:
            progress(what, end, n)
        if start == 0:
            checkpoint(f"{what}_upsert")


def verify(store, coll: str, points: Points) -> None:
    """The collection holds every point, and a probe point reads back exactly as written."""
    got = store.count(coll)
    if got != len(points):
        raise StoreError(
            f"{coll} holds {got} points after publishing, expected {len(points)}; publish again"
        )
    probe = int(points.ids[-1])
    found = store.retrieve(coll, [probe], vectors=list(points.vectors)).get(probe)
    expected = {k: v[-1] for k, v in points.vectors.items()}
    if (
        found is None
        or found[1].get("run_id") != points.payloads[-1]["run_id"]
        or not all(
            np.allclose(
                found[0].get(k, np.array([])), _stored(v, k in points.cosine), rtol=1e-5, atol=1e-6
            )
            for k, v in expected.items()
        )
    ):
        raise StoreError(f"{coll}: point {probe} does not read back as written; publish again")


def _stored(vector: np.ndarray, cosine: bool) -> np.ndarray:
    # Qdrant stores a Cosine vector normalised.
    vector = np.asarray(vector, np.float32)
    if not cosine:
        return vector
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector
