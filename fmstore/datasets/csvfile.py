"""A person's own ratings file: one CSV (any column names, any ids, any rating scale, optionally a
movies CSV beside it), read with pandas and validated by from_frames.

`load_csv` is what `--data ratings.csv` and the `--user-col/--item-col/--rating-col/--time-col`,
`--movies`, `--rating-scale` flags read, and the side columns of `--movie-features`, `--users`
and `--user-features` (datasets.side); the Dataset remembers how it was read (`read_as`), so a
run's manifest can read it again the same way (evaluate, report).
"""

from __future__ import annotations

from pathlib import Path

from fmstore.datasets.frames import from_frames, users_table
from fmstore.datasets.side import fingerprint_bytes, parse_specs, side_columns
from fmstore.datasets.types import Dataset
from fmstore.errors import DataError

# How load_csv can be told to read a file: what a manifest's dataset.read_as holds.
READ_AS = (
    "movies",
    "user_col",
    "item_col",
    "rating_col",
    "time_col",
    "rating_scale",
    "implicit",
    "weight_col",
    "movie_features",
    "users",
    "user_features",
)
# The options that add side columns to a MovieLens folder or zip (`add_side_columns`).
SIDE_READ_AS = ("movies", "movie_features", "users", "user_features")


def load_csv(
    path: str | Path,
    movies: str | Path | None = None,
    *,
    user_col: str = "userId",
    item_col: str = "movieId",
    rating_col: str = "rating",
    time_col: str = "timestamp",
    rating_scale: tuple[float, float] | None = None,
    implicit: bool = False,
    weight_col: str | None = None,
    movie_features=(),
    users: str | Path | None = None,
    user_features=(),
) -> Dataset:
    """A validated Dataset from a ratings CSV (and a movies CSV with movieId, title, genres, or
    the id column named as the ratings' one; without it each movie is titled by its id).
    `implicit`: no ratings, only which movies each user picked (`weight_col`: how much).
    `movie_features`: side columns of the movies CSV; `user_features`: of the `users` CSV (its
    user id column named as the ratings' one, or userId), as datasets.side's specs."""
    movie_features, user_features = _specs(movie_features), _specs(user_features)
    if movie_features and not movies:
        raise DataError("--movie-features: give the movies CSV that has them (--movies)")
    if user_features and not users:
        raise DataError("--user-features: give the users CSV that has them (--users)")
    ratings_frame = _read(Path(path), "ratings")
    movies_frame = _read(Path(movies), "movies") if movies else None
    users_frame = _read(Path(users), "users") if users and user_features else None
    labels = (str(path), str(movies) if movies else "the movies")
    users_label = str(users) if users else "the users"
    try:
        dataset = from_frames(
            ratings_frame,
            movies_frame,
            Path(path).stem,
            user_col=user_col,
            item_col=item_col,
            rating_col=None if implicit else rating_col,
            time_col=time_col,
            rating_scale=rating_scale,
            labels=labels,
            weight_col=weight_col,
            movie_features=movie_features,
            users=users_frame,
            user_features=user_features,
            users_label=users_label,
        )
    except DataError as exc:  # the frames' rows are the files' line numbers
        message = str(exc)
        for label in (*labels, users_label):
            message = message.replace(f"{label} row ", f"{label} line ")
            message = message.replace(f"{label} rows ", f"{label} lines ")
        raise DataError(message) from None
    dataset.source = str(Path(path).resolve())
    read_as = dict(
        movies=str(Path(movies).resolve()) if movies else None,
        user_col=user_col,
        item_col=item_col,
        rating_col=rating_col,
        time_col=time_col,
        rating_scale=list(rating_scale) if rating_scale else None,
        implicit=implicit,
        weight_col=weight_col,
    )
    if movie_features or user_features:  # (older manifests: without these keys)
        read_as |= dict(
            movie_features=list(movie_features),
            users=str(Path(users).resolve()) if users else None,
            user_features=list(user_features),
        )
    dataset.read_as = read_as
    return dataset


def add_side_columns(
    dataset: Dataset,
    movies: str | Path | None = None,
    movie_features=(),
    users: str | Path | None = None,
    user_features=(),
) -> Dataset:
    """A MovieLens dataset (folder or zip, read as always) with side columns: `movie_features`
    from the `movies` CSV (by movieId; movies it lacks: unknown; its titles and genres are not
    read: the dataset's own are), `user_features` from the `users` CSV. Ratings and movies stay
    the arrays of the plain dataset (same order, same cache), so a run with and without side
    columns trains on the same rows."""
    import hashlib

    import numpy as np

    movie_features, user_features = _specs(movie_features), _specs(user_features)
    if movie_features and not movies:
        raise DataError("--movie-features: give the movies CSV that has them (--movies)")
    if user_features and not users:
        raise DataError("--user-features: give the users CSV that has them (--users)")
    digest = hashlib.sha256(dataset.fingerprint.encode())
    if movie_features:
        frame = _read(Path(movies), "movies")
        if "movieId" not in frame.columns:
            raise DataError(f"{movies} has no column 'movieId'; it needs movieId and the columns")
        ids = pd_numbers(frame["movieId"], str(movies))
        side = _lines(side_columns, frame, parse_specs(movie_features), str(movies))
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(ids[order], dataset.movies.movie_id).clip(0, max(len(ids) - 1, 0))
        found = (len(ids) > 0) & (ids[order][at] == dataset.movies.movie_id)
        row = np.where(found, order[at], -1)  # each movie's row in the file, -1: not there
        dataset.movies.side = {n: _at_rows(c, row) for n, c in side.items()}
        digest.update(fingerprint_bytes(dataset.movies.side))
    if user_features:
        frame = _read(Path(users), "users")
        specs = parse_specs(user_features)
        dataset.users = _lines(users_table, frame, specs, str(users), "userId", None)
        digest.update(dataset.users.user_id.tobytes() + fingerprint_bytes(dataset.users.side))
    dataset.fingerprint = digest.hexdigest()
    dataset.read_as = dict(
        movies=str(Path(movies).resolve()) if movies else None,
        movie_features=movie_features,
        users=str(Path(users).resolve()) if users else None,
        user_features=user_features,
    )
    return dataset


def _lines(read, frame, specs, label: str, *more):
    """`read(frame, specs, label, *more)` with its errors' rows named as the file's lines."""
    try:
        return read(frame, specs, label, *more)
    except DataError as exc:
        message = str(exc).replace(f"{label} rows ", f"{label} lines ")
        raise DataError(message.replace(f"{label} row ", f"{label} line ")) from None


def _at_rows(column, row):
    """A side column's values at table rows `row` (-1: the table lacks that movie: unknown)."""
    import numpy as np

    if isinstance(column.values, np.ndarray):
        values = np.where(row >= 0, column.values[row.clip(0)], np.nan)
    else:
        empty = () if column.kind == "multi" else None
        values = [column.values[r] if r >= 0 else empty for r in row]
    return type(column)(column.name, column.kind, values)


def pd_numbers(column, label: str):
    """A movieId column as int64, or a DataError naming its first id that is not a number."""
    import numpy as np
    import pandas as pd

    numbers = pd.to_numeric(column, errors="coerce")
    bad = numbers.isna() | (numbers != np.floor(numbers))
    if bad.any():
        row = column.index[bad.to_numpy()][0]
        raise DataError(f"{label} line {row}: movieId '{column[row]}' is not a whole number")
    return numbers.to_numpy(np.int64)


def _specs(specs) -> list[str]:
    """Side column specs as a list: 'a,b:num' or a list of them."""
    if isinstance(specs, str):
        specs = specs.split(",")
    return [str(s).strip() for s in specs or () if str(s).strip()]


def _read(path: Path, what: str):
    """A CSV as a DataFrame, ids kept as they are written (text stays text)."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"no such file: {path}; pass a {what} CSV file")
    try:
        frame = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        frame.index = frame.index + 2  # the line of each row (the header is line 1)
        return frame
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = " ".join(str(exc).split())[:200]
        raise DataError(f"{path}: cannot be read as CSV ({first}); check its format") from None
