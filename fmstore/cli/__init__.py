"""The `fmstore` command line: the only package that prints or reads Settings from the environment.

Heavy modules (torch, qdrant, sqlalchemy) are imported inside the commands that need them, so
`fmstore query` starts in a fraction of a second.

app.py holds the typer apps, the shared options and `main`; the other modules hold the commands,
and ratings_input.py reads a new user's ratings as typed.
"""

from fmstore.cli.app import app, main
from fmstore.cli.ratings_input import parse_rated, parse_rating, read_ratings_file

# Importing a command module registers its commands, and `--help` lists them in import order, so
# these imports keep the order written here.
# isort: off
from fmstore.cli import train as _train  # noqa: F401
from fmstore.cli import tune as _tune  # noqa: F401
from fmstore.cli import runs as _runs  # noqa: F401  (runs, runs show|compare|delete)
from fmstore.cli import publish as _publish  # noqa: F401
from fmstore.cli import evaluate as _evaluate  # noqa: F401
from fmstore.cli import query as _query  # noqa: F401
from fmstore.cli import updates as _updates  # noqa: F401  (rate, movies add, data export)
from fmstore.cli import report as _report  # noqa: F401
from fmstore.cli import status as _status  # noqa: F401
from fmstore.cli import data as _data  # noqa: F401  (data fetch|synth, db upgrade)
# isort: on

__all__ = ["app", "main", "parse_rated", "parse_rating", "read_ratings_file"]
