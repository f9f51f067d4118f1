"""`fmstore tune`: the rating model's factors and regularisation chosen on an inner split of the
training ratings (fmstore.train.tune), shown as a table; nothing is written."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fmstore.cli.app import (
    HomeOpt,
    JsonOpt,
    ThreadsOpt,
    app,
    dataset_path,
    err,
    example,
    out,
    print_json,
    safe,
    settings,
    use_threads,
)
from fmstore.config import INNER_FRACTION, MAX_SEARCH_RATINGS, TrainConfig, TuneGrid
from fmstore.errors import ConfigError

_DEFAULT_GRID = TuneGrid()


def _shown(values) -> str:
    return ",".join(f"{v:g}" for v in values)


@app.command(
    epilog=example(
        "fmstore tune --data ml-latest-small",
        "fmstore tune --data ml-latest-small --factors 32,64 --prior-reg 2,5,12 --json",
        "fmstore train --data ml-latest-small --tune",
    )
)
def tune(
    data: Path = typer.Option(
        ..., "--data", help="Dataset folder or GroupLens .zip in the ml-latest layout."
    ),
    factors: str = typer.Option(
        _shown(_DEFAULT_GRID.factors), help="Embedding widths to try, comma-separated."
    ),
    weight_decay: str = typer.Option(
        _shown(_DEFAULT_GRID.weight_decay), help="L2 per occurrence to try, comma-separated."
    ),
    prior_reg: str = typer.Option(
        _shown(_DEFAULT_GRID.prior_reg),
        help="L2 per weight and epoch (the Gaussian prior) to try, comma-separated.",
    ),
    field_steps: str = typer.Option(
        _shown(_DEFAULT_GRID.field_steps),
        help="The per-field stage: each field's L2 (user, movie, genre, year) multiplied by each "
        "of these in turn at the chosen point, a step repeated while it wins (e.g. '0.333,3'); "
        "empty skips the stage.",
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Fit every combination of the grid (27 points by default) instead of the staged "
        "search: the regularisation grid at the middle width, then the other widths (11).",
    ),
    max_ratings: int = typer.Option(
        MAX_SEARCH_RATINGS,
        help="Above this many training ratings, search on a random sample of users with about "
        "this many ratings (each point is a full training: at 25M ratings the whole grid on "
        "everything would take hours; the values found are then the sample's).",
    ),
    inner_fraction: float = typer.Option(
        INNER_FRACTION, help="Share of the training ratings the search validates on."
    ),
    epochs: int = typer.Option(TrainConfig.epochs, help="Most epochs of each fit."),
    patience: int = typer.Option(
        TrainConfig.patience, help="Epochs without improvement before a fit stops."
    ),
    lr: Optional[float] = typer.Option(
        None, help="Adam learning rate [default: follows the data size, as in train]."
    ),
    batch_size: Optional[int] = typer.Option(
        None, help="Ratings per step [default: follows the data size, as in train]."
    ),
    seed: int = typer.Option(
        TrainConfig.seed, help="Seed of the run's split (as in train), the search's and the fits'."
    ),
    valid_fraction: float = typer.Option(
        TrainConfig.valid_fraction,
        help="The run's validation share, as in train: those ratings are left out of the search.",
    ),
    device: str = typer.Option(TrainConfig.device, help="auto | cpu | cuda."),
    link: str = typer.Option(TrainConfig.link, help="identity | sigmoid."),
    ranking: bool = typer.Option(
        True,
        "--ranking/--no-ranking",
        help="Also search the ranking model's nu, reg, alpha0 and conf_alpha (what `fmstore train` "
        "does before every fit unless --no-tune-ranking).",
    ),
    threads: Optional[int] = ThreadsOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """Choose factors, weight decay and prior reg for a dataset: the rating model is fitted at
    the points of a small grid on the training ratings of the run's split and judged on an inner
    split of them, never on the validation split `train` reports. 11 fits by default (seconds
    each on ml-latest-small; on large data each is a training of a sample of users, see
    --max-ratings). Then the ranking model's settings, on the same inner split (--no-ranking
    skips). Writes nothing; `fmstore train --tune` runs the rating search and trains with the
    winner (train searches the ranking model's settings by itself)."""
    from fmstore import datasets
    from fmstore.train.tune import tune as run_search

    grid = TuneGrid(
        factors=_parse_list("--factors", factors, int),
        weight_decay=_parse_list("--weight-decay", weight_decay, float),
        prior_reg=_parse_list("--prior-reg", prior_reg, float),
        field_steps=_parse_list("--field-steps", field_steps, float) if field_steps else (),
    )
    grid.check()
    config = TrainConfig(
        epochs=epochs,
        patience=patience,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        valid_fraction=valid_fraction,
        device=device,
        link=link,
        ranking=False,
        refit=False,
    )
    from fmstore.train import check_config, resolve_device

    check_config(config)
    resolve_device(config.device)
    if max_ratings < 1:
        raise ConfigError(f"--max-ratings {max_ratings} must be at least 1")
    if not 0.0 < inner_fraction < 1.0:
        raise ConfigError(f"--inner-fraction {inner_fraction} must be between 0 and 1")
    use_threads(threads)
    cache = settings(home).home / "cache"
    with err.status(f"reading {safe(data)}"):
        # the home's cache when there is one: tune creates nothing
        data = dataset_path(settings(home), data)
        dataset = datasets.load_dataset(data, cache_dir=cache if cache.is_dir() else None)
    with err.status("tuning") as status:
        result = run_search(
            dataset,
            config,
            grid,
            inner_fraction=inner_fraction,
            max_ratings=max_ratings,
            full=full,
            progress=lambda message, done, total: _report(status, message, as_json),
        )
        found = None
        if ranking:
            from fmstore.ranking_search import search_ranking

            found = search_ranking(
                dataset,
                config,
                inner_fraction=inner_fraction,
                max_ratings=max_ratings,
                progress=lambda message, done, total: _report(status, message, as_json),
            )
    if as_json:
        return print_json(result.to_json() | ({"ranking": found.to_json()} if found else {}))
    print_table(result, safe(dataset.name))
    if found is not None:
        print_ranking_table(found, safe(dataset.name))


def _report(status, message: str, as_json: bool) -> None:
    status.update(message)
    if not as_json:
        err.print(message, markup=False)


def print_table(result, name: str) -> None:
    """One row per grid point, the chosen one marked, and what the search ran on."""
    table = Table(
        "",
        "stage",
        "factors",
        "weight decay",
        "prior reg",
        "per field",
        "inner RMSE",
        "gain (SE)",
        "best epoch",
        "seconds",
        title=f"{name}: the rating model at each grid point",
    )
    for n, p in enumerate(result.points):
        table.add_row(
            "*" if n == result.best else "",
            {0: "grid", 1: "regularisation", 2: "factors", 3: "per field"}[p.stage],
            str(p.factors),
            f"{p.weight_decay:g}",
            f"{p.prior_reg:g}",
            _fields(p.field_reg),
            f"{p.inner_rmse:.4f}" if math.isfinite(p.inner_rmse) else "-",
            "incumbent" if p.gain_se is None else f"{p.gain_se:+.1f}",
            f"{p.best_epoch}/{p.epochs_run}",
            f"{p.seconds:.1f}",
        )
    out.print(table)
    out.print(
        "gain (SE): how many standard errors a point's inner MSE is below its stage's incumbent "
        "(the given values, then the regularisation chosen); a point must gain more than 1 to "
        "replace it.",
        soft_wrap=True,
    )
    s = result.split
    sample = (
        f", a sample of {s.sampled_users:,} of {s.n_users:,} users"
        if s.sampled_users is not None
        else ""
    )
    chosen = result.chosen
    out.print(
        f"* chosen: --factors {chosen['factors']} --weight-decay {chosen['weight_decay']:g} "
        f"--prior-reg {chosen['prior_reg']:g}"
        + (f" --field-reg {_fields(chosen['field_reg'], '=')}" if "field_reg" in chosen else "")
        + f" (inner RMSE {result.points[result.best].inner_rmse:.4f}); "
        f"trained on {len(s.train_rows):,} and judged on {len(s.valid_rows):,} of the "
        f"{s.n_outer_train:,} training ratings{sample}, in {result.seconds:.0f}s",
        soft_wrap=True,
    )


def _fields(field_reg: dict, sep: str = " x") -> str:
    """{"genre": 0.33} -> 'genre x0.33' (or 'genre=0.33'); '-' for none."""
    return ",".join(f"{name}{sep}{m:g}" for name, m in field_reg.items()) or "-"


def print_ranking_table(found, name: str) -> None:
    """One row per point of the ranking model's search, the chosen one marked."""
    table = Table(
        "",
        "nu",
        "reg",
        "alpha0",
        "conf_alpha",
        "inner NDCG@10",
        "gain (SE)",
        "seconds",
        title=f"{name}: the ranking model at each point of its search",
    )
    for n, p in enumerate(found.points):
        table.add_row(
            "*" if n == found.best else "",
            f"{p.values['nu']:g}",
            f"{p.fitted_reg:g}",
            f"{p.values['alpha0']:g}",
            f"{p.values['conf_alpha']:g}",
            f"{p.ndcg:.4f}",
            "start" if p.gain_se is None else f"{p.gain_se:+.1f}",
            f"{p.seconds:.1f}",
        )
    out.print(table)
    chosen = found.chosen
    out.print(
        f"* chosen: --ranking-set nu={chosen['nu']:g},reg={chosen['reg']:g},"
        f"alpha0={chosen['alpha0']:g},conf_alpha={chosen['conf_alpha']:g} (inner NDCG@10 "
        f"{found.points[found.best].ndcg:.4f} over {found.users_ranked:,} users), in "
        f"{found.seconds:.0f}s; gain (SE): standard errors of the per-user NDCG above the "
        "incumbent it was compared with (more than 1 to move)",
        soft_wrap=True,
    )


def _parse_list(flag: str, text: str, kind) -> tuple:
    """'32,64,128' -> (32, 64, 128); one-line error naming the flag otherwise."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = kind(part)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise ConfigError(
                f"{flag} {text!r}: {part!r} is not {what} (give a comma-separated list)"
            ) from None
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"{flag} {text!r}: {part!r} is not a finite number")
        values.append(value)
    return tuple(values)
