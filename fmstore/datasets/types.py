"""What a MovieLens dataset is: its files and columns, the rating scale, and the arrays it is
read into (Ratings, Movies, Dataset).

Every other file of the package speaks in these names; this one imports nothing of the package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fmstore.serving import YEAR_SUFFIX

if TYPE_CHECKING:
    from fmstore.datasets.side import SideColumn, Users

RATINGS_FILE = "ratings.csv"
MOVIES_FILE = "movies.csv"
LINKS_FILE = "links.csv"
RATINGS_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIES_COLUMNS = ("movieId", "title", "genres")
LINKS_COLUMNS = ("movieId", "imdbId", "tmdbId")
NO_GENRES = "(no genres listed)"
# The 19 MovieLens genres (ml-latest README), used by the synthetic generator.
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
RATING_MIN, RATING_MAX = 0.5, 5.0


@dataclass
class Ratings:
    """Ratings as parallel arrays: user id, movie id, rating, timestamp (one entry per rating)."""

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
    """movies.csv (with links.csv's ids when present) as parallel columns, in file order."""

    movie_id: np.ndarray  # int64, unique, in movies.csv order
    title: list[str]
    genres: list[tuple[str, ...]]  # "(no genres listed)" -> ()
    year: np.ndarray  # int32 release year parsed from the title, 0 when none
    imdb_id: list[str | None]  # text as in links.csv, e.g. "0114709"
    tmdb_id: list[int | None]
    # Side columns asked for (datasets.side: categorical, multi-valued or numeric), in the rows'
    # order; each becomes an FM field "movie:<name>".
    side: dict[str, SideColumn] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.movie_id.shape[0])


@dataclass
class Dataset:
    """A loaded dataset: its name, where it was read from, a fingerprint of its bytes, ratings and
    movies."""

    name: str  # folder name or zip stem, e.g. "ml-latest-small"
    source: str  # absolute path read
    fingerprint: str  # sha256 hex over the bytes of ratings.csv then movies.csv
    ratings: Ratings
    movies: Movies
    # The lowest and highest rating (MovieLens: half stars from 0.5 to 5); training and serving
    # clamp predictions to it.
    rating_scale: tuple[float, float] = (RATING_MIN, RATING_MAX)
    # A person's own ids (text, or numbers that are not MovieLens's): keys[i] is the id behind
    # the whole number i the arrays hold; None when the arrays hold the ids themselves.
    user_keys: list | None = None
    movie_keys: list | None = None
    # How a person's own CSV was read (datasets.csvfile.load_csv's options), to read it again
    # from a run's manifest; None for a MovieLens folder or zip.
    read_as: dict | None = None
    # Implicit-only data (clicks, plays: no rating column): a rating of 1 for the pairs weighed
    # above the median, 0.5 for the others (frames._implicit); no rating model is fit.
    implicit: bool = False
    # The users table (datasets.side.Users) when side columns of users were asked for: each
    # becomes an FM field "user:<name>".
    users: Users | None = None


def parse_year(title: str) -> int:
    """Release year from a MovieLens title: "Toy Story (1995)" -> 1995, none -> 0."""
    match = YEAR_SUFFIX.search(title)
    return int(match.group(1)) if match else 0
