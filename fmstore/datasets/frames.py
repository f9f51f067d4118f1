"""Datasets from pandas DataFrames, so that a notebook can train without writing files.

`from_frames(ratings_df, movies_df)` returns the same `Dataset` that `load_dataset` returns for a
folder, validated by the same code: the frames are written to CSV in memory and parsed by
validate.py, and each error's CSV line is given back as the frame's row label, so a message
names the frame, the row (its index label) and the column as it does a file's line.

Columns: ratings need a user, a movie and a rating column (MovieLens's names userId, movieId,
rating unless told; a time column is optional, 0 when absent, and may hold datetimes); movies
(optional: without them each movie is titled by its id) need movieId, title and genres ("A|B", or
"(no genres listed)"). Other columns are ignored, except the side columns asked for
(`movie_features`, and `user_features` of a `users` frame: datasets.side), which become FM fields.

Ids are a person's own: whole numbers are used as they are (floats that are whole numbers too);
any other ids (text, UUIDs) are mapped to whole numbers 0, 1, ... and the Dataset keeps the
originals (`user_keys`, `movie_keys`), which the run folder stores and every answer of
fmstore.notebook uses. Ids that are neither text nor numbers are used as their text, str(id).

The rating scale is given (`rating_scale=(1, 10)`) or inferred: MovieLens's half stars when every
rating is one, whole numbers up to 10 (1..10, or 0..10 with a 0), 0..1 (likes, fractions) or
-1..1 (thumbs up and down); anything else is held to the half-star scale and refused there.
"""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np

from fmstore.datasets.side import Users, fingerprint_bytes, parse_specs, side_columns
from fmstore.datasets.types import MOVIES_COLUMNS, RATINGS_COLUMNS, Dataset
from fmstore.datasets.validate import parse_movies, parse_ratings
from fmstore.errors import DataError

RATINGS_LABEL = "the ratings DataFrame"
MOVIES_LABEL = "the movies DataFrame"
USERS_LABEL = "the users DataFrame"
OPTIONAL_RATINGS = {"timestamp": 0}
_LINES = re.compile(r"\b(lines?) (\d+)(?: and (\d+))?")


def from_frames(
    ratings,
    movies=None,
    name: str = "dataframes",
    *,
    user_col: str = "userId",
    item_col: str = "movieId",
    rating_col: str = "rating",
    time_col: str = "timestamp",
    rating_scale: tuple[float, float] | None = None,
    labels: tuple[str, str] = (RATINGS_LABEL, MOVIES_LABEL),
    weight_col: str | None = None,
    movie_features=(),
    users=None,
    user_features=(),
    users_label: str = USERS_LABEL,
) -> Dataset:
    """A validated Dataset from a ratings DataFrame and, optionally, a movies DataFrame (the
    columns of ratings.csv and movies.csv; `*_col` name the ratings' columns when they are not
    MovieLens's). Bad input raises DataError naming the frame (as `labels` say: ratings, movies),
    row and column. `rating_col=None`: implicit-only data (see `_implicit`), with an optional
    `weight_col` (plays, clicks). `movie_features`: side columns of `movies` ("country",
    "runtime:num", "tags:multi", datasets.side); `user_features`: side columns of `users` (a frame
    with the ratings' user column, or userId), both FM fields."""
    ratings_label, movies_label = labels
    movie_specs = parse_specs(movie_features, "movie_features")
    user_specs = parse_specs(user_features, "user_features")
    if movie_specs and movies is None:
        raise DataError("movie side features need a movies table: give movies with those columns")
    if user_specs and users is None:
        raise DataError("user side features need a users table: give users with those columns")
    implicit = rating_col is None
    if implicit:
        ratings = _implicit(ratings, ratings_label, user_col, item_col, weight_col, time_col)
        rating_col, rating_scale = "rating", (0.0, 1.0)
    ratings = _renamed(ratings, ratings_label, user_col, item_col, rating_col, time_col, True)
    needed = {"userId": user_col, "movieId": item_col, "rating": rating_col}
    for ours, given in needed.items():
        if ours not in ratings.columns:
            raise DataError(
                f"{ratings_label} has no column {given!r}; it needs {user_col}, {item_col}, "
                f"{rating_col} (it has {', '.join(map(str, ratings.columns)) or 'none'})"
            )
    if movies is None:
        movies = _movies_of(ratings)
    else:
        # the movies' id column: named as the ratings' one, or movieId
        movies = _renamed(movies, movies_label, None, item_col, None, None, False)
    ratings, movies, user_keys, movie_keys = _whole_number_ids(ratings, movies, labels)
    scale = _rating_scale(ratings, rating_scale)
    movies_bytes = _csv_bytes(movies, MOVIES_COLUMNS, {}, movies_label)
    ratings_bytes = _csv_bytes(ratings, RATINGS_COLUMNS, OPTIONAL_RATINGS, ratings_label)
    try:
        parsed_movies = parse_movies(movies_bytes, movies_label)
    except DataError as exc:
        raise DataError(_rows_named(str(exc), movies.index)) from None
    half_stars = scale == (0.5, 5.0) and rating_scale is None
    try:
        parsed_ratings = parse_ratings(
            ratings_bytes, ratings_label, parsed_movies, movies_label, None if half_stars else scale
        )
    except DataError as exc:
        raise DataError(_rows_named(str(exc), ratings.index)) from None
    parsed_movies.side = side_columns(movies, movie_specs, movies_label)
    user_table = None
    if user_specs:
        user_table = users_table(users, user_specs, users_label, user_col, user_keys)
    digest = hashlib.sha256(ratings_bytes)
    digest.update(movies_bytes)
    if user_keys or movie_keys:  # the same codes for other ids are another dataset
        digest.update(repr((user_keys, movie_keys)).encode())
    if movie_specs or user_specs:  # other side columns: another dataset
        digest.update(fingerprint_bytes(parsed_movies.side))
        if user_table is not None:
            digest.update(user_table.user_id.tobytes() + fingerprint_bytes(user_table.side))
    return Dataset(
        name,
        "<DataFrame>",
        digest.hexdigest(),
        parsed_ratings,
        parsed_movies,
        rating_scale=scale,
        user_keys=user_keys,
        movie_keys=movie_keys,
        implicit=implicit,
        users=user_table,
    )


def users_table(frame, specs, label: str, user_col: str, user_keys) -> Users:
    """The users frame (ids in the ratings' user column, or userId) as a Users table of the
    ratings' whole-number ids; users nobody's ratings name are left out."""
    import pandas as pd

    frame = _renamed(frame, label, user_col, None, None, None, False)
    if "userId" not in frame.columns:
        raise DataError(
            f"{label} has no column {user_col!r} (the users' ids, as in the ratings); it has "
            f"{', '.join(map(str, frame.columns)) or 'none'}"
        )
    columns = side_columns(frame, specs, label)
    keys = frame["userId"].map(_key)
    if user_keys is not None:
        code = {k: i for i, k in enumerate(user_keys)}
        ids = pd.array([code.get(k) for k in keys], dtype="Int64")
    else:
        numbers = _as_numbers(frame["userId"])
        if numbers is None:
            raise DataError(
                f"{label}: its user ids are not whole numbers, but the ratings' are; "
                "use the ratings' ids"
            )
        ids = pd.array(numbers, dtype="Int64")
    twice = keys.duplicated(keep=False) & keys.notna()
    if twice.any():
        rows = list(keys.index[twice][:2])
        raise DataError(
            f"{label} rows {rows[0]!r} and {rows[1]!r}: user '{keys[rows[0]]}' appears twice; "
            "keep one of the two rows"
        )
    known = ~pd.isna(ids)
    keep = np.flatnonzero(np.asarray(known, dtype=bool))
    side = {name: type(c)(c.name, c.kind, _taken(c.values, keep)) for name, c in columns.items()}
    return Users(np.asarray(ids[keep], dtype=np.int64), side)


def _taken(values, keep: np.ndarray):
    """The entries of a side column's values at positions `keep`."""
    if isinstance(values, np.ndarray):
        return values[keep]
    return [values[i] for i in keep]


def _implicit(frame, label: str, user_col, item_col, weight_col, time_col):
    """Implicit-only data (no ratings): one row per (user, movie), its weight the sum of
    `weight_col` (plays) or the number of rows (clicks); rating 1 for a weight above the median,
    0.5 for the others (the ranking model's confidence: 1 + conf_alpha for the heavier pairs),
    every rating 1 when none is above it (all weights equal). The rating FM is not fit on them."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        return frame  # _renamed says what it needs
    for column in (user_col, item_col) + ((weight_col,) if weight_col else ()):
        if column not in frame.columns:
            raise DataError(
                f"{label} has no column {column!r} (it has "
                f"{', '.join(map(str, frame.columns)) or 'none'})"
            )
    keys = [user_col, item_col]
    if weight_col:
        weights = pd.to_numeric(frame[weight_col], errors="coerce")
        bad = ~np.isfinite(weights) | (weights < 0)
        if bad.any():
            row = frame.index[bad.to_numpy()][0]
            raise DataError(
                f"{label} row {row!r}: {weight_col} '{frame.at[row, weight_col]}' is not a "
                "number >= 0; fix or remove that row"
            )
        grouped = frame.assign(_w=weights).groupby(keys, sort=False, dropna=False)
        weight = grouped["_w"].sum()
    else:
        grouped = frame.groupby(keys, sort=False, dropna=False)
        weight = grouped.size()
    out = weight.rename("weight").reset_index()
    if time_col in frame.columns:
        out[time_col] = grouped[time_col].max().to_numpy()
    weight, median = out["weight"].to_numpy(), float(np.median(out["weight"]))
    heavier = weight > median if (weight > median).any() else weight >= median
    out["rating"] = np.where(heavier, 1.0, 0.5)
    return out.drop(columns="weight")


def _renamed(frame, label: str, user_col, item_col, rating_col, time_col, is_ratings: bool):
    """The frame with its columns under MovieLens's names (a column of that name it already had
    and that is not wanted is dropped, so that the renamed one is read)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        needs = RATINGS_COLUMNS if is_ratings else MOVIES_COLUMNS
        raise DataError(
            f"{label}: expected a pandas DataFrame with columns {', '.join(needs)}, "
            f"got {type(frame).__name__}"
        )
    names = {user_col: "userId", item_col: "movieId", rating_col: "rating", time_col: "timestamp"}
    names = {given: ours for given, ours in names.items() if given and given != ours}
    if not names:
        return frame
    for given in names:
        if given not in frame.columns and is_ratings and given != time_col:
            raise DataError(
                f"{label} has no column {given!r} (it has "
                f"{', '.join(map(str, frame.columns)) or 'none'})"
            )
    present = {g: o for g, o in names.items() if g in frame.columns}
    if not present:
        return frame
    clashing = [o for o in present.values() if o in frame.columns]
    return frame.drop(columns=clashing).rename(columns=present)


def _movies_of(ratings):
    """A movies frame for ratings that came without one: each movie titled by its id."""
    import pandas as pd

    if "movieId" not in ratings.columns:
        return pd.DataFrame({"movieId": []})  # the missing column is named by _csv_bytes
    ids = pd.unique(ratings["movieId"].dropna())
    return pd.DataFrame({"movieId": ids, "title": [str(i) for i in ids], "genres": ""})


def _whole_number_ids(ratings, movies, labels: tuple[str, str]):
    """(ratings, movies, user keys, movie keys) with ids as whole numbers: numbers kept, other
    ids mapped to 0, 1, ... (keys: the originals, None when kept)."""
    import pandas as pd

    if "userId" not in ratings.columns or "movieId" not in ratings.columns:
        return ratings, movies, None, None  # _csv_bytes names the missing column
    if "movieId" not in movies.columns:
        return ratings, movies, None, None
    ratings, movies = ratings.copy(), movies.copy()
    ratings_label, movies_label = labels
    user_keys = None
    users = _as_numbers(ratings["userId"])
    if users is None:
        codes, uniques = pd.factorize(ratings["userId"].map(_key), use_na_sentinel=True)
        ratings["userId"] = np.where(codes < 0, np.nan, codes)
        ratings["userId"] = ratings["userId"].astype("Int64")
        user_keys = list(uniques)
    else:
        ratings["userId"] = users
    movie_keys = None
    in_movies, in_ratings = _as_numbers(movies["movieId"]), _as_numbers(ratings["movieId"])
    if in_movies is not None and in_ratings is not None:
        movies["movieId"], ratings["movieId"] = in_movies, in_ratings
    else:
        keys = movies["movieId"].map(_key)
        twice = keys.duplicated(keep=False) & keys.notna()
        if twice.any():
            rows = list(keys.index[twice][:2])
            raise DataError(
                f"{movies_label} rows {rows[0]} and {rows[1]}: movieId "
                f"'{keys[rows[0]]}' appears twice; keep one of the two rows"
            )
        code = {k: i for i, k in enumerate(keys) if k is not None}
        movies["movieId"] = pd.array([code.get(k) for k in keys], dtype="Int64")
        wanted = ratings["movieId"].map(_key)
        unknown = wanted.notna() & ~wanted.isin(list(code))
        if unknown.any():
            row = unknown.index[unknown][0]
            raise DataError(
                f"{ratings_label} row {row!r}: movieId '{wanted[row]}' is not in "
                f"{movies_label} ({int(unknown.sum()):,} rows in all); add the movie there or "
                "remove the rating"
            )
        ratings["movieId"] = pd.array([code.get(k) for k in wanted], dtype="Int64")
        movie_keys = list(keys)
    _check_keyed_pairs(ratings, user_keys, movie_keys, ratings_label)
    return ratings, movies, user_keys, movie_keys


def _key(value):
    """A person's id as it is kept: text and whole numbers as they are, anything else as text."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, (str, int)) and not isinstance(value, bool) else str(value)


def _as_numbers(column):
    """An id column as whole numbers when it holds numbers (floats only when all whole), else
    None (it is then mapped to whole numbers)."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(column):
        return None
    if pd.api.types.is_integer_dtype(column):
        return column
    if pd.api.types.is_float_dtype(column):
        whole = column.dropna()
        if (whole == np.floor(whole)).all() and np.isfinite(whole).all():
            return column.astype("Int64")
    return None


def _check_keyed_pairs(ratings, user_keys, movie_keys, label: str) -> None:
    """With mapped ids, a (user, movie) pair rated twice is named here by the person's ids."""
    if user_keys is None and movie_keys is None:
        return
    twice = ratings.duplicated(["userId", "movieId"], keep=False) & ratings["userId"].notna()
    if not twice.any():
        return
    rows = list(ratings.index[twice][:2])
    user, movie = ratings.at[rows[0], "userId"], ratings.at[rows[0], "movieId"]
    user = user_keys[int(user)] if user_keys else user
    movie = movie_keys[int(movie)] if movie_keys else movie
    raise DataError(
        f"{label} rows {rows[0]!r} and {rows[1]!r}: user {user!r} rated movie "
        f"{movie!r} twice; keep one of the two rows"
    )


# The scales inferred when none is given, tried in this order after MovieLens's half stars.
_INFERRED = ((0.0, 1.0), (-1.0, 1.0))


def _rating_scale(ratings, given) -> tuple[float, float]:
    """The scale given, checked, or the one the ratings are on (see the module docstring)."""
    if given is not None:
        try:
            lo, hi = (float(v) for v in given)
        except (TypeError, ValueError):
            raise DataError(f"rating_scale {given!r}: give (lowest, highest)") from None
        if not lo < hi:
            raise DataError(f"rating_scale {given!r}: the lowest must be below the highest")
        return lo, hi
    if "rating" not in ratings.columns:
        return 0.5, 5.0
    import pandas as pd

    values = pd.to_numeric(ratings["rating"], errors="coerce").to_numpy(np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return 0.5, 5.0
    lo, hi = float(values.min()), float(values.max())
    twice = values * 2
    if lo >= 0.5 and hi <= 5.0 and (twice == np.floor(twice)).all():
        return 0.5, 5.0
    if lo >= 0 and hi <= 10 and (values == np.floor(values)).all():
        return (0.0 if lo == 0 else 1.0), 10.0
    for scale in _INFERRED:
        if scale[0] <= lo and hi <= scale[1]:
            return scale
    return 0.5, 5.0  # held to the half stars: the error names the first rating off them


def _csv_bytes(frame, columns: tuple[str, ...], optional: dict, label: str) -> bytes:
    """`frame`'s `columns` as CSV text with a header (optional ones filled in when absent)."""
    import pandas as pd

    missing = [c for c in columns if c not in frame.columns and c not in optional]
    if missing:
        raise DataError(
            f"{label} has no column {missing[0]!r}; it needs {', '.join(columns)} "
            f"(it has {', '.join(map(str, frame.columns)) or 'none'})"
        )
    table = frame.reindex(columns=list(columns))
    for column, default in optional.items():
        if column not in frame.columns:
            table[column] = default
    if "timestamp" in table.columns and pd.api.types.is_datetime64_any_dtype(table["timestamp"]):
        stamps = table["timestamp"]
        table["timestamp"] = (stamps - pd.Timestamp(0, tz=stamps.dt.tz)) // pd.Timedelta("1s")
    buffer = io.StringIO()
    table.to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue().encode()


def _rows_named(message: str, index) -> str:
    """'line 5' (of the CSV form; the header is line 1) -> "row <index label of row 3>"."""

    def label(line: str) -> str:
        position = int(line) - 2
        if not 0 <= position < len(index):
            return line
        value = index[position]
        value = value.item() if hasattr(value, "item") else value  # NumPy scalar -> Python
        return repr(value) if isinstance(value, str) else str(value)

    def replace(match: re.Match) -> str:
        word = "rows" if match.group(1) == "lines" else "row"
        first = label(match.group(2))
        if match.group(3) is None:
            return f"{word} {first}"
        return f"{word} {first} and {label(match.group(3))}"

    return _LINES.sub(replace, message)
