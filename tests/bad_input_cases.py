"""The bad-input corpus: every case a hostile or careless user can hand fmstore, as data.

Each case is (id, setup, code, fragments): `setup(ctx)` prepares what the case needs (files in
ctx.tmp, damage in ctx.home) and returns (args, env) for one `fmstore` call, which must exit
`code` with exactly one 'error:' line naming every fragment, no traceback, and leave
FMSTORE_HOME unchanged. tests/test_bad_input.py runs them; tests/test_secrets.py reuses them.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

INPUT, ENVIRONMENT = 2, 3

MOVIES = "movieId,title,genres\n1,Toy Story (1995),Animation\n2,Jumanji (1995),Adventure\n"
RATINGS = "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964982704\n2,1,5,9649827\n"


@dataclass
class Ctx:
    home: Path  # a copy of a home with one trained, published planted run
    tmp: Path  # a scratch folder outside home
    data: Path  # the planted dataset the home was trained on (its cache is in home)
    run_id: str


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], tuple[list[str], dict]]
    code: int
    fragments: tuple[str, ...]


CASES: list[Case] = []


def case(id: str, code: int, *fragments: str):
    def register(setup):
        CASES.append(Case(id, setup, code, fragments))
        return setup

    return register


def simple(id: str, code: int, args: list[str], *fragments: str, env: dict | None = None):
    """A case that needs no files: `{run}`, `{tmp}`, `{home}` in args are filled in."""

    def setup(ctx: Ctx):
        fill = dict(run=ctx.run_id, tmp=ctx.tmp, home=ctx.home, data=ctx.data)
        return [a.format(**fill) for a in args], dict(env or {})

    CASES.append(Case(id, setup, code, fragments))


def folder(ctx: Ctx, ratings: str | bytes = RATINGS, movies: str | bytes = MOVIES) -> str:
    d = ctx.tmp / "data"
    d.mkdir(exist_ok=True)
    for name, text in (("ratings.csv", ratings), ("movies.csv", movies)):
        if text is not None:
            (d / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(d)


def data_case(id: str, *fragments: str, ratings=RATINGS, movies=MOVIES):
    def setup(ctx: Ctx):
        return ["train", "--data", folder(ctx, ratings, movies), "--epochs", "1"], {}

    CASES.append(Case(id, setup, INPUT, fragments))


def zip_bytes(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


def zip_case(id: str, *fragments: str, members=None, raw: bytes | None = None):
    def setup(ctx: Ctx):
        path = ctx.tmp / "ml.zip"
        path.write_bytes(raw if raw is not None else zip_bytes(members))
        return ["train", "--data", str(path), "--epochs", "1"], {}

    CASES.append(Case(id, setup, INPUT, fragments))


# ---- data files --------------------------------------------------------------------------------
H = "userId,movieId,rating,timestamp\n"
data_case("ratings-empty", "ratings.csv", "empty", ratings="")
data_case("ratings-header-only", "no ratings", ratings=H)
data_case(
    "ratings-missing-column", "missing column 'timestamp'", ratings="userId,movieId,rating\n1,1,4\n"
)
data_case(
    "ratings-extra-column",
    "unexpected column",
    ratings="userId,movieId,rating,timestamp,x\n1,1,4,5,6\n",
)
data_case("ratings-semicolons", "semicolons", ratings="userId;movieId;rating;timestamp\n1;1;4;5\n")
data_case("ratings-tabs", "tabs", ratings="userId\tmovieId\trating\ttimestamp\n1\t1\t4\t5\n")
data_case("ratings-not-a-number", "line 3", "'great'", ratings=H + "1,1,4,5\n1,2,great,5\n")
data_case("ratings-off-scale", "line 2", "7.0", ratings=H + "1,1,7.0,5\n")
data_case("ratings-negative-user", "line 2", "negative", ratings=H + "-1,1,4,5\n")
data_case("ratings-unknown-movie", "line 2", "movieId '99'", ratings=H + "1,99,4,5\n")
data_case("ratings-duplicate-pair", "lines 2 and 3", ratings=H + "1,1,4,5\n1,1,3,6\n")
data_case("ratings-empty-value", "line 2", "movieId is empty", ratings=H + "1,,4,5\n")
data_case(
    "ratings-fields-after-blank-lines",
    "line 6",
    "found 3",
    ratings=H + "1,1,4,5\n\n\n1,2,4,5\n2,1,4\n",
)
data_case(
    "ratings-not-utf8",
    "UTF-8",
    ratings=b"userId,movieId,rating,timestamp\n1,1,4,5\n\xff\xfe,1,4,5\n",
)
data_case("ratings-huge-value", "line 2", "...", ratings=H + "1," + "9" * 100_000 + ",4,5\n")
data_case(
    "movies-duplicate-id",
    "movies.csv",
    "movieId '1' appears twice",
    movies=MOVIES + "1,Again (2000),Drama\n",
)
data_case(
    "movies-fields-after-blank-lines",
    "movies.csv line 5",
    "found 4",
    movies=MOVIES.replace("\n2,", "\n\n\n2,").replace("Jumanji (1995)", "Jumanji, (1995)"),
)
data_case("movies-missing-title", "missing column 'title'", movies="movieId,genres\n1,Drama\n")
data_case(
    "movies-not-utf8",
    "movies.csv",
    "UTF-8",
    movies=b"movieId,title,genres\n1,\xff\xfe (1995),Drama\n2,J (1995),Drama\n",
)
data_case(
    "movies-empty-id",
    "movies.csv line 2",
    "movieId is empty",
    movies="movieId,title,genres\n,T (1990),Drama\n1,A (1995),X\n2,B (1995),X\n",
)
data_case("movies-missing", "no movies.csv", movies=None)
simple("data-path-missing", INPUT, ["train", "--data", "{tmp}/nope"], "no such file or folder")
# a single CSV is a person's own ratings file (datasets.load_csv): one without ratings' columns
simple("data-a-single-csv", INPUT, ["train", "--data", "{data}/movies.csv"], "no column 'userId'")

# ---- zips --------------------------------------------------------------------------------------
zip_case("zip-not-a-zip", "not a readable zip", raw=b"this is not a zip file at all")
zip_case(
    "zip-truncated",
    "not a readable zip",
    raw=zip_bytes({"ratings.csv": RATINGS, "movies.csv": MOVIES})[:60],
)
zip_case("zip-no-ratings", "holds no ratings.csv", members={"movies.csv": MOVIES})
zip_case(
    "zip-two-datasets",
    "several ratings.csv",
    members={
        "a/ratings.csv": RATINGS,
        "a/movies.csv": MOVIES,
        "b/ratings.csv": RATINGS,
        "b/movies.csv": MOVIES,
    },
)
zip_case("zip-no-movies", "no ml/movies.csv", members={"ml/ratings.csv": RATINGS})
zip_case(
    "zip-bad-ratings-inside",
    "member ml/ratings.csv",
    "line 2",
    members={"ml/ratings.csv": H + "1,1,9,5\n", "ml/movies.csv": MOVIES},
)
# 40 MB of one repeated row compresses about 1000x: refused before it is inflated.
zip_case(
    "zip-bomb",
    "zip bomb",
    members={"ratings.csv": H + "1,1,4.0,964982703\n" * 2_000_000, "movies.csv": MOVIES},
)

# ---- CLI arguments -----------------------------------------------------------------------------
simple("train-epochs-0", INPUT, ["train", "--data", "{data}", "--epochs", "0"], "--epochs")
simple("train-lr-negative", INPUT, ["train", "--data", "{data}", "--lr", "-1"], "--lr")
simple(
    "train-valid-fraction",
    INPUT,
    ["train", "--data", "{data}", "--valid-fraction", "1.5"],
    "--valid-fraction",
)
simple("train-device", INPUT, ["train", "--data", "{data}", "--device", "tpu"], "--device")
simple("train-link", INPUT, ["train", "--data", "{data}", "--link", "cubic"], "link")
simple(
    "train-out-of-memory",
    ENVIRONMENT,
    ["train", "--data", "{data}", "--factors", "100000000"],
    "out of memory",
    "--factors",
)
simple(
    "train-ranking-out-of-memory",
    ENVIRONMENT,
    ["train", "--data", "{data}", "--ranking-factors", "100000000"],
    "out of memory",
    "--ranking-factors",
)
simple("train-no-data-flag", INPUT, ["train"], "--data")
simple("query-no-question", INPUT, ["query"], "give exactly one of")
simple(
    "query-two-questions", INPUT, ["query", "--movie", "x", "--user", "1"], "give exactly one of"
)
simple("query-user-negative", INPUT, ["query", "--user", "-5"], "--user -5", "whole number from 0")
simple(
    "query-user-huge", INPUT, ["query", "--user", "1" + "0" * 30], "--user", "whole number from 0"
)
simple("query-movie-id-negative", INPUT, ["query", "--movie-id", "-1"], "--movie-id -1")
simple("query-movie-id-huge", INPUT, ["query", "--movie-id", "99999999999999999999"], "--movie-id")
simple("query-user-unknown", INPUT, ["query", "--user", "4242"], "user 4242")
simple("query-title-unknown", INPUT, ["query", "--movie", "zzzz qqqq"], "zzzz qqqq")
simple("query-title-huge", INPUT, ["query", "--movie", "x" * 100_000], "100,000 characters")
simple(
    "query-rated-title-huge",
    INPUT,
    ["query", "--rated", "y" * 100_000 + "=4"],
    "characters",
    "chars)",
)
simple("query-rated-not-a-number", INPUT, ["query", "--rated", "Action Movie 1=great"], "'great'")
simple("query-rated-no-equals", INPUT, ["query", "--rated", "Action Movie 1"], "TITLE=RATING")
simple("query-genre-unknown", INPUT, ["query", "--movie-id", "1", "--genre", "Western"], "Western")
simple(
    "query-method-unknown",
    INPUT,
    ["query", "--rated", "Action Movie 1=5", "--method", "mean"],
    "--method 'mean'",
)
simple("query-n-zero", INPUT, ["query", "--movie-id", "1", "-n", "0"], "-n")
simple("query-unknown-flag", INPUT, ["query", "--no-such-flag"], "--no-such-flag")
simple("publish-parent-path", INPUT, ["publish", "../x"], "not a path")
simple("publish-absolute-path", INPUT, ["publish", "{tmp}"], "not a path")
simple("publish-unknown-run", INPUT, ["publish", "nope"], "no run 'nope'")
simple("evaluate-unknown-run", INPUT, ["evaluate", "nope"], "no run 'nope'")


def ratings_file_case(id: str, content: bytes | str, *fragments: str, path_only=False):
    def setup(ctx: Ctx):
        path = ctx.tmp / "mine.csv"
        if not path_only:
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return ["query", "--ratings-file", str(path)], {}

    CASES.append(Case(id, setup, INPUT, ("mine.csv", *fragments)))


ratings_file_case("ratings-file-not-utf8", b"title,rating\n\xff\xfe,5\n", "not UTF-8")
ratings_file_case("ratings-file-missing", b"", "cannot read", path_only=True)
ratings_file_case("ratings-file-bad-header", "movie,stars\nx,5\n", "needs a header")
ratings_file_case(
    "ratings-file-unknown-title",
    "title,rating\nAction Movie 1,5\n\nNo Such Film,4\n",
    "line 4",
    "No Such Film",
)
ratings_file_case("ratings-file-negative-id", "movieId,rating\n-3,4\n", "line 2", "-3")
ratings_file_case("ratings-file-empty", "title,rating\n", "no ratings")

# ---- environment -------------------------------------------------------------------------------
QUERY = ["query", "--movie-id", "1"]


def env_case(id: str, env: dict, *fragments: str, args=QUERY):
    simple(id, ENVIRONMENT, list(args), *fragments, env=env)


env_case("qdrant-url-ftp", {"FMSTORE_QDRANT_URL": "ftp://u:pw@host/x"}, "scheme 'ftp'")
env_case("qdrant-url-bad-ipv6", {"FMSTORE_QDRANT_URL": "http://[::1"}, "malformed")
env_case("qdrant-url-memory", {"FMSTORE_QDRANT_URL": ":memory:"}, "':memory:'")
env_case(
    "qdrant-url-port-range",
    {"FMSTORE_QDRANT_URL": "http://admin:pw@host:99999"},
    "malformed",
    "admin:***@",
)
env_case("qdrant-url-port-text", {"FMSTORE_QDRANT_URL": "http://host:abc"}, "malformed")
env_case("qdrant-url-no-host", {"FMSTORE_QDRANT_URL": "http://:6333"}, "names no host")
env_case("qdrant-unreachable", {"FMSTORE_QDRANT_URL": "http://127.0.0.1:1"}, "cannot reach")
env_case(
    "database-url-port-text",
    {"FMSTORE_DATABASE_URL": "postgresql://fm:pw@127.0.0.1:notaport/fm"},
    "malformed",
    "fm:***@",
)
env_case(
    "database-url-port-text-publish",
    {"FMSTORE_DATABASE_URL": "postgresql://fm:pw@127.0.0.1:notaport/fm"},
    "malformed",
    args=["publish"],
)
env_case(
    "database-url-mysql", {"FMSTORE_DATABASE_URL": "mysql://u:pw@host/db"}, "SQLite or Postgres"
)
env_case(
    "database-unreachable",
    {"FMSTORE_DATABASE_URL": "postgresql://u:pw@127.0.0.1:1/db"},
    "cannot open the catalog",
    args=["publish"],
)


@case("home-is-a-file-train", ENVIRONMENT, "is a file")
def _(ctx: Ctx):
    (ctx.tmp / "file").write_text("x")
    return ["train", "--data", str(ctx.data)], {"FMSTORE_HOME": str(ctx.tmp / "file")}


@case("home-is-a-file-query", ENVIRONMENT, "is a file")
def _(ctx: Ctx):
    (ctx.tmp / "file").write_text("x")
    return QUERY, {"FMSTORE_HOME": str(ctx.tmp / "file")}


@case("home-dangling-symlink-train", ENVIRONMENT, "symbolic link", "does not exist")
def _(ctx: Ctx):
    os.symlink(ctx.tmp / "gone", ctx.tmp / "link")
    return ["train", "--data", str(ctx.data)], {"FMSTORE_HOME": str(ctx.tmp / "link")}


@case("home-dangling-symlink-publish", ENVIRONMENT, "symbolic link")
def _(ctx: Ctx):
    os.symlink(ctx.tmp / "gone", ctx.tmp / "link")
    return ["publish"], {"FMSTORE_HOME": str(ctx.tmp / "link")}


# ---- artifacts ---------------------------------------------------------------------------------
def manifest_path(ctx: Ctx) -> Path:
    return ctx.home / "runs" / ctx.run_id / "manifest.json"


def edit_manifest(ctx: Ctx, change: Callable[[dict], object]) -> None:
    manifest = json.loads(manifest_path(ctx).read_text())
    manifest_path(ctx).write_text(json.dumps(change(manifest)))


@case("manifest-future-format", INPUT, "format_version 99", "upgrade fmstore")
def _(ctx: Ctx):
    edit_manifest(ctx, lambda m: m | {"format_version": 99})
    return ["publish", ctx.run_id], {}


@case("manifest-missing-keys", INPUT, "lacks serving")
def _(ctx: Ctx):
    edit_manifest(ctx, lambda m: {k: v for k, v in m.items() if k != "serving"})
    return ["publish", ctx.run_id], {}


@case("manifest-a-list", INPUT, "not a run manifest")
def _(ctx: Ctx):
    edit_manifest(ctx, lambda m: [m])
    return ["publish", ctx.run_id], {}


@case("manifest-not-json", INPUT, "unreadable manifest")
def _(ctx: Ctx):
    manifest_path(ctx).write_text("{not json")
    return ["evaluate", ctx.run_id], {}


@case("newest-run-corrupt-publish", INPUT, "newest run", "unreadable")
def _(ctx: Ctx):
    newer = ctx.home / "runs" / "29991231-000000-ffffff"
    newer.mkdir()
    (newer / "manifest.json").write_text("{half a manifest")
    return ["publish"], {}


@case("serving-file-damaged", INPUT, "serving.safetensors", "sha256")
def _(ctx: Ctx):
    (ctx.home / "runs" / ctx.run_id / "serving.safetensors").write_bytes(b"\0" * 100)
    return ["publish", ctx.run_id], {}


@case("seen-file-damaged", INPUT, "seen.safetensors", "corrupt")
def _(ctx: Ctx):
    import sqlite3

    run = ctx.home / "runs" / ctx.run_id
    (run / "seen.safetensors").write_bytes(b"garbage, not safetensors")
    with sqlite3.connect(ctx.home / "catalog.db") as db:  # the copy's catalog: its own run folder
        db.execute("UPDATE runs SET artifact_path = ?", (str(run),))
    return ["query", "--user", "1"], {}


@case("alias-file-a-list", ENVIRONMENT, "aliases.json", "corrupt")
def _(ctx: Ctx):
    (ctx.home / "qdrant" / "aliases.json").write_text("[1, 2]")
    return QUERY, {}


@case("alias-file-not-json", ENVIRONMENT, "aliases.json")
def _(ctx: Ctx):
    (ctx.home / "qdrant" / "aliases.json").write_text("{")
    return QUERY, {}


# issue 18, Medium 5: serving values no query could use are refused before any switch
@case("manifest-w0-nan", INPUT, "serving.w0 is nan", "not a finite number")
def _(ctx: Ctx):
    edit_manifest(ctx, lambda m: m | {"serving": m["serving"] | {"w0": float("nan")}})
    return ["publish", ctx.run_id, "--force"], {}


@case("manifest-rating-range-reversed", INPUT, "serving.rating_range")
def _(ctx: Ctx):
    edit_manifest(ctx, lambda m: m | {"serving": m["serving"] | {"rating_range": [5, 0.5]}})
    return ["publish", ctx.run_id, "--force"], {}


@case("manifest-run-id-not-the-folder", INPUT, "is not the run folder's name")
def _(ctx: Ctx):
    edit_manifest(ctx, lambda m: m | {"run_id": "20200101-000000-aaaaaa"})
    return ["publish", ctx.run_id, "--force"], {}


@case("manifest-run-id-with-dunder", INPUT, "contains '__'")
def _(ctx: Ctx):
    renamed = ctx.run_id + "__x"
    os.rename(ctx.home / "runs" / ctx.run_id, ctx.home / "runs" / renamed)
    ctx.run_id = renamed
    edit_manifest(ctx, lambda m: m | {"run_id": renamed})
    return ["publish", renamed], {}


# issue 18, Medium 7: a manifest key of the wrong type is one line, not an internal error
@case("manifest-metrics-a-string", INPUT, "metrics is a str", "not a JSON object")
def _(ctx: Ctx):
    edit_manifest(ctx, lambda m: m | {"metrics": "fast"})
    return ["publish", ctx.run_id], {}


# ---- issue 18, Medium 7: what was an internal error --------------------------------------------
BIG = 200_000  # over the 131,072 characters Python's csv reader takes in one field
data_case(
    "ratings-field-over-128k",
    "ratings.csv line 5",
    "131,072",
    ratings=RATINGS + "1,2,4," + "1" * BIG + "\n",
)
data_case(
    "movies-title-over-128k",
    "movies.csv line 4",
    "131,072",
    movies=MOVIES + f"3,{'x' * BIG} (1990),Drama\n",
)
data_case(
    "movies-id-too-large",
    "movies.csv line 4",
    "too large",
    movies=MOVIES + f"{2**64},X (1990),Drama\n",
)


def links_case(id: str, links: str, *fragments: str):
    def setup(ctx: Ctx):
        data = folder(ctx)
        Path(data, "links.csv").write_text(links)
        return ["train", "--data", data, "--epochs", "1"], {}

    CASES.append(Case(id, setup, INPUT, ("links.csv", *fragments)))


LINKS = "movieId,imdbId,tmdbId\n1,0114709,862\n2,0113497,8844\n"
links_case("links-field-over-128k", LINKS + f"1,{'7' * BIG},5\n", "line 4", "131,072")
links_case("links-tmdb-id-too-large", LINKS.replace("8844", str(2**63)), "line 3", "too large")

simple("train-lr-inf", INPUT, ["train", "--data", "{data}", "--lr", "inf"], "--lr inf", "finite")
simple(
    "train-prior-reg-inf",
    INPUT,
    ["train", "--data", "{data}", "--prior-reg", "inf"],
    "--prior-reg",
    "finite",
)
simple("train-seed-negative", INPUT, ["train", "--data", "{data}", "--seed", "-1"], "--seed -1")
simple(
    "train-seed-2-64",
    INPUT,
    ["train", "--data", "{data}", "--seed", str(2**64)],
    "--seed 1844674407370955161",
)
simple("report-out-a-file", INPUT, ["report", "--out", "{data}/ratings.csv"], "--out", "is a file")


# ---- issue 18, Medium 8: every user-supplied read is bounded -----------------------------------
simple(
    "ratings-file-dev-zero", INPUT, ["query", "--ratings-file", "/dev/zero"], "/dev/zero", "16 MiB"
)
simple("data-dev-zero", INPUT, ["train", "--data", "/dev/zero"], "/dev/zero")
simple(
    "train-test-ratings-dev-zero",
    INPUT,
    ["train", "--data", "{data}", "--test-ratings", "/dev/zero"],
    "/dev/zero",
    "not a regular file",
)


# ---- issue 18, the Low list ---------------------------------------------------------------------
simple("publish-wait-nan", INPUT, ["publish", "--wait", "nan"], "--wait nan")
simple("query-wait-nan", INPUT, ["query", "--movie-id", "1", "--wait", "nan"], "--wait nan")
simple("publish-empty-run-id", INPUT, ["publish", ""], "run ''")
simple(
    "publish-shards-on-edge",
    INPUT,
    ["publish", "{run}", "--shards", "2", "--force"],
    "Qdrant server",
)
data_case(
    "ratings-user-id-too-large",
    "line 2",
    f"userId '{2**63}' is too large",
    ratings=H + f"{2**63},1,4,5\n",
)


@case("status-home-is-a-file", ENVIRONMENT, "is a file")
def _(ctx: Ctx):
    (ctx.tmp / "file").write_text("x")
    return ["status"], {"FMSTORE_HOME": str(ctx.tmp / "file")}


def mistyped_home_case(args: list[str]):
    def setup(ctx: Ctx):
        return args, {"FMSTORE_HOME": str(ctx.tmp / "no-such-home")}

    CASES.append(
        Case(f"mistyped-home-{args[-1].strip('-')}", setup, ENVIRONMENT, ("does not exist",))
    )


for args in (["publish", "--rollback"], ["prune", "--keep", "1"], ["publish"]):
    mistyped_home_case(args)
