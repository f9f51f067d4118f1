"""The public readers: load_dataset (a folder or .zip, validated, fingerprinted, optionally
cached) and load_ratings_file (a separate ratings CSV, e.g. a test set).

Validation happens completely before anything is written to the cache, so bad input never leaves
half a result behind.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fmstore.datasets.cache import cache_key, cache_lookup, cache_store
from fmstore.datasets.csvfile import SIDE_READ_AS, add_side_columns, load_csv
from fmstore.datasets.sources import open_source
from fmstore.datasets.types import (
    LINKS_FILE,
    MOVIES_FILE,
    RATINGS_COLUMNS,
    RATINGS_FILE,
    Dataset,
    Movies,
    Ratings,
)
from fmstore.datasets.validate import apply_links, parse_movies, parse_ratings
from fmstore.errors import DataError


def load_dataset(
    path: str | Path, cache_dir: Path | None = None, read_as: dict | None = None
) -> Dataset:
    """Read, validate and fingerprint a MovieLens folder or GroupLens .zip, or a person's own
    ratings CSV (a .csv/.tsv file, or `read_as`: csvfile.load_csv's options, as a run's manifest
    records them).

    With `cache_dir`, the validated arrays of a folder or zip are kept there so a second load of
    unchanged files skips parsing and hashing (keyed by the files' path, size and mtime).
    """
    own_csv = Path(path).suffix.lower() in (".csv", ".tsv")
    side = read_as and (read_as.get("movie_features") or read_as.get("user_features"))
    if side and not own_csv and set(read_as) <= set(SIDE_READ_AS):
        # a MovieLens folder or zip read as always, then the side columns asked for (of the
        # folder's own movies.csv unless another file is named)
        dataset = load_dataset(path, cache_dir)
        if not read_as.get("movies") and (Path(path) / MOVIES_FILE).is_file():
            read_as = read_as | {"movies": str(Path(path) / MOVIES_FILE)}
        return add_side_columns(dataset, **read_as)
    if read_as or own_csv:
        return load_csv(path, **(read_as or {}))
    source = open_source(path)
    key = cache_key(source) if cache_dir is not None else None
    if cache_dir is not None:
        cached = cache_lookup(Path(cache_dir), key)
        if cached is not None:
            fingerprint, ratings, movies = cached
            return Dataset(source.name, str(source.path), fingerprint, ratings, movies)

    ratings_bytes = source.read(RATINGS_FILE)
    movies_bytes = source.read(MOVIES_FILE)
    links_bytes = source.read(LINKS_FILE) if source.has(LINKS_FILE) else None
    # Hashing ~1 GB and parsing it both release the GIL: overlap them.
    with ThreadPoolExecutor(max_workers=1) as pool:
        fingerprint_job = pool.submit(_fingerprint, ratings_bytes, movies_bytes)
        movies = parse_movies(movies_bytes, source.label(MOVIES_FILE))
        if links_bytes is not None:
            apply_links(movies, links_bytes, source.label(LINKS_FILE))
        ratings = parse_ratings(
            ratings_bytes, source.label(RATINGS_FILE), movies, source.label(MOVIES_FILE)
        )
        fingerprint = fingerprint_job.result()

    if cache_dir is not None:
        links_hash = hashlib.sha256(links_bytes).hexdigest() if links_bytes is not None else None
        cache_store(Path(cache_dir), key, fingerprint, links_hash, ratings, movies)
    return Dataset(source.name, str(source.path), fingerprint, ratings, movies)


def load_ratings_file(path: str | Path, movies: Movies) -> Ratings:
    """Read a separate ratings CSV (userId,movieId,rating,timestamp), validated like a dataset's
    ratings.csv, including that every movie exists in `movies`."""
    shown = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"no such file: {shown}; pass a ratings CSV with the header {','.join(RATINGS_COLUMNS)}"
        )
    if p.is_dir():
        raise DataError(f"{shown} is a folder; pass a ratings CSV file")
    if not p.is_file():  # a device or a pipe (/dev/zero) would be read without end
        raise DataError(f"{shown} is not a regular file; pass a ratings CSV file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(
            f"{shown}: cannot be read ({exc.strerror}); check its permissions"
        ) from None
    return parse_ratings(data, shown, movies, "the movies of the dataset")


def _fingerprint(ratings_bytes: bytes, movies_bytes: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(ratings_bytes)
    digest.update(movies_bytes)
    return digest.hexdigest()
