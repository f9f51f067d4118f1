"""MovieLens datasets: read a folder or a GroupLens .zip, validate, fingerprint, cache, download
with a checksum, and synthesize ml-latest-shaped data for benchmarks.

Every problem with the input is a DataError whose message is one line naming the file, the line
(the header is line 1) and the value, and saying what to do. Validation happens completely before
anything is written (cache, download target), so bad input never leaves half a result behind.

Speed matters at ml-latest scale (27.75M ratings): ratings are parsed by pyarrow with explicit
column types; the slower, line-exact diagnosis only runs once that fast read or a vectorised check
has already failed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from fmstore.errors import DataError

log = logging.getLogger(__name__)

RATINGS_FILE = "ratings.csv"
MOVIES_FILE = "movies.csv"
LINKS_FILE = "links.csv"
RATINGS_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIES_COLUMNS = ("movieId", "title", "genres")
LINKS_COLUMNS = ("movieId", "imdbId", "tmdbId")
NO_GENRES = "(no genres listed)"
# The 19 MovieLens genres (ml-latest README), used by the synthetic generator.
GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)
RATING_MIN, RATING_MAX = 0.5, 5.0

DATASET_NAMES = ("ml-latest-small", "ml-latest", "ml-25m", "ml-32m")
DEFAULT_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
# Used only when the published {url}.md5 cannot be fetched. Computed from the GroupLens zip.
KNOWN_MD5 = {"ml-latest-small": "31a303aabbc519bd33d025e44d6c2570"}

CACHE_FORMAT = 1
_DOWNLOAD_CHUNK = 1 << 20
_NETWORK_TIMEOUT_S = 60


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass
class Ratings:
    user_id: np.ndarray  # int64
    movie_id: np.ndarray  # int64
    rating: np.ndarray  # float32
    timestamp: np.ndarray  # int64, seconds since 1970

    def __len__(self) -> int:
        return int(self.user_id.shape[0])

    def take(self, index: np.ndarray) -> "Ratings":
        """The rows selected by an integer index or a boolean mask."""
        return Ratings(
            user_id=self.user_id[index],
            movie_id=self.movie_id[index],
            rating=self.rating[index],
            timestamp=self.timestamp[index],
        )


@dataclass
class Movies:
    movie_id: np.ndarray  # int64, unique, in movies.csv order
    title: list[str]
    genres: list[tuple[str, ...]]  # "(no genres listed)" -> ()
    year: np.ndarray  # int32 release year parsed from the title, 0 when none
    imdb_id: list[str | None]  # text as in links.csv, e.g. "0114709"
    tmdb_id: list[int | None]

    def __len__(self) -> int:
        return int(self.movie_id.shape[0])


@dataclass
class Dataset:
    name: str  # folder name or zip stem, e.g. "ml-latest-small"
    source: str  # absolute path read
    fingerprint: str  # sha256 hex over the bytes of ratings.csv then movies.csv
    ratings: Ratings
    movies: Movies


# --------------------------------------------------------------------------------------------
# Titles
# --------------------------------------------------------------------------------------------

# "(1995)" or a series' "(2006–2007)" / "(2006-)" at the very end of the title.
_YEAR_RE = re.compile(r"\((\d{4})(?:\s*[-\u2013\u2014]\s*(?:\d{4})?\s*)?\)$")


def parse_year(title: str) -> int:
    """Release year from a MovieLens title: "Toy Story (1995)" -> 1995, none -> 0."""
    match = _YEAR_RE.search(title.strip())
    return int(match.group(1)) if match else 0


# --------------------------------------------------------------------------------------------
# Sources: a folder or a zip, read as raw bytes (the fingerprint is over the raw bytes)
# --------------------------------------------------------------------------------------------


class _Source:
    """Where the CSV files of one dataset come from."""

    name: str
    path: Path

    def label(self, file: str) -> str:
        """How error messages name `file` (ratings.csv, ...)."""
        raise NotImplementedError

    def has(self, file: str) -> bool:
        raise NotImplementedError

    def read(self, file: str) -> bytes:
        raise NotImplementedError

    def stat_key(self) -> list:
        """Cheap identity of the source files: (path, size, mtime_ns) of each."""
        raise NotImplementedError


class _FolderSource(_Source):
    def __init__(self, path: Path, shown: str):
        self.path = path
        self.shown = shown
        self.name = path.name
        for required in (RATINGS_FILE, MOVIES_FILE):
            if not (path / required).is_file():
                raise DataError(_missing_file_message(path, shown, required))

    def label(self, file: str) -> str:
        return str(Path(self.shown) / file)

    def has(self, file: str) -> bool:
        return (self.path / file).is_file()

    def read(self, file: str) -> bytes:
        try:
            return (self.path / file).read_bytes()
        except OSError as exc:
            raise DataError(f"{self.label(file)}: cannot be read ({exc.strerror}); "
                            "check its permissions") from None

    def stat_key(self) -> list:
        key = []
        for file in (RATINGS_FILE, MOVIES_FILE, LINKS_FILE):
            p = self.path / file
            st = p.stat() if p.is_file() else None
            key.append([str(p), st.st_size if st else None, st.st_mtime_ns if st else None])
        return key


def _missing_file_message(folder: Path, shown: str, required: str) -> str:
    hint = ""
    # A common slip: passing the parent of the dataset folder (e.g. where the zip was unpacked).
    subs = [d for d in sorted(folder.iterdir()) if d.is_dir() and (d / required).is_file()]
    if len(subs) == 1:
        hint = f" (did you mean {Path(shown) / subs[0].name}?)"
    return (f"{shown} has no {required}{hint}; pass a MovieLens folder holding "
            f"{RATINGS_FILE} and {MOVIES_FILE}, or its .zip")


class _ZipSource(_Source):
    def __init__(self, path: Path, shown: str):
        self.path = path
        self.shown = shown
        self.name = path.stem
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise DataError(self._corrupt_message(exc)) from None
        self.members = self._find_members(names)

    def _corrupt_message(self, exc: BaseException) -> str:
        return (f"{self.shown} is not a readable zip archive (truncated or corrupt: {exc}); "
                "download it again")

    def _find_members(self, names: list[str]) -> dict[str, str]:
        # GroupLens zips hold their files in one top folder (ml-latest-small/ratings.csv); accept
        # the files at the root too. Anything deeper is not ours (e.g. __MACOSX copies).
        folders = sorted({n.rsplit("/", 1)[0] if "/" in n else "" for n in names
                          if n.rsplit("/", 1)[-1] == RATINGS_FILE and n.count("/") <= 1})
        if not folders:
            raise DataError(f"{self.shown} holds no {RATINGS_FILE} (at its root or in one top "
                            "folder); pass a GroupLens MovieLens zip")
        if len(folders) > 1:
            raise DataError(f"{self.shown} holds several {RATINGS_FILE} files (in "
                            f"{', '.join(f or '/' for f in folders)}); pass a zip with one dataset")
        prefix = folders[0] + "/" if folders[0] else ""
        members = {f: prefix + f for f in (RATINGS_FILE, MOVIES_FILE, LINKS_FILE)
                   if prefix + f in names}
        if MOVIES_FILE not in members:
            raise DataError(f"{self.shown} has {prefix}{RATINGS_FILE} but no {prefix}{MOVIES_FILE};"
                            " pass a complete MovieLens zip")
        return members

    def label(self, file: str) -> str:
        return f"{self.shown} member {self.members.get(file, file)}"

    def has(self, file: str) -> bool:
        return file in self.members

    def read(self, file: str) -> bytes:
        try:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(self.members[file])
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise DataError(self._corrupt_message(exc)) from None

    def stat_key(self) -> list:
        st = self.path.stat()
        return [[str(self.path), st.st_size, st.st_mtime_ns]]


def _open_source(path: str | Path) -> _Source:
    shown = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"no such file or folder: {shown}; pass a MovieLens folder (with "
                        f"{RATINGS_FILE} and {MOVIES_FILE}) or its .zip")
    p = Path(os.path.abspath(p))
    if p.is_dir():
        return _FolderSource(p, shown)
    if p.suffix.lower() == ".csv":
        raise DataError(f"{shown} is a single CSV file; pass the folder that holds "
                        f"{RATINGS_FILE} and {MOVIES_FILE} (or its .zip)")
    return _ZipSource(p, shown)


# --------------------------------------------------------------------------------------------
# CSV helpers shared by the readers
# --------------------------------------------------------------------------------------------


def _header(data: bytes, label: str, expected: tuple[str, ...]) -> list[str]:
    """The column names of line 1, in file order, after checking they are exactly `expected`."""
    wanted = ",".join(expected)
    if re.match(rb"\s*\Z", data):  # (not data.strip(): that would copy a 1 GB file)
        what = "0 bytes" if not data else "only blank lines"
        raise DataError(f"{label} is empty ({what}); it needs the header line {wanted} "
                        "and at least one row")
    end = data.find(b"\n")
    line = _decode_line(data[: end if end >= 0 else len(data)], label, 1).lstrip("\ufeff")
    line = line.rstrip("\r")
    names = [n.strip() for n in next(csv.reader([line]))] if line else []
    if len(names) <= 1:
        _check_delimiter(line, label, 1)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(f"{label} line 1: column '{dup}' appears twice in the header '{line}'; "
                        f"the header must be {wanted}")
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing:
        found = f" (found unexpected {', '.join(repr(n) for n in extra)})" if extra else ""
        raise DataError(f"{label} line 1: missing column '{missing[0]}'{found} in the header "
                        f"'{line}'; the header must be {wanted}")
    if extra:
        raise DataError(f"{label} line 1: unexpected column '{extra[0]}' in the header '{line}'; "
                        f"the header must be exactly {wanted}")
    return names


def _check_delimiter(line: str, label: str, line_no: int) -> None:
    """Name a semicolon/tab/pipe separator explicitly: it is the usual cause of 'one column'."""
    shown = _clip(line.replace("\t", "\\t"))  # a raw tab would be invisible in the message
    for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|' characters")):
        if sep in line and "," not in line:
            raise DataError(f"{label} line {line_no}: values are separated by {name}, not commas "
                            f"('{shown}'); save the file as comma-separated CSV")


def _decode_line(raw: bytes, label: str, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{label} line {line_no}: not valid UTF-8 text ({_clip(repr(raw))}); "
                        "save the file as UTF-8") from None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Lines:
    """Maps data rows (0-based, as pyarrow counts them) to file line numbers and text.

    Built only on an error path: one vectorised pass over the newline positions. pyarrow skips
    empty lines, so row i is not always line i + 2.
    """

    def __init__(self, data: bytes):
        self.data = data
        buf = np.frombuffer(data, dtype=np.uint8)
        step = 1 << 26  # chunks keep the temporary boolean array small on 1 GB files
        newlines = np.concatenate(
            [np.flatnonzero(buf[s: s + step] == 10) + s for s in range(0, len(buf), step)]
            or [np.zeros(0, np.int64)])
        self.starts = np.concatenate([[0], newlines + 1]).astype(np.int64)
        self.ends = np.concatenate([newlines, [len(buf)]]).astype(np.int64)
        lengths = self.ends - self.starts
        last = np.where(lengths > 0, self.ends - 1, 0)
        has_cr = (lengths > 0) & (buf[last] == 13) if len(buf) else np.zeros_like(lengths, bool)
        non_empty = (lengths - has_cr) > 0
        # 1-based line numbers of the data rows; line 1 is the header.
        self.row_lines = np.flatnonzero(non_empty[1:]) + 2

    def line_of(self, row: int) -> int:
        return int(self.row_lines[row])

    def text(self, line_no: int) -> str:
        raw = self.data[self.starts[line_no - 1]: self.ends[line_no - 1]]
        return raw.decode("utf-8", errors="replace").rstrip("\r")

    def field(self, row: int, column: int) -> tuple[int, str]:
        """(line number, raw text of one field) of a data row."""
        line_no = self.line_of(row)
        fields = next(csv.reader([self.text(line_no)]), [])
        return line_no, fields[column] if column < len(fields) else ""


# --------------------------------------------------------------------------------------------
# ratings.csv
# --------------------------------------------------------------------------------------------

_RATINGS_TYPES = {"userId": pa.int64(), "movieId": pa.int64(), "rating": pa.float64(),
                  "timestamp": pa.int64()}


def _parse_ratings(data: bytes, label: str, movies: Movies, movies_label: str) -> Ratings:
    columns = _header(data, label, RATINGS_COLUMNS)
    table = _read_ratings_table(data, label, columns)
    if table.num_rows == 0:
        raise DataError(f"{label} has a header line but no ratings; it needs at least one row")
    lines = _LazyLines(data)
    for name in RATINGS_COLUMNS:
        column = table.column(name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise DataError(f"{label} line {lines.get().line_of(row)}: {name} is empty; "
                            "fill it in or remove that row")
    ratings = Ratings(
        user_id=table.column("userId").to_numpy(),
        movie_id=table.column("movieId").to_numpy(),
        rating=table.column("rating").to_numpy(),  # float64 until validated
        timestamp=table.column("timestamp").to_numpy(),
    )
    del table
    position = {name: columns.index(name) for name in RATINGS_COLUMNS}
    _check_ids(ratings, label, lines, position)
    _check_scale(ratings.rating, label, lines, position["rating"])
    _check_movies_known(ratings.movie_id, label, movies, movies_label, lines, position["movieId"])
    _check_unique_pairs(ratings, label, lines)
    ratings.rating = ratings.rating.astype(np.float32)
    return ratings


class _LazyLines:
    """Build the (costly) line map only when an error has to be worded."""

    def __init__(self, data: bytes):
        self.data = data
        self._lines: _Lines | None = None

    def get(self) -> _Lines:
        if self._lines is None:
            self._lines = _Lines(self.data)
        return self._lines


def _read_ratings_table(data: bytes, label: str, columns: list[str]) -> pa.Table:
    read = pacsv.ReadOptions(column_names=columns, skip_rows=1, block_size=1 << 22)
    convert = pacsv.ConvertOptions(column_types=_RATINGS_TYPES, null_values=[""],
                                   quoted_strings_can_be_null=True)
    try:
        return pacsv.read_csv(pa.BufferReader(data), read_options=read, convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # The typed read gives no line numbers: find the offending line to say exactly what broke.
        raise _diagnose_ratings(data, label, columns, exc) from None


def _diagnose_ratings(data: bytes, label: str, columns: list[str], exc: Exception) -> DataError:
    """Locate the line the typed read choked on. Runs only after that read failed."""
    bad_rows: list = []

    def on_invalid(row) -> str:
        bad_rows.append(row)
        return "error"

    read = pacsv.ReadOptions(column_names=columns, skip_rows=1, use_threads=False,
                             block_size=1 << 24)
    parse = pacsv.ParseOptions(invalid_row_handler=on_invalid)
    convert = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                   null_values=[""], strings_can_be_null=True,
                                   quoted_strings_can_be_null=True)
    try:
        table = pacsv.read_csv(pa.BufferReader(data), read_options=read, parse_options=parse,
                               convert_options=convert)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if bad_rows:
            return _wrong_field_count(bad_rows[0], label, columns)
        return DataError(f"{label}: cannot be read as CSV ({_first_line(exc)}); check that it is "
                         f"a comma-separated file with the header {','.join(RATINGS_COLUMNS)}")
    if bad_rows:  # the handler saw a bad row but the reader did not raise: still report it
        return _wrong_field_count(bad_rows[0], label, columns)
    lines = _LazyLines(data)
    for name in RATINGS_COLUMNS:
        row = _first_uncastable(table.column(name), _RATINGS_TYPES[name])
        if row is not None:
            line_no, value = lines.get().field(row, columns.index(name))
            what = "a number" if name == "rating" else "a whole number"
            return DataError(f"{label} line {line_no}: {name} '{value}' is not {what}; "
                             "fix or remove that row")
    return DataError(f"{label}: cannot be read ({_first_line(exc)}); check that it is a "
                     f"comma-separated file with the header {','.join(RATINGS_COLUMNS)}")


def _wrong_field_count(row, label: str, columns: list[str]) -> DataError:
    line_no = row.number if row.number is not None else "?"
    _check_delimiter(row.text, label, line_no)
    return DataError(f"{label} line {line_no}: expected {row.expected_columns} comma-separated "
                     f"values ({','.join(columns)}) but found {row.actual_columns}: "
                     f"'{_clip(row.text)}'; fix or remove that row")


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
    return _clip(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, 160)


def _check_ids(ratings: Ratings, label: str, lines: _LazyLines, position: dict) -> None:
    # Ids become Qdrant point ids (unsigned) and vocabulary keys: negatives are always a mistake.
    for name, values in (("userId", ratings.user_id), ("movieId", ratings.movie_id)):
        if len(values) and values.min() < 0:
            row = int(np.flatnonzero(values < 0)[0])
            line_no, value = lines.get().field(row, position[name])
            raise DataError(f"{label} line {line_no}: {name} '{value}' is negative; ids must be "
                            "whole numbers >= 0")


def _check_scale(rating: np.ndarray, label: str, lines: _LazyLines, column: int) -> None:
    twice = rating * 2
    # Half-stars are the integers 1..10 once doubled. An int8 cast is much faster than np.round;
    # NaN or huge values cast to garbage, which then fails the equality test as it should.
    with np.errstate(invalid="ignore"):
        halves = twice.astype(np.int8)
    ok = (halves == twice) & (halves >= 1) & (halves <= 10)
    if ok.all():
        return
    row = int(np.flatnonzero(~ok)[0])
    line_no, value = lines.get().field(row, column)
    if not np.isfinite(rating[row]):
        raise DataError(f"{label} line {line_no}: rating '{value}' is not a number; "
                        "fix or remove that row")
    raise DataError(f"{label} line {line_no}: rating '{value}' is off the "
                    f"{RATING_MIN:g}..{RATING_MAX:g} half-star scale; fix or remove that row")


def _check_movies_known(movie_id: np.ndarray, label: str, movies: Movies, movies_label: str,
                        lines: _LazyLines, column: int) -> None:
    known = _isin(movie_id, movies.movie_id)
    if known.all():
        return
    unknown = np.flatnonzero(~known)
    line_no, value = lines.get().field(int(unknown[0]), column)
    more = f" ({len(unknown):,} rows in all)" if len(unknown) > 1 else ""
    raise DataError(f"{label} line {line_no}: movieId '{value}' is not in {movies_label}{more}; "
                    "add the movie there or remove the rating")


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


def _check_unique_pairs(ratings: Ratings, label: str, lines: _LazyLines) -> None:
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
    raise DataError(f"{label} lines {table.line_of(first)} and {table.line_of(second)}: user "
                    f"{user[first]} rated movie {movie[first]} twice; keep one of the two rows")


# --------------------------------------------------------------------------------------------
# movies.csv and links.csv (small: parsed with the csv module, which gives exact line numbers)
# --------------------------------------------------------------------------------------------


def _csv_rows(data: bytes, label: str, expected: tuple[str, ...]):
    """Yield (line number, {column: value}) for each data row, checking the field count."""
    columns = _header(data, label, expected)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{label} line {line_no}: not valid UTF-8 text; save the file as UTF-8"
                        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    line_no = reader.line_num + 1
    for fields in reader:
        start, line_no = line_no, reader.line_num + 1  # a quoted field may span lines
        if not fields or fields == [""]:
            continue
        if len(fields) != len(columns):
            if len(fields) == 1:
                _check_delimiter(fields[0], label, start)
            raise DataError(f"{label} line {start}: expected {len(columns)} comma-separated values"
                            f" ({','.join(columns)}) but found {len(fields)}: "
                            f"'{_clip(','.join(fields))}'; fix or remove that row (quote titles "
                            "that contain commas)")
        yield start, dict(zip(columns, fields))


def _parse_int(value: str, label: str, line_no: int, name: str) -> int:
    if not value.strip():
        raise DataError(f"{label} line {line_no}: {name} is empty; fill it in or remove that row")
    if not re.fullmatch(r"\d+", value.strip()):
        raise DataError(f"{label} line {line_no}: {name} '{value}' is not a whole number >= 0; "
                        "fix or remove that row")
    return int(value)


def _parse_movies(data: bytes, label: str) -> Movies:
    ids: list[int] = []
    titles: list[str] = []
    genres: list[tuple[str, ...]] = []
    first_line: dict[int, int] = {}
    for line_no, row in _csv_rows(data, label, MOVIES_COLUMNS):
        movie_id = _parse_int(row["movieId"], label, line_no, "movieId")
        if movie_id in first_line:
            raise DataError(f"{label} lines {first_line[movie_id]} and {line_no}: movieId "
                            f"'{movie_id}' appears twice; keep one of the two rows")
        title = row["title"].strip()
        if not title:
            raise DataError(f"{label} line {line_no}: title is empty for movieId '{movie_id}'; "
                            "fill it in or remove that row")
        first_line[movie_id] = line_no
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


def _apply_links(movies: Movies, data: bytes, label: str) -> None:
    """Fill imdb_id / tmdb_id from links.csv. Links to movies not in movies.csv are ignored:
    links.csv is auxiliary and GroupLens ships it per movie anyway."""
    position = {int(m): i for i, m in enumerate(movies.movie_id)}
    seen: dict[int, int] = {}
    for line_no, row in _csv_rows(data, label, LINKS_COLUMNS):
        movie_id = _parse_int(row["movieId"], label, line_no, "movieId")
        if movie_id in seen:
            raise DataError(f"{label} lines {seen[movie_id]} and {line_no}: movieId "
                            f"'{movie_id}' appears twice; keep one of the two rows")
        seen[movie_id] = line_no
        tmdb = row["tmdbId"].strip()
        tmdb_id = _parse_int(tmdb, label, line_no, "tmdbId") if tmdb else None
        i = position.get(movie_id)
        if i is not None:
            movies.imdb_id[i] = row["imdbId"].strip() or None
            movies.tmdb_id[i] = tmdb_id


# --------------------------------------------------------------------------------------------
# Public readers
# --------------------------------------------------------------------------------------------


def load_dataset(path: str | Path, cache_dir: Path | None = None) -> Dataset:
    """Read, validate and fingerprint a MovieLens folder or GroupLens .zip.

    With `cache_dir`, the validated arrays are kept there so a second load of unchanged files
    skips parsing and hashing (keyed by the files' path, size and mtime).
    """
    source = _open_source(path)
    key = _cache_key(source) if cache_dir is not None else None
    if cache_dir is not None:
        cached = _cache_lookup(Path(cache_dir), key)
        if cached is not None:
            fingerprint, ratings, movies = cached
            return Dataset(source.name, str(source.path), fingerprint, ratings, movies)

    ratings_bytes = source.read(RATINGS_FILE)
    movies_bytes = source.read(MOVIES_FILE)
    links_bytes = source.read(LINKS_FILE) if source.has(LINKS_FILE) else None
    # Hashing ~1 GB and parsing it both release the GIL: overlap them.
    with ThreadPoolExecutor(max_workers=1) as pool:
        fingerprint_job = pool.submit(_fingerprint, ratings_bytes, movies_bytes)
        movies = _parse_movies(movies_bytes, source.label(MOVIES_FILE))
        if links_bytes is not None:
            _apply_links(movies, links_bytes, source.label(LINKS_FILE))
        ratings = _parse_ratings(ratings_bytes, source.label(RATINGS_FILE), movies,
                                 source.label(MOVIES_FILE))
        fingerprint = fingerprint_job.result()

    if cache_dir is not None:
        links_hash = hashlib.sha256(links_bytes).hexdigest() if links_bytes is not None else None
        _cache_store(Path(cache_dir), key, fingerprint, links_hash, ratings, movies)
    return Dataset(source.name, str(source.path), fingerprint, ratings, movies)


def load_ratings_file(path: str | Path, movies: Movies) -> Ratings:
    """Read a separate ratings CSV (userId,movieId,rating,timestamp), validated like a dataset's
    ratings.csv, including that every movie exists in `movies`."""
    shown = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"no such file: {shown}; pass a ratings CSV with the header "
                        f"{','.join(RATINGS_COLUMNS)}")
    if p.is_dir():
        raise DataError(f"{shown} is a folder; pass a ratings CSV file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{shown}: cannot be read ({exc.strerror}); check its permissions"
                        ) from None
    return _parse_ratings(data, shown, movies, "the movies of the dataset")


def _fingerprint(ratings_bytes: bytes, movies_bytes: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(ratings_bytes)
    digest.update(movies_bytes)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Binary cache: cache_dir/index/<key>.json -> cache_dir/<fingerprint>[-<links>]/ (npy + JSON)
# --------------------------------------------------------------------------------------------

_ARRAYS = ("user_id", "movie_id", "rating", "timestamp", "movies_movie_id", "movies_year")
_DTYPES = {"user_id": np.int64, "movie_id": np.int64, "rating": np.float32,
           "timestamp": np.int64, "movies_movie_id": np.int64, "movies_year": np.int32}


def _cache_key(source: _Source) -> str:
    blob = json.dumps([CACHE_FORMAT, source.stat_key()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_lookup(cache_dir: Path, key: str) -> tuple[str, Ratings, Movies] | None:
    """The cached dataset for `key`, or None when absent or unreadable (then it is rebuilt)."""
    index = cache_dir / "index" / f"{key}.json"
    if not index.is_file():
        return None
    try:
        entry_name = json.loads(index.read_text())["entry"]
        entry = cache_dir / entry_name
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            return None
        arrays = {}
        for name in _ARRAYS:
            arrays[name] = np.load(entry / f"{name}.npy", allow_pickle=False)
            if arrays[name].dtype != _DTYPES[name] or arrays[name].ndim != 1:
                return None
        info = json.loads((entry / "movies.json").read_text())
        ratings = Ratings(arrays["user_id"], arrays["movie_id"], arrays["rating"],
                          arrays["timestamp"])
        movies = Movies(arrays["movies_movie_id"], list(info["title"]),
                        [tuple(g) for g in info["genres"]], arrays["movies_year"],
                        list(info["imdb_id"]), list(info["tmdb_id"]))
        n, m = len(ratings), len(movies)
        if any(len(a) != n for a in (ratings.movie_id, ratings.rating, ratings.timestamp)) or \
                any(len(x) != m for x in (movies.title, movies.genres, movies.year,
                                           movies.imdb_id, movies.tmdb_id)) or \
                n != meta["n_ratings"] or m != meta["n_movies"]:
            return None
        return meta["fingerprint"], ratings, movies
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        log.warning("ignoring unreadable dataset cache %s (%s); rebuilding it", index, exc)
        return None


def _cache_store(cache_dir: Path, key: str, fingerprint: str, links_hash: str | None,
                 ratings: Ratings, movies: Movies) -> None:
    """Write the entry into a temp folder and os.replace it into place: a crash never leaves a
    half-written cache. A cache that cannot be written only costs speed, so it is not fatal."""
    entry_name = fingerprint if links_hash is None else f"{fingerprint}-{links_hash[:16]}"
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        entry = cache_dir / entry_name
        if not _entry_complete(entry):
            _write_entry(cache_dir, entry, fingerprint, ratings, movies)
        index_dir = cache_dir / "index"
        index_dir.mkdir(exist_ok=True)
        _atomic_write_text(index_dir / f"{key}.json",
                           json.dumps({"entry": entry_name, "fingerprint": fingerprint}))
    except OSError as exc:
        log.warning("could not write the dataset cache in %s (%s); continuing without it",
                    cache_dir, exc)


def _entry_complete(entry: Path) -> bool:
    """Cheap soundness check of an entry: meta, JSON and every array's header and length
    (memory-mapped, so no data is read)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            return False
        json.loads((entry / "movies.json").read_text(encoding="utf-8"))
        for name in _ARRAYS:
            array = np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            expected = meta["n_movies"] if name.startswith("movies_") else meta["n_ratings"]
            if array.dtype != _DTYPES[name] or array.shape != (expected,):
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_entry(cache_dir: Path, entry: Path, fingerprint: str, ratings: Ratings,
                 movies: Movies) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        arrays = {"user_id": ratings.user_id, "movie_id": ratings.movie_id,
                  "rating": ratings.rating, "timestamp": ratings.timestamp,
                  "movies_movie_id": movies.movie_id, "movies_year": movies.year}
        for name, values in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(values, dtype=_DTYPES[name]),
                    allow_pickle=False)
        info = {"title": movies.title, "genres": [list(g) for g in movies.genres],
                "imdb_id": movies.imdb_id, "tmdb_id": movies.tmdb_id}
        (tmp / "movies.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
        # meta.json last: its presence marks a complete entry.
        meta = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "n_ratings": len(ratings),
                "n_movies": len(movies)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if entry.exists():  # a corrupt leftover: move it aside, then drop it
            stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=cache_dir))
            os.replace(entry, stale / "entry")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:
            if not _entry_complete(entry):  # not simply another process that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


def fetch_dataset(name: str, dest: Path, url: str | None = None,
                  progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download a GroupLens MovieLens zip, verify its md5, unpack it to `dest/name`; return that.

    Nothing is left in `dest` unless the download verified and unpacked completely.
    """
    if name not in DATASET_NAMES and url is None:
        raise DataError(f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)} "
                        "or pass --url")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise DataError(f"dataset name '{name}' must be a plain folder name "
                        "(letters, digits, '.', '_', '-')")
    dest = Path(dest)
    target = dest / name
    if _looks_like_dataset(target):
        return target
    if target.exists():
        raise DataError(f"{target} exists but is not a MovieLens dataset (no valid "
                        f"{RATINGS_FILE}/{MOVIES_FILE}); remove it or choose another destination")
    url = url or DEFAULT_URL.format(name=name)
    expected = _published_md5(url) or KNOWN_MD5.get(name)
    if expected is None:
        raise DataError(f"no checksum for {url} (could not fetch {url}.md5 and none is built in"
                        f" for '{name}'); refusing an unverified download")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest} ({exc.strerror}); choose another destination"
                        ) from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".zip.part", dir=dest)
    tmp_zip = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _download(url, out, progress)
        if actual != expected:
            raise DataError(f"checksum mismatch for {url}: md5 {actual}, expected {expected}; "
                            "the download is corrupt or the file changed, try again")
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
        folder = _unpack(tmp_zip, tmp_dir, url)
        os.replace(folder, target)
        return target
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _looks_like_dataset(folder: Path) -> bool:
    """Cheap check that a folder holds readable MovieLens ratings and movies files."""
    try:
        for file, columns in ((RATINGS_FILE, RATINGS_COLUMNS), (MOVIES_FILE, MOVIES_COLUMNS)):
            with open(folder / file, "rb") as f:
                _header(f.readline(), file, columns)
        return True
    except (OSError, DataError):
        return False


def _published_md5(url: str) -> str | None:
    """The md5 GroupLens publishes at {url}.md5 ("<hex>" or "<hex>  <file>"), if reachable."""
    try:
        with urllib.request.urlopen(url + ".md5", timeout=_NETWORK_TIMEOUT_S) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("no published checksum at %s.md5 (%s)", url, exc)
        return None
    match = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    return match.group(1).lower() if match else None


def _download(url: str, out, progress: Callable[[int, int | None], None] | None) -> str:
    """Stream `url` into `out`; return the md5 hex of what was written."""
    digest = hashlib.md5()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=_NETWORK_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress:
                progress(0, total)
            while chunk := response.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        raise DataError(f"could not download {url}: HTTP {exc.code} {exc.reason}; check the "
                        "network or pass --url") from None
    except urllib.error.URLError as exc:
        raise DataError(f"could not download {url}: {exc.reason}; check the network or pass "
                        "--url") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"could not download {url}: {exc}; check the network or pass --url"
                        ) from None
    return digest.hexdigest()


def _unpack(zip_path: Path, into: Path, url: str) -> Path:
    """Extract the zip into `into` and return the folder holding ratings.csv and movies.csv."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(into)  # extractall strips absolute paths and '..' components
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"the zip downloaded from {url} cannot be unpacked ({exc}); "
                        "download it again") from None
    candidates = [into] + [d for d in sorted(into.iterdir()) if d.is_dir()]
    for folder in candidates:
        if (folder / RATINGS_FILE).is_file() and (folder / MOVIES_FILE).is_file():
            return folder
    raise DataError(f"the zip downloaded from {url} holds no {RATINGS_FILE} and {MOVIES_FILE}; "
                    "pass the URL of a MovieLens zip")


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------

_SYNTH_RANK = 16
_SYNTH_USERS_PER_CHUNK = 16_384
_SYNTH_MAX_ROUNDS = 8
_HALF_STARS = [f"{0.5 * i:.1f}" for i in range(1, 11)]  # "0.5" .. "5.0", as MovieLens writes them


def synthesize(out: Path, n_ratings: int = 27_753_444, n_users: int = 283_228,
               n_movies: int = 53_889, seed: int = 0) -> Path:
    """Write an ml-latest-shaped synthetic dataset (ratings.csv, movies.csv) into `out`.

    Zipf-like movie popularity, long-tailed user activity, and ratings from a planted model:
    mean + user bias + movie bias + <p_u, q_i> (rank 16, q_i partly driven by genres so that
    genre features carry signal) + noise, rounded to half stars. (user, movie) pairs are unique.
    Users are generated in chunks, so memory stays bounded (well under 1 GB at full size).
    Deterministic for a given seed.
    """
    if n_users < 1 or n_movies < 1 or n_ratings < 1:
        raise DataError("synthesize needs n_ratings, n_users and n_movies >= 1")
    if n_ratings > n_users * n_movies:
        raise DataError(f"{n_ratings:,} ratings cannot fit {n_users:,} users x {n_movies:,} "
                        "movies without repeating a (user, movie) pair; lower n_ratings")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    model = _SynthModel(rng, n_users, n_movies)
    counts = _user_counts(rng, n_ratings, n_users, n_movies)

    movies_tmp = out / ".movies.csv.tmp"
    ratings_tmp = out / ".ratings.csv.tmp"
    try:
        _write_synth_movies(movies_tmp, model)
        _write_synth_ratings(ratings_tmp, model, counts, seed)
        os.replace(movies_tmp, out / MOVIES_FILE)
        os.replace(ratings_tmp, out / RATINGS_FILE)
    finally:
        movies_tmp.unlink(missing_ok=True)
        ratings_tmp.unlink(missing_ok=True)
    return out


class _SynthModel:
    """The planted truth: movie ids, metadata, popularity and the low-rank taste model."""

    def __init__(self, rng: np.random.Generator, n_users: int, n_movies: int):
        self.n_users, self.n_movies = n_users, n_movies
        # Sparse, increasing movie ids like MovieLens (1..193609 for 9,742 movies).
        self.movie_id = np.sort(rng.choice(np.arange(1, 4 * n_movies + 2), n_movies,
                                           replace=False)).astype(np.int64)
        # Release years skewed towards recent decades.
        self.year = np.clip(2019 - rng.gamma(2.0, 9.0, n_movies).astype(np.int64), 1902, 2018)
        genre_matrix = self._genre_matrix(rng, n_movies)
        self.genres = [tuple(np.flatnonzero(row)) for row in genre_matrix]
        # Popularity: Zipf over a random ranking, with a mild offset so the head is not absurd,
        # mixed with a little uniform mass so heavy users can always find unseen movies.
        rank = rng.permutation(n_movies) + 1.0
        zipf = 1.0 / (rank + 10.0) ** 1.05
        self.popularity = 0.97 * zipf / zipf.sum() + 0.03 / n_movies
        self.cumulative = np.cumsum(self.popularity)
        self.cumulative[-1] = 1.0

        # Each movie's taste vector leans towards the mean vector of its genres.
        genre_vectors = rng.normal(0.0, 1.0, (len(GENRES), _SYNTH_RANK))
        per_movie = np.maximum(genre_matrix.sum(axis=1, keepdims=True), 1)
        movie_taste = genre_matrix @ genre_vectors / per_movie
        # |q_i| ~ 1, so <p_u, q_i> has the spread of one coordinate of p_u (0.5 stars).
        noise = rng.normal(0.0, 1.0, (n_movies, _SYNTH_RANK))
        self.q = ((0.7 * movie_taste + 0.7 * noise) / np.sqrt(_SYNTH_RANK)).astype(np.float32)
        # Popular movies are rated a little higher, as in MovieLens.
        self.movie_bias = rng.normal(0.0, 0.45, n_movies) + 0.05 * np.log(zipf / zipf.mean())

    @staticmethod
    def _genre_matrix(rng: np.random.Generator, n: int) -> np.ndarray:
        """Movies x genres, 0/1: 1-5 genres each (1% none), some genres far more common."""
        weights = rng.dirichlet(np.full(len(GENRES), 0.8))
        how_many = np.minimum(rng.geometric(0.5, n), 5)
        how_many[rng.random(n) < 0.01] = 0  # some "(no genres listed)"
        # Weighted sampling without replacement for all movies at once (Gumbel top-k).
        keys = np.log(weights + 1e-12) + rng.gumbel(size=(n, len(GENRES)))
        rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
        return (rank < how_many[:, None]).astype(np.float64)


def _user_counts(rng: np.random.Generator, n_ratings: int, n_users: int,
                 n_movies: int) -> np.ndarray:
    """Ratings per user: long-tailed (lognormal), each in 1..n_movies, summing to n_ratings."""
    raw = rng.lognormal(0.0, 1.25, n_users)
    counts = np.clip(np.floor(raw / raw.sum() * n_ratings), 1, n_movies).astype(np.int64)
    # Fix the rounding/clipping remainder by nudging random users who have room.
    while (diff := n_ratings - int(counts.sum())) != 0:
        room = np.flatnonzero(counts < n_movies) if diff > 0 else np.flatnonzero(counts > 1)
        pick = rng.choice(room, size=min(abs(diff), len(room)), replace=False)
        counts[pick] += 1 if diff > 0 else -1
    return counts


def _write_synth_movies(path: Path, model: _SynthModel) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(MOVIES_COLUMNS)
        for movie_id, year, genres in zip(model.movie_id, model.year, model.genres):
            names = "|".join(GENRES[g] for g in genres) or NO_GENRES
            writer.writerow([int(movie_id), f"Synthetic Movie {movie_id} ({year})", names])


def _write_synth_ratings(path: Path, model: _SynthModel, counts: np.ndarray, seed: int) -> None:
    labels = pa.array(_HALF_STARS)
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with open(path, "wb") as f:
        f.write((",".join(RATINGS_COLUMNS) + "\n").encode())
        for start in range(0, model.n_users, _SYNTH_USERS_PER_CHUNK):
            stop = min(start + _SYNTH_USERS_PER_CHUNK, model.n_users)
            # One generator per chunk: the output depends on the seed only, not on chunking order.
            rng = np.random.default_rng([seed, 1, start])
            users, movies = _sample_pairs(rng, model, np.arange(start, stop), counts[start:stop])
            stars = _rate(rng, model, users, movies, start, stop)
            table = pa.table({
                "userId": pa.array(users + 1),
                "movieId": pa.array(model.movie_id[movies]),
                "rating": labels.take(pa.array(stars)),
                "timestamp": pa.array(_timestamps(rng, users, start, stop)),
            })
            pacsv.write_csv(table, f, write_options=options)


def _sample_pairs(rng: np.random.Generator, model: _SynthModel, users: np.ndarray,
                  counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct movies per user (popularity-weighted), sorted by (user, movie index).

    Draw with replacement, drop repeats through a combined int64 key, keep a random subset of the
    right size, and redraw only for users still short. Heavy users converge because a slice of
    the popularity mass is uniform; the last few stragglers get an exact draw from their unseen
    movies.
    """
    n_movies = model.n_movies
    keys = np.zeros(0, np.int64)
    need = counts.copy()
    oversample = 1.3
    for _ in range(_SYNTH_MAX_ROUNDS):
        short = np.flatnonzero(need > 0)
        if len(short) == 0:
            break
        # Capped: past a few rounds the stragglers are cheaper to fill exactly.
        draws = np.minimum(np.ceil(need[short] * oversample).astype(np.int64) + 2, 4 * n_movies)
        who = np.repeat(users[short], draws)
        what = np.searchsorted(model.cumulative, rng.random(len(who)), side="right")
        fresh = np.setdiff1d(_sorted_unique(who * n_movies + what), keys, assume_unique=True)
        fresh = _random_subset_per_user(rng, fresh, n_movies, users[0], need)
        keys = _sorted_unique(np.concatenate([keys, fresh]))
        need = counts - np.bincount(keys // n_movies - users[0], minlength=len(users))
        oversample *= 2
    if (need > 0).any():
        keys = _sorted_unique(np.concatenate([keys, _fill_exactly(rng, keys, users, need,
                                                                   n_movies)]))
    return keys // n_movies, keys % n_movies


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # Sort + neighbour compare: several times faster than np.unique's hash path on int64 keys.
    values = np.sort(values)
    keep = np.empty(len(values), dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _random_subset_per_user(rng: np.random.Generator, keys: np.ndarray, n_movies: int,
                            first_user: int, need: np.ndarray) -> np.ndarray:
    """At most need[u] of each user's keys, chosen at random (not the lowest movie ids)."""
    owner = keys // n_movies - first_user  # non-decreasing: keys are sorted
    # Shuffle within each user: sort by owner + a random fraction (one float sort, no lexsort).
    order = np.argsort(owner + rng.random(len(keys)))
    group_start = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(need)))])
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - group_start[owner]
    return keys[rank < need[owner]]


def _fill_exactly(rng: np.random.Generator, keys: np.ndarray, users: np.ndarray,
                  need: np.ndarray, n_movies: int) -> np.ndarray:
    """Uniform draws from each remaining user's unseen movies (few users, rarely reached)."""
    extra = []
    for i in np.flatnonzero(need > 0):
        user = users[i]
        seen = keys[(keys >= user * n_movies) & (keys < (user + 1) * n_movies)] % n_movies
        unseen = np.setdiff1d(np.arange(n_movies), seen, assume_unique=True)
        extra.append(user * n_movies + rng.choice(unseen, need[i], replace=False))
    return np.concatenate(extra)


def _rate(rng: np.random.Generator, model: _SynthModel, users: np.ndarray,
          movies: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Half-star index 0..9 (0.5..5.0) from the planted model, for each (user, movie)."""
    p = rng.normal(0.0, 0.5, (stop - start, _SYNTH_RANK)).astype(np.float32)
    user_bias = rng.normal(0.0, 0.35, stop - start)
    local = users - start
    score = 3.5 + user_bias[local] + model.movie_bias[movies]
    score += np.einsum("ij,ij->i", p[local], model.q[movies])  # 3x faster than (a * b).sum(1)
    score += rng.normal(0.0, 0.6, len(users))
    halves = np.clip(np.round(score * 2), 1, 10).astype(np.int64)
    return halves - 1


def _timestamps(rng: np.random.Generator, users: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Each user rates within an active window between 1996 and 2018."""
    n = stop - start
    begin = rng.integers(828_000_000, 1_530_000_000, n)
    span = np.minimum(rng.exponential(2e7, n).astype(np.int64), 1_537_000_000 - begin)
    local = users - start
    return begin[local] + (rng.random(len(users)) * span[local]).astype(np.int64)
