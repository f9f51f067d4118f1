"""What a live update needs of the live run, read once from its run folder: the ranking model's
Gramian and settings, each user's training ratings, and the feature embeddings both models serve
a movie nobody rated from (the FM's genre and year rows, the ranking model's). Plus the math
that turns them into points: a user's vectors from all their ratings, a new movie's from its
genres and year.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmstore import runs, serving
from fmstore.errors import DataError, NotFoundError


@dataclass
class UserVectors:
    """One user's point: named vectors and payload, ready to upsert."""

    user_id: int
    vectors: dict[str, np.ndarray]
    payload: dict


@dataclass
class MovieRows:
    """Stored vectors of movies, one float64 matrix per named vector, rows in `ids` order
    (ascending): a batch of users gathers its rows by index, not a dict look-up per rating."""

    ids: np.ndarray
    matrices: dict[str, np.ndarray]

    @classmethod
    def of(cls, found: dict[int, dict[str, np.ndarray]]) -> MovieRows:
        ids = np.array(sorted(found), np.int64)
        names = list(next(iter(found.values()))) if found else []
        return cls(ids, {n: np.stack([found[int(i)][n] for i in ids]).astype(np.float64)
                         for n in names})  # fmt: skip

    def rows(self, name: str, movie_ids: np.ndarray) -> np.ndarray:
        return self.matrices[name][np.searchsorted(self.ids, movie_ids)]


class LiveRun:
    """The live run as the updates see it. `config` is the catalog's serving config of the run
    (w0, link, weight_decay, prior_reg, ranking: {alpha0, reg, nu, n_items, ...})."""

    def __init__(self, run_id: str, config: dict, artifact_path: str | None):
        self.run_id = run_id
        self.serving = config.get("serving") or {}
        self.ranking = self.serving.get("ranking")
        self.w0 = float(self.serving["w0"])
        self.link = str(self.serving.get("link", "identity"))
        self.weight_decay = float(self.serving.get("weight_decay", self.serving.get("reg")))
        self.prior_reg = float(self.serving.get("prior_reg", 0.0))
        self.path = Path(artifact_path) if artifact_path else None
        if self.path is None or not (self.path / runs.MANIFEST).is_file():
            raise NotFoundError(
                f"the run folder of the live run {run_id} ({artifact_path}) is not on this "
                "machine: live updates read its Gramian and its users' training ratings"
            )
        # its files' sha256 were checked when it was published: read, not verified again (a
        # large run's files take seconds to hash, and an update should take milliseconds)
        try:
            self.manifest = json.loads((self.path / runs.MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{self.path / runs.MANIFEST}: unreadable ({exc})") from None
        self.gramian = runs.ranking_gramian(self.path) if self.ranking else None
        if self.ranking:  # alpha0 Q^T Q and its eigenbasis, for every user's closed form
            self.scaled_gramian = float(self.ranking["alpha0"]) * self.gramian
            self._eig: tuple[np.ndarray, np.ndarray] | None = None
        self._movie_features = None  # (vocab, FM w and v, ranking feature rows): on first use
        self._seen_rows: tuple[np.ndarray, np.ndarray] | None = None  # seen.safetensors' index

    # -- users -----------------------------------------------------------------------------------

    def training_ratings(self, user_id: int) -> dict[int, float]:
        """{movie: rating} the run was trained on for this user ({} for someone new): their slice
        of seen.safetensors, whose user ids and row starts are read once."""
        from safetensors import safe_open

        path = str(self.path / "seen.safetensors")
        if self._seen_rows is None:
            with safe_open(path, framework="numpy") as f:
                self._seen_rows = (f.get_tensor("user_ids"), f.get_tensor("indptr"))
        users, indptr = self._seen_rows
        row = int(np.searchsorted(users, user_id))
        if row >= len(users) or users[row] != user_id:
            return {}
        start, end = int(indptr[row]), int(indptr[row + 1])
        with safe_open(path, framework="numpy") as f:
            ids = f.get_slice("movie_ids")[start:end]
            stars = f.get_slice("ratings")[start:end]
        return dict(zip(ids.tolist(), np.asarray(stars, np.float64).tolist(), strict=True))

    def user_vectors(
        self,
        user_id: int,
        ratings: dict[int, float],
        movies: MovieRows,
        weighted: bool = False,
    ) -> UserVectors:
        """The user's point from every rating they gave ({movie: rating}, training ratings
        included) and the live movies' stored vectors (`score`, `rank`).

        score = [p_u, 1] with (p_u, b_u) the rating model's fold-in (serving.fold_in, as
        Recommender.recalculate_user); rank = [r_u, 1], the ranking model's closed form
        (serving.ials_user) against the live [r_i, c_i] and the run's Gramian, or with
        `weighted` the rating-weighted mean of their r_i (serving.weighted_user: the new-user
        default of `query --rated`)."""
        ids = sorted(ratings)
        stars = np.array([ratings[i] for i in ids], np.float64)
        score = movies.rows("score", np.array(ids, np.int64))
        p_u, b_u = serving.fold_in(
            score[:, :-1],
            score[:, -1],
            serving.link_inverse(stars, self.link),
            w0=self.w0,
            weight_decay=self.weight_decay,
            prior=self.prior_reg,
        )
        one = np.float32(1.0)
        vectors = {"score": np.append(p_u, one)}
        if self.ranking:
            c = self.ranking
            rows = movies.rows("rank", np.array(ids, np.int64))
            weights = serving.implicit_weight(stars, c["confidence"], c["conf_alpha"])
            lam = serving.ranking_lambda(c["reg"], c["alpha0"], c["nu"], c["n_items"], len(ids))
            if weighted:
                r_u, _ = serving.weighted_user(rows[:, :-1], stars)
            else:
                r_u = serving.ials_user(rows, weights, self.scaled_gramian, lam, self.eig())
            vectors["rank"] = np.append(r_u, one)
        payload = {
            "user_id": int(user_id),
            "bias": float(b_u),
            "n_ratings": len(ids),
            "rated": ids,
            "run_id": self.run_id,
        }
        return UserVectors(int(user_id), vectors, payload)

    def eig(self) -> tuple[np.ndarray, np.ndarray]:
        """The Gramian's eigenbasis (serving.gramian_eig), computed on first use."""
        if self._eig is None:
            self._eig = serving.gramian_eig(self.scaled_gramian)
        return self._eig

    # -- movies ----------------------------------------------------------------------------------

    def movie_vectors(self, movie: dict) -> tuple[dict[str, np.ndarray], dict]:
        """A movie nobody rated ({movie_id, title, year, genres: list}) as both models serve one:
        from its genre and year embeddings alone (no movie-id feature), exactly as training
        builds the vectors of the movies of movies.csv without ratings."""
        from fmstore.datasets import Movies
        from fmstore.features import item_rows, ranking_item_features

        vocab, w, v, feature_rows = self._features()
        one = Movies(
            movie_id=np.array([movie["movie_id"]], np.int64),
            title=[movie["title"]],
            genres=[tuple(movie["genres"])],
            year=np.array([movie["year"] or 0], np.int32),
            imdb_id=[None],
            tmdb_id=[None],
        )
        rows = item_rows(vocab, one)
        first = _feature_span(vocab)[0]
        # its genres and year (a movie added live has no side columns: unknown there)
        keep = (rows.index[0] >= first) & (rows.weight[0] != 0)
        index, weight = rows.index[0][keep] - first, rows.weight[0][keep]
        q, b = serving.side_terms(v[index], w[index], weight)
        vectors = {"score": np.append(q, np.float32(b))}
        if not self.ranking:
            vectors["item"] = q  # Cosine, as publish serves a run without a ranking model
        else:
            c, k = self.ranking, int(self.ranking["factors"])
            rank = np.zeros(k + 1, np.float64)  # [r_i, c_i] = sum_f x_f e_f
            if feature_rows is not None:
                (_, cols, x), _ = ranking_item_features(vocab, one)
                rank += (x[:, None] * feature_rows[cols]).sum(0)
            lam = serving.ranking_lambda(c["reg"], c["alpha0"], c["nu"], c["n_items"])
            vectors["rank"] = rank.astype(np.float32)
            vectors["item"] = serving.whiten_rows(
                rank[None, :k], self.gramian[:k, :k], c["alpha0"], lam
            )[0]
        payload = {
            "movie_id": int(movie["movie_id"]),
            "title": movie["title"],
            "year": movie["year"],
            "genres": list(movie["genres"]),
            "bias": float(b),
            "n_ratings": 0,
            "mean_rating": None,
            "run_id": self.run_id,
        }
        return vectors, payload

    def movie_ids(self) -> np.ndarray:
        """Every movie id of the run (movies.csv at training), int64."""
        return runs.load_arrays(self.path / "serving.safetensors", ("movie_ids",))["movie_ids"]

    def genres(self) -> list[str]:
        """The genres the run's features know (a movie's other genres would add nothing)."""
        return list(self._features()[0].genres)

    def _features(self):
        if self._movie_features is None:
            from safetensors import safe_open

            from fmstore.features import Vocabulary

            arrays = runs.load_arrays(self.path / "serving.safetensors")
            vocab = Vocabulary.from_arrays(arrays, self.manifest["vocabulary"])
            first, end = _feature_span(vocab)  # the genre and year rows only, not every user's
            with safe_open(str(self.path / "model.safetensors"), framework="numpy") as f:
                w = f.get_slice("w")[first:end].astype(np.float64)
                v = f.get_slice("v")[first:end].astype(np.float64)
            feature_rows = None
            if self.ranking:
                ranking = runs.load_arrays(self.path / "ranking.safetensors")
                feature_rows = ranking["feature_vectors"].astype(np.float64)
                if len(feature_rows) == 0:
                    feature_rows = None
            self._movie_features = (vocab, w, v, feature_rows)
        return self._movie_features


def _feature_span(vocab) -> tuple[int, int]:
    """[first, end) of the genre, year and movie side rows in the FM's feature table (one
    block: features.item_feature_span)."""
    from fmstore.features import item_feature_span

    return item_feature_span(vocab)
