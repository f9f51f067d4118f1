"""`Updater`: ratings and movies recorded in the catalog, then written into the live publication.

Every update goes the same way, under the store's write lock (the one publish takes):
  1. check it against the live run (movies exist, ratings on the scale) before writing anything;
  2. append it to the catalog (recorded_ratings, added_movies) and commit: the record is the
     truth, what is served follows from it;
  3. apply every recorded update the live collections do not hold yet (applied_updates says how
     far each collection is): new movies' points first, then each touched user's point computed
     from all their ratings (training ratings from the run folder, recorded ones on top);
  4. move the collection's mark, in the catalog, only after its points are written.
A crash between 2 and 4 leaves the mark behind, so the next update, `fmstore publish`,
`fmstore publish --rollback` or `sync()` applies what is missing: step 3 is `sync`, and applying
an update twice writes the same point. A new publication starts unmarked: its first sync applies
the recorded updates its run was not trained on (publish says how many).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fmstore import catalog
from fmstore.catalog import updates as log
from fmstore.errors import ConfigError, DataError, NotFoundError
from fmstore.publish.checks import checkpoint
from fmstore.recommend.checks import DEFAULT_METHOD, check_method
from fmstore.serving import run_id_of, sibling_collection, split_year
from fmstore.threads import one_blas_thread
from fmstore.updates.run import LiveRun, MovieRows
from fmstore.vectors import VectorStore

# Points per upsert and users per retrieve of their movies' vectors.
_BATCH = 1024


@dataclass
class Applied:
    """What one call changed: rows appended to the catalog, points written, and the recorded
    updates the live run was not trained on that this call applied (after a publish)."""

    run_id: str
    recorded: int = 0  # rows appended to the catalog
    users: list[int] = field(default_factory=list)  # users whose points were written
    movies: list[int] = field(default_factory=list)  # added movies whose points were written
    not_in_run: int = 0  # recorded ratings and movies the run lacked, applied by this sync
    notes: list[str] = field(default_factory=list)


class Updater:
    """Live updates of one store and catalog (both the caller's: nothing here closes them).

        updater = Updater(store, engine)
        updater.add_ratings({42: {318: 5.0, 1: 4.0}}, source="api")
        updater.add_movies([{"movie_id": 300000, "title": "New (2026)", "year": 2026,
                             "genres": ["Drama"]}])

    The live run's arrays are read once and kept while it stays live."""

    def __init__(
        self,
        store: VectorStore,
        engine: Engine,
        *,
        movies_alias: str = "movies",
        users_alias: str = "users",
        method: str = DEFAULT_METHOD,
    ):
        self.store, self.engine = store, engine
        self.method = check_method(method)  # someone new to the live run: weighted | fold-in
        self.movies_alias, self.users_alias = movies_alias, users_alias
        self._run: LiveRun | None = None
        self._schema_checked = False
        self._owned: Engine | None = None  # an Engine made by for_catalog: disposed by close()

    @classmethod
    def for_catalog(cls, store: VectorStore, source, aliases: tuple[str, str]) -> Updater:
        """An Updater on a catalog given as an Engine (the caller's), a URL or a SQLite path
        (opened here, disposed by close()): how a Recommender writes its users' ratings."""
        if isinstance(source, Engine):
            return cls(store, source, movies_alias=aliases[0], users_alias=aliases[1])
        if isinstance(source, Path):
            source = f"sqlite:///{source}"
        if not isinstance(source, str):
            raise ConfigError(
                "adding ratings writes the catalog: give the Recommender a catalog URL, a SQLite "
                "path or an Engine, not a reader or Session factory"
            )
        engine = catalog.make_engine(source)
        updater = cls(store, engine, movies_alias=aliases[0], users_alias=aliases[1])
        updater._owned = engine
        return updater

    def close(self) -> None:
        """Dispose of the Engine for_catalog opened; the store and a caller's Engine stay open."""
        if self._owned is not None:
            self._owned.dispose()
            self._owned = None

    # -- the live publication --------------------------------------------------------------------

    def _collections(self) -> tuple[str, str]:
        """Take the store, then read what is live now (a publish may have switched it)."""
        self.store.lock()
        if not self._schema_checked:
            catalog.ensure_schema(self.engine)
            self._schema_checked = True
        movies = self.store.resolve_alias(self.movies_alias)
        if movies is None:
            raise NotFoundError(
                f"nothing is published as '{self.movies_alias}' yet: run `fmstore publish` first"
            )
        return movies, sibling_collection(movies, self.users_alias)

    def _live(self) -> tuple[str, str, LiveRun]:
        """The live collections and their run's arrays (read once while it stays live)."""
        movies, users = self._collections()
        run_id = run_id_of(movies)
        if self._run is None or self._run.run_id != run_id:
            with Session(self.engine) as session:
                run = catalog.get_run(session, run_id)
                if run is None:
                    raise NotFoundError(
                        f"run {run_id} is live in the vector store but not in the catalog; "
                        "publish it again with this catalog"
                    )
                self._run = LiveRun(run_id, run.config, run.artifact_path)
        return movies, users, self._run

    # -- ratings ---------------------------------------------------------------------------------

    def add_ratings(
        self,
        ratings: Mapping[int, Mapping[int, float]],
        *,
        source: str = "api",
        method: str | None = None,
    ) -> Applied:
        """Record {user id: {movie id: rating}} and write each user's new point into the live
        users collection (a new user id creates it). The same ratings again change nothing; a
        re-rating replaces the old rating.

        A user the live run was trained on gets the ranking model's closed form of all their
        ratings (what training would store); someone new to the run gets the ranking vector
        `query --rated` gives the same ratings with `method` (default: the Updater's, weighted),
        so `query --user` then answers as `query --rated` does."""
        if method is not None:
            self.method = check_method(method)
        movies_coll, users_coll, run = self._live()
        given = self._checked_ratings(ratings, run)
        self.sync()  # repair first: what a crash left must not wait behind this update
        missing = self._missing_movies(movies_coll, {m for r in given.values() for m in r})
        if missing:
            shown = ", ".join(str(m) for m in missing[:10])
            raise NotFoundError(
                f"movie id(s) {shown} not in the live publication (run {run.run_id}); "
                "add a new movie with `fmstore movies add` first"
            )
        with Session(self.engine) as session, session.begin():
            recorded = log.record_ratings(session, given, source=source)
        checkpoint("updates_recorded")
        applied = self.sync()
        applied.recorded = recorded
        return applied

    def _checked_ratings(
        self, ratings: Mapping[int, Mapping[int, float]], run: LiveRun
    ) -> dict[int, dict[int, float]]:
        if not isinstance(ratings, Mapping) or not ratings:
            raise ConfigError("ratings must be a non-empty {user id: {movie id: rating}}")
        lo, hi = (float(x) for x in run.serving["rating_range"])
        out: dict[int, dict[int, float]] = {}
        for user, given in ratings.items():
            user = _as_id(user, "user id")
            if not isinstance(given, Mapping) or not given:
                raise ConfigError(f"user {user}: give at least one {{movie id: rating}}")
            out[user] = {}
            for movie, value in given.items():
                movie = _as_id(movie, "movie id")
                try:
                    value = float(value)
                except (TypeError, ValueError):
                    raise DataError(
                        f"user {user}, movie {movie}: rating {value!r} is not a number"
                    ) from None
                if not lo <= value <= hi:
                    raise DataError(
                        f"user {user}, movie {movie}: rating {value:g} is outside the rating "
                        f"scale {lo:g}-{hi:g}"
                    )
                out[user][movie] = value
        return out

    def _missing_movies(self, collection: str, movie_ids: set[int]) -> list[int]:
        ids = sorted(movie_ids)
        found: set[int] = set()
        for start in range(0, len(ids), _BATCH):
            found |= set(self.store.retrieve(collection, ids[start : start + _BATCH]))
        return [m for m in ids if m not in found]

    # -- movies ----------------------------------------------------------------------------------

    def add_movies(self, movies: Sequence[Mapping], *, source: str = "api") -> Applied:
        """Record new movies ({movie_id, title, year, genres: list}) and write their points into
        the live movies collection, served from their genres and year as a movie nobody rated.
        A movie id the live run or an earlier addition already has is refused (DataError)."""
        movies_coll, _, run = self._live()
        self.sync()
        rows = [_movie_row(m) for m in movies]
        if not rows:
            raise ConfigError("no movies given: add at least one")
        known = set(run.genres())
        for row in rows:
            unknown = [g for g in row.get("genres") or [] if g not in known]
            if unknown:
                raise DataError(
                    f"movie {row['movie_id']}: unknown genre(s) {', '.join(unknown)}; the run "
                    f"knows {', '.join(sorted(known))}"
                )
        taken = set(self.store.retrieve(movies_coll, [r["movie_id"] for r in rows]))
        if taken:
            raise DataError(
                f"movie id(s) {', '.join(str(t) for t in sorted(taken))} are already in the "
                "live publication; pick new ids (or leave them out: the next free one is taken)"
            )
        with Session(self.engine) as session, session.begin():
            recorded = log.record_movies(session, rows, source=source)
        checkpoint("updates_recorded")
        applied = self.sync()
        applied.recorded = len(recorded)
        return applied

    def next_movie_id(self) -> int:
        """One more than the largest movie id of the live run and of every added movie."""
        _, _, run = self._live()
        with Session(self.engine) as session:
            added = log.max_added_movie_id(session)
        return max(int(run.movie_ids().max(initial=0)), added) + 1

    # -- bringing the live collections up to date -----------------------------------------------

    def sync(self) -> Applied:
        """Apply every recorded update the live collections do not hold yet (the repair after a
        crash, and what a new publication lacks); nothing when they are up to date."""
        with one_blas_thread():  # many tiny solves: BLAS threads cost more than they do
            return self._sync()

    def _sync(self) -> Applied:
        movies_coll, users_coll = self._collections()
        with Session(self.engine) as session, session.begin():
            if not log.last_rating_id(session) and not log.max_added_movie_id(session):
                # nothing was ever recorded: the collections hold every update there is
                for coll in (movies_coll, users_coll):
                    if log.applied_through(session, coll) is None:
                        log.mark_applied(session, coll, 0)
                return Applied(run_id_of(movies_coll))
        movies_coll, users_coll, run = self._live()
        applied = Applied(run.run_id)
        self._sync_movies(movies_coll, run, applied)
        self._sync_users(movies_coll, users_coll, run, applied)
        return applied

    def _sync_movies(self, collection: str, run: LiveRun, applied: Applied) -> None:
        with Session(self.engine) as session:
            through = log.applied_through(session, collection)
            added = log.added_movies(session, after=through or 0)
        if not added:
            if through is None:  # nothing was ever added: this collection is up to date
                with Session(self.engine) as session, session.begin():
                    log.mark_applied(session, collection, 0)
            return
        rows = [movie for _, movie in added]
        if through is None:  # a new publication: its run may have been trained on some of them
            present = set(self.store.retrieve(collection, [m["movie_id"] for m in rows]))
            rows = [m for m in rows if m["movie_id"] not in present]
            applied.not_in_run += len(rows)
        if rows:
            points = [run.movie_vectors(m) for m in rows]
            names = list(points[0][0])
            self.store.upsert(
                collection,
                np.array([m["movie_id"] for m in rows], np.int64),
                {n: np.stack([v[n] for v, _ in points]) for n in names},
                [p for _, p in points],
            )
            self.store.flush(collection)
        with Session(self.engine) as session, session.begin():
            catalog.upsert_movies(session, [_catalog_row(m) for m in rows], run_id=run.run_id)
            log.mark_applied(session, collection, added[-1][0])
        applied.movies += [m["movie_id"] for m in rows]

    def _sync_users(
        self, movies_coll: str, users_coll: str, run: LiveRun, applied: Applied
    ) -> None:
        with Session(self.engine) as session:
            through = log.applied_through(session, users_coll)
            last = log.last_rating_id(session)
            if through is not None and through >= last:
                return
            users = log.users_rated_after(session, through or 0)
            recorded = log.current_ratings(session, users)
        for start in range(0, len(users), _BATCH):
            chunk = users[start : start + _BATCH]
            full = {u: run.training_ratings(u) for u in chunk}
            trained = {u for u in chunk if full[u]}
            if through is None:  # a new publication: only what its run was not trained on
                lacking = {u: _not_in(recorded[u], full[u]) for u in chunk}
                applied.not_in_run += sum(lacking.values())
                chunk = [u for u in chunk if lacking[u]]
            for u in chunk:
                full[u].update(recorded[u])
            self._write_users(movies_coll, users_coll, run, chunk, full, trained, applied)
        with Session(self.engine) as session, session.begin():
            log.mark_applied(session, users_coll, last)

    def _write_users(self, movies_coll, users_coll, run, users, ratings, trained, applied) -> None:
        if not users:
            return
        movie_ids = sorted({m for u in users for m in ratings[u]})
        names = ["score", "rank"] if run.ranking else ["score"]
        found = self.store.retrieve(movies_coll, movie_ids, vectors=names)
        movies = MovieRows.of({m: _unboosted(v, payload) for m, (v, payload) in found.items()})
        points = []
        for u in users:
            usable = {m: r for m, r in ratings[u].items() if m in found}
            if len(usable) < len(ratings[u]):
                applied.notes.append(
                    f"user {u}: {len(ratings[u]) - len(usable)} rated movie(s) are not in the "
                    f"live run {run.run_id}; left out of their vectors"
                )
            if usable:
                new = u not in trained and self.method == "weighted"
                points.append(run.user_vectors(u, usable, movies, weighted=new))
        if not points:
            return
        self.store.upsert(
            users_coll,
            np.array([p.user_id for p in points], np.int64),
            {n: np.stack([p.vectors[n] for p in points]) for n in names},
            [p.payload for p in points],
        )
        self.store.flush(users_coll)
        applied.users += [p.user_id for p in points]

    def pending(self) -> int:
        """Recorded ratings and movies the live collections do not hold yet (0 when in step)."""
        movies_coll, users_coll = self._collections()
        with Session(self.engine) as session:
            m = log.applied_through(session, movies_coll) or 0
            u = log.applied_through(session, users_coll) or 0
            return len(log.added_movies(session, after=m)) + len(log.users_rated_after(session, u))


def _not_in(recorded: dict[int, float], trained: dict[int, float]) -> int:
    """How many recorded ratings a run's training ratings lack (or hold with another value)."""
    return sum(1 for m, r in recorded.items() if trained.get(m) != r)


def _unboosted(vectors: dict[str, np.ndarray], payload: dict) -> dict[str, np.ndarray]:
    """A movie's stored vectors with the former popularity prior taken off b_i (as
    Recommender.item_terms does for runs published with it)."""
    boost = float(payload.get("popularity_boost", 0.0))
    if not boost:
        return vectors
    score = vectors["score"].copy()
    score[-1] -= boost
    return {**vectors, "score": score}


def _movie_row(movie: Mapping) -> dict:
    """A movie as given -> {movie_id, title, year, genres}: the title carries its year as
    MovieLens titles do ("Title (2026)"), so title search and an exported movies.csv find it."""
    movie_id = _as_id(movie.get("movie_id"), "movie id")
    title = str(movie.get("title") or "").strip()
    if not title:
        raise DataError(f"movie {movie_id}: the title is empty")
    bare, year_in_title = split_year(title)
    year = movie.get("year")
    if year is None:
        year = year_in_title
    elif isinstance(year, bool) or not isinstance(year, (int, np.integer)) or not 1 <= year <= 9999:
        raise DataError(f"movie {movie_id}: year {year!r} is not a year")
    elif year_in_title is None:
        title = f"{bare} ({int(year)})"
    elif year_in_title != year:
        raise DataError(f"movie {movie_id}: the title says {year_in_title}, the year {year}")
    genres = [g.strip() for g in movie.get("genres") or [] if g and g.strip()]
    genres = [g for g in genres if g != "(no genres listed)"]  # MovieLens' spelling of none
    return {"movie_id": movie_id, "title": title, "year": year, "genres": genres}


def _catalog_row(movie: dict) -> dict:
    return {
        "movie_id": movie["movie_id"],
        "title": movie["title"],
        "year": movie["year"],
        "genres": list(movie["genres"]),
        "n_ratings": 0,
        "mean_rating": None,
        "imdb_id": None,
        "tmdb_id": None,
    }


def _as_id(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(f"{what} {value!r}: use a whole number of at least 0")
    return int(value)
