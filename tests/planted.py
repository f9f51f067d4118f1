"""A small dataset with a known answer: users in group g love movies in group g.

Three groups of 30 users and 12 movies each (genre = the group's genre). Each user rates 20
random movies: 4.5-5 stars inside their group, 1-2 stars outside. Two extra movies of each genre
have no ratings at all (the cold-start movies publish must still include).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

GROUPS = ("Action", "Comedy", "Drama")
USERS_PER_GROUP = 30
MOVIES_PER_GROUP = 12
UNRATED_PER_GROUP = 2
RATINGS_PER_USER = 20


def group_of_user(user_id: int) -> int:
    return (user_id - 1) // USERS_PER_GROUP


def group_of_movie(movie_id: int) -> int:
    return (movie_id - 1) // (MOVIES_PER_GROUP + UNRATED_PER_GROUP)


def rated_movie_ids(group: int) -> list[int]:
    start = group * (MOVIES_PER_GROUP + UNRATED_PER_GROUP) + 1
    return list(range(start, start + MOVIES_PER_GROUP))


def unrated_movie_ids(group: int) -> list[int]:
    last_rated = rated_movie_ids(group)[-1]
    return [last_rated + 1 + j for j in range(UNRATED_PER_GROUP)]


def write_planted(folder: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "movies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for g, genre in enumerate(GROUPS):
            for m in rated_movie_ids(g) + unrated_movie_ids(g):
                w.writerow([m, f"{genre} Movie {m} ({1990 + m % 20})", genre])
    all_rated = [m for g in range(len(GROUPS)) for m in rated_movie_ids(g)]
    with open(folder / "ratings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for user in range(1, USERS_PER_GROUP * len(GROUPS) + 1):
            for m in sorted(rng.choice(all_rated, RATINGS_PER_USER, replace=False)):
                inside = group_of_movie(int(m)) == group_of_user(user)
                stars = rng.choice([4.5, 5.0]) if inside else rng.choice([1.0, 1.5, 2.0])
                w.writerow([user, int(m), stars, 1_000_000 + user * 100 + int(m)])
    return folder


def copy_home(source: Path, target: Path) -> Path:
    """A copy of an FMSTORE_HOME that keeps Qdrant Edge's preallocated segment files sparse:
    `cp` writes about 2 MB where shutil.copytree writes their ~250 MB of zeros."""
    import subprocess

    subprocess.run(["cp", "-a", "--sparse=always", str(source), str(target)], check=True)
    return target
