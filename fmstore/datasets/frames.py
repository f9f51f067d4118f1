"""Datasets from pandas DataFrames, so that a notebook can train without writing files.

`from_frames(ratings_df, movies_df)` returns the same `Dataset` that `load_dataset` returns for a
folder, validated by the same code: the frames are written to CSV in memory and parsed by
validate.py, and each error's CSV line is given back as the frame's row label, so a message
names the frame, the row (its index label) and the column as it does a file's line.

Columns: ratings need userId, movieId, rating (timestamp optional, 0 when absent); movies need
movieId, title, genres ("A|B", or "(no genres listed)"). Other columns are ignored.
"""

from __future__ import annotations

import hashlib
import io
import re

from fmstore.datasets.types import MOVIES_COLUMNS, RATINGS_COLUMNS, Dataset
from fmstore.datasets.validate import parse_movies, parse_ratings
from fmstore.errors import DataError

RATINGS_LABEL = "the ratings DataFrame"
MOVIES_LABEL = "the movies DataFrame"
OPTIONAL_RATINGS = {"timestamp": 0}
_LINES = re.compile(r"\b(lines?) (\d+)(?: and (\d+))?")


def from_frames(ratings, movies, name: str = "dataframes") -> Dataset:
    """A validated Dataset from a ratings DataFrame and a movies DataFrame (the columns of
    ratings.csv and movies.csv). Bad input raises DataError naming the frame, row and column."""
    movies_bytes = _csv_bytes(movies, MOVIES_COLUMNS, {}, MOVIES_LABEL)
    ratings_bytes = _csv_bytes(ratings, RATINGS_COLUMNS, OPTIONAL_RATINGS, RATINGS_LABEL)
    try:
        parsed_movies = parse_movies(movies_bytes, MOVIES_LABEL)
    except DataError as exc:
        raise DataError(_rows_named(str(exc), movies.index)) from None
    try:
        parsed_ratings = parse_ratings(ratings_bytes, RATINGS_LABEL, parsed_movies, MOVIES_LABEL)
    except DataError as exc:
        raise DataError(_rows_named(str(exc), ratings.index)) from None
    digest = hashlib.sha256(ratings_bytes)
    digest.update(movies_bytes)
    return Dataset(name, "<DataFrame>", digest.hexdigest(), parsed_ratings, parsed_movies)


def _csv_bytes(frame, columns: tuple[str, ...], optional: dict, label: str) -> bytes:
    """`frame`'s `columns` as CSV text with a header (optional ones filled in when absent)."""
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise DataError(
            f"{label}: expected a pandas DataFrame with columns {', '.join(columns)}, "
            f"got {type(frame).__name__}"
        )
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
