"""The binary dataset cache: cache_dir/index/<key>.json -> cache_dir/<fingerprint>[-<links>]/
(one .npy per array plus JSON), so a second load of unchanged files skips parsing and hashing.

The key is the source files' path, size and mtime. Entries are written into a temp folder and
renamed into place, so a crash never leaves half an entry; an unreadable entry is rebuilt, and a
cache that cannot be written only costs speed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fmstore.datasets.sources import Source
from fmstore.datasets.types import Movies, Ratings
from fmstore.fileio import atomic_write_text

log = logging.getLogger(__name__)

CACHE_FORMAT = 1

_ARRAYS = ("user_id", "movie_id", "rating", "timestamp", "movies_movie_id", "movies_year")
_DTYPES = {
    "user_id": np.int64,
    "movie_id": np.int64,
    "rating": np.float32,
    "timestamp": np.int64,
    "movies_movie_id": np.int64,
    "movies_year": np.int32,
}


def cache_key(source: Source) -> str:
    """The index key of a source: its files' paths, sizes and mtimes (no bytes are read)."""
    blob = json.dumps([CACHE_FORMAT, source.stat_key()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_lookup(cache_dir: Path, key: str) -> tuple[str, Ratings, Movies] | None:
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
        ratings = Ratings(
            arrays["user_id"], arrays["movie_id"], arrays["rating"], arrays["timestamp"]
        )
        movies = Movies(
            arrays["movies_movie_id"],
            list(info["title"]),
            [tuple(g) for g in info["genres"]],
            arrays["movies_year"],
            list(info["imdb_id"]),
            list(info["tmdb_id"]),
        )
        n, m = len(ratings), len(movies)
        if (
            any(len(a) != n for a in (ratings.movie_id, ratings.rating, ratings.timestamp))
            or any(
                len(x) != m
                for x in (movies.title, movies.genres, movies.year, movies.imdb_id, movies.tmdb_id)
            )
            or n != meta["n_ratings"]
            or m != meta["n_movies"]
        ):
            return None
        return meta["fingerprint"], ratings, movies
    except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
        log.warning("ignoring unreadable dataset cache %s (%s); rebuilding it", index, exc)
        return None


def cache_store(
    cache_dir: Path,
    key: str,
    fingerprint: str,
    links_hash: str | None,
    ratings: Ratings,
    movies: Movies,
) -> None:
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
        atomic_write_text(
            index_dir / f"{key}.json", json.dumps({"entry": entry_name, "fingerprint": fingerprint})
        )
    except OSError as exc:
        log.warning(
            "could not write the dataset cache in %s (%s); continuing without it", cache_dir, exc
        )


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


def _write_entry(
    cache_dir: Path, entry: Path, fingerprint: str, ratings: Ratings, movies: Movies
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    try:
        arrays = {
            "user_id": ratings.user_id,
            "movie_id": ratings.movie_id,
            "rating": ratings.rating,
            "timestamp": ratings.timestamp,
            "movies_movie_id": movies.movie_id,
            "movies_year": movies.year,
        }
        for name, values in arrays.items():
            np.save(
                tmp / f"{name}.npy",
                np.ascontiguousarray(values, dtype=_DTYPES[name]),
                allow_pickle=False,
            )
        info = {
            "title": movies.title,
            "genres": [list(g) for g in movies.genres],
            "imdb_id": movies.imdb_id,
            "tmdb_id": movies.tmdb_id,
        }
        (tmp / "movies.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
        # meta.json last: its presence marks a complete entry.
        meta = {
            "format": CACHE_FORMAT,
            "fingerprint": fingerprint,
            "n_ratings": len(ratings),
            "n_movies": len(movies),
        }
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
