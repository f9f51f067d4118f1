"""Tests of fmstore.datasets: readers, validation messages, fingerprint, cache, fetch, synthesize.

Bad inputs are small CSVs written into tmp_path; the real ml-latest-small is read from
../shared/data (skipped with a reason when it is absent).
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fmstore import datasets
from fmstore.datasets import (
    Ratings,
    fetch_dataset,
    load_dataset,
    load_ratings_file,
    parse_year,
    synthesize,
)
from fmstore.datasets import load as dataset_loading
from fmstore.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_FOLDER = DATA / "ml-latest-small"
REAL_ZIP = DATA / "ml-latest-small.zip"

needs_real_folder = pytest.mark.skipif(
    not (REAL_FOLDER / "ratings.csv").is_file(),
    reason=f"real MovieLens data not found at {REAL_FOLDER} (shared data folder absent)",
)
needs_real_zip = pytest.mark.skipif(
    not REAL_ZIP.is_file(), reason=f"real MovieLens zip not found at {REAL_ZIP}"
)

MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
    '2,"American President, The (1995)",Comedy|Drama|Romance\n'
    "3,Babylon 5,(no genres listed)\n"
)
RATINGS_HEADER = "userId,movieId,rating,timestamp\n"
RATINGS = RATINGS_HEADER + "1,1,4.0,964982703\n1,2,3.5,964981247\n2,3,0.5,964982224\n"


def write_folder(
    folder: Path,
    ratings: str | bytes = RATINGS,
    movies: str | bytes = MOVIES,
    links: str | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("ratings.csv", ratings), ("movies.csv", movies), ("links.csv", links)):
        if text is not None:
            data = text.encode() if isinstance(text, str) else text
            (folder / name).write_bytes(data)
    return folder


def load_error(tmp_path: Path, **files) -> str:
    """The DataError message of loading a folder made of `files`."""
    folder = write_folder(tmp_path / "ds", **files)
    with pytest.raises(DataError) as info:
        load_dataset(folder)
    message = str(info.value)
    assert "\n" not in message, "error messages are one line"
    return message


def ratings_with(*rows: str) -> str:
    return RATINGS_HEADER + "".join(row + "\n" for row in rows)


# ------------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_folder_dataset():
    if not (REAL_FOLDER / "ratings.csv").is_file():
        pytest.skip(f"real MovieLens data not found at {REAL_FOLDER}")
    return load_dataset(REAL_FOLDER)


@needs_real_folder
def test_real_folder_counts_types_and_fingerprint(real_folder_dataset):
    d = real_folder_dataset
    assert d.name == "ml-latest-small"
    assert Path(d.source).resolve() == REAL_FOLDER.resolve()
    assert len(d.ratings) == 100_836
    assert len(np.unique(d.ratings.user_id)) == 610
    assert len(d.movies) == 9_742
    assert d.ratings.user_id.dtype == np.int64 and d.ratings.movie_id.dtype == np.int64
    assert d.ratings.rating.dtype == np.float32 and d.ratings.timestamp.dtype == np.int64
    assert d.movies.movie_id.dtype == np.int64 and d.movies.year.dtype == np.int32
    expected = hashlib.sha256(
        (REAL_FOLDER / "ratings.csv").read_bytes() + (REAL_FOLDER / "movies.csv").read_bytes()
    ).hexdigest()
    assert d.fingerprint == expected
    assert (
        d.ratings.user_id[0],
        d.ratings.movie_id[0],
        d.ratings.rating[0],
        d.ratings.timestamp[0],
    ) == (1, 1, 4.0, 964982703)


@needs_real_folder
def test_real_movies_metadata(real_folder_dataset):
    m = real_folder_dataset.movies
    assert m.title[0] == "Toy Story (1995)" and m.year[0] == 1995
    assert m.genres[0] == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert m.imdb_id[0] == "0114709" and m.tmdb_id[0] == 862  # leading zero kept as text
    assert sum(t is None for t in m.tmdb_id) == 8  # empty tmdbId cells in links.csv
    assert () in m.genres  # "(no genres listed)"
    assert "(no genres listed)" not in {g for gs in m.genres for g in gs}
    assert int((m.year == 0).sum()) == 12  # e.g. "Babylon 5"; "(2006–2007)" parses to 2006
    assert len(set(m.movie_id.tolist())) == len(m)


@needs_real_folder
@needs_real_zip
def test_real_zip_equals_folder(real_folder_dataset):
    z = load_dataset(REAL_ZIP)
    f = real_folder_dataset
    assert z.name == "ml-latest-small" and Path(z.source).resolve() == REAL_ZIP.resolve()
    assert z.fingerprint == f.fingerprint
    for name in ("user_id", "movie_id", "rating", "timestamp"):
        np.testing.assert_array_equal(getattr(z.ratings, name), getattr(f.ratings, name))
    np.testing.assert_array_equal(z.movies.movie_id, f.movies.movie_id)
    np.testing.assert_array_equal(z.movies.year, f.movies.year)
    assert (z.movies.title, z.movies.genres, z.movies.imdb_id, z.movies.tmdb_id) == (
        f.movies.title,
        f.movies.genres,
        f.movies.imdb_id,
        f.movies.tmdb_id,
    )


@needs_real_zip
def test_truncated_zip(tmp_path):
    data = REAL_ZIP.read_bytes()
    cut = tmp_path / "ml-latest-small.zip"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"ml-latest-small\.zip is not a readable zip.*download"):
        load_dataset(cut)


# ------------------------------------------------------------------------------- parse_year


@pytest.mark.parametrize(
    "title, year",
    [
        ("Toy Story (1995)", 1995),
        ("Babylon 5 (1994)", 1994),
        ("Babylon 5", 0),
        ("Hyena Road (2015) ", 2015),
        ("Death Note: Desu nôto (2006–2007)", 2006),
        ("Stranger Things (2016-)", 2016),
        ("(500) Days of Summer (2009)", 2009),
        ("1408 (2007)", 2007),
        ("2001: A Space Odyssey (1968)", 1968),
        ("Seven (a.k.a. Se7en) (1995)", 1995),
        ("Nocturnal Animals", 0),
        ("", 0),
    ],
)
def test_parse_year(title, year):
    assert parse_year(title) == year


# ------------------------------------------------------------------------------- good small inputs


def test_small_folder_quoted_titles_links_and_no_genres(tmp_path):
    links = "movieId,imdbId,tmdbId\n1,0114709,862\n2,0112346,\n"
    d = load_dataset(write_folder(tmp_path / "small", links=links))
    assert d.name == "small"
    assert d.movies.title[1] == "American President, The (1995)"
    assert d.movies.genres[2] == () and d.movies.year.tolist() == [1995, 1995, 0]
    assert d.movies.imdb_id == ["0114709", "0112346", None]
    assert d.movies.tmdb_id == [862, None, None]
    assert d.ratings.rating.tolist() == [4.0, 3.5, 0.5]


def test_crlf_bom_blank_lines_and_column_order_are_accepted(tmp_path):
    ratings = "\ufeffmovieId,userId,timestamp,rating\r\n1,1,5,4.0\r\n\r\n2,1,6,3.5\r\n3,2,7,0.5\r\n"
    d = load_dataset(write_folder(tmp_path / "crlf", ratings=ratings))
    assert d.ratings.user_id.tolist() == [1, 1, 2]
    assert d.ratings.movie_id.tolist() == [1, 2, 3]
    assert d.ratings.timestamp.tolist() == [5, 6, 7]


def test_zip_with_files_at_root(tmp_path):
    z = tmp_path / "flat.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ratings.csv", RATINGS)
        zf.writestr("movies.csv", MOVIES)
    d = load_dataset(z)
    assert d.name == "flat" and len(d.ratings) == 3
    assert d.fingerprint == hashlib.sha256((RATINGS + MOVIES).encode()).hexdigest()


def test_ratings_take():
    r = Ratings(
        np.arange(4, dtype=np.int64),
        np.arange(4, dtype=np.int64) + 10,
        np.array([1, 2, 3, 4], np.float32),
        np.arange(4, dtype=np.int64) * 100,
    )
    sub = r.take(np.array([3, 1]))
    assert len(sub) == 2 and sub.movie_id.tolist() == [13, 11]
    assert sub.timestamp.tolist() == [300, 100]
    masked = r.take(r.rating > 2)
    assert masked.user_id.tolist() == [2, 3]


# ------------------------------------------------------------------------------- bad inputs


def test_rating_off_scale_example_message(tmp_path):
    rows = [f"{user},1,4.0,1" for user in range(1, 18)]  # lines 2..18
    rows[15] = "99,2,6.0,1"  # line 17
    message = load_error(tmp_path, ratings=ratings_with(*rows))
    assert message == (
        f"{tmp_path / 'ds' / 'ratings.csv'} line 17: rating '6.0' is off the "
        "0.5..5 half-star scale; fix or remove that row"
    )


@pytest.mark.parametrize(
    "value, words",
    [
        ("3.3", "off the 0.5..5 half-star scale"),
        ("0", "off the 0.5..5 half-star scale"),
        ("5.5", "off the 0.5..5 half-star scale"),
        ("-1.0", "off the 0.5..5 half-star scale"),
        ("NaN", "is not a number"),
        ("four", "is not a number"),
    ],
)
def test_bad_rating_values(tmp_path, value, words):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", f"1,2,{value},2"))
    assert "ratings.csv line 3" in message and f"'{value}'" in message and words in message


def test_empty_rating_value(tmp_path):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", "1,2,,2"))
    assert "ratings.csv line 3: rating is empty" in message and "fill it in" in message


def test_empty_user_id(tmp_path):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", ",2,3.0,2"))
    assert "ratings.csv line 3: userId is empty" in message


@pytest.mark.parametrize(
    "row, column, value",
    [
        ("abc,2,3.0,5", "userId", "abc"),
        ("1,x2,3.0,5", "movieId", "x2"),
        ("1,2.5,3.0,5", "movieId", "2.5"),
        ("1,2,3.0,yesterday", "timestamp", "yesterday"),
    ],
)
def test_non_numeric_ratings_fields(tmp_path, row, column, value):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", "2,1,4.0,1", row))
    assert f"ratings.csv line 4: {column} '{value}' is not a whole number" in message


def test_negative_id(tmp_path):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", "-7,2,3.0,2"))
    assert "ratings.csv line 3: userId '-7' is negative" in message


def test_line_numbers_count_blank_lines(tmp_path):
    ratings = RATINGS_HEADER + "1,1,4.0,1\n\n\n1,2,9.0,2\n"
    message = load_error(tmp_path, ratings=ratings)
    assert "ratings.csv line 5: rating '9.0'" in message


def test_duplicate_pair_names_both_lines(tmp_path):
    message = load_error(
        tmp_path, ratings=ratings_with("1,1,4.0,1", "2,3,4.0,1", "1,2,3.0,2", "1,1,2.0,3")
    )
    assert "ratings.csv lines 2 and 5: user 1 rated movie 1 twice" in message
    assert "keep one" in message


def test_rating_for_unknown_movie(tmp_path):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", "1,99,4.0,1", "1,98,4.0,1"))
    assert "ratings.csv line 3: movieId '99' is not in" in message and "movies.csv" in message
    assert "2 rows in all" in message


def test_missing_column(tmp_path):
    message = load_error(tmp_path, ratings="userId,movieId,rating\n1,1,4.0\n")
    assert "ratings.csv line 1: missing column 'timestamp'" in message
    assert "userId,movieId,rating,timestamp" in message


def test_renamed_column_is_missing_and_unexpected(tmp_path):
    message = load_error(tmp_path, ratings="user,movieId,rating,timestamp\n1,1,4.0,1\n")
    assert "line 1: missing column 'userId'" in message and "'user'" in message


def test_extra_column(tmp_path):
    message = load_error(tmp_path, ratings="userId,movieId,rating,timestamp,extra\n1,1,4.0,1,x\n")
    assert "ratings.csv line 1: unexpected column 'extra'" in message


def test_wrong_field_count_in_a_row(tmp_path):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", "1,2,3.0"))
    assert "ratings.csv line 3: expected 4 comma-separated values" in message
    assert "found 3: '1,2,3.0'" in message


@pytest.mark.parametrize("sep, word", [(";", "semicolons"), ("\t", "tabs")])
def test_wrong_delimiter_in_header(tmp_path, sep, word):
    text = RATINGS.replace(",", sep)
    message = load_error(tmp_path, ratings=text)
    assert f"ratings.csv line 1: values are separated by {word}, not commas" in message


def test_wrong_delimiter_in_a_row(tmp_path):
    message = load_error(tmp_path, ratings=ratings_with("1,1,4.0,1", "1;2;3.0;2"))
    assert "ratings.csv line 3: values are separated by semicolons" in message


def test_semicolon_movies(tmp_path):
    message = load_error(tmp_path, movies=MOVIES.replace(",", ";"))
    assert "movies.csv line 1: values are separated by semicolons" in message


@pytest.mark.parametrize("file", ["ratings", "movies"])
def test_zero_byte_file(tmp_path, file):
    message = load_error(tmp_path, **{file: ""})
    assert f"{file}.csv is empty (0 bytes)" in message


def test_header_only_ratings(tmp_path):
    message = load_error(tmp_path, ratings=RATINGS_HEADER)
    assert "ratings.csv has a header line but no ratings" in message


def test_header_only_movies(tmp_path):
    message = load_error(tmp_path, movies="movieId,title,genres\n")
    assert "movies.csv has a header line but no movies" in message


def test_duplicate_movie_ids(tmp_path):
    message = load_error(tmp_path, movies=MOVIES + "2,Again (2000),Drama\n")
    assert "movies.csv lines 3 and 5: movieId '2' appears twice" in message


def test_non_numeric_movie_id_in_movies(tmp_path):
    message = load_error(tmp_path, movies=MOVIES + "tt9,Odd (2000),Drama\n")
    assert "movies.csv line 5: movieId 'tt9' is not a whole number" in message


def test_movies_row_with_unquoted_comma(tmp_path):
    message = load_error(tmp_path, movies=MOVIES + "9,American President, The (1995),Comedy\n")
    assert "movies.csv line 5: expected 3 comma-separated values" in message


def test_bad_links(tmp_path):
    message = load_error(tmp_path, links="movieId,imdbId,tmdbId\n1,0114709,abc\n")
    assert "links.csv line 2: tmdbId 'abc' is not a whole number" in message


def test_invalid_utf8(tmp_path):
    movies = MOVIES.encode() + b"9,Caf\xe9 (2000),Drama\n"
    message = load_error(tmp_path, movies=movies)
    assert "movies.csv line 5: not valid UTF-8" in message


def test_path_does_not_exist(tmp_path):
    with pytest.raises(DataError, match=r"no such file or folder: .*nowhere"):
        load_dataset(tmp_path / "nowhere")


def test_folder_without_ratings(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "movies.csv").write_text(MOVIES)
    with pytest.raises(DataError, match=r"ds has no ratings\.csv"):
        load_dataset(folder)


def test_parent_folder_hint(tmp_path):
    write_folder(tmp_path / "outer" / "ml-x")
    with pytest.raises(DataError, match=r"did you mean .*ml-x"):
        load_dataset(tmp_path / "outer")


def test_zip_without_ratings(tmp_path):
    z = tmp_path / "other.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("readme.txt", "nothing")
    with pytest.raises(DataError, match=r"other\.zip holds no ratings\.csv"):
        load_dataset(z)


def test_error_message_inside_zip_names_member(tmp_path):
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("bad/ratings.csv", ratings_with("1,1,7.0,1"))
        zf.writestr("bad/movies.csv", MOVIES)
    with pytest.raises(DataError, match=r"bad\.zip member bad/ratings\.csv line 2: rating '7\.0'"):
        load_dataset(z)


def test_bad_input_writes_no_cache(tmp_path):
    folder = write_folder(tmp_path / "ds", ratings=ratings_with("1,1,6.0,1"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError):
        load_dataset(folder, cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())


# ------------------------------------------------------------------------------- load_ratings_file


def test_load_ratings_file(tmp_path):
    d = load_dataset(write_folder(tmp_path / "ds"))
    extra = tmp_path / "test.csv"
    extra.write_text(ratings_with("5,3,2.5,10", "5,1,5.0,11"))
    r = load_ratings_file(extra, d.movies)
    assert r.user_id.tolist() == [5, 5] and r.rating.dtype == np.float32

    extra.write_text(ratings_with("5,3,2.5,10", "5,42,5.0,11"))
    with pytest.raises(DataError, match=r"test\.csv line 3: movieId '42' is not in"):
        load_ratings_file(extra, d.movies)
    with pytest.raises(DataError, match="no such file"):
        load_ratings_file(tmp_path / "missing.csv", d.movies)


# ------------------------------------------------------------------------------- cache


def assert_same(a: datasets.Dataset, b: datasets.Dataset) -> None:
    assert a.fingerprint == b.fingerprint and a.name == b.name and a.source == b.source
    for name in ("user_id", "movie_id", "rating", "timestamp"):
        x, y = getattr(a.ratings, name), getattr(b.ratings, name)
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.movies.movie_id, b.movies.movie_id)
    np.testing.assert_array_equal(a.movies.year, b.movies.year)
    assert a.movies.year.dtype == b.movies.year.dtype
    assert (a.movies.title, a.movies.genres, a.movies.imdb_id, a.movies.tmdb_id) == (
        b.movies.title,
        b.movies.genres,
        b.movies.imdb_id,
        b.movies.tmdb_id,
    )


def forbid_parsing(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("parsed although the cache should have answered")

    monkeypatch.setattr(dataset_loading, "parse_ratings", refuse)
    monkeypatch.setattr(dataset_loading, "_fingerprint", refuse)


def test_cache_round_trip(tmp_path, monkeypatch):
    links = "movieId,imdbId,tmdbId\n1,0114709,862\n2,0112346,\n"
    folder = write_folder(tmp_path / "ds", links=links)
    cache = tmp_path / "cache"
    first = load_dataset(folder, cache_dir=cache)
    with monkeypatch.context() as m:
        forbid_parsing(m)
        second = load_dataset(folder, cache_dir=cache)
    assert_same(first, second)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no temp folders left"
    assert any(p.name.startswith(first.fingerprint) for p in cache.iterdir())


def test_cache_notices_changed_files(tmp_path):
    folder = write_folder(tmp_path / "ds")
    cache = tmp_path / "cache"
    first = load_dataset(folder, cache_dir=cache)
    (folder / "ratings.csv").write_text(RATINGS + "3,1,1.0,9\n")
    second = load_dataset(folder, cache_dir=cache)
    assert len(second.ratings) == len(first.ratings) + 1
    assert second.fingerprint != first.fingerprint


def test_corrupt_cache_is_rebuilt(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "ds")
    cache = tmp_path / "cache"
    first = load_dataset(folder, cache_dir=cache)
    entry = next(p for p in cache.iterdir() if p.name.startswith(first.fingerprint))
    (entry / "rating.npy").write_bytes(b"not an npy file")
    again = load_dataset(folder, cache_dir=cache)
    assert_same(first, again)
    with monkeypatch.context() as m:  # the rebuilt entry serves the next load
        forbid_parsing(m)
        assert_same(first, load_dataset(folder, cache_dir=cache))


@needs_real_folder
@needs_real_zip
def test_cache_is_shared_by_folder_and_zip(tmp_path, monkeypatch, real_folder_dataset):
    cache = tmp_path / "cache"
    from_folder = load_dataset(REAL_FOLDER, cache_dir=cache)
    assert_same(real_folder_dataset, from_folder)
    from_zip = load_dataset(REAL_ZIP, cache_dir=cache)
    entries = [p for p in cache.iterdir() if p.name != "index"]
    assert len(entries) == 1, "same content, one cache entry"
    with monkeypatch.context() as m:
        forbid_parsing(m)
        assert_same(from_zip, load_dataset(REAL_ZIP, cache_dir=cache))


# ------------------------------------------------------------------------------- fetch


def make_zip(folder: Path, name: str) -> Path:
    """A GroupLens-style zip (files under one top folder) made from the small fixture."""
    z = folder / f"{name}.zip"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr(f"{name}/", "")
        zf.writestr(f"{name}/ratings.csv", RATINGS)
        zf.writestr(f"{name}/movies.csv", MOVIES)
        zf.writestr(f"{name}/README.txt", "fixture")
    return z


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_fetch_with_published_md5(tmp_path):
    z = make_zip(tmp_path / "server", "ml-25m")
    Path(f"{z}.md5").write_text(f"{md5_of(z)}  ml-25m.zip\n")
    dest = tmp_path / "dest"
    calls = []
    folder = fetch_dataset(
        "ml-25m", dest, url=z.as_uri(), progress=lambda done, total: calls.append((done, total))
    )
    assert folder == dest / "ml-25m"
    assert sorted(p.name for p in dest.iterdir()) == ["ml-25m"], "no temp files left"
    assert (folder / "README.txt").is_file()
    assert len(load_dataset(folder).ratings) == 3
    assert calls[-1] == (z.stat().st_size, z.stat().st_size)

    # Already there: returned without downloading (the source is gone now).
    z.unlink()
    assert fetch_dataset("ml-25m", dest, url=z.as_uri()) == folder


def test_fetch_wrong_md5_leaves_nothing(tmp_path):
    z = make_zip(tmp_path / "server", "ml-25m")
    Path(f"{z}.md5").write_text("0" * 32 + "\n")
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch_dataset("ml-25m", dest, url=z.as_uri())
    assert not dest.exists() or not any(dest.iterdir())


def test_fetch_without_any_checksum_is_refused(tmp_path):
    z = make_zip(tmp_path / "server", "ml-25m")
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match="no checksum"):
        fetch_dataset("ml-25m", dest, url=z.as_uri())
    assert not dest.exists() or not any(dest.iterdir())


@needs_real_zip
def test_fetch_uses_builtin_md5_for_ml_latest_small(tmp_path):
    server = tmp_path / "server"
    server.mkdir()
    z = server / "ml-latest-small.zip"
    shutil.copyfile(REAL_ZIP, z)  # no .md5 next to it: the built-in checksum applies
    folder = fetch_dataset("ml-latest-small", tmp_path / "dest", url=z.as_uri())
    assert (folder / "ratings.csv").read_bytes() == (
        REAL_ZIP.parent / "ml-latest-small" / "ratings.csv"
    ).read_bytes()


def test_fetch_network_error(tmp_path):
    missing = tmp_path / "server" / "ml-25m.zip"
    missing.parent.mkdir()
    Path(f"{missing}.md5").write_text("0" * 32)
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=r"could not download .*check the network or pass --url"):
        fetch_dataset("ml-25m", dest, url=missing.as_uri())
    assert not dest.exists() or not any(dest.iterdir())


def test_fetch_unknown_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'ml-99'"):
        fetch_dataset("ml-99", tmp_path)


def test_fetch_refuses_to_clobber_a_non_dataset(tmp_path):
    z = make_zip(tmp_path / "server", "ml-25m")
    Path(f"{z}.md5").write_text(md5_of(z))
    (tmp_path / "dest" / "ml-25m").mkdir(parents=True)
    (tmp_path / "dest" / "ml-25m" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a MovieLens dataset"):
        fetch_dataset("ml-25m", tmp_path / "dest", url=z.as_uri())
    assert (tmp_path / "dest" / "ml-25m" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------- synthesize


def test_synthesize_tiny_loads_back(tmp_path):
    out = synthesize(tmp_path / "synth", n_ratings=20_000, n_users=300, n_movies=2_000, seed=3)
    assert out == tmp_path / "synth"
    d = load_dataset(out)
    assert len(d.ratings) == 20_000 and len(d.movies) == 2_000
    assert set(np.unique(d.ratings.user_id).tolist()) == set(range(1, 301))
    assert set(np.unique(d.ratings.rating * 2).astype(int).tolist()) <= set(range(1, 11))
    assert len(set(d.movies.movie_id.tolist())) == 2_000
    assert d.movies.title[0] == f"Synthetic Movie {d.movies.movie_id[0]} ({d.movies.year[0]})"
    genres = {g for gs in d.movies.genres for g in gs}
    assert genres <= set(datasets.GENRES) and len(genres) > 10
    per_user = np.bincount(d.ratings.user_id)[1:]
    assert per_user.max() > 5 * np.median(per_user), "user activity is long-tailed"
    per_movie = np.sort(np.bincount(d.ratings.movie_id))[::-1]
    assert per_movie[0] > 20 * max(np.median(per_movie), 1), "movie popularity is skewed"
    assert 3.0 < d.ratings.rating.mean() < 4.0


def test_synthesize_is_deterministic(tmp_path):
    a = synthesize(tmp_path / "a", n_ratings=3_000, n_users=50, n_movies=400, seed=1)
    b = synthesize(tmp_path / "b", n_ratings=3_000, n_users=50, n_movies=400, seed=1)
    c = synthesize(tmp_path / "c", n_ratings=3_000, n_users=50, n_movies=400, seed=2)
    for name in ("ratings.csv", "movies.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "ratings.csv").read_bytes() != (c / "ratings.csv").read_bytes()


def test_synthesize_saturated_users(tmp_path):
    # 40 users x 50 movies with 1,900 ratings: most users must rate nearly every movie.
    out = synthesize(tmp_path / "dense", n_ratings=1_900, n_users=40, n_movies=50, seed=0)
    d = load_dataset(out)
    assert len(d.ratings) == 1_900


def test_synthesize_impossible_size(tmp_path):
    with pytest.raises(DataError, match="cannot fit"):
        synthesize(tmp_path / "x", n_ratings=101, n_users=10, n_movies=10)


def test_a_100000_character_field_loads_and_one_over_the_csv_limit_is_one_line(tmp_path):
    """issue 18, Medium 7: long but valid values load (a title, an imdbId); a field over the
    131,072 characters Python's csv reader takes is a DataError naming the file and line."""
    long_title = "x" * 100_000 + " (1990)"
    movies = MOVIES + f'4,"{long_title}, The",Drama\n'
    links = "movieId,imdbId,tmdbId\n1," + "1" * 100_000 + ",862\n"
    d = load_dataset(write_folder(tmp_path / "long", movies=movies, links=links))
    assert d.movies.title[3] == long_title + ", The"
    assert len(d.movies.imdb_id[0]) == 100_000
    for name, files in {
        "movies.csv line 6": dict(
            movies=MOVIES + "4,Short (1990),Drama\n5," + "y" * 140_000 + ",X\n"
        ),
        "links.csv line 2": dict(links="movieId,imdbId,tmdbId\n1,1," + "2" * 140_000 + "\n"),
        "ratings.csv line 3": dict(ratings=ratings_with("1,1,4.0,5", "1,2,3," + "9" * 140_000)),
    }.items():
        message = load_error(tmp_path / name.split()[0], **files)
        assert name in message and "131,072" in message, message
