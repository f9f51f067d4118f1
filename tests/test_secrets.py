"""No secret is ever printed or stored: every command, run with a password in both URLs and an
API key set, for every failure mode of the bad-input corpus and for the URL failures, with and
without FMSTORE_DEBUG=1, leaves the secrets out of stdout, stderr and every file under
FMSTORE_HOME."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bad_input_cases import CASES, Ctx
from planted import copy_home

DB_PASSWORD = "Db-PaSsWoRd-31337"
QDRANT_PASSWORD = "Qd-PaSsWoRd-4242"
API_KEY = "ApI-KeY-c0ffee"
SECRETS = (DB_PASSWORD, QDRANT_PASSWORD, API_KEY)

# Well-formed URLs that point nowhere (port 1): every command that opens them fails.
SECRET_ENV = {
    "FMSTORE_DATABASE_URL": f"postgresql://fm:{DB_PASSWORD}@127.0.0.1:1/fm",
    "FMSTORE_QDRANT_URL": f"http://admin:{QDRANT_PASSWORD}@127.0.0.1:1",
    "FMSTORE_QDRANT_API_KEY": API_KEY,
}
# Each URL failure mode, with the password inside the malformed URL.
MALFORMED = [
    {"FMSTORE_QDRANT_URL": f"ftp://admin:{QDRANT_PASSWORD}@host/x"},
    {"FMSTORE_QDRANT_URL": f"http://admin:{QDRANT_PASSWORD}@[::1"},
    {"FMSTORE_QDRANT_URL": f"http://admin:{QDRANT_PASSWORD}@host:99999"},
    {"FMSTORE_QDRANT_URL": f"http://admin:{QDRANT_PASSWORD}@host:abc"},
    {"FMSTORE_QDRANT_URL": f"http://host:6333/?api_key={API_KEY}"},
    {"FMSTORE_DATABASE_URL": f"postgresql://fm:{DB_PASSWORD}@127.0.0.1:notaport/fm"},
    {"FMSTORE_DATABASE_URL": f"mysql://fm:{DB_PASSWORD}@host/db"},
    {"FMSTORE_DATABASE_URL": f"postgresql://fm:{DB_PASSWORD}@[::1/fm"},
]


ARTIFACT_CASES = ("manifest-", "newest-run-", "serving-", "seen-", "alias-", "publish-")


def assert_no_secret(result, home: Path) -> None:
    shown = result.stdout + result.stderr
    for secret in SECRETS:
        assert secret not in shown, shown
    for path in home.rglob("*") if home.is_dir() else ():
        if path.is_file() and not path.is_symlink():
            content = path.read_bytes()
            for secret in SECRETS:
                assert secret.encode() not in content, f"{secret} stored in {path}"


def commands(ctx: Ctx) -> list[list[str]]:
    archive = ctx.tmp / "ml.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("ratings.csv", "movies.csv"):
            zf.write(ctx.data / name, f"ml-latest-small/{name}")
    return [
        ["publish"],
        ["publish", "--rollback"],
        ["query", "--movie-id", "1"],
        ["query", "--user", "1"],
        ["query", "--rated", "Action Movie 1=5"],
        ["runs"],
        ["evaluate"],
        ["db", "upgrade"],
        ["data", "fetch", "ml-latest-small", "--url", archive.as_uri(), "--dest", str(ctx.tmp)],
        ["train", "--data", str(ctx.data), "--epochs", "1", "--factors", "4"],
    ]


@pytest.fixture
def ctx(planted_home, tmp_path) -> Ctx:
    home, data, run_id = planted_home
    copy_home(home, tmp_path / "home")
    (tmp_path / "scratch").mkdir()
    return Ctx(home=tmp_path / "home", tmp=tmp_path / "scratch", data=data, run_id=run_id)


@pytest.mark.parametrize("debug", ["", "1"])
def test_every_command_with_secrets_set(ctx, fmstore_cli, debug):
    for args in commands(ctx):
        result = fmstore_cli(ctx.home, *args, env=SECRET_ENV | {"FMSTORE_DEBUG": debug})
        assert result.returncode in (0, 2, 3), (args, result.stderr)
        assert_no_secret(result, ctx.home)


@pytest.mark.parametrize("env", MALFORMED, ids=lambda e: next(iter(e.values())).split(":")[0])
def test_malformed_urls_never_echo_the_secret(ctx, fmstore_cli, assert_one_line_error, env):
    for args in (["publish"], ["query", "--movie-id", "1"], ["db", "upgrade"]):
        if "FMSTORE_QDRANT_URL" in env and args[0] == "db":
            continue  # db upgrade opens no Qdrant
        for debug in ("", "1"):
            result = fmstore_cli(ctx.home, *args, env=SECRET_ENV | env | {"FMSTORE_DEBUG": debug})
            assert_one_line_error(result, code=3)
            assert_no_secret(result, ctx.home)


def test_every_corpus_case_with_secrets_set(ctx, planted_home, tmp_path, fmstore_cli):
    """The environment and artifact cases of the bad-input corpus again (the data-file and flag
    cases read no URL; the command list above covers them), this time with passwords and an API
    key in the environment (cases that set a URL keep theirs): no case prints or stores a secret."""
    home, data, run_id = planted_home
    chosen = [c for c in CASES if c.code == 3 or c.id.startswith(ARTIFACT_CASES)]
    assert len(chosen) >= 20
    for number, case in enumerate(chosen):
        case_home = tmp_path / f"h{number}"
        copy_home(home, case_home)
        scratch = tmp_path / f"s{number}"
        scratch.mkdir()
        args, env = case.setup(Ctx(home=case_home, tmp=scratch, data=data, run_id=run_id))
        result = fmstore_cli(case_home, *args, env=SECRET_ENV | env)
        assert result.returncode in (2, 3), (case.id, result.stderr)
        assert_no_secret(result, case_home)


def test_api_key_over_http_is_one_line_of_ours(ctx, fmstore_cli):
    env = {"FMSTORE_QDRANT_URL": "http://127.0.0.1:1", "FMSTORE_QDRANT_API_KEY": API_KEY}
    result = fmstore_cli(ctx.home, "query", "--movie-id", "1", env=env)
    lines = result.stderr.splitlines()
    assert result.returncode == 3 and len(lines) == 2, result.stderr
    assert lines[0].startswith("warning: FMSTORE_QDRANT_API_KEY travels unencrypted over http")
    assert lines[1].startswith("error: cannot reach") and "UserWarning" not in result.stderr


def test_debug_traceback_is_masked(ctx):
    """FMSTORE_DEBUG=1 prints the traceback of a bug: masked too (a library call that echoes
    the URL it was given, run through the CLI's own printer)."""
    code = (
        "import importlib; cli_app = importlib.import_module('fmstore.cli.app')\n"
        f"url = 'postgresql://fm:{DB_PASSWORD}@127.0.0.1:1/fm'\n"
        "try:\n"
        "    raise RuntimeError(f'boom at {url}')\n"
        "except RuntimeError as exc:\n"
        "    cli_app._fail_unexpected(exc)\n"
    )
    env = {"FMSTORE_DEBUG": "1", "FMSTORE_DATABASE_URL": SECRET_ENV["FMSTORE_DATABASE_URL"]}
    import os

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ | env
    )
    assert result.returncode == 1 and "Traceback" in result.stderr
    assert "fm:***@127.0.0.1" in result.stderr and DB_PASSWORD not in result.stderr


# ---- URLs of any shape (issue 18: 43 of 357 secret runs leaked through schemeless URLs) -------

# A URL as people type it, right or wrong: {scheme}{user}:{password}@{host}{rest}
SCHEMES = ("", "postgresql://", "postgresql:/", "postgresql:", "postgresql+psycopg://", "http://")
SCHEMES += ("https:///", "redis:", "HTTP://", "sqlite:///")
USERS = ("user", "admin", "fm", "a.b-c_d", "", "%40me")
HOSTS = ("host", "127.0.0.1", "[::1]", "db.example.com", "host:6333", "h:5432", "[::1")
RESTS = ("", "/db", "/db?sslmode=require", "/", ":abc/x", "/fm?password=QueryPw9")
# What stands around the URL in a message.
CONTEXTS = ("{}", "'{}'", '"{}"', "url={}", "({})", "connect to {}: refused", "<{}>", "{},")
PASSWORD_CHARS = "abcXYZ019-_.~!$&*+,;=%/:@?#()[]"


def _passwords(rng) -> list[str]:
    """Passwords a person may have: letters and digits, then each awkward character inside."""
    fixed = ["PW-secret-77", "p@ss-w0rd", "pa:ss:word", "sl/ash-pw", "q?uery-pw", "h#ash-pw"]
    fixed += ["/leading-slash", "per%40cent", "eq=ual,comma", "(paren)pw", "x" * 40]
    drawn = [
        "Pw" + "".join(rng.choice(PASSWORD_CHARS) for _ in range(rng.randint(4, 14))) + "9"
        for _ in range(60)
    ]
    return fixed + drawn


def _shapes(rng, n: int):
    passwords = _passwords(rng)
    for _ in range(n):
        yield (
            rng.choice(SCHEMES),
            rng.choice(USERS),
            rng.choice(passwords),
            rng.choice(HOSTS),
            rng.choice(RESTS),
            rng.choice(CONTEXTS),
        )


def test_every_shape_of_url_is_masked_in_text_and_by_its_secrets():
    """Property-style, over 3,000 drawn shapes (seeded): scheme://, scheme:/ (one slash),
    scheme:, no scheme at all; users, hosts and ports; passwords holding @ / : ? # = and
    percent-escapes; the URL inside quotes, parentheses or a sentence. Masking the text alone
    hides the password (an error line from a library echoing the URL), and so do the secrets
    url_secrets finds in the value (what the CLI was given)."""
    import random
    from urllib.parse import unquote

    from fmstore.config import mask_secrets, url_secrets

    rng = random.Random(18)
    for scheme, user, password, host, rest, context in _shapes(rng, 3000):
        url = f"{scheme}{user}:{password}@{host}{rest}"
        text = "error: " + context.format(url) + " (see --help)"
        hidden = {password, unquote(password)} | ({"QueryPw9"} if "QueryPw9" in rest else set())
        by_text = mask_secrets(text)
        by_value = mask_secrets(text, url_secrets(url))
        for secret in hidden:
            assert secret not in by_text, (url, by_text)
            assert secret not in by_value, (url, by_value)
        assert "error: " in by_text and "(see --help)" in by_text


@pytest.mark.parametrize(
    "text",
    [
        "sqlite:////tmp/home/catalog.db",
        "http://127.0.0.1:6333",
        "error: ratings.csv line 3: movieId 'x' is not a whole number",
        "at 12:30 the run 20260101-120000-abcdef finished",
        "user@host has no password",
    ],
)
def test_text_without_a_credential_is_left_alone(text):
    from fmstore.config import mask_secrets

    assert mask_secrets(text) == text


def test_masking_stays_linear_on_huge_words():
    import time

    from fmstore.config import mask_secrets

    for word in ("a:" * 100_000 + "@", "ab" * 100_000 + ":@", "x:/" * 100_000 + "@"):
        started = time.perf_counter()
        mask_secrets(word)
        assert time.perf_counter() - started < 2.0


# Schemeless and one-slash URLs, as the issue found them leaking.
SCHEMELESS = [
    {"FMSTORE_DATABASE_URL": f"fm:{DB_PASSWORD}@127.0.0.1:1/fm"},
    {"FMSTORE_DATABASE_URL": f"postgresql:/fm:{DB_PASSWORD}@127.0.0.1:1/fm"},
    {"FMSTORE_QDRANT_URL": f"admin:{QDRANT_PASSWORD}@127.0.0.1:6333"},
    {"FMSTORE_QDRANT_URL": f"http:/admin:{QDRANT_PASSWORD}@127.0.0.1:6333"},
]


@pytest.mark.parametrize("env", SCHEMELESS, ids=["db-bare", "db-one-slash", "qd-bare", "qd-slash"])
def test_urls_without_scheme_slashes_never_echo_the_secret(ctx, fmstore_cli, env):
    for args in (["status"], ["status", "--json"], ["publish"], ["query", "--movie-id", "1"]):
        for debug in ("", "1"):
            result = fmstore_cli(ctx.home, *args, env=env | {"FMSTORE_DEBUG": debug})
            assert result.returncode in (2, 3), (args, result.stderr)
            assert "Traceback" not in result.stderr, result.stderr
            assert_no_secret(result, ctx.home)


def test_runs_note_never_echoes_a_query_password(ctx, fmstore_cli):
    """`fmstore runs` lists runs even when the store cannot be asked; its note about that
    carries the store's error, which may quote the URL with its ?password= value."""
    env = {"FMSTORE_DATABASE_URL": f"postgresql://fm@127.0.0.1:1/fm?password={DB_PASSWORD}"}
    result = fmstore_cli(ctx.home, "runs", env=env)
    assert result.returncode == 0, result.stderr
    assert "cannot tell which run is live" in result.stderr
    assert_no_secret(result, ctx.home)
