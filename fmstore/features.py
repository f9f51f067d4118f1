"""Feature vocabulary and encoding.

Every feature of every field gets one index in a single table, LightFM-style: raw id <-> index per
field, with each field at its own offset. Index 0 is reserved for padding (weight 0), so ragged
feature lists become fixed-width index/weight matrices that the model gathers in one go.

User-side fields: `user` (the user id) and, when asked for, `rated`: the set of movies the user
rated in training, one feature per movie at weight 1/sqrt(n) (SVD++'s implicit feedback in FM
form, Rendle 2010 section V.B). A user rates hundreds of movies, so `rated` is kept as a CSR
matrix (`rated_rows`), not in the fixed-width rows. Item-side fields: `movie` (the movie id, only
for movies with training ratings: a movie nobody rated keeps no id feature, so its vector comes
from its genres and year alone), `genre` (multi-hot, weights 1/n so a movie's genres sum to 1)
and `year` (release year in 5-year buckets, plus an "unknown" bucket).

Side fields (datasets.side): each side column of the movies table is an item-side field
"movie:<name>", each of the users table a user-side field "user:<name>" (`SideField`): a
categorical column has one feature per value (none for an empty cell or a value unseen at
training), a multi-valued one is multi-hot at weights 1/n as genres are, a numeric one is cut into
quantile buckets plus an "unknown" bucket (an empty cell, a missing row). So every side stays a
weighted sum of embeddings and the serving form folds them in exactly (model.py): item side
fields into q_i and b_i, user side fields into p_u and b_u.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmstore.datasets import Movies, Ratings
from fmstore.datasets.side import SideColumn, Users

PAD = 0
YEAR_BUCKET = 5
USER_FIELDS = ("user", "rated")
ITEM_FIELDS = ("movie", "genre", "year")
# Feature-table order. `rated` comes last so that adding it moves no other field's offsets.
TABLE_ORDER = ("user", "movie", "genre", "year", "rated")
# Side fields go between `year` and `rated`: the item side's ("movie:<name>") first, so that every
# item feature but the movie id is one block (`item_feature_span`), then the user side's.
SIDE_BUCKETS = 10  # quantile buckets of a numeric side column (fewer where values repeat)


@dataclass
class SideField:
    """One side column's field: "movie:<name>" or "user:<name>", its kind (datasets.side.KINDS)
    and its features: the values (category, multi) or the bucket edges (number: features are
    [unknown, below edges[0], ..., at or above edges[-1]])."""

    name: str
    kind: str
    values: list  # str values, or float edges

    @property
    def side(self) -> str:
        """'movie' or 'user'."""
        return self.name.split(":", 1)[0]

    @property
    def size(self) -> int:
        """Its number of features."""
        return len(self.values) + 2 if self.kind == "number" else len(self.values)

    @classmethod
    def of(cls, side: str, column: SideColumn) -> "SideField":
        """The field of a table's column: its values, or its quantile edges."""
        if column.kind == "number":
            known = np.asarray(column.values, np.float64)
            known = known[np.isfinite(known)]
            qs = np.linspace(0, 1, SIDE_BUCKETS + 1)[1:-1]
            edges = np.unique(np.quantile(known, qs)) if len(known) else np.array([])
            return cls(f"{side}:{column.name}", "number", [float(e) for e in edges])
        if column.kind == "multi":
            values = sorted({v for vs in column.values for v in vs})
        else:
            values = sorted({v for v in column.values if v is not None})
        return cls(f"{side}:{column.name}", column.kind, values)

    def columns(self, column: SideColumn | None, n: int, start: int):
        """(index [n], weight [n]) columns of the feature rows of a table's n rows (`column`
        None: the table lacks it, every row unknown); `start`: the field's offset."""
        if self.kind == "number":
            x = np.full(n, np.nan) if column is None else np.asarray(column.values, np.float64)
            bucket = np.searchsorted(np.asarray(self.values, np.float64), x, side="right") + 1
            bucket = np.where(np.isfinite(x), bucket, 0)  # 0: unknown
            return [(start + bucket, np.ones(n, np.float32))]
        position = {v: i for i, v in enumerate(self.values)}
        cells = [()] * n if column is None else column.values
        if self.kind == "category":
            cells = [(c,) if c is not None else () for c in cells]
        known = [[position[v] for v in cell if v in position] for cell in cells]
        width = max((len(k) for k in known), default=0)
        index, weight = np.zeros((n, width), np.int64), np.zeros((n, width), np.float32)
        for r, found in enumerate(known):
            index[r, : len(found)] = start + np.asarray(found, np.int64)
            weight[r, : len(found)] = 1.0 / max(len(found), 1)
        return [(index[:, j], weight[:, j]) for j in range(width)]


def side_fields(movies: Movies, users: Users | None) -> list[SideField]:
    """The side fields of a dataset's tables: the movies' side columns, then the users'."""
    fields = [SideField.of("movie", c) for c in movies.side.values()]
    if users is not None:
        fields += [SideField.of("user", c) for c in users.side.values()]
    return fields


def year_bucket(year: np.ndarray) -> np.ndarray:
    """Start of the 5-year bucket; 0 stays 0 (unknown year)."""
    year = np.asarray(year, dtype=np.int64)
    return np.where(year > 0, year // YEAR_BUCKET * YEAR_BUCKET, 0)


@dataclass
class Vocabulary:
    """Raw ids of each field, in index order, and where each field starts in the feature table."""

    user_ids: np.ndarray  # int64, sorted: users with training ratings
    movie_ids: np.ndarray  # int64, sorted: movies with training ratings (have an id feature)
    genres: list[str]
    year_buckets: np.ndarray  # int64, sorted; 0 = unknown year
    fields: tuple[str, ...]
    side: list[SideField] = field(default_factory=list)  # also named in `fields`

    @classmethod
    def build(
        cls,
        ratings: Ratings,
        movies: Movies,
        fields: tuple[str, ...],
        users: Users | None = None,
    ) -> "Vocabulary":
        """The vocabulary of `fields` from training ratings and the movie table, plus a side field
        per side column of `movies` and `users`; ConfigError for an unknown field."""
        unknown = set(fields) - set(USER_FIELDS + ITEM_FIELDS)
        if unknown:
            from fmstore.errors import ConfigError

            raise ConfigError(
                f"unknown feature field(s) {sorted(unknown)}; known: {USER_FIELDS + ITEM_FIELDS}"
            )
        genres = sorted({g for gs in movies.genres for g in gs})
        buckets = np.unique(np.concatenate([[0], year_bucket(movies.year)]))
        side = side_fields(movies, users)
        return cls(
            user_ids=_unique(ratings.user_id),
            movie_ids=_unique(ratings.movie_id),
            genres=genres,
            year_buckets=buckets,
            fields=tuple(fields) + tuple(f.name for f in side),
            side=side,
        )

    # Offsets: padding, then each field in a fixed order; absent fields take no room.
    def sizes(self) -> dict[str, int]:
        """Number of features of each used field, in feature-table order."""
        all_sizes = {
            "user": len(self.user_ids),
            "movie": len(self.movie_ids),
            "genre": len(self.genres),
            "year": len(self.year_buckets),
            "rated": len(self.movie_ids),  # one per movie with training ratings
        }
        all_sizes |= {f.name: f.size for f in self.side}
        movie_side = [f.name for f in self.side if f.side == "movie"]
        user_side = [f.name for f in self.side if f.side == "user"]
        order = TABLE_ORDER[:4] + tuple(movie_side + user_side) + TABLE_ORDER[4:]
        return {f: all_sizes[f] for f in order if f in self.fields}

    def offsets(self) -> dict[str, int]:
        """Index where each field's features start in the feature table (0 is padding)."""
        offsets, start = {}, 1  # 0 is padding
        for name, size in self.sizes().items():
            offsets[name] = start
            start += size
        return offsets

    @property
    def n_features(self) -> int:
        """Rows of the feature table: padding plus every field's features."""
        return 1 + sum(self.sizes().values())

    def user_index(self, raw_ids: np.ndarray) -> np.ndarray:
        """Row of each raw user id in `user_ids`, -1 where unknown."""
        return lookup_ids(self.user_ids, raw_ids)

    def movie_index(self, raw_ids: np.ndarray) -> np.ndarray:
        """Row of each raw movie id in `movie_ids`, -1 where the movie has no id feature."""
        return lookup_ids(self.movie_ids, raw_ids)

    def to_json(self) -> dict:
        """The parts that are not arrays (genres, fields), for the manifest."""
        meta = {"genres": self.genres, "fields": list(self.fields)}
        if self.side:
            meta["side"] = [{"name": f.name, "kind": f.kind, "values": f.values} for f in self.side]
        return meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> "Vocabulary":
        """The vocabulary back from `arrays()` and `to_json()` as saved in a run folder."""
        return cls(
            user_ids=arrays["vocab.user_ids"],
            movie_ids=arrays["vocab.movie_ids"],
            genres=list(meta["genres"]),
            year_buckets=arrays["vocab.year_buckets"],
            fields=tuple(meta["fields"]),
            side=[SideField(f["name"], f["kind"], list(f["values"])) for f in meta.get("side", ())],
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The id arrays, keyed as they are saved in a run folder's safetensors."""
        return {
            "vocab.user_ids": self.user_ids,
            "vocab.movie_ids": self.movie_ids,
            "vocab.year_buckets": self.year_buckets,
        }


def _dense_range(ids: np.ndarray) -> bool:
    """Whether ids are small non-negative integers (MovieLens ids are), so that a table indexed by
    id is cheaper than sorting or binary search (ml-latest: 25M ratings in ~0.1 s, not seconds)."""
    return len(ids) > 0 and int(ids.min()) >= 0 and int(ids.max()) <= 8 * len(ids) + (1 << 20)


def _unique(ids: np.ndarray) -> np.ndarray:
    """np.unique for integer ids (sorted, int64)."""
    ids = np.asarray(ids)
    if _dense_range(ids):
        return np.flatnonzero(np.bincount(ids)).astype(np.int64)
    return np.unique(ids).astype(np.int64)


def lookup_ids(sorted_ids: np.ndarray, raw_ids: np.ndarray, dtype=np.int64) -> np.ndarray:
    """Position of each raw id in sorted_ids (unique, sorted), -1 where absent."""
    raw_ids = np.asarray(raw_ids, dtype=np.int64)
    if len(sorted_ids) == 0:
        return np.full(len(raw_ids), -1, dtype=dtype)
    if _dense_range(sorted_ids) and int(sorted_ids[0]) >= 0:
        top = int(sorted_ids[-1])
        table = np.full(top + 2, -1, dtype=dtype)  # the last slot answers every id out of range
        table[sorted_ids] = np.arange(len(sorted_ids), dtype=dtype)
        return table[np.where((raw_ids >= 0) & (raw_ids <= top), raw_ids, top + 1)]
    pos = np.searchsorted(sorted_ids, raw_ids).clip(0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == raw_ids, pos, -1).astype(dtype)


@dataclass
class FeatureRows:
    """One fixed-width row of (feature index, weight) per entity; padding is (0, 0.0)."""

    index: np.ndarray  # int64 [n, width]
    weight: np.ndarray  # float32 [n, width]


def user_rows(vocab: Vocabulary, users: Users | None = None) -> FeatureRows:
    """Feature rows of the vocabulary's users, in `vocab.user_ids` order, plus one last all-padding
    row that stands for any user unseen at training (see `encode`); with user side fields, their
    columns from the `users` table (a user it lacks: no feature, or the unknown bucket)."""
    n = len(vocab.user_ids)
    index = np.zeros((n + 1, 1), np.int64)
    weight = np.zeros((n + 1, 1), np.float32)
    if "user" in vocab.fields:
        index[:n, 0] = vocab.offsets()["user"] + np.arange(n)
        weight[:n, 0] = 1.0
    fields = [f for f in vocab.side if f.side == "user"]
    if not fields:
        return FeatureRows(index, weight)
    columns = [(index[:, 0], weight[:, 0])]
    row = np.full(n, -1, np.int64)  # each user's row in the users table, -1: not there
    if users is not None:
        order = np.argsort(users.user_id, kind="stable")
        found = lookup_ids(users.user_id[order], vocab.user_ids)
        row = np.where(found >= 0, order[found.clip(0)], -1)
    offsets, padding = vocab.offsets(), np.arange(n + 1) == n
    for f in fields:
        column = users.side.get(f.name.split(":", 1)[1]) if users is not None else None
        if column is not None:  # the users' values in vocabulary order, the padding row last
            column = _rows_of(column, row)
        for i, w in f.columns(column, n + 1, offsets[f.name]):
            columns.append((np.where(padding, PAD, i), np.where(padding, 0, w)))
    return FeatureRows(
        np.stack([c[0] for c in columns], axis=1).astype(np.int64),
        np.stack([c[1] for c in columns], axis=1).astype(np.float32),
    )


def _rows_of(column: SideColumn, row: np.ndarray) -> SideColumn:
    """The column's values at table rows `row` (-1: missing) plus one missing row at the end."""
    row = np.append(row, -1)
    if isinstance(column.values, np.ndarray):
        values = np.where(row >= 0, column.values[row.clip(0)], np.nan)
    else:
        empty = () if column.kind == "multi" else None
        values = [column.values[r] if r >= 0 else empty for r in row]
    return SideColumn(column.name, column.kind, values)


@dataclass
class RatedRows:
    """The `rated` field as CSR: user row r has features index[indptr[r] : indptr[r + 1]] at
    weights 1/sqrt(n_r), one row per `user_rows` row (the unseen-user padding row is empty)."""

    indptr: np.ndarray  # int64 [n_user_rows + 1]
    index: np.ndarray  # int64: feature-table index of a movie's `rated` feature
    weight: np.ndarray  # float32
    block: np.ndarray  # int64 [first feature of the field, its number of features]
    of_item: np.ndarray  # int64 [n_movies]: each movie row's `rated` feature, -1 for none

    @classmethod
    def from_state(cls, state: dict) -> RatedRows | None:
        """The field as a model saved it (its `rated_*` buffers), or None for a model without."""
        if "rated_indptr" not in state:
            return None
        names = ("indptr", "index", "weight", "block", "of_item")
        return cls(*(np.asarray(state[f"rated_{name}"]) for name in names))


def rated_rows(vocab: Vocabulary, ratings: Ratings, movies: Movies) -> RatedRows | None:
    """Each user's training-rated movies as `rated` features (None when the field is not used);
    a movie rated twice by one user counts once. `movies`: the item rows' order."""
    if "rated" not in vocab.fields:
        return None
    user = vocab.user_index(ratings.user_id)
    movie = vocab.movie_index(ratings.movie_id)
    known = (user >= 0) & (movie >= 0)
    pairs = np.unique(user[known] * len(vocab.movie_ids) + movie[known])
    user, movie = pairs // len(vocab.movie_ids), pairs % len(vocab.movie_ids)
    counts = np.bincount(user, minlength=len(vocab.user_ids) + 1)  # + the padding row
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    weight = (1.0 / np.sqrt(np.maximum(counts, 1)))[user].astype(np.float32)
    first = vocab.offsets()["rated"]
    item = vocab.movie_index(movies.movie_id)
    of_item = np.where(item >= 0, first + item, -1).astype(np.int64)
    block = np.array([first, len(vocab.movie_ids)], np.int64)
    return RatedRows(indptr, first + movie, weight, block, of_item)


def item_rows(vocab: Vocabulary, movies: Movies) -> FeatureRows:
    """Feature rows of every movie of `movies` (in its order), rated or not."""
    offsets, n = vocab.offsets(), len(movies)
    columns: list[tuple[np.ndarray, np.ndarray]] = []  # (index [n], weight [n]) per column

    if "movie" in vocab.fields:
        row = vocab.movie_index(movies.movie_id)
        known = row >= 0
        columns.append((np.where(known, offsets["movie"] + row, PAD), known.astype(np.float32)))

    if "genre" in vocab.fields:
        genre_pos = {g: i for i, g in enumerate(vocab.genres)}
        width = max((len(gs) for gs in movies.genres), default=0)
        g_index = np.zeros((n, width), np.int64)
        g_weight = np.zeros((n, width), np.float32)
        for m, gs in enumerate(movies.genres):
            known_genres = [genre_pos[g] for g in gs if g in genre_pos]
            for slot, pos in enumerate(known_genres):
                g_index[m, slot] = offsets["genre"] + pos
                g_weight[m, slot] = 1.0 / len(known_genres)
        columns.extend((g_index[:, j], g_weight[:, j]) for j in range(width))

    if "year" in vocab.fields:
        bucket = lookup_ids(vocab.year_buckets, year_bucket(movies.year))
        bucket = np.where(bucket >= 0, bucket, 0)  # a bucket unseen at training -> unknown
        columns.append((offsets["year"] + bucket, np.ones(n, np.float32)))

    for f in vocab.side:  # a column the table lacks (a movie added live): unknown
        if f.side == "movie":
            column = movies.side.get(f.name.split(":", 1)[1])
            columns.extend(f.columns(column, n, offsets[f.name]))

    if not columns:
        return FeatureRows(np.zeros((n, 1), np.int64), np.zeros((n, 1), np.float32))
    return FeatureRows(
        np.stack([c[0] for c in columns], axis=1).astype(np.int64),
        np.stack([c[1] for c in columns], axis=1).astype(np.float32),
    )


@dataclass
class EncodedRatings:
    """Ratings as rows into the user and item feature tables (int32: half the memory at scale)."""

    user: np.ndarray  # int32 row in user_rows; len(vocab.user_ids) (the padding row) if unseen
    item: np.ndarray  # int32 row in item_rows (movies.csv order)
    rating: np.ndarray  # float32


def encode(ratings: Ratings, vocab: Vocabulary, movies: Movies) -> EncodedRatings:
    """Ratings as (user row, item row, rating) for training; users outside the vocabulary get the
    padding row."""
    user = lookup_ids(vocab.user_ids, ratings.user_id, np.int32)
    user[user < 0] = len(vocab.user_ids)
    return EncodedRatings(
        user=user,
        item=_movie_rows(movies)(ratings.movie_id),
        rating=ratings.rating.astype(np.float32),
    )


def _movie_rows(movies: Movies):
    order = np.argsort(movies.movie_id, kind="stable").astype(np.int32)
    sorted_ids = movies.movie_id[order]

    def rows(raw_ids: np.ndarray) -> np.ndarray:
        found = lookup_ids(sorted_ids, raw_ids, np.int32)
        # datasets validation guarantees every rated movie is in movies.csv
        return order[found]

    return rows


def item_feature_span(vocab: Vocabulary, side: bool = True) -> tuple[int, int]:
    """[first, end) of the item features other than the movie id in the feature table: genres,
    year and (`side`) the movies' side fields, one block; (0, 0) when there are none."""
    offsets, sizes = vocab.offsets(), vocab.sizes()
    used = [f for f in ("genre", "year") if f in offsets]
    used += [f.name for f in vocab.side if f.side == "movie" and side]
    first = min((offsets[f] for f in used), default=0)
    end = max((offsets[f] + sizes[f] for f in used), default=0)
    return first, end


def ranking_item_features(vocab: Vocabulary, movies: Movies):
    """The FM's genre and year features (genres at 1/n_genres, the year bucket) as one CSR row
    per movie: (indptr, column, weight), n_columns; for the ranking model. Not the side fields:
    its feature step keeps dense [users, feature columns] float32 matrices (ranking_features: 283k
    users x a column of 5,000 values would be 5.7 GB each) and each user's feature pairs."""
    rows = item_rows(vocab, movies)
    first, end = item_feature_span(vocab, side=False)
    keep = (rows.index >= first) & (rows.index < end) & (rows.weight != 0)
    indptr = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    return (indptr, rows.index[keep] - first, rows.weight[keep].astype(np.float64)), int(
        end - first
    )
