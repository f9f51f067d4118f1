"""`Recommender`: queries against the live publication, with implicit's API.

It joins the three things a query needs: the vector store (rankings, stored vectors, payloads),
the catalog (the run's serving config, titles, genres; read through fmstore.catalog.readers) and
the serving math (fmstore.serving: fold-in, the link). It imports neither torch nor SQLAlchemy, so
`fmstore query` on SQLite + Qdrant Edge starts in a fraction of a second. Errors name this API's
arguments (`method 'mean'`, `use the movie id`); the CLI words them as its flags.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fmstore import runs, serving
from fmstore.catalog.readers import CatalogReader, open_reader
from fmstore.errors import ConfigError, DataError, NotFoundError, StoreError
from fmstore.recommend import checks
from fmstore.recommend.checks import DEFAULT_METHOD, USE_THEIR_RATINGS, check_method, check_rating
from fmstore.recommend.explain import (
    Contributions,
    Reasons,
    fold_in_contributions,
    ials_contributions,
    liked,
    top_reasons,
    weighted_contributions,
    whitened_contributions,
)
from fmstore.recommend.filters import as_id, as_ids, as_query_filter, is_one_id, with_excluded
from fmstore.recommend.titles import TitleIndex, TitleMatch
from fmstore.vectors import QueryFilter, VectorStore, longest_vector

# Retrieve at most this many points per call: keeps one request to a server small.
_RETRIEVE_BATCH = 2048
# similar_users ranks every user by cosine up to this many users; beyond it, the candidates are
# the top users by dot product with the unit query (see similar_users).
_EXACT_SIMILAR_USERS = 20_000


def _ranking(hits: list) -> tuple[np.ndarray, np.ndarray]:
    """Store hits -> (ids, scores), best first, as implicit returns them."""
    ids = np.array([h.id for h in hits], dtype=np.int64)
    return ids, np.array([h.score for h in hits], dtype=np.float32)


def _rows(vectors: Mapping[int, np.ndarray], ids: Sequence[int]) -> np.ndarray:
    return np.stack([vectors[i] for i in ids]).astype(np.float64)


def _is_reader(catalog: Any) -> bool:
    return all(hasattr(catalog, name) for name in ("run", "movie_titles", "genres", "close"))


class Recommender:
    """Queries against the live publication, mirroring implicit's API.

    `store` is any VectorStore (EdgeStore or ServerStore). `catalog` is a SQLAlchemy Engine or
    Session factory, or a catalog reader (fmstore.catalog.readers), all of them yours: close()
    leaves them open; or a catalog URL or SQLite path, which the Recommender opens and close()
    closes (SQLite is read with the standard library's sqlite3, read-only, which keeps
    `fmstore query` fast). The live run is read once, from the movies alias, and its physical
    collections are used from then on, so every answer of one Recommender comes from one run even
    if a publish switches the alias meanwhile (make a new one to follow it).

    Rankings are `(ids, scores)` NumPy pairs, best first (`recommend` of a list of users: 2-D
    arrays, one row per user). `filter` is a QueryFilter or a dict with its field names
    (`{"min_ratings": 50, "genres": ["comedy"]}`; genres in any case); `filter_items` are movie ids
    to leave out. Every error is an FmstoreError subclass with a one-line message.

    Sections, in order: the run; the catalog (titles, genres, filters); the store (vectors,
    payloads); users (stored and new); rankings; predicted ratings; factors (implicit's
    item_factors, user_factors, similar_users); explanations. The math is fmstore.serving's
    (scores, links, fold-ins) and fmstore.recommend.explain's (the terms of a score).
    """

    def __init__(
        self,
        store: VectorStore,
        catalog: Any,
        movies_alias: str = "movies",
        users_alias: str = "users",
    ):
        if not all(hasattr(store, name) for name in ("resolve_alias", "search", "retrieve")):
            raise ConfigError(
                f"store must be a VectorStore (EdgeStore or ServerStore), not {type(store).__name__}"
            )
        self.store = store
        collection = store.resolve_alias(movies_alias)
        if collection is None:
            raise NotFoundError(
                f"nothing is published as '{movies_alias}' yet: run `fmstore publish` first"
            )
        self.run_id = serving.run_id_of(collection)
        self.movies_collection = collection
        # the users written by the same publication: one alias read names both
        self.users_collection = serving.sibling_collection(collection, users_alias)
        borrowed = _is_reader(catalog)
        try:
            self._catalog: CatalogReader = catalog if borrowed else open_reader(catalog)
        except TypeError as exc:  # not an Engine, Session factory, URL or path
            raise ConfigError(str(exc)) from None
        self._owns_catalog = not borrowed
        try:
            config, artifact_path = self._read_run()
            self._read_serving(config.get("serving") or {})
        except BaseException:
            self.close()
            raise
        self.artifact_path = Path(artifact_path) if artifact_path else None
        self.notes: list[str] = []  # what the last call could not do, for the user to read
        self._titles: TitleIndex | None = None
        self._payloads: dict[int, dict] = {}
        self._users: dict[int, tuple[dict, dict]] = {}  # user id -> (vectors, payload)
        self._gramian: np.ndarray | None = None  # the ranking model's, for explanations
        self._writer: Any = (catalog, (movies_alias, users_alias))  # add_ratings' Updater

    def _read_run(self) -> tuple[dict, str | None]:
        found = self._catalog.run(self.run_id)
        if found is None:
            raise NotFoundError(
                f"run {self.run_id} is live in the vector store but not in the catalog; "
                "publish it again with this catalog (FMSTORE_DATABASE_URL)"
            )
        return found

    def _read_serving(self, serving: Mapping[str, Any]) -> None:
        """The run's serving config -> w0, link, rating_range, weight_decay, prior_reg, factors."""
        try:
            self.w0 = float(serving["w0"])
            self.link = str(serving.get("link", "identity"))
            self.rating_range = (
                float(serving["rating_range"][0]),
                float(serving["rating_range"][1]),
            )
            # Runs published so far call weight_decay "reg".
            self.weight_decay = float(serving.get("weight_decay", serving.get("reg")))
            self.prior_reg = float(serving.get("prior_reg", 0.0))
            self.factors = int(serving["factors"])
            self.ranking = serving.get("ranking")  # None: a run without a ranking model
            self.rank_factors = int(self.ranking["factors"]) if self.ranking else self.factors
            self.item_distance = serving.get("item_distance", "dot" if self.ranking else "cosine")
            self.item_norm_max = serving.get("item_norm_max")  # None: published before it was kept
        except (KeyError, TypeError, ValueError, IndexError):
            raise StoreError(
                f"run {self.run_id} in the catalog has no usable serving config; publish it again"
            ) from None

    @property
    def reg(self) -> float:
        """The run's weight_decay under its former name."""
        return self.weight_decay

    def close(self) -> None:
        """Close the catalog if this Recommender opened it (from a URL or path), and let the store
        release what reading opened (store.release()); a caller's Engine or reader stays open."""
        if self._owns_catalog:
            self._catalog.close()
        if hasattr(self._writer, "close"):
            self._writer.close()
        getattr(self.store, "release", lambda: None)()

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- catalog ---------------------------------------------------------------------------------

    def titles(self) -> TitleIndex:
        """The catalog's titles, indexed for resolving what a person typed (built once)."""
        if self._titles is None:
            self._titles = TitleIndex(
                self._catalog.movie_titles(self.run_id), popularity=self._n_ratings
            )
        return self._titles

    def resolve_title(self, text: str) -> int:
        """What a person typed -> one movie id (see TitleIndex); AmbiguousError / NotFoundError."""
        return self.match_title(text).movie_id

    def match_title(self, text: str) -> TitleMatch:
        """What a person typed -> TitleMatch: the movie id and whether it was exact or guessed
        (`.note()` is the line to show a person when it was guessed)."""
        if not isinstance(text, str):
            raise ConfigError(f"a title must be text, not {type(text).__name__}")
        return self.titles().match(text)

    def ratings_by_id(self, ratings: Mapping[Any, Any]) -> dict[int, float]:
        """{movie id or title: rating} -> {movie id: rating}, each rating checked against the
        scale. Titles are resolved with match_title; a guessed one adds its note to `notes`."""
        if not isinstance(ratings, Mapping):
            raise ConfigError("ratings must be a dict of {movie id or title: rating}")
        out: dict[int, float] = {}
        for key, value in ratings.items():
            if isinstance(key, str):
                match = self.match_title(key)
                movie_id, where = match.movie_id, f"{key!r}"
                if match.note() and match.note() not in self.notes:
                    self.notes.append(match.note())
            elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
                movie_id, where = int(key), f"movie id {key}"
            else:
                raise ConfigError(f"rating key {key!r}: use a movie id or a title")
            if movie_id in out:
                raise DataError(f"{where}: movie id {movie_id} is rated twice")
            out[movie_id] = check_rating(value, self.rating_range, where)
        return out

    def _n_ratings(self, movie_ids: list[int]) -> dict[int, int]:
        """Number of training ratings of movies, from their payloads (0 when unknown)."""
        info = self.movie_info(movie_ids)
        return {i: int(info.get(i, {}).get("n_ratings") or 0) for i in movie_ids}

    def genres(self) -> list[str]:
        """Every genre in the catalog, sorted."""
        return sorted({g for v in self._catalog.genres(self.run_id) if v for g in v.split("|")})

    def canonical_genres(self, names: Iterable[str]) -> tuple[str, ...]:
        """Genre names as typed (any case) -> the catalog's spelling; ConfigError for unknown
        ones."""
        names = [n.strip() for n in names if n and n.strip()]
        if not names:
            return ()
        known = {g.casefold(): g for g in self.genres()}
        out = []
        for name in names:
            if name.casefold() not in known:
                listed = ", ".join(sorted(known.values()))
                raise ConfigError(f"unknown genre {name!r}; known genres: {listed}")
            out.append(known[name.casefold()])
        return tuple(dict.fromkeys(out))

    def as_filter(
        self, filter: QueryFilter | Mapping[str, Any] | None, filter_items: Iterable[int] = ()
    ) -> QueryFilter | None:
        """A caller's `filter` (QueryFilter or dict) and `filter_items` as one QueryFilter, genres
        spelt as in the catalog (see fmstore.recommend.filters)."""
        return as_query_filter(filter, self.canonical_genres, filter_items)

    # -- store -----------------------------------------------------------------------------------

    def _search(
        self, collection: str, vector: np.ndarray, using: str, N: int, filter: QueryFilter | None
    ) -> list:
        N = checks.check_n(N)
        hits = self.store.search(collection, vector, using=using, limit=N, filter=filter)
        for h in hits:
            self._payloads[h.id] = h.payload
        return hits

    def movie_vectors(
        self, movie_ids: Sequence[int], vector: str = "score"
    ) -> dict[int, np.ndarray]:
        """Stored vectors of movies of the live run; NotFoundError names ids that are not there."""
        ids = list(as_ids(movie_ids))
        found = self.store.retrieve(self.movies_collection, ids, vectors=[vector])
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise NotFoundError(f"movie id(s) {shown} not in the published run {self.run_id}")
        for movie_id, (_, payload) in found.items():
            self._payloads[movie_id] = payload
        return {i: found[i][0][vector] for i in ids}

    def movie_info(self, movie_ids: Iterable[int]) -> dict[int, dict]:
        """Payloads (title, year, genres, n_ratings, ...) of movies, from the last searches or the
        store."""
        ids = [int(i) for i in movie_ids]
        missing = [i for i in ids if i not in self._payloads]
        if missing:
            found = self.store.retrieve(self.movies_collection, missing)
            for movie_id, (_, payload) in found.items():
                self._payloads[movie_id] = payload
        return {i: self._payloads[i] for i in ids if i in self._payloads}

    # -- users -----------------------------------------------------------------------------------

    def item_terms(self, movie_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(q_i [n, k], b_i [n]) of movies, float64: the rating model's item vectors and biases
        (a run published with the former popularity prior has it taken off)."""
        ids = list(as_ids(movie_ids))
        if not ids:
            return np.zeros((0, self.factors)), np.zeros(0)
        score = np.stack(list(self.movie_vectors(ids, "score").values())).astype(np.float64)
        boost = np.array([self._payloads[i].get("popularity_boost", 0.0) for i in ids])
        return score[:, :-1], score[:, -1] - boost

    def _user(self, user_id: int) -> tuple[dict, dict]:
        """A known user's stored vectors and payload."""
        user_id = as_id(user_id)
        if user_id not in self._users:
            names = ["score", "rank"] if self.ranking else ["score"]
            found = self.store.retrieve(self.users_collection, [user_id], vectors=names)
            if user_id not in found:
                raise NotFoundError(
                    f"user {user_id} is not in the published run {self.run_id} (only users with "
                    f"training ratings are); for someone new {USE_THEIR_RATINGS}"
                )
            self._users[user_id] = found[user_id]
        return self._users[user_id]

    def user_vector(self, user_id: int) -> tuple[np.ndarray, float]:
        """A known user's published (p_u, b_u) of the rating model."""
        vectors, payload = self._user(user_id)
        return vectors["score"][:-1].copy(), float(payload.get("bias", 0.0))

    def user_rank_vector(self, user_id: int) -> np.ndarray:
        """A known user's ranking query: [r_u, 1] on `rank` ([p_u, 1] on `score` without one)."""
        vectors, _ = self._user(user_id)
        return vectors["rank" if self.ranking else "score"].copy()

    def seen_items(self, user_id: int) -> np.ndarray | None:
        """Every movie the user rated in the data the published model was trained on (the users
        payload `rated`; for runs published before it, the run folder, with a note if absent)."""
        _, payload = self._user(user_id)
        if "rated" in payload:
            return np.asarray(payload["rated"], dtype=np.int64)
        if not runs.has_seen(self.artifact_path):
            self.notes.append(
                f"the run folder {self.artifact_path} is not on this machine: movies user "
                f"{user_id} already rated are not excluded"
            )
            return None
        movie_ids, _ = runs.seen_movies(self.artifact_path, int(user_id))
        return np.asarray(movie_ids, dtype=np.int64)

    def _checked(self, ratings: Mapping[int, float]) -> tuple[list[int], np.ndarray]:
        if not ratings:
            raise ConfigError("no ratings given: rate at least one movie")
        by_id = self.ratings_by_id(ratings)
        return list(by_id), np.array(list(by_id.values()))

    def recalculate_user(
        self, ratings: Mapping[int | str, float], method: str = "fold-in"
    ) -> tuple[np.ndarray, float]:
        """(p_u, b_u) of the rating model for someone new from {movie id or title: rating},
        against the published [q_i, b_i]: what their predicted ratings come from.

        fold-in: ridge regression with the run's w0 and regularisation (serving.fold_in);
        weighted: the notebook's rating-weighted mean of q_i (serving.weighted_user, b_u = 0)."""
        check_method(method)
        ids, values = self._checked(ratings)
        q, b = self.item_terms(ids)
        if method == "weighted":
            return serving.weighted_user(q, values)
        raw = serving.link_inverse(values, self.link)
        return serving.fold_in(
            q, b, raw, w0=self.w0, weight_decay=self.weight_decay, prior=self.prior_reg
        )

    def ranking_query(
        self, ratings: Mapping[int, float], method: str = DEFAULT_METHOD
    ) -> tuple[np.ndarray, str]:
        """Someone new's ranking query from {movie_id: rating}: (vector, named vector to search).

        weighted: the rating-weighted mean of their movies' r_i, as [r, 1] on `rank`;
        fold-in: the ranking model's user step (serving.whitened_fold_in) on the whitened `item`
        vectors. A run without a ranking model: the rating model's (p_u) as [p_u, 1] on `score`.
        The default method and why: fmstore.recommend.checks."""
        check_method(method)
        ids, values = self._checked(ratings)
        if not self.ranking:
            p_u, _ = self.recalculate_user(ratings, method)
            return np.append(p_u, np.float32(1.0)), "score"
        if method == "weighted":
            rank = _rows(self.movie_vectors(ids, "rank"), ids)
            p, _ = serving.weighted_user(rank[:, :-1], values)
            return np.append(p, np.float32(1.0)), "rank"
        whitened = _rows(self.movie_vectors(ids, "item"), ids)
        return serving.whitened_fold_in(whitened, self._confidences(values)), "item"

    def _confidences(self, stars: np.ndarray) -> np.ndarray:
        c = self.ranking
        return serving.implicit_weight(
            stars, c["confidence"], c["conf_alpha"], c.get("liked_at", 4.0)
        )

    # -- rankings --------------------------------------------------------------------------------

    def similar_items(
        self,
        movie_id: int,
        N: int = 10,
        filter: QueryFilter | Mapping[str, Any] | None = None,
        filter_items: Iterable[int] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Movies nearest to this movie's `item` vector, the movie itself excluded, with their
        similarity in [-1, 1] in the store's order (serving.similarity). With a ranking model,
        `item` is the whitened ranking vector (Dot): the top list of someone who named only it."""
        movie_id = as_id(movie_id, "movie id")
        item = self.movie_vectors([movie_id], "item")[movie_id]
        excluded = with_excluded(self.as_filter(filter, filter_items), [movie_id])
        ids, scores = _ranking(self._search(self.movies_collection, item, "item", N, excluded))
        if self.item_norm_max is None and self.item_distance != "cosine":  # published before
            ids_all = self.item_ids.tolist()  # the serving config kept it: read once
            self.item_norm_max = longest_vector(self.store, self.movies_collection, ids_all, "item")
        longest = self.item_norm_max or 0.0
        return ids, serving.similarity(scores, np.linalg.norm(item), longest, self.item_distance)

    def recommend(
        self,
        user_id: int | Sequence[int],
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter: QueryFilter | Mapping[str, Any] | None = None,
        filter_items: Iterable[int] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top movies for a known user by the ranking model (<r_u, r_i> + c_i on `rank`), every
        movie they rated excluded unless filter_already_liked_items is False.

        One user id: `(ids, scores)`, 1-D. A sequence of user ids (as implicit): 2-D arrays, one
        row per user in the given order, padded with id -1 and score -inf where fewer than N
        movies pass the filter; `notes` then gathers every user's notes."""
        if not is_one_id(user_id):
            return self._recommend_many(
                user_id, N, filter_already_liked_items, filter, filter_items
            )
        self.notes = []
        filter = self.as_filter(filter, filter_items)
        query = self.user_rank_vector(user_id)
        if filter_already_liked_items:
            seen = self.seen_items(user_id)
            if seen is not None and len(seen):
                filter = with_excluded(filter, seen)
        using = "rank" if self.ranking else "score"
        return _ranking(self._search(self.movies_collection, query, using, N, filter))

    def recommend_for_ratings(
        self,
        ratings: Mapping[int | str, float],
        N: int = 10,
        method: str = DEFAULT_METHOD,
        filter: QueryFilter | Mapping[str, Any] | None = None,
        filter_items: Iterable[int] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top movies for someone new (`ranking_query`), the movies they rated excluded.
        `ratings` maps movie ids or titles (resolved as match_title does; a guess adds a note to
        `notes`) to ratings."""
        self.notes = []
        by_id = self.ratings_by_id(ratings)
        query, using = self.ranking_query(by_id, method)
        excluded = with_excluded(self.as_filter(filter, filter_items), by_id)
        return _ranking(self._search(self.movies_collection, query, using, N, excluded))

    def rank_for_vector(
        self, p_u: np.ndarray, N: int = 10, filter: QueryFilter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top movies of the rating model for any user vector: [p_u, 1] on `score`, i.e. by
        b_i + <p_u, q_i>."""
        p_u = np.asarray(p_u, dtype=np.float32).reshape(-1)
        if p_u.shape[0] != self.factors:
            raise ConfigError(
                f"user vector has {p_u.shape[0]} dimensions; run {self.run_id} has {self.factors}"
            )
        query = np.append(p_u, np.float32(1.0))
        return _ranking(self._search(self.movies_collection, query, "score", N, filter))

    def _recommend_many(
        self,
        user_ids: Sequence[int],
        N: int,
        filter_already_liked_items: bool,
        filter: Any,
        filter_items: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """recommend() of each user, as 2-D arrays padded with id -1 and score -inf."""
        users = as_ids(user_ids, "user id")
        ids = np.full((len(users), int(N) if is_one_id(N) else 0), -1, np.int64)
        scores = np.full(ids.shape, -np.inf, np.float32)
        notes: list[str] = []
        for row, user in enumerate(users):
            got_ids, got_scores = self.recommend(
                user, N, filter_already_liked_items, filter, filter_items
            )
            ids[row, : len(got_ids)], scores[row, : len(got_scores)] = got_ids, got_scores
            notes += [n for n in self.notes if n not in notes]
        self.notes = notes
        return ids, scores

    # -- predicted ratings (the rating model, whatever ranked the movies) ----------------------

    def predict(self, user_id: int, movie_ids: int | Sequence[int]) -> Any:
        """Predicted ratings of a known user for movies: link(w0 + b_u + b_i + <p_u, q_i>),
        clamped to the rating scale. One movie id: a float; a sequence: an array in that order."""
        p_u, b_u = self.user_vector(user_id)
        one = is_one_id(movie_ids)
        ids = [as_id(movie_ids, "movie id")] if one else as_ids(movie_ids)
        ratings = self.predicted_ratings(p_u, b_u, ids)
        return float(ratings[0]) if one else ratings

    def rating_scores(self, p_u: np.ndarray, movie_ids: Sequence[int]) -> np.ndarray:
        """The rating model's b_i + <p_u, q_i> of movies (the `score` dot product), float64."""
        q, b = self.item_terms(movie_ids)
        return serving.score(b, q, p_u)

    def predicted_ratings(
        self, p_u: np.ndarray, b_u: float, movie_ids: Sequence[int]
    ) -> np.ndarray:
        """The rating model's predictions w0 + b_u + b_i + <p_u, q_i> (linked, clamped) for
        movies of the live run, whatever ranked them."""
        scores = self.rating_scores(p_u, movie_ids)
        return np.asarray(self.predict_rating(b_u, scores), dtype=np.float64).reshape(-1)

    def predict_rating(
        self, b_u: float, score: float | np.ndarray, clamp: bool = True
    ) -> float | np.ndarray:
        """A `score` dot product (b_i + <p_u, q_i>) -> rating: w0 + b_u + score, through the run's
        link, clamped to the rating scale (unless `clamp` is False: to show a prediction above
        the scale)."""
        y = serving.score(score, w0=self.w0, b_u=float(b_u))
        out = serving.predict(y, self.link, self.rating_range if clamp else None)
        return float(out) if np.ndim(out) == 0 else out

    def add_ratings(
        self, user_id: Any, ratings: Mapping | None = None, source="api", method=DEFAULT_METHOD
    ):
        """Record ratings and serve them at once (fmstore.updates.Updater.add_ratings): one
        user's {movie id or title: rating}, or {user id: {...}} for many with `ratings` left
        out. A new user id is created, with recommend_for_ratings' `method`. Returns
        updates.Applied."""
        batch = {user_id: ratings} if ratings is not None else user_id
        if not isinstance(batch, Mapping):
            raise ConfigError("give add_ratings(user_id, {movie: rating}) or {user id: {...}}")
        by_id = {as_id(u, "user id"): self.ratings_by_id(r) for u, r in batch.items()}
        if isinstance(self._writer, tuple):  # the first call: the catalog opened for writing
            from fmstore.updates import Updater

            self._writer = Updater.for_catalog(self.store, *self._writer)
        self._users.clear()
        return self._writer.add_ratings(by_id, source=source, method=method)

    # -- factors (implicit's item_factors, user_factors, similar_users) -------------------------

    @property
    def item_ids(self) -> np.ndarray:
        """Movie ids of the live publication, ascending: the row order of item_factors and
        item_biases."""
        return np.array(sorted(m for m, _, _ in self.titles().movies), dtype=np.int64)

    @property
    def item_factors(self) -> np.ndarray:
        """q_i of every movie, float32 [n_movies, k], rows in item_ids order (ascending movie
        id). Read from the store on each access: keep the array rather than asking twice."""
        return self._item_arrays()[0].astype(np.float32)

    @property
    def item_biases(self) -> np.ndarray:
        """b_i of every movie (the FM's, without the ranking prior), float64, in item_ids order."""
        return self._item_arrays()[1]

    def _item_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        ids = self.item_ids.tolist()
        batches = range(0, len(ids), _RETRIEVE_BATCH)
        parts = [self.item_terms(ids[s : s + _RETRIEVE_BATCH]) for s in batches]
        if not parts:
            return np.zeros((0, self.factors)), np.zeros(0)
        return np.concatenate([q for q, _ in parts]), np.concatenate([b for _, b in parts])

    @property
    def user_ids(self) -> np.ndarray:
        """Published user ids (users with training ratings), ascending: the row order of
        user_factors. Read from the run folder; NotFoundError when it is not on this machine."""
        if not runs.has_seen(self.artifact_path):
            raise NotFoundError(
                f"the run folder {self.artifact_path} is not on this machine: the list of users "
                "is read from it; ask for users by id (user_vector) instead"
            )
        return runs.seen_user_ids(self.artifact_path)

    @property
    def user_factors(self) -> np.ndarray:
        """p_u of every published user, float32 [n_users, k], rows in user_ids order."""
        return self._user_rows(self.user_ids.tolist()).astype(np.float32)

    def _user_rows(self, user_ids: list[int]) -> np.ndarray:
        """p_u of published users, float64 [n, k] (zeros for users not in the store)."""
        rows = np.zeros((len(user_ids), self.factors))
        for start in range(0, len(user_ids), _RETRIEVE_BATCH):
            chunk = user_ids[start : start + _RETRIEVE_BATCH]
            found = self.store.retrieve(self.users_collection, chunk, vectors=["score"])
            for offset, user in enumerate(chunk):
                if user in found:
                    rows[start + offset] = found[user][0]["score"][:-1]
        return rows

    def similar_users(self, user_id: int, N: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Users whose taste vector p_u points the same way as this user's: (ids, cosines), best
        first, the user excluded. Exact up to 20,000 published users; beyond that the candidates
        are the 50 N (at least 5,000) users with the largest dot product with the unit query,
        ranked by cosine (the store holds [p_u, 1] for dot products only)."""
        p_u, _ = self.user_vector(user_id)
        N = checks.check_n(N)
        norm = float(np.linalg.norm(p_u))
        if norm == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        total = self.store.count(self.users_collection)
        pool = total if total <= _EXACT_SIMILAR_USERS else max(50 * N, 5000)
        query = np.append(p_u / norm, np.float32(0.0))
        hits = self.store.search(self.users_collection, query, using="score", limit=pool)
        ids = [h.id for h in hits if h.id != as_id(user_id)]
        vectors = self._user_rows(ids)
        norms = np.linalg.norm(vectors, axis=1)
        cosine = vectors @ (p_u / norm) / np.where(norms > 0, norms, 1.0)
        order = np.argsort(-cosine, kind="stable")[:N]
        return np.array(ids, np.int64)[order], cosine[order].astype(np.float32)

    # -- explanations ("because you liked X": fmstore.recommend.explain) -----------------------

    def explain(
        self,
        user: int | Mapping[int | str, float],
        movie_ids: Sequence[int],
        method: str | None = None,
        top: int = 3,
    ) -> dict[int, Reasons]:
        """Why each movie is recommended: up to `top` (rated movie id, term) pairs of the movies
        the user liked, largest first; the terms are shares of the score that ranked the movie
        (see `contributions`). `user` is a known user id (their ratings are read from the run
        folder; no reasons and a note without it) or {movie: rating} of someone new, with the
        `method` their list was made with (recommend_for_ratings's default when None)."""
        found = self.contributions(user, movie_ids, method)
        if not found.rated_ids:
            return {i: [] for i in found.movie_ids}
        reasons = top_reasons(found.terms, liked(found.stars, self.rating_range), top)
        return {
            i: [(found.rated_ids[j], c) for j, c in r]
            for i, r in zip(found.movie_ids, reasons, strict=True)
        }

    def contributions(
        self,
        user: int | Mapping[int | str, float],
        movie_ids: Sequence[int],
        method: str | None = None,
    ) -> Contributions:
        """Every rated movie's exact term in the served score of each movie (the ranking model's,
        or the rating model's for a run without one), for a known user or someone new as in
        `explain`: `.scores` equals what recommend / recommend_for_ratings return for them."""
        if isinstance(user, Mapping):
            ratings, method = self.ratings_by_id(user), check_method(method or DEFAULT_METHOD)
        else:
            ratings, method = self._training_ratings(user), None
        ids, rated = as_ids(movie_ids), list(ratings)
        stars = np.array(list(ratings.values()), np.float64)
        if not ratings or not ids:
            return Contributions.none(ids, stars)
        if not self.ranking:
            return self._rating_contributions(ids, rated, stars, method or "fold-in")
        if method is None:
            return self._known_user_contributions(ids, rated, stars)
        if method == "fold-in":
            u = self.movie_vectors(ids + rated, "item")
            weights = self._confidences(stars)
            terms = whitened_contributions(_rows(u, ids), _rows(u, rated), weights)
            return Contributions(ids, rated, stars, terms, np.zeros(len(ids)), "item")
        rows = self.movie_vectors(ids + rated, "rank")
        asked, rated_rows = _rows(rows, ids), _rows(rows, rated)
        terms = weighted_contributions(asked[:, :-1], rated_rows[:, :-1], stars)
        return Contributions(ids, rated, stars, terms, asked[:, -1].copy(), "rank")

    def _known_user_contributions(
        self, ids: list[int], rated: list[int], stars: np.ndarray
    ) -> Contributions:
        """A known user of the ranking model: the closed form of their stored r_u."""
        rows = self.movie_vectors(ids + rated, "rank")
        c = self.ranking
        lam = serving.ranking_lambda(c["reg"], c["alpha0"], c["nu"], c["n_items"], len(rated))
        if self._gramian is None:  # read once per Recommender
            self._gramian = runs.ranking_gramian(self.artifact_path)
        terms, baseline = ials_contributions(
            _rows(rows, ids),
            _rows(rows, rated),
            self._confidences(stars),
            c["alpha0"] * self._gramian,
            lam,
        )
        return Contributions(ids, rated, stars, terms, baseline, "rank")

    def _rating_contributions(
        self, ids: list[int], rated: list[int], stars: np.ndarray, method: str
    ) -> Contributions:
        """A run without a ranking model: the rating model's b_i + <p_u, q_i>."""
        scores = self.movie_vectors(ids + rated, "score")
        asked, q_rated = _rows(scores, ids), _rows(scores, rated)
        if method == "weighted":
            terms = weighted_contributions(asked[:, :-1], q_rated[:, :-1], stars)
        else:
            _, b = self.item_terms(rated)
            raw = serving.link_inverse(stars, self.link)
            terms = fold_in_contributions(
                asked[:, :-1],
                q_rated[:, :-1],
                b,
                raw,
                w0=self.w0,
                weight_decay=self.weight_decay,
                prior=self.prior_reg,
            )
        return Contributions(ids, rated, stars, terms, asked[:, -1].copy(), "score")

    def _training_ratings(self, user_id: int) -> dict[int, float]:
        """A known user's ratings that the published model was trained on, from the run folder;
        {} (and a note) without it."""
        self.user_vector(user_id)  # NotFoundError for a user who is not published
        if not runs.has_seen(self.artifact_path):
            self.notes.append(
                f"the run folder {self.artifact_path} is not on this machine: the reasons for "
                f"user {user_id}'s recommendations are read from it, so none are given"
            )
            return {}
        ids, stars = runs.seen_movies(self.artifact_path, as_id(user_id))
        return dict(zip(ids.tolist(), stars.astype(np.float64).tolist(), strict=True))

    def __repr__(self) -> str:
        return f"Recommender(run {self.run_id}, {self.store!r})"
