"""The typer apps, the consoles, the options every command shares, and the entry point `main`,
which turns errors into one line on stderr and an exit code.

The commands live in sibling modules that decorate these apps; `fmstore.cli` imports them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fmstore.config import Settings, insecure_api_key, mask_secrets, url_secrets
from fmstore.errors import ConfigError, DataError, EnvError, FmstoreError


def example(*lines: str) -> str:
    """A command's --help epilog: its example, kept as written ("\\b" stops click re-wrapping)."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


# Tracebacks with locals could show secrets: never let typer print them. Help is plain click
# text (rich_markup_mode=None): Rich markup would eat every "[default: ...]" in the help texts
# and show each flag as "--json <bool>".
app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train a Factorization Machine on movie ratings and serve it from Qdrant.",
    epilog=example(
        "fmstore train --data ml-latest-small && fmstore publish",
        'fmstore query --movie "Toy Story (1995)"',
    ),
)
data_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Get or make datasets in the MovieLens layout.",
    epilog=example("fmstore data fetch ml-latest-small"),
)
db_app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help="The SQL catalog.",
    epilog=example("fmstore db upgrade"),
)
app.add_typer(data_app, name="data")
app.add_typer(db_app, name="db")

# Not a terminal (pipes, CI logs): wide enough that tables keep their columns, unless COLUMNS
# says how wide (rich reads it).
out = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160)
err = Console(stderr=True)


def _print_version(asked: bool) -> None:
    if asked:
        from fmstore import __version__

        out.print(f"fmstore {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _global_options(
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No progress, spinners or notes on stderr; results and errors still print.",
    ),
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the version."
    ),
) -> None:
    if quiet:
        err.quiet = True


ThreadsOpt = typer.Option(
    None,
    "--threads",
    help="Threads of the numba and torch kernels [default: FMSTORE_THREADS, else the CPUs this "
    "process may use: its affinity and cgroup quota, not the host's count].",
)


def use_threads(threads: Optional[int]) -> int:
    """Give numba and torch the thread count of --threads / FMSTORE_THREADS / the CPUs this
    process may use (fmstore.threads); returns it."""
    from fmstore.threads import apply_threads

    return apply_threads(threads)


def show_progress() -> bool:
    """Progress bars only for a person watching: not with --quiet, not when stdout or stderr is
    redirected (a pipe, a file, a CI log)."""
    return not err.quiet and sys.stdout.isatty() and sys.stderr.isatty()


def progress_bar(*columns, **kwargs):
    """A rich Progress on stderr that disappears when done and stays silent unless
    show_progress()."""
    from rich.progress import Progress

    return Progress(*columns, console=err, transient=True, disable=not show_progress(), **kwargs)


def settings(
    home: Optional[Path] = None,
    database_url: Optional[str] = None,
    qdrant_url: Optional[str] = None,
    stores: bool = False,
) -> Settings:
    """Settings from the environment and flags. `stores`: the command opens Qdrant or the catalog,
    so their URLs are checked now (one line, exit 3) and an API key over http is warned about."""
    base = Settings.from_env()
    chosen = Settings(
        home=home or base.home,
        database_url=database_url or base.database_url,
        qdrant_url=qdrant_url or base.qdrant_url,
        qdrant_api_key=base.qdrant_api_key,
        movies_collection=base.movies_collection,
        users_collection=base.users_collection,
    )
    if not stores:
        return chosen
    chosen.check()
    if insecure_api_key(chosen):
        # qdrant-client's own two-line UserWarning is silenced where the client is built
        warn("FMSTORE_QDRANT_API_KEY travels unencrypted over http; use an https:// URL")
    return chosen


def warn(message: str) -> None:
    """One line 'warning: ...' on stderr, never wrapped, secrets masked, controls escaped."""
    sys.stderr.write(
        clip(safe(" ".join(mask_secrets(f"warning: {message}", _secrets_in_use()).split()))) + "\n"
    )


def note(message: str) -> None:
    """'note: ...' on stderr (silenced by --quiet), secrets masked, controls escaped."""
    line = safe(" ".join(mask_secrets(f"note: {message}", _secrets_in_use()).split()))
    err.print(clip(line), markup=False, highlight=False)


def check_home(s: Settings, write: bool) -> Path:
    """The home folder, refused in one line (exit 3) when it cannot work: a file, a dangling
    symbolic link or, for a command that writes, a folder this process cannot write into.
    Commands that write call this before any long work (train: before training)."""
    home = s.home
    if home.is_symlink() and not home.exists():
        raise EnvError(
            f"FMSTORE_HOME {home} is a symbolic link to {os.readlink(home)}, which does not exist"
        )
    if home.exists() and not home.is_dir():
        raise EnvError(f"FMSTORE_HOME {home} is a file, not a folder; point it at a folder")
    if not write:
        return home
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise EnvError(
            f"FMSTORE_HOME {home} is not writable ({exc.strerror or exc}); "
            "point FMSTORE_HOME or --home at a folder you can write"
        ) from None
    return home


def check_wait(wait: float) -> float:
    """--wait SECONDS: 0 or more, a finite number (NaN compares false and would wait forever)."""
    if not (0 <= wait < float("inf")):
        raise ConfigError(f"--wait {wait:g}: use 0 (do not wait) or more seconds")
    return wait


HomeOpt = typer.Option(
    None,
    "--home",
    help="Folder for runs, catalog and embedded store [env FMSTORE_HOME, default ./.fmstore].",
)
DbOpt = typer.Option(
    None,
    "--database-url",
    help="SQLAlchemy URL of the catalog [env FMSTORE_DATABASE_URL, default SQLite in home].",
)
QdrantOpt = typer.Option(
    None,
    "--qdrant-url",
    help="Qdrant server URL [env FMSTORE_QDRANT_URL, default embedded Qdrant Edge].",
)
JsonOpt = typer.Option(
    False, "--json", help="Print JSON instead of a table (schemas: docs/json.md)."
)


def dataset_path(s: Settings, data: Path) -> Path:
    """--data as given, or a dataset name (ml-latest-small, ...) that is not a path here: the
    copy `fmstore data fetch NAME` made in FMSTORE_HOME/data."""
    from fmstore.datasets.download import DATASET_NAMES

    if Path(data).exists() or str(data) not in DATASET_NAMES:
        return Path(data)
    fetched = s.home / "data" / str(data)
    if not fetched.is_dir():
        raise DataError(
            f"--data {data}: no such folder, and no fetched copy in {s.home / 'data'}; "
            f"`fmstore data fetch {data}` downloads it there"
        )
    return fetched


def print_json(obj) -> None:
    text = json.dumps(_finite(obj), indent=1, default=str, ensure_ascii=False)
    # json escapes C0 controls itself; C1 controls (U+0080-U+009F) it leaves raw: escape them
    sys.stdout.write(_C1.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n")


def _finite(obj):
    """NaN and infinities become null: JSON has no NaN (a run without validation has one)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


_C1 = re.compile("[\x80-\x9f]")
# C0 controls (ESC included), DEL and C1 controls: a title must never drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def safe(text) -> str:
    """Text from data (titles, genres, names) made safe to print: every control character
    (ESC, BEL, CR, C1 ...) shown as an escape such as \\x1b, never sent to the terminal raw."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", str(text))


# A one-line error shows at most this much of any one value, and this much in all.
MAX_VALUE_CHARS = 200
MAX_MESSAGE_CHARS = 2000


def clip(message: str) -> str:
    """One line: whitespace collapsed, each word (a value) and the whole clipped."""
    words = [
        w if len(w) <= MAX_VALUE_CHARS else f"{w[:MAX_VALUE_CHARS]}...({len(w):,} chars)"
        for w in message.split()
    ]
    line = " ".join(words)
    if len(line) > MAX_MESSAGE_CHARS:
        line = f"{line[:MAX_MESSAGE_CHARS]}...({len(line):,} chars)"
    return line


def fmt_number(x, digits: int = 4) -> str:
    """A metric for a table cell: fixed digits, blank when there is none."""
    return "" if x is None else f"{x:.{digits}f}"


# ---- entry point -------------------------------------------------------------------------------


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit 2 (input) or 3
    (environment); a bug is one line and exit 1 (the traceback with FMSTORE_DEBUG=1)."""
    _tolerate_any_output_encoding()
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except FmstoreError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except MemoryError:
        _fail(
            "error: out of memory: the model or data do not fit; use fewer --factors or a "
            "smaller dataset",
            EnvError.exit_code,
        )
    except Exception as exc:
        _fail_unexpected(exc)


def _fail_unexpected(exc: Exception) -> None:
    if isinstance(exc, typer.Abort):  # Ctrl-C inside a prompt
        sys.exit(130)
    if type(exc).__name__ == "NoArgsIsHelpError":  # `fmstore` or `fmstore data` alone
        sys.stderr.write(exc.ctx.get_help() + "\n")
        sys.exit(exc.exit_code)
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # a usage error (bad flag)
        _fail(f"error: {exc.format_message()} (see --help)", exc.exit_code)
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in _TRAIN_EXTRA:
        # a light install (a service that only publishes and queries) asked to train
        command = " ".join(a for a in sys.argv[1:2] if not a.startswith("-")) or "this command"
        _fail(
            f"error: `fmstore {command}` needs the training extra ({exc.name} is not installed): "
            "pip install 'fmstore[train]'",
            EnvError.exit_code,
        )
    if isinstance(exc, OSError) and exc.errno in _ENVIRONMENT_ERRNOS:
        # disk full, read-only file system, permission denied: the machine, not a bug
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"error: {exc.strerror or exc}{where}", EnvError.exit_code)
    if os.environ.get("FMSTORE_DEBUG"):
        # Our own traceback print, masked: Python's would echo passwords found in messages.
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(mask_secrets(text, _secrets_in_use()))
        sys.exit(1)
    if type(exc).__module__.split(".")[0] in (
        "sqlalchemy",
        "psycopg",
        "qdrant_client",
        "httpx",
        "grpc",
    ):
        # The database or Qdrant server failed under us: say so in one line, no traceback.
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _fail(f"error: storage backend failed: {first_line}", EnvError.exit_code)
    _fail(
        f"internal error: {type(exc).__name__}: {exc} (set FMSTORE_DEBUG=1 for the traceback)",
        1,
    )


# What `pip install 'fmstore[train]'` adds (pyproject.toml): training and tuning need it.
_TRAIN_EXTRA = {"torch", "numba", "llvmlite", "scipy", "psutil"}
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def _tolerate_any_output_encoding() -> None:
    """PYTHONIOENCODING=ascii (or a latin-1 terminal): characters the encoding lacks are printed
    as escapes instead of failing the command after its work is done."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a text stream we can change: leave it
            pass


def _secrets_in_use() -> list[str]:
    """Secrets this process was given, by environment or by flag, to mask in every message."""
    found = Settings.from_env().secrets()
    for value in list(sys.argv[1:]) + [
        v for k, v in os.environ.items() if k.startswith("FMSTORE_")
    ]:
        found += url_secrets(value)
    return found


def _fail(message: str, code: int) -> None:
    # Plain write, not rich: rich would wrap a long message over several lines.
    line = clip(safe(" ".join(mask_secrets(message, _secrets_in_use()).split())))
    sys.stderr.write(line + "\n")
    if "--json" in sys.argv[1:]:  # a program reading stdout gets the error as JSON too
        text = line.removeprefix("error: ")
        sys.stdout.write(json.dumps({"error": text, "exit_code": code}) + "\n")
    sys.exit(code)
