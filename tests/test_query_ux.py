"""What a person sees from title resolution and `fmstore query`: guesses are said, a bare year
is a year, flags that would be ignored are refused, predicted stars and "because you liked" in
the table (raw scores in --json), and `data synth` refusing what it cannot make."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from planted import group_of_movie, group_of_user, rated_movie_ids

from fmstore.errors import AmbiguousError, DataError, NotFoundError
from fmstore.recommend.titles import TitleIndex, display_title

TITLES = [
    (1, "Toy Story (1995)", 1995),
    (3114, "Toy Story 2 (1999)", 1999),
    (78499, "Toy Story 3 (2010)", 2010),
    (589, "Terminator 2: Judgment Day (1991)", 1991),
    (1240, "Terminator, The (1984)", 1984),
    (2116, "Lord of the Rings, The (1978)", 1978),
    (4993, "Lord of the Rings: The Fellowship of the Ring, The (2001)", 2001),
    (5952, "Lord of the Rings: The Two Towers, The (2002)", 2002),
    (7153, "Lord of the Rings: The Return of the King, The (2003)", 2003),
    (176371, "Blade Runner 2049 (2017)", 2017),
    (541, "Blade Runner (1982)", 1982),
    (7991, "Death Race 2000 (1975)", 1975),
    (924, "2001: A Space Odyssey (1968)", 1968),
]
# ml-latest-small's counts for these movies (the trilogy is far better known than the 1978 film)
N_RATINGS = {1: 215, 3114: 97, 78499: 55, 2116: 15, 4993: 198, 5952: 188, 7153: 185}


def _popularity(ids):
    return {i: N_RATINGS.get(i, 0) for i in ids}


@pytest.fixture(scope="module")
def titles():
    return TitleIndex(TITLES, popularity=_popularity)


def test_a_guessed_title_says_so(titles):
    match = titles.match("Termnator 2")
    # the first words of "Terminator 2: Judgment Day" are closer than "The Terminator"
    assert match.movie_id == 589 and match.how == "fuzzy" and not match.exact
    assert match.note() == (
        "showing Terminator 2: Judgment Day (1991) [id 589] for 'Termnator 2' (the closest spelling)"
    )
    only_the_first = TitleIndex([m for m in TITLES if m[0] != 589]).match("Termnator 2")
    assert only_the_first.note().startswith(
        "showing The Terminator (1984) [id 1240] for 'Termnator 2'"
    )
    completed = titles.match("Terminator 2")
    assert completed.how == "start of title" and "only title starting" in completed.note()


@pytest.mark.parametrize(
    "text, movie_id, exact",
    [
        ("toy story 1995", 1, True),  # a bare year is the year
        ("Toy Story 1999", 3114, False),  # the one title of 1999 starting with those words
        ("toy story (2010)", 78499, False),
        ("Blade Runner 2049", 176371, True),  # a number in the title stays part of it
        ("Death Race 2000", 7991, True),
        ("2001: a space odyssey", 924, True),
    ],
)
def test_a_bare_year(titles, text, movie_id, exact):
    match = titles.match(text)
    assert match.movie_id == movie_id and match.exact == exact
    assert (match.note() is None) == exact


def test_a_whole_title_that_starts_others(titles):
    lotr = titles.match("Lord of the rings")
    # the 1978 film's whole title, but the trilogy is far more rated: its most rated film is
    # shown, the 1978 one listed first, and the note says how to ask for it
    assert lotr.movie_id == 4993 and not lotr.exact and lotr.how == "more rated"
    assert lotr.others == (2116, 5952, 7153)
    note = lotr.note()
    assert "showing The Lord of the Rings: The Fellowship of the Ring (2001) [id 4993]" in note
    assert "far more rated than The Lord of the Rings (1978) [id 2116]" in note
    assert "add its year" in note
    with_year = titles.match("lord of the rings 1978")  # the year asks for the whole title
    assert with_year.movie_id == 2116 and with_year.exact
    # a whole title a little less rated than a longer one still wins, with a note
    close = TitleIndex(TITLES, popularity=lambda ids: {i: 100 for i in ids} | {2116: 50})
    assert close.match("Lord of the rings").movie_id == 2116
    # the original is the most rated of its sequels: nothing to say
    toy = titles.match("toy story")
    assert toy.movie_id == 1 and toy.exact and toy.note() is None
    # without popularity nothing can tell them apart: always said
    assert not TitleIndex(TITLES).match("toy story").exact


def test_equals_stay_ambiguous(titles):
    with pytest.raises(AmbiguousError, match="matches 2 movies"):
        TitleIndex([(1, "Emma (1996)", 1996), (2, "Emma (1996)", 1996)]).match("emma")


@pytest.mark.parametrize(
    "catalog, shown",
    [
        ("Terminator, The (1984)", "The Terminator (1984)"),
        ("Boot, Das (1981)", "Das Boot (1981)"),
        ("Toy Story", "Toy Story"),
        ("Postman, The (Postino, Il) (1994)", "The Postman (Il Postino) (1994)"),
        (
            "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
            "The City of Lost Children (La Cité des enfants perdus) (1995)",
        ),
        ("Atalante, L' (1934)", "L'Atalante (1934)"),
        (
            "Lord of the Rings: The Two Towers, The (2002)",
            "The Lord of the Rings: The Two Towers (2002)",
        ),
        ("Seven (a.k.a. Se7en) (1995)", "Seven (a.k.a. Se7en) (1995)"),
        ("(500) Days of Summer (2009)", "(500) Days of Summer (2009)"),
        ("Death Note: Desu nôto (2006–2007)", "Death Note: Desu nôto (2006–2007)"),
        ("Angst  (1983) ", "Angst (1983)"),
    ],
)
def test_display_title(catalog, shown):
    assert display_title(catalog) == shown


def test_messages_name_movies_in_the_display_style(titles):
    """Errors, suggestions and notes write "The Terminator (1984)", as every answer does."""
    assert titles.describe(1240) == "The Terminator (1984) [id 1240]"
    twice = TitleIndex([(1, "Matrix, The (1999)", 1999), (2, "Matrix, The (1999)", 1999)])
    with pytest.raises(AmbiguousError, match=r"The Matrix \(1999\) \[id 1\], The Matrix"):
        twice.match("the matrix")
    with pytest.raises(NotFoundError, match=r"closest: The Terminator \(1984\) \[id 1240\]"):
        TitleIndex([m for m in TITLES if m[0] != 589]).match("Terminatorx Thee Revenge")
    note = titles.match("lord of the rings").note()
    assert "The Lord of the Rings (1978)" in note and ", The (" not in note
    assert titles.match("Terminator").as_dict()["title"] == "The Terminator (1984)"


def test_match_as_dict(titles):
    out = titles.match("Termnator 2").as_dict()
    assert out == {
        "query": "Termnator 2",
        "movie_id": 589,
        "title": "Terminator 2: Judgment Day (1991)",
        "how": "fuzzy",
        "exact": False,
        "others": [],
    }


# ---- the CLI -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(planted_published_home):
    """An FMSTORE_HOME with planted run 0 published (conftest)."""
    return planted_published_home


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--movie", "Action Movie 1", "--include-rated"], "--include-rated applies to --user"),
        (["--rated", "Action Movie 1=5", "--include-rated"], "--include-rated applies to --user"),
        (["--user", "1", "--method", "weighted"], "--method applies to --rated"),
        (["--movie-id", "1", "--method", "fold-in"], "--method applies to --rated"),
    ],
)
def test_ignored_flags_are_refused(home, fmstore_cli, assert_one_line_error, args, fragment):
    assert_one_line_error(fmstore_cli(home, "query", *args), fragment)


def test_guessed_title_is_one_note_line(home, fmstore_cli):
    res = fmstore_cli(home, "query", "--movie", "Acton Movie 1 (1991)", "-n", "3")
    assert res.returncode == 0, res.stderr
    notes = res.stderr.strip().splitlines()
    assert notes == [
        "note: showing Action Movie 1 (1991) [id 1] for 'Acton Movie 1 (1991)' (the closest spelling)"
    ]
    assert "similarity" in res.stdout and "score" not in res.stdout
    res = fmstore_cli(home, "query", "--movie", "Acton Movie 1 (1991)", "-n", "3", "--json")
    match = json.loads(res.stdout)["query"]["title_match"]
    assert match["movie_id"] == 1 and match["how"] == "fuzzy" and match["exact"] is False
    exact = fmstore_cli(home, "query", "--movie", "action movie 1 1991", "-n", "3")
    assert exact.returncode == 0 and exact.stderr == ""  # a bare year, exact: nothing to say


def test_user_table_shows_stars_and_why(home, fmstore_cli):
    res = fmstore_cli(home, "query", "--user", "31", "-n", "4")
    assert res.returncode == 0, res.stderr
    header = next(line for line in res.stdout.splitlines() if "title" in line)
    assert "rating" in header and "because you liked" in header and "score" not in header
    rows = [line for line in res.stdout.splitlines() if "Comedy Movie" in line]
    assert len(rows) == 4
    for row in rows:
        cells = [c.strip() for c in row.split("│") if c.strip()]
        stars = cells[4].rstrip("+")
        assert len(stars.split(".")[1]) == 1 and 0.5 <= float(stars) <= 5.0, row
        assert cells[5].startswith("Comedy Movie"), row  # their own group's movie is the reason


@pytest.mark.parametrize("user", [1, 45, 75])
def test_user_json_keeps_scores_and_gives_reasons(home, fmstore_cli, planted_runs, user):
    from fmstore import runs

    res = fmstore_cli(home, "query", "--user", str(user), "-n", "5", "--json")
    assert res.returncode == 0, res.stderr
    seen, stars = runs.seen_movies(planted_runs[0], user)
    liked = {int(m) for m, s in zip(seen, stars) if s >= 4}
    for r in json.loads(res.stdout)["results"]:
        assert isinstance(r["score"], float) and 0.5 <= r["predicted_rating"] <= 5
        assert isinstance(r["above_scale"], bool)
        reasons = [b["movie_id"] for b in r["because"]]
        assert reasons and set(reasons) <= liked, (r, liked)
        # the planted answer: users of group g love group g, so group g movies are the reason
        assert {group_of_movie(m) for m in reasons} == {group_of_user(user)}
        contributions = [b["contribution"] for b in r["because"]]
        assert contributions == sorted(contributions, reverse=True) and contributions[-1] > 0


def test_new_user_reasons_and_title_notes(home, fmstore_cli):
    liked = rated_movie_ids(2)[:2]
    rated = ["--rated", f"Drama Movie {liked[0]}=5", "--rated", f"Drama Mvie {liked[1]}=4.5"]
    rated += ["--rated", f"Action Movie {rated_movie_ids(0)[0]}=1"]
    res = fmstore_cli(home, "query", *rated, "-n", "4", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert any(f"for 'Drama Mvie {liked[1]}'" in n for n in out["notes"])
    assert len(res.stderr.strip().splitlines()) == 1  # the one guessed title
    typed = {r["movie_id"]: r.get("title_match") for r in out["query"]["ratings"]}
    assert typed[liked[1]]["how"] == "fuzzy" and typed[liked[0]]["exact"] is True
    for r in out["results"]:
        # never "because you liked" the movie rated 1 star
        assert [b["movie_id"] for b in r["because"]] and {
            b["movie_id"] for b in r["because"]
        } <= set(liked)


def _table_rows(stdout: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.split("│")[1:-1]]
        for line in stdout.splitlines()
        if line.startswith("│")
    ]


@pytest.mark.parametrize("movie", [rated_movie_ids(0)[0], rated_movie_ids(2)[4]])
def test_similar_table_shows_similarities_with_their_order(home, fmstore_cli, movie):
    args = ["query", "--movie-id", str(movie), "-n", "12", "--min-ratings", "0"]
    table, as_json = fmstore_cli(home, *args), fmstore_cli(home, *args, "--json")
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    scores = [r["score"] for r in json.loads(as_json.stdout)["results"]]
    shown = [row[-1] for row in _table_rows(table.stdout)]
    assert len(shown) == len(scores) == 12
    assert all(-1.0 <= x <= 1.0 for x in scores) and scores == sorted(scores, reverse=True)
    assert len({len(x.split(".")[1]) for x in shown}) == 1  # one number of decimals
    assert len(shown[0].split(".")[1]) >= 3
    for a, b, x, y in zip(shown, shown[1:], scores, scores[1:]):
        assert float(a) >= float(b) and (a != b or x == y), shown  # the order is visible
        assert abs(float(a) - x) <= 0.5 * 10 ** -len(a.split(".")[1]) + 1e-9


def test_order_digits():
    from fmstore.cli.query_output import order_digits

    assert order_digits([0.611, 0.574, 0.240]) == 3
    assert order_digits([0.1540, 0.1534, 0.1523, 0.1516]) == 4
    assert order_digits([0.5, 0.5, 0.4]) == 3  # equal scores may look equal
    assert order_digits([0.1234561, 0.1234560]) == 6  # at most 6
    assert order_digits([]) == 3


def test_answers_show_one_title_style(home, fmstore_cli, tmp_path):
    """A MovieLens title with its article at the end ("Matrix, The") reads "The Matrix" in the
    heading, the table, the JSON rows and the question, as in notes and errors."""
    from planted import copy_home

    home = copy_home(home, tmp_path / "home")
    added = fmstore_cli(
        home, "movies", "add", "--title", "Matrix, The", "--genres", "Action", "--year", "1999"
    )
    assert added.returncode == 0, added.stderr
    args = ["query", "--movie", "the matrix", "--min-ratings", "0", "-n", "3"]
    table = fmstore_cli(home, *args)
    assert table.returncode == 0, table.stderr
    assert "Movies like The Matrix (1999)" in table.stdout and "Matrix, The" not in table.stdout
    question = json.loads(fmstore_cli(home, *args, "--json").stdout)["query"]
    assert question["title"] == question["title_match"]["title"] == "The Matrix (1999)"
    everything = ["query", "--movie-id", "1", "--min-ratings", "0", "-n", "1000"]
    rows = json.loads(fmstore_cli(home, *everything, "--json").stdout)["results"]
    assert [r["title"] for r in rows if "Matrix" in r["title"]] == ["The Matrix (1999)"]
    listed = [row[1] for row in _table_rows(fmstore_cli(home, *everything).stdout)]
    assert "The Matrix" in listed and not any("Matrix, The" in t for t in listed)
    rated = fmstore_cli(home, "query", "--rated", "Matrix, The=5", "--json")
    assert json.loads(rated.stdout)["query"]["ratings"][0]["title"] == "The Matrix (1999)"


# ---- data synth ----------------------------------------------------------------------------------


def test_synth_refuses_fewer_ratings_than_users(tmp_path, fmstore_cli, assert_one_line_error):
    out = tmp_path / "synth"
    res = fmstore_cli(
        tmp_path,
        "data",
        "synth",
        str(out),
        "--ratings",
        "10",
        "--users",
        "300",
        "--movies",
        "200",
        timeout=60,
    )
    assert_one_line_error(res, "10 ratings", "300 users", "at least as many ratings as users")
    assert not out.exists()  # nothing half-written


def test_synth_with_one_rating_per_user(tmp_path):
    from fmstore.datasets import load_dataset, synthesize

    with pytest.raises(DataError, match="at least as many ratings as users"):
        synthesize(tmp_path / "no", n_ratings=299, n_users=300, n_movies=200)
    data = load_dataset(synthesize(tmp_path / "yes", n_ratings=300, n_users=300, n_movies=200))
    assert len(data.ratings.user_id) == 300 and len(set(data.ratings.user_id.tolist())) == 300


# ---- the real titles -----------------------------------------------------------------------------

_HERE = Path(__file__).resolve()
# the shared data folder beside the checkout (main) or beside the worktrees (/work/wt/NAME)
REAL = next(
    (
        p / "shared" / "data" / "ml-latest-small"
        for p in _HERE.parents[2:4]
        if (p / "shared" / "data" / "ml-latest-small" / "movies.csv").is_file()
    ),
    None,
)


@pytest.fixture(scope="module")
def real_titles():
    """ml-latest-small's 9,742 titles, with its rating counts as the popularity."""
    if REAL is None:
        pytest.skip("ml-latest-small not found in the shared data folder")
    from collections import Counter

    from fmstore.datasets import load_dataset

    data = load_dataset(REAL)
    rows = [
        (int(m), t, int(y) or None)
        for m, t, y in zip(data.movies.movie_id, data.movies.title, data.movies.year)
    ]
    counts = Counter(data.ratings.movie_id.tolist())
    return TitleIndex(rows, popularity=lambda ids: {i: counts[i] for i in ids})


@pytest.mark.parametrize(
    "text, movie_id, exact",
    [
        ("Termnator 2", 589, False),  # the example: T2, said to be a guess
        ("toy story 1995", 1, True),  # was "ambiguous between Toy Story 2 and 3"
        ("Lord of the rings", 4993, False),  # the far more rated 2001 film, said so
        ("Lord of the rings 1978", 2116, True),  # the year asks for the 1978 film
        ("Toy Story", 1, True),  # the original is the most rated: nothing to say
        ("The Matrix", 2571, True),
        ("Blade Runner 2049", 176371, True),
        ("star wars 1977", 260, False),
    ],
)
def test_real_titles(real_titles, text, movie_id, exact):
    match = real_titles.match(text)
    assert (match.movie_id, match.exact) == (movie_id, exact), match
    if movie_id == 4993:
        assert "The Lord of the Rings (1978) [id 2116]" in match.note()
