"""A person's own ratings file: one CSV (any column names, any ids, any rating scale, optionally a
movies CSV beside it), read with pandas and validated by from_frames.

`load_csv` is what `--data ratings.csv` and the `--user-col/--item-col/--rating-col/--time-col`,
`--movies`, `--rating-scale` flags read, and the side columns of `--movie-features`, `--users`
and `--user-features` (datasets.side); the Dataset remembers how it was read (`read_as`), so a
run's manifest can read it again the same way (evaluate, report).
"""

from __future__ import annotations

from pathlib import Path

from fmstore.datasets.frames import from_frames
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
