"""Side columns: extra movie and user attributes that become FM fields (LightFM's feature
matrices, as fields of their own).

A column is named by a spec, `name` or `name:kind`:
  name          categorical: one feature per distinct value (empty: no feature)
  name:multi    several values in one cell separated by '|' (as genres are): weights 1/n
  name:num      numeric: bucketed by quantiles in features.py, plus an "unknown" bucket for an
                empty cell, so a served vector stays a sum of embeddings

`side_columns(frame, specs, label)` reads those columns of a movies or users DataFrame (rows in
the frame's order) and refuses a missing column or a numeric cell that is not a number in one
line naming the frame (file), row (line) and value. `Users` is the users table: the ids the
ratings use, each with its side columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmstore.errors import ConfigError, DataError

KINDS = ("category", "multi", "number")
_SUFFIXES = {"": "category", "cat": "category", "multi": "multi", "num": "number"}
MULTI_SEPARATOR = "|"


@dataclass
class SideColumn:
    """One side column, parsed: `values[r]` for row r of its table."""

    name: str
    kind: str  # one of KINDS
    # category: str or None per row; multi: a tuple of str per row; number: float64 array (NaN:
    # unknown)
    values: list | np.ndarray

    def spec(self) -> str:
        """The spec that reads this column again ("age:num")."""
        suffix = {"category": "", "multi": ":multi", "number": ":num"}[self.kind]
        return self.name + suffix


@dataclass
class Users:
    """The users table: whole-number user ids (as the ratings hold them) and their side columns,
    rows in the same order."""

    user_id: np.ndarray  # int64, unique
    side: dict[str, SideColumn] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.user_id.shape[0])


def parse_specs(specs, flag: str = "features") -> list[tuple[str, str]]:
    """'age:num,gender' (or a list of such) -> [("age", "number"), ("gender", "category")];
    ConfigError for an unknown kind or a name given twice."""
    if isinstance(specs, str):
        specs = specs.split(",")
    parsed: list[tuple[str, str]] = []
    for spec in specs or ():
        name, sep, suffix = str(spec).strip().rpartition(":")
        if not sep:
            name, suffix = suffix, ""
        name, suffix = name.strip(), suffix.strip().lower()
        if not name:
            continue
        if suffix not in _SUFFIXES:
            raise ConfigError(
                f"{flag} {spec!r}: the kind after ':' must be num or multi (nothing: categorical)"
            )
        if name in [n for n, _ in parsed]:
            raise ConfigError(f"{flag} names column {name!r} twice; give it once")
        parsed.append((name, _SUFFIXES[suffix]))
    return parsed


def side_columns(frame, specs: list[tuple[str, str]], label: str) -> dict[str, SideColumn]:
    """The columns `specs` names, read from `frame` (rows in its order); DataError for a column
    the frame lacks or a numeric cell that is not a number."""
    import pandas as pd

    columns: dict[str, SideColumn] = {}
    for name, kind in specs:
        if name not in frame.columns:
            raise DataError(
                f"{label} has no column {name!r} (asked for as a side feature); it has "
                f"{', '.join(map(str, frame.columns)) or 'none'}: name one of those"
            )
        cells = frame[name]
        if kind == "number":
            text = cells.astype("string").str.strip()
            numbers = pd.to_numeric(text.replace("", pd.NA), errors="coerce")
            bad = (text.notna() & (text != "") & numbers.isna()) | ~np.isfinite(
                numbers.fillna(0).to_numpy(np.float64)
            )
            if bad.any():
                row = frame.index[bad.to_numpy()][0]
                raise DataError(
                    f"{label} row {row!r}: {name} '{cells[row]}' is not a number ({name}:num); "
                    "fix it, leave it empty for unknown, or read the column as categorical"
                )
            values: list | np.ndarray = numbers.to_numpy(np.float64, na_value=np.nan)
        elif kind == "multi":
            values = [_multi(cell) for cell in cells]
        else:
            values = [_category(cell) for cell in cells]
        columns[name] = SideColumn(name, kind, values)
    return columns


def _category(cell) -> str | None:
    """A categorical cell as text (whole-number floats without '.0'), None when empty."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return None
    if isinstance(cell, np.generic):
        cell = cell.item()
    if isinstance(cell, float) and cell.is_integer():
        cell = int(cell)
    text = str(cell).strip()
    return text or None


def _multi(cell) -> tuple[str, ...]:
    """A multi-valued cell: its distinct values, in order ('a|b|a' -> ('a', 'b'))."""
    text = _category(cell)
    if text is None:
        return ()
    values = (v.strip() for v in text.split(MULTI_SEPARATOR))
    return tuple(dict.fromkeys(v for v in values if v))


def fingerprint_bytes(columns: dict[str, SideColumn]) -> bytes:
    """The columns as bytes, for a dataset's fingerprint (other columns: another dataset)."""
    parts = []
    for column in columns.values():
        values = column.values
        shown = values.tobytes() if isinstance(values, np.ndarray) else repr(values).encode()
        parts.append(column.spec().encode() + b"\0" + shown)
    return b"\1".join(parts)
