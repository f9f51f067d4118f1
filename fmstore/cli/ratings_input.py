"""A new user's ratings as typed: `--rated "TITLE=RATING"` flags and ratings files, read into
(title or movie id, rating, where) triples with one-line errors that say where the bad value is.

Resolving titles and checking ratings against a run is the query's job (fmstore.cli.query).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

from fmstore.errors import ConfigError, DataError

# Ids are MovieLens ids: whole numbers that fit a 64-bit integer (what Qdrant and the catalog hold).
MAX_ID = 2**63 - 1


def check_id(value: int, where: str) -> int:
    """A user or movie id as typed: refused in one line when negative or past 64 bits."""
    if not 0 <= value <= MAX_ID:
        raise ConfigError(f"{where} {value}: an id is a whole number from 0 to {MAX_ID}")
    return value


# Far past any real title (the longest in ml-32m is under 200): a longer one is refused before
# fuzzy matching spends seconds on it.
MAX_TITLE_CHARS = 500


def check_title_length(title: str, where: str) -> str:
    """A title as typed: refused in one line when it is longer than any title can be."""
    if len(title) > MAX_TITLE_CHARS:
        raise ConfigError(
            f"{where}: a title of {len(title):,} characters; titles are at most "
            f"{MAX_TITLE_CHARS} ('{title[:40]}...')"
        )
    return title


# One rating as the flags or a ratings file gave it: (title or movie id, rating, where it was
# given, for messages: '--rated "Toy Story=5"' or 'me.csv, line 3').
RatingInput = tuple[str | int, float, str]


def parse_rating(text: str, where: str) -> float:
    """A rating value as typed -> float; one-line DataError naming the value when it is not one."""
    try:
        value = float(str(text).strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{where}: rating {str(text).strip()!r} is not a number")
    return value


def parse_rated(items: Sequence[str]) -> list[RatingInput]:
    """`--rated "Title=4.5"` values -> [(title, rating, where)]; the last '=' is the separator."""
    parsed: list[RatingInput] = []
    for item in items:
        title, sep, rating = str(item).rpartition("=")
        where = f'--rated "{item}"'
        if not sep or not title.strip():
            raise ConfigError(
                f"{where}: expected TITLE=RATING or id:MOVIE_ID=RATING, e.g. --rated "
                '"Toy Story (1995)=4.5" or --rated "id:1=4.5"'
            )
        key: str | int = title.strip()
        if key.lower().startswith("id:"):  # a movie id, as a title never reads
            number = key[3:].strip()
            if not number.isdigit():
                raise ConfigError(f"{where}: id:{number} is not a movie id (a whole number)")
            key = int(number)
        parsed.append((key, parse_rating(rating, where), where))
    return parsed


# 16 MiB: every movie of ml-latest (86,000) rated by title is about 4 MiB.
RATINGS_FILE_LIMIT = 16 << 20


def read_ratings_file(path: Path) -> list[RatingInput]:
    """A CSV with a header: `movieId` (or `movie_id`) or `title`, and `rating`.

    Returns [(movie id or title, rating, where)] where `where` names file and line for messages."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            # Bounded: /dev/zero or a runaway pipe must not be read into memory without end.
            data = raw.read(RATINGS_FILE_LIMIT + 1)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the ratings file ({exc.strerror or exc})") from None
    if len(data) > RATINGS_FILE_LIMIT:
        raise DataError(
            f"{path}: larger than {RATINGS_FILE_LIMIT >> 20} MiB, more than one person's "
            "ratings; give a CSV of title or movieId and rating"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); save it as UTF-8"
        ) from None
    with io.StringIO(text, newline="") as f:
        try:
            reader = csv.DictReader(f)
            columns = _ratings_file_columns(path, reader.fieldnames or [])
            rows = [
                _ratings_file_row(record, columns, f"{path}, line {reader.line_num}")
                for record in reader
            ]
        except csv.Error as exc:
            raise DataError(f"{path}, line {reader.line_num}: {exc}") from None
    ratings = [row for row in rows if row is not None]
    if not ratings:
        raise DataError(f"{path}: no ratings in the file")
    return ratings


def _ratings_file_columns(path: Path, header: Sequence[str]) -> tuple[str | None, ...]:
    """The header's (movie id, title, rating) column names, each as spelt in the file."""
    fields = {(name or "").strip().lower(): name for name in header}
    id_col = fields.get("movieid") or fields.get("movie_id")
    title_col, rating_col = fields.get("title"), fields.get("rating")
    if rating_col is None or (id_col is None and title_col is None):
        raise DataError(
            f"{path}: needs a header with columns 'rating' and 'movieId' or 'title'; "
            f"found {list(header)}"
        )
    return id_col, title_col, rating_col


def _ratings_file_row(
    record: dict, columns: tuple[str | None, ...], where: str
) -> RatingInput | None:
    """One line of a ratings file -> (movie id or title, rating, where); None for a blank line."""
    id_col, title_col, rating_col = columns
    movie_id = (record.get(id_col) or "").strip() if id_col else ""
    title = (record.get(title_col) or "").strip() if title_col else ""
    if not movie_id and not title:
        if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
            return None
        raise DataError(f"{where}: no movieId or title")
    rating = parse_rating(record.get(rating_col) or "", where)
    if not movie_id:
        return title, rating, where
    try:
        return check_id(int(movie_id), f"{where}: movieId"), rating, where
    except ValueError:
        raise DataError(f"{where}: movieId {movie_id!r} is not an integer") from None
