"""CSV text helpers shared by the readers: the header check, and the map from data rows to file
line numbers that lets every error name its line.

The line map is built only on an error path (LazyLines), so valid input never pays for it.
"""

from __future__ import annotations

import csv
import re

import numpy as np

from fmstore.errors import DataError


def check_header(data: bytes, label: str, expected: tuple[str, ...]) -> list[str]:
    """The column names of line 1, in file order, after checking they are exactly `expected`."""
    wanted = ",".join(expected)
    if re.match(rb"\s*\Z", data):  # (not data.strip(): that would copy a 1 GB file)
        what = "0 bytes" if not data else "only blank lines"
        raise DataError(
            f"{label} is empty ({what}); it needs the header line {wanted} and at least one row"
        )
    end = data.find(b"\n")
    line = _decode_line(data[: end if end >= 0 else len(data)], label, 1).lstrip("\ufeff")
    line = line.rstrip("\r")
    names = [n.strip() for n in split_line(line, label, 1)] if line else []
    if len(names) <= 1:
        check_delimiter(line, label, 1)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise DataError(
            f"{label} line 1: column '{dup}' appears twice in the header '{line}'; "
            f"the header must be {wanted}"
        )
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in expected]
    if missing:
        found = f" (found unexpected {', '.join(repr(n) for n in extra)})" if extra else ""
        raise DataError(
            f"{label} line 1: missing column '{missing[0]}'{found} in the header "
            f"'{line}'; the header must be {wanted}"
        )
    if extra:
        raise DataError(
            f"{label} line 1: unexpected column '{extra[0]}' in the header '{line}'; "
            f"the header must be exactly {wanted}"
        )
    return names


# Python's csv module refuses a field longer than this (csv.field_size_limit()'s default);
# no value of a ratings, movies or links file comes near it.
FIELD_LIMIT = 131_072


def too_long(label: str, line_no: int) -> DataError:
    return DataError(
        f"{label} line {line_no}: a value longer than {FIELD_LIMIT:,} characters (an unclosed "
        "quote, or not a MovieLens file?); fix or remove that row"
    )


def split_line(line: str, label: str, line_no: int) -> list[str]:
    """The CSV fields of one line; a field over FIELD_LIMIT is a DataError naming the line."""
    try:
        return next(csv.reader([line]), [])
    except csv.Error:
        raise too_long(label, line_no) from None


def check_delimiter(line: str, label: str, line_no: int) -> None:
    """Name a semicolon/tab/pipe separator explicitly: it is the usual cause of 'one column'."""
    shown = clip(line.replace("\t", "\\t"))  # a raw tab would be invisible in the message
    for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|' characters")):
        if sep in line and "," not in line:
            raise DataError(
                f"{label} line {line_no}: values are separated by {name}, not commas "
                f"('{shown}'); save the file as comma-separated CSV"
            )


def _decode_line(raw: bytes, label: str, line_no: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(
            f"{label} line {line_no}: not valid UTF-8 text ({clip(repr(raw))}); "
            "save the file as UTF-8"
        ) from None


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Lines:
    """Maps data rows (0-based, as pyarrow counts them) to file line numbers and text.

    Built only on an error path: one vectorised pass over the newline positions. pyarrow skips
    empty lines, so row i is not always line i + 2.
    """

    def __init__(self, data: bytes):
        self.data = data
        buf = np.frombuffer(data, dtype=np.uint8)
        step = 1 << 26  # chunks keep the temporary boolean array small on 1 GB files
        newlines = np.concatenate(
            [np.flatnonzero(buf[s : s + step] == 10) + s for s in range(0, len(buf), step)]
            or [np.zeros(0, np.int64)]
        )
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
        raw = self.data[self.starts[line_no - 1] : self.ends[line_no - 1]]
        return raw.decode("utf-8", errors="replace").rstrip("\r")

    def field(self, row: int, column: int, label: str) -> tuple[int, str]:
        """(line number, raw text of one field) of a data row."""
        line_no = self.line_of(row)
        fields = split_line(self.text(line_no), label, line_no)
        return line_no, fields[column] if column < len(fields) else ""


class LazyLines:
    """Build the (costly) line map only when an error has to be worded."""

    def __init__(self, data: bytes):
        self.data = data
        self._lines: Lines | None = None

    def get(self) -> Lines:
        if self._lines is None:
            self._lines = Lines(self.data)
        return self._lines
