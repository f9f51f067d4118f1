"""Query layer: title resolution, user vectors for new users, similar movies, recommendations.

NumPy + the vectors interface + the catalog: importing this module must not import torch.

    rec = Recommender(store, engine)              # the live run: alias -> movies__<run_id>
    ids, scores = rec.similar_items(rec.resolve_title("toy story"), N=10)
    ids, scores = rec.recommend(42, N=10)         # a known user, their training movies excluded
    ids, scores = rec.recommend_for_ratings({589: 5, 165: 4.5})   # a brand-new user (fold-in)

Every ranking is a pair of NumPy arrays `(ids, scores)`, best first, like `implicit`. Scores are
what Qdrant returns: cosine of `item` vectors for similar movies; `b_i + <p_u, q_i> + boost_i` (the
`score` vector's dot product, with the publish-time popularity prior) for users, which
`predict_rating(b_u, score, boost_i)` turns into a rating.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import math
import re
import unicodedata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from fmstore.errors import AmbiguousError, ConfigError, DataError, NotFoundError, StoreError
from fmstore.vectors import QueryFilter, VectorStore

SIGMOID_SCALE = 5.5  # the notebook's link, sigmoid(y) * 5.5 (model.py; not imported: it pulls torch)
METHODS = ("fold-in", "weighted")


# ---- user vectors --------------------------------------------------------------------------------


def fold_in(
    item_vectors: np.ndarray,
    item_bias: np.ndarray,
    ratings: np.ndarray,
    *,
    w0: float,
    reg: float,
    prior: float = 0.0,
) -> tuple[np.ndarray, float]:
    """A user's (p_u, b_u) from their ratings of movies with fixed (q_i, b_i): ridge regression.

    Minimises sum_i (r_i - w0 - b_i - b_u - <p_u, q_i>)^2 + (reg * n + prior) * (|p_u|^2 + b_u^2),
    which is exactly the training objective restricted to this user (training penalises a user's
    weights `reg` once per rating plus `prior` (TrainConfig.prior_reg) once per epoch), so for a
    known user it recovers their published vector up to how far training converged. Like
    implicit's `recalculate_user`.
    """
    q = np.asarray(item_vectors, dtype=np.float64)
    n, k = q.shape
    if n == 0:
        return np.zeros(k, np.float32), 0.0
    x = np.hstack([q, np.ones((n, 1))])  # [q_i, 1]: the last coordinate carries b_u
    target = np.asarray(ratings, np.float64) - w0 - np.asarray(item_bias, np.float64)
    gram = x.T @ x + (reg * n + prior) * np.eye(k + 1)
    theta = np.linalg.solve(gram, x.T @ target)
    return theta[:k].astype(np.float32), float(theta[k])


def weighted_user(item_vectors: np.ndarray, ratings: np.ndarray) -> tuple[np.ndarray, float]:
    """The original notebook's user vector: the rated movies' q_i averaged with the ratings as
    weights. It has no bias (b_u = 0) and only its direction is meaningful for ranking."""
    q = np.asarray(item_vectors, dtype=np.float64)
    w = np.asarray(ratings, dtype=np.float64)
    if len(w) == 0 or w.sum() == 0:
        return np.zeros(q.shape[1], np.float32), 0.0
    return (w @ q / w.sum()).astype(np.float32), 0.0


def predict(y: np.ndarray | float, link: str, rating_range: Sequence[float]) -> np.ndarray | float:
    """Raw FM score y = w0 + b_u + b_i + <p_u, q_i> -> rating: the link, then the rating scale."""
    if link == "sigmoid":
        y = SIGMOID_SCALE / (1.0 + np.exp(-np.asarray(y, np.float64)))
    return np.clip(y, rating_range[0], rating_range[1])


def link_inverse(ratings: np.ndarray, link: str) -> np.ndarray:
    """Ratings -> the raw scores fold-in regresses on (identity: the ratings themselves)."""
    r = np.asarray(ratings, np.float64)
    if link != "sigmoid":
        return r
    p = np.clip(r / SIGMOID_SCALE, 1e-3, 1 - 1e-3)
    return np.log(p / (1 - p))


# ---- title resolution ----------------------------------------------------------------------------

_YEAR = re.compile(r"\s*\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$")  # "(1995)", "(2006-2007)", "(2010-)"
_PARENS = re.compile(r"\s*\(([^()]*)\)")
_AKA = re.compile(r"^\s*(?:a\.?k\.?a\.?|also known as)\s+", re.I)
# MovieLens writes "Matrix, The" and "Boot, Das"; these trailing articles move to the front.
_TRAILING_ARTICLE = re.compile(
    r"^(.*),\s*(the|a|an|les|la|le|l'|il|lo|el|los|las|der|die|das|den|det|de|het|een|un|une|uno|una|ein|eine|o|os|as|i|gli)$",
    re.I,
)
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an)\s+")  # only English ones: "Die Hard" keeps its "Die"
_NON_ALNUM = re.compile(r"[^0-9a-z\n]+")
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _fold_words(text: str) -> str:
    """Lower case, accents off, '&' as 'and', anything but letters and digits to single spaces.
    Works on many titles joined by newlines at once (newlines are kept)."""
    text = text.replace("&", " and ")
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    return _NON_ALNUM.sub(" ", text.casefold())


def split_year(text: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); no year -> (text, None)."""
    m = _YEAR.search(text)
    if not m:
        return text.strip(), None
    return text[: m.start()].strip(), int(m.group(1))


def _fold(text: str) -> str:
    """Lower case, accents off, punctuation to single spaces, leading English article off."""
    return _LEADING_ARTICLE.sub("", _fold_words(text.replace("\n", " ")).strip())


def _part_keys(part: str) -> set[str]:
    part = _AKA.sub("", part).strip()
    keys = {_fold(part)}
    m = _TRAILING_ARTICLE.match(part)
    if m:
        keys.add(_fold(m.group(1)))  # "Matrix, The" -> "matrix"
        keys.add(_fold(f"{m.group(2)} {m.group(1)}"))  # "Boot, Das" -> "das boot"
    return keys


def title_keys(title: str) -> set[str]:
    """The normalised forms a title can be asked for by: whole, main title, each alternate title
    in parentheses ("Seven (a.k.a. Se7en)"), each with its trailing article moved or dropped."""
    text, _ = split_year(title)
    keys = {_fold(text)} | _part_keys(_PARENS.sub("", text))
    for alt in _PARENS.findall(text):
        keys |= _part_keys(alt)
    return {k for k in keys if k}


def query_key(text: str) -> tuple[str, int | None]:
    """What the user typed -> (normalised key, year or None)."""
    body, year = split_year(text)
    m = _TRAILING_ARTICLE.match(body)
    if m and m.group(2).lower() in ("the", "a", "an"):
        body = m.group(1)
    return _fold(body), year


def _describe(movies: Iterable[tuple[int, str, int | None]], limit: int = 8) -> str:
    movies = list(movies)
    shown = []
    for movie_id, title, year in movies[:limit]:
        label = title if (year is None or f"({year}" in title) else f"{title} ({year})"
        shown.append(f"{label} [id {movie_id}]")
    more = f", and {len(movies) - limit} more" if len(movies) > limit else ""
    return ", ".join(shown) + more


class TitleIndex:
    """Resolves what a person typed to one movie id, never guessing between equals.

    Stages, first that finds something wins: the exact title; the same words ignoring case,
    accents, punctuation and articles ("The Matrix" = "Matrix, The (1999)"), with the year if one
    was given, else any year; the typed words as the start of a title ("Terminator 2" ->
    "Terminator 2: Judgment Day (1991)"); then fuzzy (difflib on normalised titles, after a cheap
    length prefilter). Several equally good matches raise AmbiguousError listing them; nothing
    close raises NotFoundError with the closest suggestions.
    """

    FUZZY_CUTOFF = 0.8
    SUGGEST_CUTOFF = 0.55

    def __init__(self, movies: Iterable[tuple[int, str, int | None]]):
        self.movies = [(int(m), str(t), None if y is None else int(y)) for m, t, y in movies]
        self._by_id = {m[0]: m for m in self.movies}
        self._exact: dict[str, list[int]] | None = None
        self._hay: list[str] | None = None  # each title folded to plain words: a cheap prefilter
        self._row_keys: dict[int, set[str]] = {}
        self._all_keys: list[tuple[str, int]] | None = None  # (key, row), for fuzzy

    def _build_exact(self) -> dict[str, list[int]]:
        if self._exact is None:
            self._exact = {}
            for row, (_, title, _) in enumerate(self.movies):
                self._exact.setdefault(title.strip(), []).append(row)
        return self._exact

    def _candidates(self, key: str) -> list[int]:
        """Rows whose folded title contains every word of `key`: a superset of the titles that
        have `key` as a key or as the start of one (keys are made of the title's own words).
        Folding all titles in one pass costs ~1 us a title; title_keys() costs 6."""
        if self._hay is None:
            self._hay = _fold_words("\n".join(t.replace("\n", " ") for _, t, _ in self.movies)).split("\n")
        words = sorted(set(key.split()), key=len, reverse=True)
        return [row for row, h in enumerate(self._hay) if all(w in h for w in words)]

    def _keys_of(self, row: int) -> set[str]:
        keys = self._row_keys.get(row)
        if keys is None:
            keys = self._row_keys[row] = title_keys(self.movies[row][1])
        return keys

    def _build_all_keys(self) -> list[tuple[str, int]]:
        if self._all_keys is None:
            self._all_keys = [(k, row) for row in range(len(self.movies)) for k in self._keys_of(row)]
        return self._all_keys

    def _year_ok(self, row: int, year: int | None) -> bool:
        if year is None:
            return True
        movie_year = self.movies[row][2]
        if movie_year is None:
            movie_year = split_year(self.movies[row][1])[1]
        return movie_year == year

    def _one(self, text: str, rows: Iterable[int]) -> int:
        rows = sorted(set(rows), key=lambda r: self.movies[r][0])
        if len(rows) == 1:
            return self.movies[rows[0]][0]
        raise AmbiguousError(
            f'"{text}" matches {len(rows)} movies: {_describe(self.movies[r] for r in rows)}; '
            "add the year or use --movie-id"
        )

    def resolve(self, text: str) -> int:
        text = (text or "").strip()
        if not text:
            raise ConfigError("empty movie title: give a title like \"Toy Story (1995)\" or use --movie-id")
        exact = self._build_exact().get(text)
        if exact:
            return self._one(text, exact)
        key, year = query_key(text)
        if not key:
            raise ConfigError(f'"{text}" has no letters or digits to look up; use --movie-id')
        candidates = [r for r in self._candidates(key) if self._year_ok(r, year)]

        # the same words ignoring case, accents, punctuation and articles; year-optional
        rows = [r for r in candidates if key in self._keys_of(r)]
        if rows:
            return self._one(text, rows)

        # the typed words as the start of a title, on a word boundary
        prefix = key + " "
        rows = [r for r in candidates if any(k.startswith(prefix) for k in self._keys_of(r))]
        if rows:
            return self._one(text, rows)

        # fuzzy: best ratio per movie, over the titles whose length can reach the cutoff
        scored = self._fuzzy(key, year, self.FUZZY_CUTOFF)
        if scored:
            best = max(scored.values())
            return self._one(text, [r for r, s in scored.items() if s >= best - 1e-9])
        # nothing close enough to pick: suggest, in any year (a wrong year is a common slip)
        scored = self._fuzzy(key, None, self.SUGGEST_CUTOFF)
        if scored:
            closest = sorted(scored, key=lambda r: (-scored[r], self.movies[r][0]))[:3]
            raise NotFoundError(f'no movie matches "{text}"; closest: {_describe(self.movies[r] for r in closest)}')
        raise NotFoundError(f'no movie matches "{text}"; check the spelling or use --movie-id')

    def _fuzzy(self, key: str, year: int | None, cutoff: float) -> dict[int, float]:
        matcher = difflib.SequenceMatcher(autojunk=False)
        matcher.set_seq2(key)  # the fixed side: SequenceMatcher caches what it knows about seq2
        n = len(key)
        # ratio = 2M / (n + len) <= 2 min(n, len) / (n + len): a length check rules most titles out
        lo, hi = n * cutoff / (2 - cutoff), n * (2 - cutoff) / cutoff
        scored: dict[int, float] = {}
        for k, row in self._build_all_keys():
            if not lo <= len(k) <= hi or not self._year_ok(row, year):
                continue
            matcher.set_seq1(k)
            if matcher.quick_ratio() < cutoff:
                continue
            ratio = matcher.ratio()
            if ratio >= cutoff and ratio > scored.get(row, 0.0):
                scored[row] = ratio
        return scored

    def describe(self, movie_id: int) -> str:
        movie = self._by_id.get(int(movie_id))
        return _describe([movie]) if movie else f"[id {movie_id}]"


# ---- ratings input -------------------------------------------------------------------------------


def parse_rating(text: str, where: str) -> float:
    """A rating value as typed -> float; one-line DataError naming the value when it is not one."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise DataError(f"{where}: rating {str(text).strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: rating {str(text).strip()!r} is not a number")
    return value


def check_rating(value: float, rating_range: Sequence[float], where: str) -> float:
    lo, hi = float(rating_range[0]), float(rating_range[1])
    if not lo <= value <= hi:
        raise DataError(f"{where}: rating {value:g} is outside the rating scale {lo:g}-{hi:g}")
    return value


def parse_rated(items: Sequence[str]) -> list[tuple[str, float, str]]:
    """`--rated "Title=4.5"` values -> [(title, rating, where)]; the last '=' separates the rating.
    `where` names the flag for later messages (an unknown title, a rating off the run's scale)."""
    parsed = []
    for item in items:
        title, sep, rating = str(item).rpartition("=")
        where = f'--rated "{item}"'
        if not sep or not title.strip():
            raise ConfigError(f'{where}: expected TITLE=RATING, e.g. --rated "Toy Story (1995)=4.5"')
        parsed.append((title.strip(), parse_rating(rating, where), where))
    return parsed


def read_ratings_file(path: Path) -> list[tuple[str | int, float, str]]:
    """A CSV with a header: `movieId` (or `movie_id`) or `title`, and `rating`.

    Returns [(movie id or title, rating, where)] where `where` names file and line for messages."""
    path = Path(path)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the ratings file ({exc.strerror or exc})") from None
    rows: list[tuple[str | int, float, str]] = []
    with f:
        reader = csv.DictReader(f)
        fields = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
        id_col = fields.get("movieid") or fields.get("movie_id")
        title_col = fields.get("title")
        rating_col = fields.get("rating")
        if rating_col is None or (id_col is None and title_col is None):
            raise DataError(f"{path}: needs a header with columns 'rating' and 'movieId' or 'title'; found {list(reader.fieldnames or [])}")
        for line, record in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            movie_id = (record.get(id_col) or "").strip() if id_col else ""
            title = (record.get(title_col) or "").strip() if title_col else ""
            if not movie_id and not title:
                if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
                    continue  # blank line
                raise DataError(f"{where}: no movieId or title")
            rating = parse_rating(record.get(rating_col) or "", where)
            if movie_id:
                try:
                    rows.append((int(movie_id), rating, where))
                except ValueError:
                    raise DataError(f"{where}: movieId {movie_id!r} is not an integer") from None
            else:
                rows.append((title, rating, where))
    if not rows:
        raise DataError(f"{path}: no ratings in the file")
    return rows


# ---- the recommender -----------------------------------------------------------------------------


class _SqlAlchemyCatalog:
    """Catalog reads through SQLAlchemy (an Engine or a Session factory the caller owns)."""

    def __init__(self, engine_or_factory: Any, owned: Any = None):
        from sqlalchemy.engine import Engine
        from sqlalchemy.orm import Session

        if isinstance(engine_or_factory, Engine):
            self._session: Callable[[], Any] = lambda: Session(engine_or_factory)
        elif callable(engine_or_factory):
            self._session = engine_or_factory
        else:
            raise TypeError("the catalog must be a SQLAlchemy Engine, a Session factory or a catalog URL")
        self._owned = owned  # an Engine made here from a URL: disposed by close()

    def _read(self, fn: Callable[[Any], Any]) -> Any:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._session() as session:
                return fn(session)
        except SQLAlchemyError as exc:
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            raise StoreError(f"cannot read the catalog: {reason} (run `fmstore publish` or `fmstore db upgrade`)") from None

    def run(self, run_id: str) -> tuple[dict, str | None] | None:
        from fmstore import catalog

        def get(session: Any) -> tuple[dict, str | None] | None:
            run = catalog.get_run(session, run_id)
            return None if run is None else (run.config or {}, run.artifact_path)

        return self._read(get)

    def movie_titles(self) -> list[tuple[int, str, int | None]]:
        from fmstore import catalog

        return self._read(catalog.movie_titles)

    def genres(self) -> list[str | None]:
        from sqlalchemy import select

        from fmstore.catalog import Movie

        return self._read(lambda s: list(s.scalars(select(Movie.genres).distinct())))

    def close(self) -> None:
        if self._owned is not None:
            self._owned.dispose()


class _SqliteCatalog:
    """Read-only catalog reads with the standard library's sqlite3, for a SQLite catalog URL.

    `fmstore query` aims at < 1 s end to end, and importing SQLAlchemy alone costs 0.2-0.3 s of it.
    The three reads below are the documented catalog contract (docs/qdrant-contract.md: `runs.config`
    is JSON), the same as a service would run; the catalog is opened read-only."""

    def __init__(self, path: Path):
        import sqlite3
        from urllib.parse import quote

        self.path = path
        if not path.is_file():
            raise NotFoundError(f"no catalog at {path}: run `fmstore publish` first")
        try:
            self._conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the catalog {path}: {exc}") from None

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        import sqlite3

        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the catalog {self.path}: {exc} (run `fmstore publish` or `fmstore db upgrade`)") from None

    def run(self, run_id: str) -> tuple[dict, str | None] | None:
        import json

        rows = self._read("SELECT config, artifact_path FROM runs WHERE id = ?", (run_id,))
        if not rows:
            return None
        config, path = rows[0]
        return (json.loads(config) if isinstance(config, str) else config or {}), path

    def movie_titles(self) -> list[tuple[int, str, int | None]]:
        return [tuple(r) for r in self._read("SELECT movie_id, title, year FROM movies ORDER BY movie_id")]  # type: ignore[misc]

    def genres(self) -> list[str | None]:
        return [r[0] for r in self._read("SELECT DISTINCT genres FROM movies")]

    def close(self) -> None:
        self._conn.close()


_SQLITE_URL = re.compile(r"^sqlite(?:\+pysqlite)?:///(?P<path>[^?]+)$")


def _open_catalog(source: Any) -> _SqlAlchemyCatalog | _SqliteCatalog:
    """An Engine or Session factory (the caller's), or a catalog URL (opened here, closed by close())."""
    if isinstance(source, Path):
        source = f"sqlite:///{source}"
    if isinstance(source, str):
        m = _SQLITE_URL.match(source)
        if m and m["path"] != ":memory:":
            return _SqliteCatalog(Path(m["path"]))
        from fmstore import catalog

        engine = catalog.make_engine(source)
        return _SqlAlchemyCatalog(engine, owned=engine)
    return _SqlAlchemyCatalog(source)


def with_excluded(filter: QueryFilter | None, ids: Iterable[int]) -> QueryFilter:
    """`filter` plus must_not has_id(ids)."""
    base = filter or QueryFilter()
    extra = tuple(int(i) for i in ids)
    return dataclasses.replace(base, exclude_ids=tuple(dict.fromkeys(base.exclude_ids + extra)))


def _ranking(hits: list) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([h.id for h in hits], dtype=np.int64), np.array([h.score for h in hits], dtype=np.float32))


class Recommender:
    """Queries against the live publication, mirroring implicit's API.

    `store` is any VectorStore (EdgeStore or ServerStore). `engine` is the catalog: a SQLAlchemy
    Engine or Session factory (yours: close() leaves it open), or a catalog URL, which the
    Recommender opens and close() closes (a SQLite URL is read with the standard library's sqlite3,
    read-only, which keeps `fmstore query` fast). The live run is read once, from the movies alias,
    and its physical collections are used from then on, so every answer of one Recommender comes
    from one run even if a publish switches the alias meanwhile (make a new one to follow it).
    """

    def __init__(self, store: VectorStore, engine: Any, movies_alias: str = "movies", users_alias: str = "users"):
        self.store = store
        collection = store.resolve_alias(movies_alias)
        if collection is None:
            raise NotFoundError(f"nothing is published as '{movies_alias}' yet: run `fmstore publish` first")
        # publish.run_id_of / physical_name, written out: importing fmstore.publish pulls SQLAlchemy
        self.run_id = collection.split("__", 1)[1] if "__" in collection else collection
        self.movies_collection = collection
        self.users_collection = f"{users_alias}__{self.run_id}"
        self._catalog = _open_catalog(engine)
        try:
            found = self._catalog.run(self.run_id)
            if found is None:
                raise NotFoundError(
                    f"run {self.run_id} is live in the vector store but not in the catalog; "
                    "publish it again with this catalog (FMSTORE_DATABASE_URL)"
                )
            config, artifact_path = found
            serving = config.get("serving") or {}
            try:
                self.w0 = float(serving["w0"])
                self.link = str(serving.get("link", "identity"))
                self.rating_range = (float(serving["rating_range"][0]), float(serving["rating_range"][1]))
                self.reg = float(serving["reg"])
                self.prior_reg = float(serving.get("prior_reg", 0.0))
                self.factors = int(serving["factors"])
            except (KeyError, TypeError, ValueError, IndexError):
                raise StoreError(f"run {self.run_id} in the catalog has no usable serving config; publish it again") from None
        except BaseException:
            self._catalog.close()
            raise
        self.artifact_path = Path(artifact_path) if artifact_path else None
        self.notes: list[str] = []  # what the last call could not do, for the user to read
        self._titles: TitleIndex | None = None
        self._payloads: dict[int, dict] = {}
        self._users: dict[int, tuple[np.ndarray, float]] = {}

    def close(self) -> None:
        """Close the catalog connection if this Recommender opened it (from a URL); the store and
        a caller's Engine stay open."""
        self._catalog.close()

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- catalog ---------------------------------------------------------------------------------

    def titles(self) -> TitleIndex:
        if self._titles is None:
            self._titles = TitleIndex(self._catalog.movie_titles())
        return self._titles

    def resolve_title(self, text: str) -> int:
        """What a person typed -> one movie id (see TitleIndex); AmbiguousError / NotFoundError."""
        return self.titles().resolve(text)

    def genres(self) -> list[str]:
        """Every genre in the catalog, sorted."""
        return sorted({g for v in self._catalog.genres() if v for g in v.split("|")})

    def canonical_genres(self, names: Iterable[str]) -> tuple[str, ...]:
        """Genre names as typed (any case) -> the catalog's spelling; ConfigError for unknown ones."""
        names = [n.strip() for n in names if n and n.strip()]
        if not names:
            return ()
        known = {g.casefold(): g for g in self.genres()}
        out = []
        for name in names:
            if name.casefold() not in known:
                raise ConfigError(f"unknown genre {name!r}; known genres: {', '.join(sorted(known.values()))}")
            out.append(known[name.casefold()])
        return tuple(dict.fromkeys(out))

    # -- store -----------------------------------------------------------------------------------

    def _search(self, collection: str, vector: np.ndarray, using: str, N: int, filter: QueryFilter | None):
        if N < 1:
            raise ConfigError(f"N must be at least 1, not {N}")
        hits = self.store.search(collection, vector, using=using, limit=int(N), filter=filter)
        for h in hits:
            self._payloads[h.id] = h.payload
        return hits

    def movie_vectors(self, movie_ids: Sequence[int], vector: str = "score") -> dict[int, np.ndarray]:
        """Stored vectors of movies of the live run; NotFoundError names ids that are not there."""
        ids = [int(i) for i in movie_ids]
        found = self.store.retrieve(self.movies_collection, ids, vectors=[vector])
        missing = [i for i in ids if i not in found]
        if missing:
            shown = ", ".join(str(i) for i in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise NotFoundError(f"movie id(s) {shown} not in the published run {self.run_id}")
        for movie_id, (_, payload) in found.items():
            self._payloads[movie_id] = payload
        return {i: found[i][0][vector] for i in ids}

    def movie_info(self, movie_ids: Iterable[int]) -> dict[int, dict]:
        """Payloads (title, year, genres, n_ratings, ...) of movies, from the last searches or the store."""
        ids = [int(i) for i in movie_ids]
        missing = [i for i in ids if i not in self._payloads]
        if missing:
            for movie_id, (_, payload) in self.store.retrieve(self.movies_collection, missing).items():
                self._payloads[movie_id] = payload
        return {i: self._payloads[i] for i in ids if i in self._payloads}

    # -- rankings --------------------------------------------------------------------------------

    def similar_items(self, movie_id: int, N: int = 10, filter: QueryFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Movies whose `item` vector is closest (cosine) to this movie's; the movie itself excluded."""
        item = self.movie_vectors([movie_id], "item")[int(movie_id)]
        hits = self._search(self.movies_collection, item, "item", N, with_excluded(filter, [movie_id]))
        return _ranking(hits)

    def user_vector(self, user_id: int) -> tuple[np.ndarray, float]:
        """A known user's published (p_u, b_u)."""
        user_id = int(user_id)
        if user_id not in self._users:
            found = self.store.retrieve(self.users_collection, [user_id], vectors=["score"])
            if user_id not in found:
                raise NotFoundError(
                    f"user {user_id} is not in the published run {self.run_id} (only users with training "
                    "ratings are); for someone new use --rated or --ratings-file"
                )
            vectors, payload = found[user_id]
            self._users[user_id] = (vectors["score"][:-1].copy(), float(payload.get("bias", 0.0)))
        return self._users[user_id]

    def seen_items(self, user_id: int) -> np.ndarray | None:
        """Movies the user rated in the run's training data; None (and a note) when the run folder
        is not on this machine."""
        from fmstore import artifact

        folder = self.artifact_path
        if folder is None or not (folder / "seen.safetensors").is_file():
            self.notes.append(
                f"the run folder {folder} is not on this machine: movies user {user_id} already rated are not excluded"
            )
            return None
        return np.asarray(artifact.seen_movies(folder, int(user_id))[0], dtype=np.int64)

    def recommend(
        self,
        user_id: int,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter: QueryFilter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top movies for a known user by b_i + <p_u, q_i> (+ popularity boost); training movies excluded."""
        self.notes = []
        p_u, _ = self.user_vector(user_id)
        if filter_already_liked_items:
            seen = self.seen_items(user_id)
            if seen is not None and len(seen):
                filter = with_excluded(filter, seen)
        return self.rank_for_vector(p_u, N, filter=filter)

    def rank_for_vector(self, p_u: np.ndarray, N: int = 10, filter: QueryFilter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top movies for any user vector: query [p_u, 1] on `score`, i.e. by b_i + <p_u, q_i> plus the
        published popularity boost (see config.POPULARITY_WEIGHT)."""
        p_u = np.asarray(p_u, dtype=np.float32).reshape(-1)
        if p_u.shape[0] != self.factors:
            raise ConfigError(f"user vector has {p_u.shape[0]} dimensions; run {self.run_id} has {self.factors}")
        query = np.append(p_u, np.float32(1.0))
        return _ranking(self._search(self.movies_collection, query, "score", N, filter))

    def recalculate_user(self, ratings: Mapping[int, float], method: str = "fold-in") -> tuple[np.ndarray, float]:
        """(p_u, b_u) of someone new from {movie_id: rating}, against the published q_i, b_i.

        fold-in: ridge regression with the run's w0 and regularisation (fold_in); weighted: the
        notebook's rating-weighted mean of q_i (weighted_user, b_u = 0)."""
        if method not in METHODS:
            raise ConfigError(f"--method {method!r}: use one of {', '.join(METHODS)}")
        if not ratings:
            raise ConfigError("no ratings given: rate at least one movie")
        ids = [int(i) for i in ratings]
        values = np.array([check_rating(float(ratings[i]), self.rating_range, f"movie id {i}") for i in ids])
        score = np.stack([v for v in self.movie_vectors(ids, "score").values()]).astype(np.float64)
        # The stored bias coordinate includes the ranking prior; fold-in needs the FM's own b_i.
        boost = np.array([self._payloads[i].get("popularity_boost", 0.0) for i in ids])
        q, b = score[:, :-1], score[:, -1] - boost
        if method == "weighted":
            return weighted_user(q, values)
        return fold_in(q, b, link_inverse(values, self.link), w0=self.w0, reg=self.reg, prior=self.prior_reg)

    def recommend_for_ratings(
        self,
        ratings: Mapping[int, float],
        N: int = 10,
        method: str = "fold-in",
        filter: QueryFilter | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top movies for someone new, the movies they rated excluded."""
        p_u, _ = self.recalculate_user(ratings, method)
        return self.rank_for_vector(p_u, N, filter=with_excluded(filter, ratings))

    def predict_rating(self, b_u: float, score: float | np.ndarray, popularity_boost: float | np.ndarray = 0.0) -> float | np.ndarray:
        """A `score` hit (b_i + <p_u, q_i> + the movie's popularity_boost payload) -> rating:
        w0 + b_u + score - popularity_boost, through the run's link, clamped."""
        y = self.w0 + float(b_u) + np.asarray(score, np.float64) - np.asarray(popularity_boost, np.float64)
        out = predict(y, self.link, self.rating_range)
        return float(out) if np.ndim(out) == 0 else out

    def __repr__(self) -> str:
        return f"Recommender(run {self.run_id}, {self.store!r})"
