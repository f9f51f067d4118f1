"""Parse and validate ratings.csv, movies.csv and links.csv into Ratings and Movies.

Every problem is a DataError whose message is one line naming the file, the line (the header is
line 1) and the value, and saying what to do. ratings.csv (up to 27.75M rows) is read by pyarrow
with explicit column types and checked with vectorised NumPy; the slower, line-exact diagnosis
runs only once that fast path has failed. movies.csv and links.csv are small and go through the
csv module, which gives exact line numbers directly.
"""

from __future__ import annotations

import codecs
import csv
import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from fmstore.datasets.csvtext import (
    LazyLines,
    Lines,
    check_delimiter,
    check_header,
    clip,
    too_long,
)
from fmstore.datasets.types import (
    LINKS_COLUMNS,
    MOVIES_COLUMNS,
    NO_GENRES,
    RATING_MAX,
    RATING_MIN,
    RATINGS_COLUMNS,
    Movies,
    Ratings,
    parse_year,
)
from fmstore.errors import DataError

# ---- ratings.csv --------------------------------------------------------------------------------

_RATINGS_TYPES = {
    "userId": pa.int64(),
    "movieId": pa.int64(),
    "rating": pa.float64(),
    "timestamp": pa.int64(),
}


def parse_ratings(
    data: bytes,
    label: str,
    movies: Movies,
    movies_label: str,
    scale: tuple[float, float] | None = None,
) -> Ratings:
    """ratings.csv bytes -> Ratings, checked: ids, the rating scale (MovieLens's half stars unless
    `scale` = (lowest, highest) is given), known movies (named `movies_label` in errors) and one
    rating per (user, movie). `label` names the file."""
    columns = check_header(data, label, RATINGS_COLUMNS)
    table = _read_ratings_table(data, label, columns)
    if table.num_rows == 0:
        raise DataError(f"{label} has a header line but no ratings; it needs at least one row")
    lines = LazyLines(data)
    for name in RATINGS_COLUMNS:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(
                f"{label} line {lines.get().line_of(row)}: {name} is empty; "
                "fill it in or remove that row"
            )
    ratings = Ratings(
        user_id=table.column("userId").to_numpy(),
        movie_id=table.column("movieId").to_numpy(),
        rating=table.column("rating").to_numpy(),  # float64 until validated
        timestamp=table.column("timestamp").to_numpy(),
    )
    del table
    position = {name: columns.index(name) for name in RATINGS_COLUMNS}
    _check_ids(ratings, label, lines, position)
    if scale is None:
        _check_scale(ratings.rating, label, lines, position["rating"])
    else:
        _check_range(ratings.rating, scale, label, lines, position["rating"])
    _check_movies_known(ratings.movie_id, label, movies, movies_label, lines, position["movieId"])
    _check_unique_pairs(ratings, label, lines)
    ratings.rating = ratings.rating.astype(np.float32)
    return ratings


def _read_ratings_table(data: bytes, label: str, columns: list[str]) -> pa.Table:
    read = pacsv.ReadOptions(column_names=columns, skip_rows=1, block_size=1 << 22)
    convert = pacsv.ConvertOptions(
        column_types=_RATINGS_TYPES, null_values=[""], quoted_strings_can_be_null=True
    )
    try:
        return pacsv.read_csv(pa.BufferReader(data), read_options=read, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # The typed read gives no line numbers: find the offending line to say exactly what broke.
        raise _diagnose_ratings(data, label, columns, exc) from None


def _diagnose_ratings(data: bytes, label: str, columns: list[str], exc: Exception) -> DataError:
    """Locate the line the typed read choked on. Runs only after that read failed."""
    _check_utf8(data, label)
    bad_rows: list = []

    def on_invalid(row) -> str:
        bad_rows.append(row)
        return "error"

    read = pacsv.ReadOptions(
        column_names=columns, skip_rows=1, use_threads=False, block_size=1 << 24
    )
    parse = pacsv.ParseOptions(invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(
        column_types={c: pa.string() for c in columns},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    try:
        table = pacsv.read_csv(
            pa.BufferReader(data), read_options=read, parse_options=parse, convert_options=convert
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if bad_rows:
            return _wrong_field_count(bad_rows[0], label, columns, data)
        return DataError(
            f"{label}: cannot be read as CSV ({_first_line(exc)}); check that it is "
            f"a comma-separated file with the header {','.join(RATINGS_COLUMNS)}"
        )
    if bad_rows:  # the handler saw a bad row but the reader did not raise: still report it
        return _wrong_field_count(bad_rows[0], label, columns, data)
    lines = LazyLines(data)
    for name in RATINGS_COLUMNS:
        row = _first_uncastable(table.column(name), _RATINGS_TYPES[name])
        if row is not None:
            line_no, value = lines.get().field(row, columns.index(name), label)
            what = "a number" if name == "rating" else "a whole number"
            if name != "rating" and re.fullmatch(r"-?\d+", value.strip()):
                return DataError(
                    f"{label} line {line_no}: {name} '{clip(value.strip())}' is too large (the "
                    f"most is {_ID_MAX}); fix or remove that row"
                )
            return DataError(
                f"{label} line {line_no}: {name} '{value}' is not {what}; fix or remove that row"
            )
    return DataError(
        f"{label}: cannot be read ({_first_line(exc)}); check that it is a "
        f"comma-separated file with the header {','.join(RATINGS_COLUMNS)}"
    )


def _check_utf8(data: bytes, label: str) -> None:
    """A DataError naming the first line that is not UTF-8; decoded in blocks, not all at once."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view, step = memoryview(data), 1 << 24
    for start in range(0, len(data), step):
        try:
            decoder.decode(view[start : start + step], final=start + step >= len(data))
        except UnicodeDecodeError as exc:
            # (a sequence split across blocks starts up to 3 bytes earlier: never a newline)
            line_no = data.count(b"\n", 0, start + exc.start) + 1
            raise DataError(
                f"{label} line {line_no}: not valid UTF-8 text; save the file as UTF-8"
            ) from None


def _wrong_field_count(row, label: str, columns: list[str], data: bytes) -> DataError:
    # pyarrow numbers rows without the blank lines it skipped (header = 1): map to file lines.
    line_no: int | str = "?"
    if row.number is not None:
        row_lines = Lines(data).row_lines
        index = row.number - 2
        line_no = int(row_lines[index]) if 0 <= index < len(row_lines) else row.number
    check_delimiter(row.text, label, line_no)
    return DataError(
        f"{label} line {line_no}: expected {row.expected_columns} comma-separated "
        f"values ({','.join(columns)}) but found {row.actual_columns}: "
        f"'{clip(row.text)}'; fix or remove that row"
    )


def _first_uncastable(column: pa.ChunkedArray, target: pa.DataType) -> int | None:
    """Index of the first value that does not parse as `target` (bisection over casts)."""
    try:
        pc.cast(column, target)
        return None
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    lo, hi = 0, len(column)  # invariant: the first bad value lies in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(column.slice(lo, mid - lo), target)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            hi = mid
    return lo


def _first_line(exc: Exception) -> str:
    return clip(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, 160)


def _check_ids(ratings: Ratings, label: str, lines: LazyLines, position: dict) -> None:
    # Ids become Qdrant point ids (unsigned) and vocabulary keys: negatives are always a mistake.
    for name, values in (("userId", ratings.user_id), ("movieId", ratings.movie_id)):
        if len(values) and values.min() < 0:
            row = int(np.flatnonzero(values < 0)[0])
            line_no, value = lines.get().field(row, position[name], label)
            raise DataError(
                f"{label} line {line_no}: {name} '{value}' is negative; ids must be "
                "whole numbers >= 0"
            )


def _check_scale(rating: np.ndarray, label: str, lines: LazyLines, column: int) -> None:
    twice = rating * 2
    # Half-stars are the integers 1..10 once doubled. An int8 cast is much faster than np.round;
    # NaN or huge values cast to garbage, which then fails the equality test as it should.
    with np.errstate(invalid="ignore"):
        halves = twice.astype(np.int8)
    ok = (halves == twice) & (halves >= 1) & (halves <= 10)
    if ok.all():
        return
    row = int(np.flatnonzero(~ok)[0])
    line_no, value = lines.get().field(row, column, label)
    if not np.isfinite(rating[row]):
        raise DataError(
            f"{label} line {line_no}: rating '{value}' is not a number; fix or remove that row"
        )
    raise DataError(
        f"{label} line {line_no}: rating '{value}' is off the "
        f"{RATING_MIN:g}..{RATING_MAX:g} half-star scale; fix or remove that row"
    )


def _check_range(
    rating: np.ndarray, scale: tuple[float, float], label: str, lines: LazyLines, column: int
) -> None:
    """Every rating a number within the given scale (any scale: 1-10, 0-1, thumbs)."""
    lo, hi = scale
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(rating) & (rating >= lo) & (rating <= hi)
    if ok.all():
        return
    row = int(np.flatnonzero(~ok)[0])
    line_no, value = lines.get().field(row, column, label)
    raise DataError(
        f"{label} line {line_no}: rating '{value}' is off the {lo:g}..{hi:g} scale; "
        "fix or remove that row"
    )


def _check_movies_known(
    movie_id: np.ndarray,
    label: str,
    movies: Movies,
    movies_label: str,
    lines: LazyLines,
    column: int,
) -> None:
    known = _isin(movie_id, movies.movie_id)
    if known.all():
        return
    unknown = np.flatnonzero(~known)
    line_no, value = lines.get().field(int(unknown[0]), column, label)
    more = f" ({len(unknown):,} rows in all)" if len(unknown) > 1 else ""
    raise DataError(
        f"{label} line {line_no}: movieId '{value}' is not in {movies_label}{more}; "
        "add the movie there or remove the rating"
    )


def _isin(values: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Vectorised membership; a lookup table when ids are small (MovieLens ids are < 300k)."""
    if len(values) == 0:
        return np.zeros(0, bool)
    top = int(max(values.max(), allowed.max() if len(allowed) else 0))
    if values.min() >= 0 and top < 1 << 27:
        table = np.zeros(top + 1, dtype=bool)
        table[allowed] = True
        return table[values]
    return np.isin(values, allowed)


def _check_unique_pairs(ratings: Ratings, label: str, lines: LazyLines) -> None:
    user, movie = ratings.user_id, ratings.movie_id
    span = int(movie.max()) + 1
    if int(user.max()) < (2**63 - 1) // span:
        key = user * span + movie
        increasing = key[1:] > key[:-1]
        if increasing.all():  # MovieLens files are sorted by (userId, movieId): no sort needed
            return
        order = np.argsort(key, kind="stable")
        same = key[order][1:] == key[order][:-1]
    else:
        order = np.lexsort((movie, user))
        same = (user[order][1:] == user[order][:-1]) & (movie[order][1:] == movie[order][:-1])
    if not same.any():
        return
    at = int(np.flatnonzero(same)[0])
    first, second = sorted((int(order[at]), int(order[at + 1])))
    table = lines.get()
    raise DataError(
        f"{label} lines {table.line_of(first)} and {table.line_of(second)}: user "
        f"{user[first]} rated movie {movie[first]} twice; keep one of the two rows"
    )


# ---- movies.csv and links.csv -------------------------------------------------------------------


def _csv_rows(data: bytes, label: str, expected: tuple[str, ...]):
    """Yield (line number, {column: value}) for each data row, checking the field count."""
    columns = check_header(data, label, expected)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{label} line {line_no}: not valid UTF-8 text; save the file as UTF-8"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    line_no = reader.line_num + 1
    while True:
        try:
            fields = next(reader, None)
        except csv.Error:
            raise too_long(label, line_no) from None
        if fields is None:
            return
        start, line_no = line_no, reader.line_num + 1  # a quoted field may span lines
        if not fields or fields == [""]:
            continue
        if len(fields) != len(columns):
            if len(fields) == 1:
                check_delimiter(fields[0], label, start)
            raise DataError(
                f"{label} line {start}: expected {len(columns)} comma-separated values"
                f" ({','.join(columns)}) but found {len(fields)}: "
                f"'{clip(','.join(fields))}'; fix or remove that row (quote titles "
                "that contain commas)"
            )
        yield start, dict(zip(columns, fields, strict=True))


def _parse_int(value: str, label: str, line_no: int, name: str) -> int:
    if not value.strip():
        raise DataError(f"{label} line {line_no}: {name} is empty; fill it in or remove that row")
    if not re.fullmatch(r"\d+", value.strip()):
        raise DataError(
            f"{label} line {line_no}: {name} '{value}' is not a whole number >= 0; "
            "fix or remove that row"
        )
    if int(value) > _ID_MAX:  # ids are stored as int64 (arrays, the catalog, Qdrant payloads)
        raise DataError(
            f"{label} line {line_no}: {name} '{clip(value.strip())}' is too large (the most is "
            f"{_ID_MAX}); fix or remove that row"
        )
    return int(value)


_ID_MAX = 2**63 - 1


def _rows_by_movie(data: bytes, label: str, expected: tuple[str, ...]):
    """Yield (line number, movieId, {column: value}) per data row; a movieId twice is an error."""
    first_line: dict[int, int] = {}
    for line_no, row in _csv_rows(data, label, expected):
        movie_id = _parse_int(row["movieId"], label, line_no, "movieId")
        if movie_id in first_line:
            raise DataError(
                f"{label} lines {first_line[movie_id]} and {line_no}: movieId "
                f"'{movie_id}' appears twice; keep one of the two rows"
            )
        first_line[movie_id] = line_no
        yield line_no, movie_id, row


def parse_movies(data: bytes, label: str) -> Movies:
    """movies.csv bytes -> Movies (ids unique, titles non-empty); no links yet."""
    ids: list[int] = []
    titles: list[str] = []
    genres: list[tuple[str, ...]] = []
    for line_no, movie_id, row in _rows_by_movie(data, label, MOVIES_COLUMNS):
        title = row["title"].strip()
        if not title:
            raise DataError(
                f"{label} line {line_no}: title is empty for movieId '{movie_id}'; "
                "fill it in or remove that row"
            )
        ids.append(movie_id)
        titles.append(title)
        genres.append(_split_genres(row["genres"]))
    if not ids:
        raise DataError(f"{label} has a header line but no movies; it needs at least one row")
    return Movies(
        movie_id=np.asarray(ids, dtype=np.int64),
        title=titles,
        genres=genres,
        year=np.asarray([parse_year(t) for t in titles], dtype=np.int32),
        imdb_id=[None] * len(ids),
        tmdb_id=[None] * len(ids),
    )


def _split_genres(text: str) -> tuple[str, ...]:
    text = text.strip()
    if not text or text == NO_GENRES:
        return ()
    return tuple(g.strip() for g in text.split("|") if g.strip())


def apply_links(movies: Movies, data: bytes, label: str) -> None:
    """Fill imdb_id / tmdb_id from links.csv. Links to movies not in movies.csv are ignored:
    links.csv is auxiliary and GroupLens ships it per movie anyway."""
    position = {int(m): i for i, m in enumerate(movies.movie_id)}
    for line_no, movie_id, row in _rows_by_movie(data, label, LINKS_COLUMNS):
        tmdb = row["tmdbId"].strip()
        tmdb_id = _parse_int(tmdb, label, line_no, "tmdbId") if tmdb else None
        i = position.get(movie_id)
        if i is not None:
            movies.imdb_id[i] = row["imdbId"].strip() or None
            movies.tmdb_id[i] = tmdb_id
