"""The flags of `fmstore train` that need more than a type: your own CSV's (--user-col ...,
--rating-scale, as datasets.load_csv's options), --ranking-set, --field-reg, and the ones --tune chooses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from fmstore.config import RANKING_SEARCHED
from fmstore.errors import ConfigError

SIDE_HELP = (
    "NAME (categorical), NAME:num (numeric, in quantile buckets) or NAME:multi ('a|b'), "
    "comma-separated; each becomes an FM field folded into the served vectors."
)
MovieFeaturesOpt: Optional[str] = typer.Option(
    None,
    "--movie-features",
    help=f"Side columns of the movies CSV (--movies, or the folder's movies.csv): {SIDE_HELP}",
)
UsersOpt: Optional[Path] = typer.Option(
    None, "--users", help="A users CSV (userId or --user-col, plus the --user-features columns)."
)
UserFeaturesOpt: Optional[str] = typer.Option(
    None, "--user-features", help=f"Side columns of the --users CSV: {SIDE_HELP}"
)


def read_as_flags(user_col, item_col, rating_col, time_col, movies, rating_scale) -> dict | None:
    """The flags that read your own CSV as datasets.load_csv's options; None when none is given
    (a MovieLens folder or zip, or a CSV with MovieLens's columns)."""
    given = dict(user_col=user_col, item_col=item_col, rating_col=rating_col, time_col=time_col)
    read_as = {name: value for name, value in given.items() if value}
    if movies:
        read_as["movies"] = movies
    if rating_scale:
        try:
            lo, hi = (float(v) for v in rating_scale.split(","))
        except ValueError:
            raise ConfigError(
                f"--rating-scale {rating_scale!r}: give LOWEST,HIGHEST, e.g. 1,10"
            ) from None
        if not lo < hi:
            raise ConfigError(f"--rating-scale {rating_scale!r}: LOWEST must be below HIGHEST")
        read_as["rating_scale"] = (lo, hi)
    return read_as or None


def side_flags(read_as: dict | None, movie_features, users, user_features) -> dict | None:
    """--movie-features, --users and --user-features added to the read_as options."""
    if users and not user_features:
        raise ConfigError("--users is read for its --user-features: name the columns to use")
    side = dict(movie_features=movie_features, users=users, user_features=user_features)
    side = {name: str(value) for name, value in side.items() if value}
    return (read_as or {}) | side or None


def parse_ranking_set(text: str | None) -> dict[str, float]:
    """--ranking-set 'reg=0.01,alpha0=0.3' -> {"reg": 0.01, "alpha0": 0.3}, checked."""
    pinned: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, sep, value = (x.strip() for x in part.partition("="))
        if not sep or name not in RANKING_SEARCHED:
            raise ConfigError(
                f"--ranking-set {part.strip()!r}: use NAME=VALUE with NAME one of "
                f"{', '.join(RANKING_SEARCHED)}"
            )
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise ConfigError(f"--ranking-set {name}={value!r}: use a number >= 0")
        pinned[name] = number
    return pinned


def parse_field_reg(text: str | None) -> dict[str, float]:
    """--field-reg 'genre=0.33,user=3' -> {"genre": 0.33, "user": 3.0} (check_config checks the
    names and signs)."""
    multipliers: dict[str, float] = {}
    for part in text.split(",") if text else ():
        name, sep, value = (x.strip() for x in part.partition("="))
        try:
            number = float(value) if sep and name else math.nan
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            raise ConfigError(f"--field-reg {part.strip()!r}: use FIELD=NUMBER, e.g. genre=0.33")
        multipliers[name] = number
    return multipliers


def check_tune_flags(nproc: int, **chosen_by_tune) -> None:
    """--tune chooses three flags: refuse them given too, and a data-parallel run (whose
    processes would each search)."""
    given = ["--" + name.replace("_", "-") for name, v in chosen_by_tune.items() if v is not None]
    if given:
        raise ConfigError(
            f"--tune chooses {', '.join(given)}: give {'them' if len(given) > 1 else 'it'} or "
            "--tune, not both (`fmstore tune` searches a grid of your choice)"
        )
    if nproc > 1:
        raise ConfigError(
            "--tune with --nproc: run `fmstore tune` first, then train with the values it "
            "chose and --nproc"
        )
