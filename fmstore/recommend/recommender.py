"""`Recommender`: queries against the live publication, with implicit's API.

It joins the three things a query needs: the vector store (rankings, stored vectors, payloads),
the catalog (the run's serving config, titles, genres; read through fmstore.catalog.readers) and
the serving math (fmstore.serving: fold-in, the link). It imports neither torch nor SQLAlchemy, so
`fmstore query` on SQLite + Qdrant Edge starts in a fraction of a second. Errors name this API's
arguments (`method 'mean'`, `use the movie id`); the CLI words them as its flags.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from fmstore.catalog.readers import CatalogReader, open_reader
from fmstore.errors import ConfigError, DataError, NotFoundError, StoreError
from fmstore.recommend.explain import ExplainMixin
from fmstore.recommend.factors import FactorsMixin
from fmstore.recommend.filters import as_id, as_ids, as_query_filter, is_one_id
from fmstore.recommend.ranking import DEFAULT_METHOD, RankingMixin
from fmstore.recommend.titles import TitleIndex, TitleMatch
from fmstore.serving import (
    fold_in,
    link_inverse,
    predict,
    run_id_of,
    sibling_collection,
    weighted_user,
)
from fmstore.vectors import QueryFilter, VectorStore

METHODS = ("weighted", "fold-in")  # DEFAULT_METHOD first: see fmstore.recommend.ranking
# How user_vector's error for an unknown user ends; the CLI words it as its flags.
USE_THEIR_RATINGS = "use their ratings (recommend_for_ratings)"


def check_method(method: str) -> str:
    """`method` if it is one of METHODS; ConfigError naming the argument otherwise."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: use one of {', '.join(METHODS)}")
    return method


def check_rating(value: Any, rating_range: Sequence[float], where: str) -> float:
    """`value` as a float if it is a number on the rating scale; DataError naming `where` it came
    from otherwise."""
    lo, hi = float(rating_range[0]), float(rating_range[1])
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: rating {value!r} is not a number") from None
    if value != value:  # NaN
        raise DataError(f"{where}: rating {value!r} is not a number")
    if not lo <= value <= hi:
        raise DataError(f"{where}: rating {value:g} is outside the rating scale {lo:g}-{hi:g}")
    return value


def with_excluded(filter: QueryFilter | None, ids: Iterable[int]) -> QueryFilter:
    """`filter` plus must_not has_id(ids)."""
    base = filter or QueryFilter()
    extra = tuple(int(i) for i in ids)
    return dataclasses.replace(base, exclude_ids=tuple(dict.fromkeys(base.exclude_ids + extra)))


def _ranking(hits: list) -> tuple[np.ndarray, np.ndarray]:
    """Store hits -> (ids, scores), best first, as implicit returns them."""
    ids = np.array([h.id for h in hits], dtype=np.int64)
    return ids, np.array([h.score for h in hits], dtype=np.float32)


def _is_reader(catalog: Any) -> bool:
    return all(hasattr(catalog, name) for name in ("run", "movie_titles", "genres", "close"))


class Recommender(FactorsMixin, RankingMixin, ExplainMixin):
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
        self.run_id = run_id_of(collection)
        self.movies_collection = collection
        # the users written by the same publication: one alias read names both
        self.users_collection = sibling_collection(collection, users_alias)
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
        except (KeyError, TypeError, ValueError, IndexError):
            raise StoreError(
                f"run {self.run_id} in the catalog has no usable serving config; publish it again"
            ) from None

    @property
    def reg(self) -> float:
        """The run's weight_decay under its former name."""
        return self.weight_decay

    def close(self) -> None:
        """Close the catalog if this Recommender opened it (from a URL or path); the store and a
        caller's Engine or reader stay open."""
        if self._owns_catalog:
            self._catalog.close()

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
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise ConfigError(f"N must be a whole number of at least 1, not {N!r}")
        hits = self.store.search(collection, vector, using=using, limit=int(N), filter=filter)
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
        from fmstore import artifact

        folder = self.artifact_path
        if folder is None or not (folder / "seen.safetensors").is_file():
            self.notes.append(
                f"the run folder {folder} is not on this machine: movies user {user_id} "
                "already rated are not excluded"
            )
            return None
        return np.asarray(artifact.seen_movies(folder, int(user_id))[0], dtype=np.int64)

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
            return weighted_user(q, values)
        raw = link_inverse(values, self.link)
        return fold_in(q, b, raw, w0=self.w0, weight_decay=self.weight_decay, prior=self.prior_reg)

    # -- rankings --------------------------------------------------------------------------------

    def similar_items(
        self,
        movie_id: int,
        N: int = 10,
        filter: QueryFilter | Mapping[str, Any] | None = None,
        filter_items: Iterable[int] = (),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Movies nearest to this movie's `item` vector, with their scores; the movie itself
        excluded. With a ranking model, `item` is the whitened ranking vector (Dot): the top list
        of someone who named only this movie."""
        movie_id = as_id(movie_id, "movie id")
        item = self.movie_vectors([movie_id], "item")[movie_id]
        excluded = with_excluded(self.as_filter(filter, filter_items), [movie_id])
        return _ranking(self._search(self.movies_collection, item, "item", N, excluded))

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

    def predict_rating(self, b_u: float, score: float | np.ndarray) -> float | np.ndarray:
        """A `score` dot product (b_i + <p_u, q_i>) -> rating: w0 + b_u + score, through the run's
        link, clamped."""
        y = self.w0 + float(b_u) + np.asarray(score, np.float64)
        out = predict(y, self.link, self.rating_range)
        return float(out) if np.ndim(out) == 0 else out

    def __repr__(self) -> str:
        return f"Recommender(run {self.run_id}, {self.store!r})"
