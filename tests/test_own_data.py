"""A person's own data: text ids (and floats that are whole numbers), column names of their own,
any rating scale (given or inferred), a CSV read with `--data FILE --user-col ...`; the answers use
their ids (datasets.from_frames, datasets.load_csv, `fmstore train`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from planted import write_planted

from fmstore import datasets, runs
from fmstore.errors import DataError


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_text_ids_are_mapped_and_kept():
    ratings = _frame(userId=["ann", "bob", "ann"], movieId=["x", "x", "y"], rating=[4.0, 3.5, 5.0])
    data = datasets.from_frames(ratings)
    assert data.user_keys == ["ann", "bob"] and data.movie_keys == ["x", "y"]
    assert data.ratings.user_id.tolist() == [0, 1, 0]
    assert data.ratings.movie_id.tolist() == [0, 0, 1]
    assert data.movies.title == ["x", "y"]  # no movies frame: each titled by its id


def test_whole_number_floats_are_ids_as_they_are():
    ratings = _frame(userId=[10.0, 20.0], movieId=[7.0, 7.0], rating=[4.0, 3.0])
    data = datasets.from_frames(ratings)
    assert data.user_keys is None and data.movie_keys is None
    assert data.ratings.user_id.tolist() == [10, 20] and data.movies.movie_id.tolist() == [7]


def test_other_ids_are_kept_as_their_text():
    ratings = _frame(userId=[1.5, 2.5], movieId=[1, 1], rating=[4.0, 3.0])
    assert datasets.from_frames(ratings).user_keys == ["1.5", "2.5"]


@pytest.mark.parametrize(
    "ratings, scale",
    [
        ([0.5, 3.5, 5.0], (0.5, 5.0)),  # MovieLens's half stars
        ([1, 7, 10], (1.0, 10.0)),
        ([0, 7, 10], (0.0, 10.0)),
        ([0.0, 0.25, 1.0], (0.0, 1.0)),
        ([-1, 1, 1], (-1.0, 1.0)),  # thumbs
    ],
)
def test_the_rating_scale_is_inferred(ratings, scale):
    frame = _frame(userId=[1, 2, 3], movieId=[1, 1, 1], rating=ratings)
    assert datasets.from_frames(frame).rating_scale == scale


def test_a_given_scale_is_held_to():
    frame = _frame(userId=[1, 2], movieId=[1, 1], rating=[20, 95])
    assert datasets.from_frames(frame, rating_scale=(0, 100)).rating_scale == (0.0, 100.0)
    with pytest.raises(DataError, match=r"row 1: rating '95' is off the 0..50 scale"):
        datasets.from_frames(frame, rating_scale=(0, 50))
    with pytest.raises(DataError, match="rating '95.0' is off the 0.5..5 half-star scale"):
        datasets.from_frames(frame.assign(rating=[2.5, 95]))  # on no scale fmstore knows


def test_own_column_names_and_datetimes():
    frame = _frame(
        who=["a", "b"],
        what=["m", "n"],
        stars=[8, 3],
        when=pd.to_datetime(["1970-01-01 00:00:10", "1970-01-02 00:00:00"]),
        userId=[99, 98],  # a column with our name that is not the one meant: ignored
    )
    data = datasets.from_frames(
        frame, user_col="who", item_col="what", rating_col="stars", time_col="when"
    )
    assert data.user_keys == ["a", "b"] and data.ratings.timestamp.tolist() == [10, 86400]
    with pytest.raises(DataError, match="the ratings DataFrame has no column 'who'"):
        datasets.from_frames(frame.drop(columns="who"), user_col="who", item_col="what")


def test_errors_name_the_persons_ids():
    ratings = _frame(userId=["ann", "ann"], movieId=["x", "x"], rating=[4.0, 3.0])
    with pytest.raises(DataError, match="rows 0 and 1: user 'ann' rated movie 'x' twice"):
        datasets.from_frames(ratings)
    movies = _frame(movieId=["x"], title=["X (1999)"], genres=["Drama"])
    unknown = _frame(userId=["ann"], movieId=["zzz"], rating=[4.0])
    with pytest.raises(DataError, match="row 0: movieId 'zzz' is not in the movies DataFrame"):
        datasets.from_frames(unknown, movies)
    twice = _frame(movieId=["x", "x"], title=["X", "Y"], genres=["", ""])
    with pytest.raises(DataError, match="rows 0 and 1: movieId 'x' appears twice"):
        datasets.from_frames(unknown.assign(movieId="x"), twice)


@pytest.fixture(scope="module")
def own_csv(tmp_path_factory):
    """The planted data as someone's own CSV: text ids, 1-10 stars, their column names, and a
    movies CSV keyed by the same text ids."""
    folder = write_planted(tmp_path_factory.mktemp("planted"))
    ratings = pd.read_csv(folder / "ratings.csv")
    own = pd.DataFrame(
        {
            "listener": "u" + ratings.userId.astype(str),
            "film": "f" + ratings.movieId.astype(str),
            "stars": (ratings.rating * 2).astype(int),
        }
    )
    out = tmp_path_factory.mktemp("own")
    own.to_csv(out / "mine.csv", index=False)
    movies = pd.read_csv(folder / "movies.csv")
    movies["film"] = "f" + movies.pop("movieId").astype(str)
    movies.to_csv(out / "films.csv", index=False)
    return out


def test_load_csv_names_file_lines(own_csv, tmp_path):
    data = datasets.load_csv(
        own_csv / "mine.csv",
        own_csv / "films.csv",
        user_col="listener",
        item_col="film",
        rating_col="stars",
    )
    assert data.rating_scale == (1.0, 10.0) and data.movie_keys[0] == "f1"
    assert data.read_as["user_col"] == "listener"
    bad = pd.read_csv(own_csv / "mine.csv")
    bad.loc[4, "film"] = "nope"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv line 6: movieId 'nope' is not in"):
        datasets.load_csv(
            tmp_path / "bad.csv",
            own_csv / "films.csv",
            user_col="listener",
            item_col="film",
            rating_col="stars",
        )


def test_cli_trains_and_evaluates_your_own_csv(own_csv, tmp_path, fmstore_cli):
    from conftest import PLANTED_CLI_TRAIN

    home = tmp_path / "home"
    own = ["--user-col", "listener", "--item-col", "film", "--rating-col", "stars"]
    data = ["--data", str(own_csv / "mine.csv"), "--movies", str(own_csv / "films.csv")]
    trained = fmstore_cli(home, "train", *data, *own, *PLANTED_CLI_TRAIN, "--json")
    assert trained.returncode == 0, trained.stderr
    run_dir = home / "runs" / json.loads(trained.stdout)["run_id"]
    assert runs.load_keys(run_dir)[0][0] == "u1"
    manifest = runs.load_manifest(run_dir)
    assert manifest["serving"]["rating_range"] == [1.0, 10.0]
    assert manifest["dataset"]["read_as"]["item_col"] == "film"
    evaluated = fmstore_cli(home, "evaluate", "--json")  # reads the CSV again as it was read
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["relevant_min"] == pytest.approx(8.0)
    published = fmstore_cli(home, "publish")
    assert published.returncode == 0, published.stderr
    asked = fmstore_cli(home, "query", "--user", "u31", "-n", "3", "--json")
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    assert answer["query"]["user"] == "u31"
    assert all(r["key"].startswith("f") for r in answer["results"])
    unknown = fmstore_cli(home, "query", "--user", "nobody")
    assert unknown.returncode == 2 and "--user 'nobody' is not in run" in unknown.stderr
    scale = fmstore_cli(home, "train", *data, *own, "--rating-scale", "10,1")
    assert scale.returncode == 2 and "--rating-scale '10,1'" in scale.stderr
    assert np.isfinite(manifest["metrics"]["valid_rmse"])


def _plays(folder):
    """The planted data as a play log: no ratings; a user plays a movie of their own group 5
    times, any other once (one row per play)."""
    ratings = pd.read_csv(folder / "ratings.csv")
    times = np.where(ratings.rating >= 4, 5, 1)
    plays = ratings.loc[ratings.index.repeat(times), ["userId", "movieId"]]
    return pd.DataFrame(
        {"listener": "u" + plays.userId.astype(str), "track": "t" + plays.movieId.astype(str)}
    )


def test_implicit_data_weights_pairs_by_plays(tmp_path):
    plays = _plays(write_planted(tmp_path))
    data = datasets.from_frames(plays, user_col="listener", item_col="track", rating_col=None)
    assert data.implicit and data.rating_scale == (0.0, 1.0)
    assert len(data.ratings) == 90 * 20  # one rating per (user, movie) pair
    assert set(np.unique(data.ratings.rating).tolist()) == {0.5, 1.0}  # 5 plays: the heavier half
    counted = plays.assign(n=2.0)
    weighted = datasets.from_frames(
        counted, user_col="listener", item_col="track", rating_col=None, weight_col="n"
    )
    np.testing.assert_array_equal(weighted.ratings.rating, data.ratings.rating)


def test_implicit_only_data_is_trained_and_served_end_to_end(tmp_path, planted_train):
    """A play log (no ratings): the rating FM is skipped, the ranking model serves alone, before
    and after publish."""
    from planted import group_of_movie

    import fmstore
    from fmstore.config import Settings
    from fmstore.errors import ConfigError

    plays = _plays(write_planted(tmp_path / "data"))
    columns = dict(user_col="listener", item_col="track", rating_col=None)
    model = fmstore.fit(plays, runs_dir=tmp_path / "runs", **columns, **planted_train)
    assert model.implicit and model.metrics["epochs_run"] == 0
    assert model.metrics["valid_ndcg@10"] > 0.5
    live = fmstore.publish(model, settings=Settings(home=tmp_path / "home"))
    try:
        for served in (model, live):
            ids, _ = served.recommend("u31", N=3)
            assert [group_of_movie(int(i[1:])) for i in ids] == [1, 1, 1], ids
            ids, _ = served.recommend("someone new", user_items=["t1", "t2"], N=3)
            assert [group_of_movie(int(i[1:])) for i in ids] == [0, 0, 0], ids
        with pytest.raises(ConfigError, match="implicit data"):
            model.predict("u1", "t1")
    finally:
        live.close()


def test_cli_trains_implicit_data(tmp_path, fmstore_cli):
    from conftest import PLANTED_CLI_TRAIN

    _plays(write_planted(tmp_path / "data")).to_csv(tmp_path / "plays.csv", index=False)
    own = ["--user-col", "listener", "--item-col", "track", "--implicit"]
    home = tmp_path / "home"
    trained = fmstore_cli(
        home, "train", "--data", str(tmp_path / "plays.csv"), *own, *PLANTED_CLI_TRAIN
    )
    assert trained.returncode == 0, trained.stderr
    assert "implicit data, the ranking model alone: served Recall@10" in trained.stdout
    weight = fmstore_cli(home, "train", "--data", str(tmp_path / "plays.csv"), "--weight-col", "n")
    assert weight.returncode == 2 and "--weight-col is for --implicit" in weight.stderr


# ---- splits (datasets.splits.split_rows; `fmstore train/evaluate --split`) ---------------------


def test_each_split_holds_out_what_it_says():
    from fmstore.datasets import split_rows

    user = np.repeat(np.arange(10), 10)
    time = np.tile(np.arange(10)[::-1], 10)  # each user's ratings newest first
    train, valid = split_rows("random", user, time, 0.2, 0)
    assert len(valid) == 20 and len(train) == 80
    train, valid = split_rows("time", user, time, 0.2, 0)
    assert sorted(set(time[valid].tolist())) == [8, 9] and len(valid) == 20
    train, valid = split_rows("leave-last-n", user, time, 0.1, 0, last_n=3)
    assert set(time[valid].tolist()) == {7, 8, 9} and len(valid) == 30
    train, valid = split_rows("users", user, time, 0.2, 0)
    assert len(set(user[valid].tolist())) == 2 and not set(user[valid]) & set(user[train])
    again = split_rows("users", user, time, 0.2, 0)
    assert np.array_equal(again[1], valid)


def test_cli_trains_and_evaluates_on_a_time_split(tmp_path, fmstore_cli, assert_one_line_error):
    from conftest import PLANTED_CLI_TRAIN

    data = write_planted(tmp_path / "data")
    home = tmp_path / "home"
    args = ["--data", str(data), *PLANTED_CLI_TRAIN, "--no-refit", "--no-tune-ranking"]
    trained = fmstore_cli(home, "train", *args, "--split", "time", "--json")
    assert trained.returncode == 0, trained.stderr
    printed = json.loads(trained.stdout)
    evaluated = fmstore_cli(home, "evaluate", "--split", "time", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["test"].startswith("valid split (time, seed 0")
    served = report["metrics"]["served"]  # what train printed is what evaluate measures
    assert served["ndcg@10"] == pytest.approx(printed["valid_ndcg@10"], abs=1e-9)
    assert served["recall@10"] == pytest.approx(printed["valid_recall@10"], abs=1e-9)
    other = fmstore_cli(home, "evaluate", "--split", "users")
    assert_one_line_error(other, "--split users", "was validated on a time split")
    bad = fmstore_cli(home, "train", *args, "--split", "sideways")
    assert_one_line_error(bad, "--split 'sideways'", "random, time, leave-last-n, users")
