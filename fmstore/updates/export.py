"""`fmstore data export DIR`: a dataset folder that includes the recorded updates, to train on.

Training reads only its `--data` folder (a run is its dataset plus its config, nothing hidden in
the catalog), so the recorded ratings and movies reach the next model through an explicit
folder: the source dataset's ratings with each recorded rating on top (a re-rating replaces the
dataset's rating of that movie), and its movies followed by the added ones, in the MovieLens
layout (ratings.csv, movies.csv, links.csv when the source has one).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fmstore.catalog import updates as log
from fmstore.errors import ConfigError


@dataclass
class Exported:
    """What export wrote: the folder, its sizes, and how many recorded rows went in."""

    folder: str
    ratings: int
    movies: int
    recorded_ratings: int  # recorded ratings written (replacing or adding)
    added_movies: int


def export_dataset(engine: Engine, source: Path, dest: Path) -> Exported:
    """Write `dest` (a new or empty folder): the dataset at `source` with the catalog's recorded
    ratings and added movies. Refuses a folder that holds files (nothing is overwritten)."""
    from fmstore.datasets import load_dataset

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} is not empty: export writes a new dataset folder")
    data = load_dataset(source)
    with Session(engine) as session:
        recorded = log.all_current_ratings(session)
        times = log.rating_times(session)
        added = [movie for _, movie in log.added_movies(session)]
    ratings = data.ratings
    keep = np.ones(len(ratings), bool)
    touched = np.flatnonzero(np.isin(ratings.user_id, np.fromiter(recorded, np.int64)))
    for row in touched:  # the dataset's ratings that a recorded one replaces
        if int(ratings.movie_id[row]) in recorded[int(ratings.user_id[row])]:
            keep[row] = False
    new = [(u, m, r) for u, given in recorded.items() for m, r in given.items()]
    user = np.concatenate([ratings.user_id[keep], np.array([u for u, _, _ in new], np.int64)])
    movie = np.concatenate([ratings.movie_id[keep], np.array([m for _, m, _ in new], np.int64)])
    rating = np.concatenate([ratings.rating[keep], np.array([r for _, _, r in new], np.float32)])
    stamp = np.concatenate(
        [ratings.timestamp[keep], [int(times[(u, m)].timestamp()) for u, m, _ in new]]
    ).astype(np.int64)
    dest.mkdir(parents=True, exist_ok=True)
    _write_ratings(dest / "ratings.csv", user, movie, rating, stamp)
    known = set(data.movies.movie_id.tolist())
    added = [m for m in added if m["movie_id"] not in known]
    _write_movies(dest, data.movies, added)
    return Exported(str(dest), len(user), len(data.movies) + len(added), len(new), len(added))


def _write_ratings(path: Path, user, movie, rating, stamp) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    order = np.lexsort((movie, user))
    table = pa.table(
        {
            "userId": user[order],
            "movieId": movie[order],
            # ratings as MovieLens writes them: 4.0, 3.5
            "rating": pa.array(np.round(rating[order].astype(np.float64), 1)),
            "timestamp": stamp[order],
        }
    )
    options = pacsv.WriteOptions(quoting_style="none")
    pacsv.write_csv(table, str(path), write_options=options)


def _write_movies(dest: Path, movies, added: list[dict]) -> None:
    from fmstore.datasets.types import NO_GENRES

    with open(dest / "movies.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        for i in range(len(movies)):
            genres = "|".join(movies.genres[i]) or NO_GENRES
            writer.writerow([int(movies.movie_id[i]), movies.title[i], genres])
        for m in added:
            writer.writerow([m["movie_id"], m["title"], "|".join(m["genres"]) or NO_GENRES])
    if any(x is not None for x in movies.imdb_id):
        with open(dest / "links.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["movieId", "imdbId", "tmdbId"])
            for i in range(len(movies)):
                tmdb = movies.tmdb_id[i]
                writer.writerow(
                    [int(movies.movie_id[i]), movies.imdb_id[i] or "", "" if tmdb is None else tmdb]
                )
