"""The typer apps, the consoles, the options every command shares, and the entry point `main`,
which turns errors into one line on stderr and an exit code.

The commands live in sibling modules that decorate these apps; `fmstore.cli` imports them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from fmstore.config import Settings
from fmstore.errors import FmstoreError


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


@app.callback()
def _global_options(
    quiet: bool = typer.Option(
        False,
        "--quiet",
        "-q",
        help="No progress, spinners or notes on stderr; results and errors still print.",
    ),
) -> None:
    if quiet:
        err.quiet = True


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
) -> Settings:
    base = Settings.from_env()
    return Settings(
        home=home or base.home,
        database_url=database_url or base.database_url,
        qdrant_url=qdrant_url or base.qdrant_url,
        qdrant_api_key=base.qdrant_api_key,
        movies_collection=base.movies_collection,
        users_collection=base.users_collection,
    )


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


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=1, default=str, ensure_ascii=False) + "\n")


def fmt_number(x, digits: int = 4) -> str:
    """A metric for a table cell: fixed digits, blank when there is none."""
    return "" if x is None else f"{x:.{digits}f}"


# ---- entry point -------------------------------------------------------------------------------


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        result = app(standalone_mode=False)
        sys.exit(result if isinstance(result, int) else 0)
    except FmstoreError as exc:
        _fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
        if os.environ.get("FMSTORE_DEBUG"):
            raise
        if isinstance(exc, typer.Abort):  # Ctrl-C inside a prompt
            sys.exit(130)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `fmstore` or `fmstore data` alone
            sys.stderr.write(exc.ctx.get_help() + "\n")
            sys.exit(exc.exit_code)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # a usage error (bad flag)
            _fail(f"error: {exc.format_message()} (see --help)", exc.exit_code)
        if type(exc).__module__.split(".")[0] in (
            "sqlalchemy",
            "psycopg",
            "qdrant_client",
            "httpx",
            "grpc",
        ):
            # The database or Qdrant server failed under us: say so in one line, no traceback.
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            _fail(f"error: storage backend failed: {first_line}", 2)
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (set FMSTORE_DEBUG=1 for the traceback)",
            1,
        )


def _fail(message: str, code: int) -> None:
    # Plain write, not rich: rich would wrap a long message over several lines.
    sys.stderr.write(" ".join(message.split()) + "\n")
    sys.exit(code)
