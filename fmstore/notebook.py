"""The notebook flow: fit, ask, publish, as short as implicit's.

    import fmstore
    model = fmstore.fit(ratings_df, epochs=10)     # validated, both models trained, a run saved
    model.recommend("alice", N=5)                  # straight from the run folder
    model.similar_items("Toy Story", N=5)          # ids or titles wherever a movie is
    live = fmstore.publish(model)                  # Qdrant + the catalog; the same answers live
    model = fmstore.load(".fmstore/runs/<run id>") # a saved run, later

`fit` is `pipeline.run` (the code `fmstore train` runs) on a DataFrame, a Dataset or a folder;
the run folder it saves is served before any publish by the same `Recommender` that serves a
publication, over a `vectors.MemoryStore` holding the very points publish writes and a catalog
read from the run folder. A `Model` speaks the person's ids: text ids (or any ids
datasets.from_frames maps to whole numbers) come in and go out as they were given, titles are
accepted wherever a movie is, and the signatures follow implicit's (`recommend(userid,
user_items=None, N=10, filter_already_liked_items=True, filter_items=None, recalculate_user=False)`,
`similar_items(itemid or a list of them, N=10)`); rankings are `(ids, scores)` best first.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from fmstore import runs
from fmstore.config import Settings, TrainConfig
from fmstore.errors import ConfigError, NotFoundError
from fmstore.recommend import Recommender
from fmstore.serving import display_title
from fmstore.vectors import MemoryStore


def _runs_dir(runs_dir: Path | str | None) -> Path:
    """The runs folder given, else `fmstore train`'s (FMSTORE_HOME/runs, ./.fmstore/runs)."""
    return Path(runs_dir) if runs_dir is not None else Settings.from_env().runs_dir


def fit(
    data: Any,
    movies: Any = None,
    *,
    runs_dir: Path | str | None = None,
    config: TrainConfig | None = None,
    tune: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    user_col: str = "userId",
    item_col: str = "movieId",
    rating_col: str | None = "rating",
    time_col: str = "timestamp",
    rating_scale: tuple[float, float] | None = None,
    weight_col: str | None = None,
    movie_features: Iterable[str] | str = (),
    users: Any = None,
    user_features: Iterable[str] | str = (),
    **settings: Any,
) -> Model:
    """Validate `data` (a ratings DataFrame, with `movies` optional, a datasets.Dataset or a
    MovieLens folder), train both models as `fmstore train` does (pipeline.run), save the run in
    `runs_dir` and return it served. `settings` are TrainConfig fields (epochs=10, factors=32)
    applied to `config`; `*_col` and `rating_scale` are datasets.from_frames's (rating_col=None:
    implicit-only data, clicks or plays with an optional `weight_col`: the ranking model alone).
    `movie_features` (columns of `movies`) and `user_features` (columns of a `users` DataFrame):
    side features as FM fields, e.g. ["country", "runtime:num", "tags:multi"] (datasets.side)."""
    from fmstore import datasets, pipeline

    config = config or TrainConfig()
    unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise ConfigError(f"fit: unknown setting(s) {', '.join(unknown)}; see TrainConfig")
    config = dataclasses.replace(config, **settings)
    if isinstance(data, datasets.Dataset):
        dataset = data
    elif isinstance(data, (str, Path)):
        side = dict(movie_features=movie_features, users=users, user_features=user_features)
        side = {name: value for name, value in side.items() if value}
        read_as = side | ({"movies": movies} if side and movies is not None else {})
        dataset = datasets.load_dataset(Path(data), read_as=read_as or None)
    else:
        columns = dict(user_col=user_col, item_col=item_col, rating_col=rating_col)
        dataset = datasets.from_frames(
            data,
            movies,
            time_col=time_col,
            rating_scale=rating_scale,
            weight_col=weight_col,
            movie_features=movie_features,
            users=users,
            user_features=user_features,
            **columns,
        )
    folder = _runs_dir(runs_dir)
    trained = pipeline.run(dataset, config, runs_dir=folder, tune=tune, progress=progress)
    return load(trained.run_dir)


def load(run: Path | str | None = None, runs_dir: Path | str | None = None) -> Model:
    """A saved run served from its folder: a path, or a run id in `runs_dir` (`fmstore
    train`'s by default; None or "latest": the newest)."""
    path = Path(run) if run not in (None, "latest") else None
    if path is None or not (path / runs.MANIFEST).is_file():
        latest = run in (None, "latest")
        path = runs.resolve_run(_runs_dir(runs_dir), None if latest else str(run))
    return Model(path, serve_run(path))


def serve_run(run_dir: Path) -> Recommender:
    """A Recommender over a run folder: its points (publish.points: exactly what publish writes)
    in a MemoryStore under the aliases `movies` and `users`, its catalog rows read from the
    folder."""
    from fmstore.publish import points as pts
    from fmstore.serving import physical_name

    manifest = runs.load_manifest(run_dir)
    serving = runs.load_serving(run_dir, manifest)
    vectors = pts.served_vectors(serving, runs.load_ranking(run_dir, manifest))
    rows = runs.load_movie_rows(run_dir)
    user_keys, movie_keys = runs.load_keys(run_dir)
    store = MemoryStore(f"run folder {run_dir}")
    run_id, k = manifest["run_id"], serving.factors
    for alias, spec, points in (
        ("movies", vectors.movies_spec(k), pts.movie_points(serving, vectors, rows, movie_keys)),
        ("users", vectors.users_spec(k), pts.user_points(serving, vectors, run_dir, user_keys)),
    ):
        name = physical_name(alias, run_id, "run")
        store.create_collection(name, spec)
        pts.write(store, name, points, 1 << 16, None, alias)
        store.switch_alias(alias, name)
    config = {"train": manifest["config"], "serving": manifest["serving"] | vectors.config}
    return Recommender(store, _RunCatalog(run_id, config, run_dir, rows))


class _RunCatalog:
    """The catalog reads a Recommender makes (catalog.readers.CatalogReader), from a run folder."""

    def __init__(self, run_id: str, config: dict, run_dir: Path, rows: list[dict]):
        self.run_id, self.config, self.run_dir, self.rows = run_id, config, run_dir, rows

    def run(self, run_id: str):
        return (self.config, str(Path(self.run_dir).resolve())) if run_id == self.run_id else None

    def movie_titles(self, run_id: str):
        return sorted((r["movie_id"], r["title"], r["year"]) for r in self.rows)

    def genres(self, run_id: str):
        return sorted({"|".join(r["genres"]) for r in self.rows})

    def close(self) -> None:
        return None


class Model:
    """A trained run, served (from its folder, or live after `publish`), in the person's ids.

    `recommender` is the underlying fmstore.recommend.Recommender (whole-number ids); `notes`
    says what the last call guessed (a title matched approximately). Movies are ids or titles;
    answers are the ids the data came with."""

    def __init__(self, run_dir: Path, recommender: Recommender, owned: tuple = ()):
        self.run_dir = Path(run_dir)
        self.recommender = recommender
        self.manifest = runs.load_manifest(self.run_dir, verify=False)
        self.run_id: str = self.manifest["run_id"]
        self.user_keys, self.movie_keys = runs.load_keys(self.run_dir)
        self._user_code = {k: i for i, k in enumerate(self.user_keys or [])}
        self._movie_code = {k: i for i, k in enumerate(self.movie_keys or [])}
        self._owned = owned  # (store, engine) a publish opened: closed by close()
        self.notes: list[str] = []

    @property
    def metrics(self) -> dict:
        """The run's measured figures: valid_rmse, valid_recall@10, valid_ndcg@10, ..."""
        return self.manifest.get("metrics", {})

    @property
    def rating_scale(self) -> tuple[float, float]:
        """(lowest, highest) rating of the data the run was trained on: predictions lie in it."""
        return self.recommender.rating_range

    # -- ids ---------------------------------------------------------------------------------------

    def _user(self, userid: Any) -> int:
        if self.user_keys is None:
            return userid
        key = userid.item() if isinstance(userid, np.generic) else userid
        if key not in self._user_code:
            raise NotFoundError(f"user {userid!r} is not in run {self.run_id}")
        return self._user_code[key]

    def _movie(self, item: Any) -> int:
        """A movie id (the person's) or a title -> the whole number the run uses."""
        key = item.item() if isinstance(item, np.generic) else item
        if self.movie_keys is not None and key in self._movie_code:
            return self._movie_code[key]
        if isinstance(key, str):
            match = self.recommender.match_title(key)
            if match.note() and match.note() not in self.notes:
                self.notes.append(match.note())
            return match.movie_id
        if self.movie_keys is not None:
            raise NotFoundError(f"movie {item!r} is not in run {self.run_id}")
        return key

    def _movies(self, items: Iterable[Any] | None) -> list[int]:
        return [self._movie(i) for i in (items if items is not None else ())]

    def _ratings(self, ratings: Mapping[Any, float]) -> dict[int, float]:
        if isinstance(ratings, (list, tuple, set)):  # movies picked, without ratings
            ratings = {item: self.rating_scale[1] for item in ratings}
        if not isinstance(ratings, Mapping):
            ratings = _sparse_row(ratings)
        out: dict[int, float] = {}
        for item, value in ratings.items():
            code = self._movie(item)
            if code in out:
                raise ConfigError(f"movie {item!r} is rated twice")
            out[code] = value
        return out

    def _keys(self, ids: np.ndarray) -> np.ndarray:
        """The run's whole numbers -> the person's movie ids (padding -1 -> None)."""
        if self.movie_keys is None:
            return ids
        return np.array(
            [self.movie_keys[i] if i >= 0 else None for i in ids.reshape(-1).tolist()],
            dtype=object,
        ).reshape(ids.shape)

    def _answer(self, ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.notes += [n for n in self.recommender.notes if n not in self.notes]
        return self._keys(ids), scores

    # -- rankings ------------------------------------------------------------------------------

    def recommend(
        self,
        userid: Any,
        user_items: Mapping[Any, float] | Any = None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: Iterable[Any] | None = None,
        recalculate_user: bool = False,
        filter: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top N movies for a user of the run (a list of users: 2-D arrays), or, with
        `user_items` ({movie: rating}, or a sparse row as implicit takes) and recalculate_user
        or a userid the run does not know, for those ratings (someone new)."""
        self.notes = []
        items = self._movies(filter_items)
        if user_items is not None and (recalculate_user or not self._knows(userid)):
            ratings = self._ratings(user_items)
            found = self.recommender.recommend_for_ratings(
                ratings, N, filter=filter, filter_items=items
            )
            return self._answer(*found)
        users = [self._user(u) for u in userid] if _is_many(userid) else self._user(userid)
        found = self.recommender.recommend(
            users, N, filter_already_liked_items, filter=filter, filter_items=items
        )
        return self._answer(*found)

    def _knows(self, userid: Any) -> bool:
        if _is_many(userid):
            return False
        try:
            self.recommender.user_vector(self._user(userid))
            return True
        except (NotFoundError, ConfigError):
            return False

    def recommend_for_ratings(
        self,
        ratings: Mapping[Any, float],
        N: int = 10,
        filter_items: Iterable[Any] | None = None,
        filter: Any = None,
        method: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top N movies for someone new from {movie id or title: rating}."""
        self.notes = []
        options = {"method": method} if method else {}
        found = self.recommender.recommend_for_ratings(
            self._ratings(ratings),
            N,
            filter=filter,
            filter_items=self._movies(filter_items),
            **options,
        )
        return self._answer(*found)

    def similar_items(
        self, itemid: Any, N: int = 10, filter_items: Iterable[Any] | None = None, filter=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Movies like this one (an id or a title; a list of them: 2-D arrays, one row each)."""
        self.notes = []
        items = self._movies(filter_items)
        if not _is_many(itemid):
            return self._answer(
                *self.recommender.similar_items(self._movie(itemid), N, filter, items)
            )
        rows = [self.recommender.similar_items(self._movie(i), N, filter, items) for i in itemid]
        ids = np.full((len(rows), N), -1, np.int64)
        scores = np.full(ids.shape, -np.inf, np.float32)
        for r, (got_ids, got_scores) in enumerate(rows):
            ids[r, : len(got_ids)], scores[r, : len(got_scores)] = got_ids, got_scores
        return self._answer(ids, scores)

    # -- ratings and reasons -------------------------------------------------------------------

    @property
    def implicit(self) -> bool:
        """Whether the run was trained on implicit-only data: no rating model, nothing to predict."""
        return self.manifest.get("config", {}).get("rating_model") is False

    def predict(self, userid: Any, items: Any) -> Any:
        """Predicted ratings on the data's scale: one movie -> a float, a list -> an array."""
        if self.implicit:
            raise ConfigError(
                f"run {self.run_id} was trained on implicit data (no ratings): it ranks movies "
                "(recommend, similar_items) but predicts no ratings"
            )
        one = not _is_many(items)
        ids = [self._movie(items)] if one else self._movies(items)
        out = self.recommender.predict(self._user(userid), ids)
        return float(out[0]) if one else out

    def explain(
        self, user: Any, items: Any, top: int = 3, method: str | None = None
    ) -> dict[Any, list[tuple[Any, float]]]:
        """Why each movie is recommended: {movie: [(a movie they liked, its share of the score),
        ...]}, for a user of the run or {movie: rating} of someone new (Recommender.explain)."""
        self.notes = []
        who = self._ratings(user) if isinstance(user, Mapping) else self._user(user)
        many = _is_many(items)
        ids = self._movies(items) if many else [self._movie(items)]
        found = self.recommender.explain(who, ids, method=method, top=top)
        key = (lambda i: self.movie_keys[i]) if self.movie_keys is not None else (lambda i: i)
        asked = list(items) if many else [items]
        return {a: [(key(r), c) for r, c in found[i]] for a, i in zip(asked, ids, strict=True)}

    def titles(self, items: Iterable[Any]) -> list[str]:
        """The titles of movies (ids as the answers give them), as every answer shows them:
        "The Matrix (1999)" for MovieLens's "Matrix, The (1999)" (serving.display_title)."""
        info = self.recommender.movie_info([self._movie(i) for i in items])
        return [display_title(info.get(self._movie(i), {}).get("title", str(i))) for i in items]

    # -- going live ----------------------------------------------------------------------------

    def publish(
        self, store=None, catalog=None, settings: Settings | None = None, force: bool = False
    ) -> Model:
        """Publish the run (publish.publish: Qdrant + the catalog, switched in one step) and
        return it served live. `store` (a VectorStore) and `catalog` (a URL or Engine) default to
        `settings`' (FMSTORE_* variables: the store and catalog `fmstore publish` uses)."""
        from fmstore import catalog as catalogs
        from fmstore import publish as publishing
        from fmstore.vectors import open_store

        settings = settings or Settings.from_env()
        if store is None or catalog is None:
            settings.home.mkdir(parents=True, exist_ok=True)
        opened = []
        if store is None:
            store = open_store(settings)
            opened.append(store)
        engine = catalog if catalog is not None and not isinstance(catalog, str) else None
        if engine is None:
            engine = catalogs.make_engine(catalog or settings.catalog_url)
            opened.append(engine)
        aliases = dict(
            movies_alias=settings.movies_collection, users_alias=settings.users_collection
        )
        publishing.publish(self.run_dir, store, engine, force=force, **aliases)
        return Model(self.run_dir, Recommender(store, engine, **aliases), tuple(opened))

    def close(self) -> None:
        """Close what publish opened (the store, the catalog engine)."""
        self.recommender.close()
        for thing in self._owned:
            getattr(thing, "close", None) and thing.close()
            getattr(thing, "dispose", None) and thing.dispose()

    def __repr__(self) -> str:
        where = self.recommender.store.where
        return f"Model(run {self.run_id}, served from {where})"


def _is_many(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) == 1


def _sparse_row(row: Any) -> dict[int, float]:
    """implicit's user_items (one row of a SciPy sparse matrix, columns = movie ids) as a dict."""
    if hasattr(row, "tocsr"):
        row = row.tocsr()
        if row.shape[0] != 1:
            raise ConfigError("user_items: give one user's row (or a dict {movie: rating})")
        return {int(i): float(v) for i, v in zip(row.indices, row.data, strict=True)}
    raise ConfigError("user_items: give a dict {movie id or title: rating} or one sparse row")
