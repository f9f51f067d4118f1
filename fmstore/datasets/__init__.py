"""MovieLens datasets: read a folder or a GroupLens .zip, validate, fingerprint, cache, download
with a checksum, synthesize ml-latest-shaped data for benchmarks, and split ratings for training.

One file per job:
  types      the files, columns and rating scale of MovieLens; Ratings, Movies, Dataset
  sources    a folder or a .zip, read as raw bytes
  csvtext    the header check and the row -> line-number map behind every one-line error
  validate   ratings.csv, movies.csv and links.csv parsed and checked
  load       load_dataset and load_ratings_file (the public readers)
  frames     from_frames: the same Dataset from pandas DataFrames (notebooks); a person's own
             ids, column names and rating scale
  side       side columns (categorical, multi-valued, numeric) of the movies and users tables
  csvfile    load_csv: a person's own ratings CSV (any columns, ids, scale), through from_frames;
             add_side_columns: a MovieLens folder's dataset plus side columns
  cache      the binary cache that lets a second load skip parsing and hashing
  download   fetch_dataset: download, verify the md5, unpack
  synth      synthesize: planted-model data shaped like ml-latest
  splits     split_indices: the deterministic train/validation split; last_by_time: the
             time-based one (each user's last ratings)
"""

from fmstore.datasets.cache import CACHE_FORMAT
from fmstore.datasets.csvfile import load_csv
from fmstore.datasets.download import DATASET_NAMES, DEFAULT_URL, KNOWN_MD5, fetch_dataset
from fmstore.datasets.frames import from_frames
from fmstore.datasets.load import load_dataset, load_ratings_file
from fmstore.datasets.splits import SPLITS, last_by_time, split_indices, split_of, split_rows
from fmstore.datasets.synth import synthesize
from fmstore.datasets.types import (
    GENRES,
    LINKS_COLUMNS,
    LINKS_FILE,
    MOVIES_COLUMNS,
    MOVIES_FILE,
    NO_GENRES,
    RATING_MAX,
    RATING_MIN,
    RATINGS_COLUMNS,
    RATINGS_FILE,
    Dataset,
    Movies,
    Ratings,
    parse_year,
)

__all__ = [
    "CACHE_FORMAT",
    "DATASET_NAMES",
    "DEFAULT_URL",
    "GENRES",
    "KNOWN_MD5",
    "LINKS_COLUMNS",
    "LINKS_FILE",
    "MOVIES_COLUMNS",
    "MOVIES_FILE",
    "NO_GENRES",
    "RATING_MAX",
    "RATING_MIN",
    "RATINGS_COLUMNS",
    "RATINGS_FILE",
    "SPLITS",
    "Dataset",
    "Movies",
    "Ratings",
    "fetch_dataset",
    "from_frames",
    "last_by_time",
    "load_csv",
    "load_dataset",
    "load_ratings_file",
    "parse_year",
    "split_indices",
    "split_of",
    "split_rows",
    "synthesize",
]
