"""What a caller may pass as `filter`: a QueryFilter or a plain dict, checked and normalised.

`{"min_ratings": 50, "genres": ["comedy"]}` and `QueryFilter(genres=("comedy",))` mean the same;
genres are matched without regard to case (the catalog's spelling is what the store is asked
for), as on the command line. Unknown keys and values of the wrong type are one ConfigError
naming them, never an AttributeError from deep inside a store.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from fmstore.errors import ConfigError
from fmstore.vectors import QueryFilter

# The keys a dict filter may have: QueryFilter's fields.
FILTER_KEYS = tuple(f.name for f in dataclasses.fields(QueryFilter))
_INT_KEYS = ("year_min", "year_max", "min_ratings")


def as_query_filter(
    filter: QueryFilter | Mapping[str, Any] | None,
    canonical_genres: Callable[[Iterable[str]], tuple[str, ...]],
    exclude: Iterable[int] = (),
) -> QueryFilter | None:
    """`filter` (a QueryFilter, a dict with FILTER_KEYS, or None) as a QueryFilter whose genres
    are spelt as in the catalog (`canonical_genres`), plus `exclude` ids; None when it filters
    nothing. ConfigError names an unknown key or a value of the wrong type."""
    if filter is None:
        flt = QueryFilter()
    elif isinstance(filter, QueryFilter):
        flt = filter
    elif isinstance(filter, Mapping):
        flt = _from_mapping(filter)
    else:
        raise ConfigError(
            f"filter must be a QueryFilter or a dict with keys {', '.join(FILTER_KEYS)}, "
            f"not {type(filter).__name__}"
        )
    if flt.year_min is not None and flt.year_max is not None and flt.year_min > flt.year_max:
        raise ConfigError(
            f"year_min {flt.year_min} is after year_max {flt.year_max}: no movie can match"
        )
    genres = canonical_genres(flt.genres) if flt.genres else ()
    excluded = tuple(dict.fromkeys([*flt.exclude_ids, *_ids(exclude, "filter_items")]))
    flt = dataclasses.replace(flt, genres=genres, exclude_ids=excluded)
    return None if flt.is_empty() else flt


def _from_mapping(values: Mapping[str, Any]) -> QueryFilter:
    unknown = [str(k) for k in values if k not in FILTER_KEYS]
    if unknown:
        raise ConfigError(
            f"filter: unknown key(s) {', '.join(repr(k) for k in unknown)}; "
            f"use {', '.join(FILTER_KEYS)}"
        )
    fields: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        if key in _INT_KEYS:
            fields[key] = _int(value, f"filter {key!r}")
        elif key == "genres":
            fields[key] = (value,) if isinstance(value, str) else _strings(value)
        else:
            fields[key] = _ids(value, f"filter {key!r}")
    return QueryFilter(**fields)


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise ConfigError(f"{where}: expected a whole number, not {value!r}")
    return int(value)


def _strings(values: Any) -> tuple[str, ...]:
    try:
        items = tuple(values)
    except TypeError:
        raise ConfigError(f"filter 'genres': expected a list of names, not {values!r}") from None
    if not all(isinstance(v, str) for v in items):
        raise ConfigError(f"filter 'genres': expected names, not {values!r}")
    return items


def _ids(values: Iterable[Any], where: str) -> tuple[int, ...]:
    """Movie ids as ints (NumPy integers included); ConfigError for anything else."""
    try:
        items = list(values)
    except TypeError:
        raise ConfigError(f"{where}: expected a list of movie ids, not {values!r}") from None
    out = []
    for item in items:
        try:
            if isinstance(item, (bool, str)) or int(item) != item:
                raise ValueError
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {item!r} is not a movie id") from None
        out.append(int(item))
    return tuple(out)


# ---- ids ----------------------------------------------------------------------------------------


def is_one_id(value: Any) -> bool:
    """Whether `value` is one id (an int or NumPy integer) rather than a sequence of them."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def as_id(value: Any, what: str = "user id") -> int:
    """A user or movie id as an int (NumPy integers too); ConfigError for anything else."""
    if not is_one_id(value):
        raise ConfigError(f"{what} must be a whole number, not {value!r}")
    return int(value)


def as_ids(values: Any, what: str = "movie id") -> list[int]:
    """A sequence of ids as ints; ConfigError naming the first value that is not one."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"expected a list of {what}s, not {values!r}")
    return [as_id(v, what) for v in values]


def with_excluded(filter: QueryFilter | None, ids: Iterable[int]) -> QueryFilter:
    """`filter` plus must_not has_id(ids)."""
    base = filter or QueryFilter()
    extra = tuple(int(i) for i in ids)
    return dataclasses.replace(base, exclude_ids=tuple(dict.fromkeys(base.exclude_ids + extra)))
