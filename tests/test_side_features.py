"""Side features beyond genres and year: categorical, multi-valued and numeric columns of the
movies and users tables as FM fields (datasets.side, features.SideField), from Python
(fmstore.fit, datasets.from_frames) and the CLI (--movie-features, --users, --user-features),
folded into the served vectors exactly, cold start included."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import fmstore
from fmstore import datasets, runs
from fmstore.datasets.side import parse_specs
from fmstore.errors import ConfigError, DataError
from fmstore.features import SideField, Vocabulary, item_rows, user_rows
from fmstore.train import loop

N_USERS, N_MOVIES = 120, 40
UNRATED = (N_MOVIES - 1, N_MOVIES)  # movie ids nobody rated: one of each studio


def _planted():
    """Ratings set by a movie attribute alone: studio A movies get 4.5, studio B 1.5, plus a
    user attribute: 'tough' users rate everything one star lower. The last two movies (one per
    studio) are rated by nobody."""
    rng = np.random.default_rng(7)
    studio = np.where(np.arange(N_MOVIES) % 2 == 0, "A", "B")
    tough = rng.random(N_USERS) < 0.5
    rows = []
    for u in range(N_USERS):
        for m in rng.choice(N_MOVIES - 2, 15, replace=False):
            rating = (4.5 if studio[m] == "A" else 1.5) - (1.0 if tough[u] else 0.0)
            rows.append((f"u{u}", f"m{m + 1}", max(rating, 0.5)))
    ratings = pd.DataFrame(rows, columns=["userId", "movieId", "rating"])
    movies = pd.DataFrame(
        {
            "movieId": [f"m{i}" for i in range(1, N_MOVIES + 1)],
            "title": [f"Movie {i} (2001)" for i in range(1, N_MOVIES + 1)],
            "genres": "Drama",
            "studio": studio,
            "length": np.where(np.arange(N_MOVIES) % 5 == 0, np.nan, np.arange(N_MOVIES) * 3.0),
            "tags": ["x|y" if i % 3 == 0 else "y" for i in range(N_MOVIES)],
        }
    )
    users = pd.DataFrame(
        {
            "userId": [f"u{u}" for u in range(N_USERS)],
            "tough": np.where(tough, "yes", "no"),
            "age": rng.integers(18, 70, N_USERS),
        }
    )
    return ratings, movies, users


MOVIE_FEATURES = ["studio", "length:num", "tags:multi"]
USER_FEATURES = ["tough", "age:num"]


def _recording_engines(monkeypatch):
    """The names of the training engines make_engine builds from now on (this test's)."""
    built = []

    def make_engine(*args, **kwargs):
        engine = real(*args, **kwargs)
        built.append(type(engine).__name__)
        return engine

    real = loop.make_engine
    monkeypatch.setattr(loop, "make_engine", make_engine)
    return built


@pytest.fixture(scope="module")
def side_fit(tmp_path_factory):
    """The planted model with movie and user columns, and the engines that trained it."""
    ratings, movies, users = _planted()
    with pytest.MonkeyPatch.context() as patch:
        engines = _recording_engines(patch)
        model = fmstore.fit(
            ratings,
            movies,
            runs_dir=tmp_path_factory.mktemp("runs"),
            movie_features=MOVIE_FEATURES,
            users=users,
            user_features=USER_FEATURES,
            epochs=12,
            factors=8,
            ranking=False,
            lr=0.03,
            batch_size=256,
        )
    return model, engines


@pytest.fixture(scope="module")
def side_model(side_fit):
    return side_fit[0]


def test_user_columns_train_on_the_numba_engine(side_fit):
    """User side columns (features shared by many user rows) train on the fast CPU engine,
    training and refit alike."""
    _, engines = side_fit
    assert engines and set(engines) == {"NumbaEngine"}


def test_specs_name_a_kind():
    assert parse_specs("age:num, gender,tags:multi") == [
        ("age", "number"),
        ("gender", "category"),
        ("tags", "multi"),
    ]
    with pytest.raises(ConfigError, match="must be num or multi"):
        parse_specs("age:float")
    with pytest.raises(ConfigError, match="twice"):
        parse_specs("age,age:num")


def test_numeric_columns_are_bucketed_with_an_unknown_bucket():
    ratings, movies, users = _planted()
    data = datasets.from_frames(ratings, movies, movie_features=["length:num"])
    field = SideField.of("movie", data.movies.side["length"])
    assert field.size == len(field.values) + 2 and 2 <= len(field.values) <= 9
    vocab = Vocabulary.build(data.ratings, data.movies, ("movie", "genre", "year"))
    rows = item_rows(vocab, data.movies)
    first = vocab.offsets()["movie:length"]
    length = rows.index[:, -1] - first  # the numeric field's one column
    assert (length[np.isnan(data.movies.side["length"].values)] == 0).all()  # unknown bucket
    known = ~np.isnan(data.movies.side["length"].values)
    assert (length[known] >= 1).all() and (np.diff(length[known]) >= 0).all()  # ordered
    # a table without the column (a movie added live): the unknown bucket, weight 1
    one = datasets.Movies(np.array([1]), ["New"], [()], np.array([0]), [None], [None])
    assert item_rows(vocab, one).index[0, -1] == first


def test_user_rows_hold_the_users_columns():
    ratings, movies, users = _planted()
    data = datasets.from_frames(
        ratings, movies, users=users.iloc[1:], user_features=["tough", "age:num"]
    )
    vocab = Vocabulary.build(data.ratings, data.movies, ("user", "movie"), data.users)
    rows = user_rows(vocab, data.users)
    n = len(vocab.user_ids)
    assert rows.index.shape == (n + 1, 3)
    assert (rows.weight[-1] == 0).all()  # the unseen-user padding row stays empty
    missing = int(np.flatnonzero(vocab.user_ids == data.user_keys.index("u0"))[0])
    offsets = vocab.offsets()
    assert rows.weight[missing, 1] == 0  # not in the users table: no category ...
    assert rows.index[missing, 2] == offsets["user:age"]  # ... and the unknown age bucket


def test_an_unrated_movie_follows_its_attribute(side_model):
    high, low = side_model.predict("u1", [f"m{UNRATED[0]}", f"m{UNRATED[1]}"])
    # m39 is studio A (index 38, even), m40 studio B: nobody rated either
    assert high > 3.0 > 2.0 > low
    # the user attribute: a tough user's prediction is lower for the same movie
    ratings, _, users = _planted()
    tough = users.userId[users.tough == "yes"].iloc[0]
    easy = users.userId[users.tough == "no"].iloc[0]
    assert side_model.predict(tough, "m39") < side_model.predict(easy, "m39") - 0.5


def test_served_scores_equal_the_fm(side_model):
    """The served rating (the points' [q_i, b_i] and [p_u, 1], b_u) is the torch FM's predict
    for every pair, cold movies included: the side terms are folded in exactly."""
    run_dir = side_model.run_dir
    model = runs.load_model(run_dir)
    user_keys, movie_keys = runs.load_keys(run_dir)
    vocab_users = runs.load_arrays(run_dir / "serving.safetensors", ("user_ids",))["user_ids"]
    users = np.arange(len(vocab_users))
    items = np.arange(N_MOVIES)
    fm = model.predict(
        torch.as_tensor(np.repeat(users, len(items))), torch.as_tensor(np.tile(items, len(users)))
    ).numpy()
    keys = [user_keys[int(u)] for u in vocab_users]
    served = np.stack([side_model.predict(k, [movie_keys[i] for i in items]) for k in keys])
    np.testing.assert_allclose(served.reshape(-1), fm, atol=2e-5)
    manifest = runs.load_manifest(run_dir)
    side = [f["name"] for f in manifest["vocabulary"]["side"]]
    assert side == ["movie:studio", "movie:length", "movie:tags", "user:tough", "user:age"]


def test_bad_side_input_is_one_clear_error():
    ratings, movies, users = _planted()
    with pytest.raises(DataError, match=r"movies DataFrame has no column 'studioo'"):
        datasets.from_frames(ratings, movies, movie_features=["studioo"])
    bad = movies.assign(length=movies.length.astype(object))
    bad.loc[3, "length"] = "long"
    with pytest.raises(DataError, match=r"row 3: length 'long' is not a number \(length:num\)"):
        datasets.from_frames(ratings, bad, movie_features=["length:num"])
    with pytest.raises(DataError, match="need a users table"):
        datasets.from_frames(ratings, movies, user_features=["age"])
    with pytest.raises(DataError, match="user 'u2' appears twice"):
        twice = pd.concat([users, users.iloc[[2]]], ignore_index=True)
        datasets.from_frames(ratings, movies, users=twice, user_features=["age"])


def _write_csvs(folder):
    ratings, movies, users = _planted()
    ratings.to_csv(folder / "ratings.csv", index=False)
    movies.to_csv(folder / "movies.csv", index=False)
    users.to_csv(folder / "users.csv", index=False)
    return folder


def test_cli_trains_publishes_and_serves_side_features(tmp_path, fmstore_cli, monkeypatch):
    engines = _recording_engines(monkeypatch)
    folder = _write_csvs(tmp_path)
    home = tmp_path / "home"
    side = [
        "--movie-features",
        "studio,length:num,tags:multi",
        "--users",
        str(folder / "users.csv"),
    ]
    data = ["--data", str(folder / "ratings.csv"), "--movies", str(folder / "movies.csv")]
    small = ["--epochs", "12", "--factors", "8", "--lr", "0.03", "--batch-size", "256"]
    small += ["--no-tune-ranking"]
    trained = fmstore_cli(
        home, "train", *data, *side, "--user-features", "tough,age:num", *small, "--json"
    )
    assert trained.returncode == 0, trained.stderr
    assert engines and set(engines) == {"NumbaEngine"}
    run_dir = home / "runs" / json.loads(trained.stdout)["run_id"]
    read_as = runs.load_manifest(run_dir)["dataset"]["read_as"]
    assert read_as["movie_features"] == ["studio", "length:num", "tags:multi"]
    assert read_as["user_features"] == ["tough", "age:num"]
    evaluated = fmstore_cli(home, "evaluate", "--json")  # reads the side columns again
    assert evaluated.returncode == 0, evaluated.stderr
    published = fmstore_cli(home, "publish")
    assert published.returncode == 0, published.stderr
    asked = fmstore_cli(home, "query", "--user", "u3", "-n", str(N_MOVIES), "--json")
    assert asked.returncode == 0, asked.stderr
    rating = {r["key"]: r["predicted_rating"] for r in json.loads(asked.stdout)["results"]}
    # the movies nobody rated are served, each rated as its studio is (m39: A, m40: B)
    assert rating["m39"] > rating["m40"] + 1.5
    # a movie added live keeps genres and year: its side columns are unknown
    added = fmstore_cli(home, "movies", "add", "--title", "Later (2003)", "--genres", "Drama")
    assert added.returncode == 0, added.stderr


def test_cli_refuses_bad_side_input(tmp_path, fmstore_cli, assert_one_line_error):
    folder = _write_csvs(tmp_path)
    home = tmp_path / "home"
    data = ["--data", str(folder / "ratings.csv"), "--movies", str(folder / "movies.csv")]
    missing = fmstore_cli(home, "train", *data, "--movie-features", "country")
    assert_one_line_error(missing, "movies.csv has no column 'country'")
    movies = pd.read_csv(folder / "movies.csv")
    movies["length"] = movies["length"].astype(object)
    movies.loc[4, "length"] = "long"
    movies.to_csv(folder / "bad.csv", index=False)
    bad = ["--data", str(folder / "ratings.csv"), "--movies", str(folder / "bad.csv")]
    not_number = fmstore_cli(home, "train", *bad, "--movie-features", "length:num")
    assert_one_line_error(not_number, "bad.csv line 6: length 'long' is not a number")
    no_users = fmstore_cli(home, "train", *data, "--user-features", "age")
    assert_one_line_error(no_users, "--user-features: give the users CSV")
    users = ["--users", str(folder / "users.csv")]
    no_column = fmstore_cli(home, "train", *data, *users, "--user-features", "job")
    assert_one_line_error(no_column, "users.csv has no column 'job'")
    kind = fmstore_cli(home, "train", *data, "--movie-features", "length:float")
    assert_one_line_error(kind, "the kind after ':' must be num or multi")


def test_a_movielens_folder_gains_side_columns(tmp_path):
    """--data FOLDER --movies FILE --movie-features ...: the folder read as always (same ratings,
    movies, order), plus the file's side columns matched by movieId (a movie it lacks: unknown)."""
    from planted import write_planted

    folder = write_planted(tmp_path / "planted")
    plain = datasets.load_dataset(folder)
    extra = pd.read_csv(folder / "movies.csv").iloc[2:]
    extra["lang"] = np.where(extra.movieId % 2 == 0, "en", "fr")
    extra["minutes"] = extra.movieId * 10.0
    extra.iloc[::-1].to_csv(tmp_path / "extra.csv", index=False)  # another order: by id
    read_as = {"movies": str(tmp_path / "extra.csv"), "movie_features": "lang,minutes:num"}
    data = datasets.load_dataset(folder, read_as=read_as)
    np.testing.assert_array_equal(data.ratings.rating, plain.ratings.rating)
    np.testing.assert_array_equal(data.movies.movie_id, plain.movies.movie_id)
    assert data.fingerprint != plain.fingerprint
    lang, minutes = data.movies.side["lang"].values, data.movies.side["minutes"].values
    assert lang[:2] == [None, None] and np.isnan(minutes[:2]).all()
    ids = data.movies.movie_id[2:]
    assert lang[2:] == ["en" if i % 2 == 0 else "fr" for i in ids]
    np.testing.assert_array_equal(minutes[2:], ids * 10.0)
    assert data.read_as["movie_features"] == ["lang", "minutes:num"]
    again = datasets.load_dataset(folder, read_as=data.read_as)  # as evaluate reads a run's
    assert again.fingerprint == data.fingerprint
    extra["minutes"] = extra["minutes"].astype(object)
    extra.loc[extra.index[3], "minutes"] = "soon"
    extra.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad.csv line 5: minutes 'soon' is not a number"):
        datasets.load_dataset(folder, read_as=read_as | {"movies": str(tmp_path / "bad.csv")})
