"""Synthetic ml-latest-shaped data for benchmarks: a planted low-rank model with MovieLens's
skews (Zipf-like movie popularity, long-tailed user activity), written as ratings.csv and
movies.csv that load_dataset reads like the real thing.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from fmstore import serving
from fmstore.datasets.types import (
    GENRES,
    MOVIES_COLUMNS,
    MOVIES_FILE,
    NO_GENRES,
    RATINGS_COLUMNS,
    RATINGS_FILE,
)
from fmstore.errors import DataError

_SYNTH_RANK = 16
_SYNTH_USERS_PER_CHUNK = 16_384
_SYNTH_MAX_ROUNDS = 8
_HALF_STARS = [f"{0.5 * i:.1f}" for i in range(1, 11)]  # "0.5" .. "5.0", as MovieLens writes them


def synthesize(
    out: Path,
    n_ratings: int = 27_753_444,
    n_users: int = 283_228,
    n_movies: int = 53_889,
    seed: int = 0,
) -> Path:
    """Write an ml-latest-shaped synthetic dataset (ratings.csv, movies.csv) into `out`.

    Zipf-like movie popularity, long-tailed user activity, and ratings from a planted model:
    mean + user bias + movie bias + <p_u, q_i> (rank 16, q_i partly driven by genres so that
    genre features carry signal) + noise, rounded to half stars. (user, movie) pairs are unique.
    Users are generated in chunks, so memory stays bounded (well under 1 GB at full size).
    Deterministic for a given seed.
    """
    if n_users < 1 or n_movies < 1 or n_ratings < 1:
        raise DataError("synthesize needs n_ratings, n_users and n_movies >= 1")
    if n_ratings < n_users:
        # Every user rates at least one movie (a user without ratings does not exist in
        # ratings.csv), so fewer ratings than users cannot be spread over them.
        raise DataError(
            f"{n_ratings:,} ratings cannot give each of {n_users:,} users a rating; "
            "ask for at least as many ratings as users"
        )
    if n_ratings > n_users * n_movies:
        raise DataError(
            f"{n_ratings:,} ratings cannot fit {n_users:,} users x {n_movies:,} "
            "movies without repeating a (user, movie) pair; lower n_ratings"
        )
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
        self.movie_id = np.sort(
            rng.choice(np.arange(1, 4 * n_movies + 2), n_movies, replace=False)
        ).astype(np.int64)
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


def _user_counts(
    rng: np.random.Generator, n_ratings: int, n_users: int, n_movies: int
) -> np.ndarray:
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
        for movie_id, year, genres in zip(model.movie_id, model.year, model.genres, strict=True):
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
            table = pa.table(
                {
                    "userId": pa.array(users + 1),
                    "movieId": pa.array(model.movie_id[movies]),
                    "rating": labels.take(pa.array(stars)),
                    "timestamp": pa.array(_timestamps(rng, users, start, stop)),
                }
            )
            pacsv.write_csv(table, f, write_options=options)


def _sample_pairs(
    rng: np.random.Generator, model: _SynthModel, users: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
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
        keys = _sorted_unique(
            np.concatenate([keys, _fill_exactly(rng, keys, users, need, n_movies)])
        )
    return keys // n_movies, keys % n_movies


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # Sort + neighbour compare: several times faster than np.unique's hash path on int64 keys.
    values = np.sort(values)
    keep = np.empty(len(values), dtype=bool)
    keep[:1] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _random_subset_per_user(
    rng: np.random.Generator, keys: np.ndarray, n_movies: int, first_user: int, need: np.ndarray
) -> np.ndarray:
    """At most need[u] of each user's keys, chosen at random (not the lowest movie ids)."""
    owner = keys // n_movies - first_user  # non-decreasing: keys are sorted
    # Shuffle within each user: sort by owner + a random fraction (one float sort, no lexsort).
    order = np.argsort(owner + rng.random(len(keys)))
    group_start = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(need)))])
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - group_start[owner]
    return keys[rank < need[owner]]


def _fill_exactly(
    rng: np.random.Generator, keys: np.ndarray, users: np.ndarray, need: np.ndarray, n_movies: int
) -> np.ndarray:
    """Uniform draws from each remaining user's unseen movies (few users, rarely reached)."""
    extra = []
    for i in np.flatnonzero(need > 0):
        user = users[i]
        seen = keys[(keys >= user * n_movies) & (keys < (user + 1) * n_movies)] % n_movies
        unseen = np.setdiff1d(np.arange(n_movies), seen, assume_unique=True)
        extra.append(user * n_movies + rng.choice(unseen, need[i], replace=False))
    return np.concatenate(extra)


def _rate(
    rng: np.random.Generator,
    model: _SynthModel,
    users: np.ndarray,
    movies: np.ndarray,
    start: int,
    stop: int,
) -> np.ndarray:
    """Half-star index 0..9 (0.5..5.0) from the planted model, for each (user, movie)."""
    p = rng.normal(0.0, 0.5, (stop - start, _SYNTH_RANK)).astype(np.float32)
    user_bias = rng.normal(0.0, 0.35, stop - start)
    local = users - start
    # the planted truth is itself a biased MF: serving's score, around a mean of 3.5 stars
    score = serving.score(
        model.movie_bias[movies], model.q[movies], p[local], w0=3.5, b_u=user_bias[local]
    )
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
