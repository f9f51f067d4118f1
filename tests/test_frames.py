"""The Python API takes pandas DataFrames as well as a folder (fmstore.datasets.from_frames)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from planted import write_planted

from fmstore import datasets
from fmstore.config import TrainConfig
from fmstore.errors import DataError
from fmstore.train import train


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("planted"))


@pytest.fixture()
def frames(folder):
    return pd.read_csv(folder / "ratings.csv"), pd.read_csv(folder / "movies.csv")


def test_frames_make_the_dataset_the_folder_makes(folder, frames):
    from_folder = datasets.load_dataset(folder)
    from_frames = datasets.from_frames(*frames)
    for name in ("user_id", "movie_id", "rating", "timestamp"):
        np.testing.assert_array_equal(
            getattr(from_frames.ratings, name), getattr(from_folder.ratings, name)
        )
    assert from_frames.movies.title == from_folder.movies.title
    assert from_frames.movies.genres == from_folder.movies.genres
    np.testing.assert_array_equal(from_frames.movies.year, from_folder.movies.year)


def test_train_from_frames_learns_what_it_learns_from_the_folder(folder, frames):
    config = TrainConfig(epochs=5, factors=8, lr=0.03, batch_size=256, patience=5)
    a = train(datasets.load_dataset(folder), config)
    b = train(datasets.from_frames(*frames), config)
    assert b.metrics["valid_rmse"] == pytest.approx(a.metrics["valid_rmse"], abs=1e-6)


def test_timestamp_is_optional_and_extra_columns_are_ignored(frames):
    ratings, movies = frames
    ratings = ratings.drop(columns="timestamp").assign(note="x")
    dataset = datasets.from_frames(ratings, movies.assign(extra=1))
    assert len(dataset.ratings) == len(ratings) and not dataset.ratings.timestamp.any()


def test_a_missing_column_is_named(frames):
    ratings, movies = frames
    with pytest.raises(DataError, match="ratings DataFrame has no column 'rating'"):
        datasets.from_frames(ratings.drop(columns="rating"), movies)
    with pytest.raises(DataError, match="movies DataFrame has no column 'title'"):
        datasets.from_frames(ratings, movies.drop(columns="title"))
    with pytest.raises(DataError, match="expected a pandas DataFrame"):
        datasets.from_frames(ratings.to_dict(), movies)


def test_a_bad_value_names_the_row_label_and_the_column(frames):
    ratings, movies = frames
    ratings.index = ratings.index + 1000  # messages name the frame's own labels
    bad = ratings.copy()
    bad.loc[1003, "rating"] = 7.0
    with pytest.raises(DataError) as info:
        datasets.from_frames(bad, movies)
    message = str(info.value)
    assert "ratings DataFrame row 1003" in message and "rating '7.0'" in message
    unknown = ratings.copy()
    unknown.loc[1005, "movieId"] = 987654
    with pytest.raises(DataError, match="row 1005: movieId '987654' is not in the movies"):
        datasets.from_frames(unknown, movies)
    twice = pd.concat([ratings, ratings.iloc[[0]].rename(index={1000: 5})])
    with pytest.raises(DataError, match="rows 1000 and 5: user"):
        datasets.from_frames(twice, movies)
