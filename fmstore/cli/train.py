"""`fmstore train`: train an FM into a run folder."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import List, Optional

import typer

from fmstore.cli.app import (
    HomeOpt,
    JsonOpt,
    ThreadsOpt,
    app,
    check_home,
    dataset_path,
    err,
    example,
    out,
    print_json,
    progress_bar,
    safe,
    settings,
    show_progress,
    use_threads,
    warn,
)
from fmstore.cli.train_flags import (
    MovieFeaturesOpt,
    UserFeaturesOpt,
    UsersOpt,
    check_tune_flags,
    parse_field_reg,
    parse_ranking_set,
    read_as_flags,
    side_flags,
)
from fmstore.config import RankingConfig, TrainConfig
from fmstore.errors import ConfigError, EnvError


@app.command(
    epilog=example(
        "fmstore train --data ml-latest-small",
        "fmstore train --data ml-25m.zip --factors 128 --epochs 20 --json",
        "fmstore train --data plays.csv --user-col listener --item-col track --rating-col stars",
    )
)
def train(
    data: Path = typer.Option(
        ...,
        "--data",
        help="Dataset folder or GroupLens .zip in the ml-latest layout, or your own ratings "
        "CSV (any ids, any rating scale; see --user-col).",
    ),
    user_col: Optional[str] = typer.Option(
        None, "--user-col", help="Your CSV's user id column [default: userId]."
    ),
    item_col: Optional[str] = typer.Option(
        None, "--item-col", help="Your CSV's movie (item) id column [default: movieId]."
    ),
    rating_col: Optional[str] = typer.Option(
        None, "--rating-col", help="Your CSV's rating column [default: rating]."
    ),
    time_col: Optional[str] = typer.Option(
        None, "--time-col", help="Your CSV's time column, optional [default: timestamp]."
    ),
    movies: Optional[Path] = typer.Option(
        None,
        "--movies",
        help="With your own CSV: a movies CSV (movieId or --item-col, title, genres) "
        "[default: each movie titled by its id].",
    ),
    implicit: bool = typer.Option(
        False,
        "--implicit/--no-implicit",
        help="Your CSV has no ratings, only which items each user picked (clicks, plays): the "
        "ranking model is trained and served alone (no rating model, no predicted ratings).",
    ),
    weight_col: Optional[str] = typer.Option(
        None,
        "--weight-col",
        help="With --implicit: how much each pick counts (plays); the heavier half of each "
        "data set counts as liked [default: each row counts once].",
    ),
    movie_features: Optional[str] = MovieFeaturesOpt,
    users: Optional[Path] = UsersOpt,
    user_features: Optional[str] = UserFeaturesOpt,
    rating_scale: Optional[str] = typer.Option(
        None,
        "--rating-scale",
        help="With your own CSV: LOWEST,HIGHEST, e.g. 1,10 [default: inferred: half stars "
        "0.5-5, whole numbers to 10, 0-1, -1..1].",
    ),
    epochs: int = typer.Option(
        TrainConfig.epochs, help="Most epochs (early stopping may end sooner)."
    ),
    factors: Optional[int] = typer.Option(
        None, help=f"Embedding width k [default: {TrainConfig.factors}, or chosen by --tune]."
    ),
    lr: Optional[float] = typer.Option(
        None,
        help="Adam learning rate [default: follows the data size: 0.003 below 1M training "
        "ratings, 0.03 above].",
    ),
    batch_size: Optional[int] = typer.Option(
        None,
        help="Ratings per step [default: follows the data size: 1024 below 1M training "
        "ratings, up to 524288 above].",
    ),
    weight_decay: Optional[float] = typer.Option(
        None,
        help=f"L2 per occurrence of each weight [default: {TrainConfig.weight_decay:g}, or "
        "chosen by --tune].",
    ),
    prior_reg: Optional[float] = typer.Option(
        None,
        help="L2 per weight and epoch (a Gaussian prior): holds rarely seen movies and users near "
        f"zero [default: {TrainConfig.prior_reg:g}, or chosen by --tune].",
    ),
    seed: int = typer.Option(
        TrainConfig.seed, help="Seed of the split, the initialisation and the order."
    ),
    device: str = typer.Option(TrainConfig.device, help="auto | cpu | cuda."),
    link: str = typer.Option(
        TrainConfig.link, help="identity | sigmoid (the notebook's sigmoid(y)*5.5)."
    ),
    valid_fraction: float = typer.Option(
        TrainConfig.valid_fraction, help="Share of ratings held out for validation."
    ),
    split: str = typer.Option(
        TrainConfig.split,
        "--split",
        help="Which ratings validation holds out: random (--valid-fraction of them), time (each "
        "user's last --valid-fraction by time), leave-last-n (each user's last --split-n), users "
        "(every rating of --valid-fraction of the users: people the model never saw).",
    ),
    split_n: int = typer.Option(
        TrainConfig.split_n, "--split-n", help="With --split leave-last-n: ratings per user."
    ),
    patience: int = typer.Option(
        TrainConfig.patience, help="Epochs without improvement before stopping."
    ),
    lr_milestones: Optional[List[int]] = typer.Option(
        None, "--lr-milestone", help="Epoch at which lr is multiplied by --lr-gamma (repeatable)."
    ),
    lr_gamma: float = typer.Option(
        TrainConfig.lr_gamma, help="Factor applied to lr at each --lr-milestone."
    ),
    test_ratings: Optional[Path] = typer.Option(
        None, "--test-ratings", help="Ratings CSV to report test RMSE on (a predefined split)."
    ),
    refit: bool = typer.Option(
        TrainConfig.refit,
        "--refit/--no-refit",
        help="After validation, train again on every rating for the best epoch count (the published model then knows every rating).",
    ),
    ranking: bool = typer.Option(
        TrainConfig.ranking,
        "--ranking/--no-ranking",
        help="Also fit the ranking model (implicit feedback) that recommendations are served from.",
    ),
    rated_field: bool = typer.Option(
        False,
        "--rated-field/--no-rated-field",
        help="Give each user the set of movies they rated as features of their own (SVD++ in FM form): the model then builds a new user's side from the movies they name. Trains with the torch engine.",
    ),
    rated_reg: float = typer.Option(
        TrainConfig.rated_reg, help="With --rated-field: its L2 as a multiple of --weight-decay's."
    ),
    field_reg: Optional[str] = typer.Option(
        None,
        "--field-reg",
        help="Multiply one field's L2 (both terms), e.g. 'genre=0.33,user=3'; fields not named "
        "keep 1 (`fmstore tune --field-steps` finds them on an inner split).",
    ),
    ranking_factors: int = typer.Option(
        RankingConfig.factors, help="Width of the ranking model's vectors."
    ),
    ranking_iterations: int = typer.Option(
        RankingConfig.iterations, help="Alternating sweeps of the ranking model."
    ),
    tune_ranking: bool = typer.Option(
        TrainConfig.tune_ranking,
        "--tune-ranking/--no-tune-ranking",
        help="Search the ranking model's nu, reg, alpha0 and conf_alpha on an inner split of the "
        "training ratings (never the validation split) before fitting it; the manifest records "
        "the search. About 8-17 short fits of the ranking model.",
    ),
    ranking_set: Optional[str] = typer.Option(
        None,
        "--ranking-set",
        help="Pin ranking model settings instead of searching them, e.g. "
        "'nu=0.75,reg=0.01,alpha0=0.3,conf_alpha=1' (any of the four; a pinned reg is fitted "
        "as given at any nu).",
    ),
    tune: bool = typer.Option(
        False,
        "--tune/--no-tune",
        help="First choose --factors, --weight-decay and --prior-reg by the search of `fmstore "
        "tune` (its default, staged grid: 11 fits of the rating model, judged on an inner split "
        "of the training ratings, never on the validation split reported here), then train with "
        "the winner; the manifest records the search. Seconds per fit on ml-latest-small; above "
        "2M training ratings the search runs on a sample of users of about 2M ratings, and still "
        "costs about 11 trainings of that sample.",
    ),
    nproc: int = typer.Option(
        1,
        help="Processes of a data-parallel run (torch.distributed: gloo on CPU, one GPU each "
        "with NCCL), as `torchrun --nproc-per-node N -m fmstore train ...` starts them.",
    ),
    threads: Optional[int] = ThreadsOpt,
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """Train the rating FM and the ranking model on a dataset, validate, refit, save as a run."""
    launched = dict(locals())  # the options, for --nproc's processes
    from fmstore import datasets, pipeline
    from fmstore.train import check_config, check_memory, resolve_device

    s = settings(home)
    pinned = parse_ranking_set(ranking_set)
    if tune:
        check_tune_flags(nproc, factors=factors, weight_decay=weight_decay, prior_reg=prior_reg)
    config = TrainConfig(
        epochs=epochs,
        factors=TrainConfig.factors if factors is None else factors,
        lr=lr,
        batch_size=batch_size,
        weight_decay=TrainConfig.weight_decay if weight_decay is None else weight_decay,
        prior_reg=TrainConfig.prior_reg if prior_reg is None else prior_reg,
        seed=seed,
        device=device,
        link=link,
        valid_fraction=valid_fraction,
        split=split,
        split_n=split_n,
        patience=patience,
        lr_milestones=tuple(lr_milestones or ()),
        lr_gamma=lr_gamma,
        refit=refit,
        ranking=ranking,
        fields=TrainConfig.fields + (("rated",) if rated_field else ()),
        rated_reg=rated_reg,
        field_reg=parse_field_reg(field_reg),
        ranking_config=RankingConfig(
            factors=ranking_factors, iterations=ranking_iterations, **pinned
        ),
        tune_ranking=tune_ranking,
        ranking_pinned=tuple(pinned),
    )
    check_config(config)  # refuse bad flags before spending time on the data
    device_name = resolve_device(config.device)
    check_home(s, write=True)  # an unwritable home must not cost a whole training
    if nproc < 1:
        raise ConfigError(f"--nproc {nproc} must be at least 1")
    parallel = _join_parallel_run(config.device)
    rank0 = parallel is None or parallel.rank == 0
    if parallel is None or threads is not None:  # (--nproc's processes share the CPUs: the
        use_threads(threads)  # launcher sets OMP_NUM_THREADS for each, unless --threads says)
    with err.status(f"reading {safe(data)}") if rank0 else contextlib.nullcontext():
        # also what --nproc checks (one-line errors) and caches for its processes before they start
        read_as = read_as_flags(user_col, item_col, rating_col, time_col, movies, rating_scale)
        if implicit or weight_col:
            if not implicit:
                raise ConfigError("--weight-col is for --implicit data (plays, clicks)")
            read_as = (read_as or {}) | {"implicit": True, "weight_col": weight_col}
        read_as = side_flags(read_as, movie_features, users, user_features)
        data = dataset_path(s, data)
        dataset = datasets.load_dataset(data, cache_dir=s.home / "cache", read_as=read_as)
        test = datasets.load_ratings_file(test_ratings, dataset.movies) if test_ratings else None
    check_memory(dataset, config, device_name)  # (pipeline.run checks again after --tune)
    if parallel is None and nproc > 1:
        del dataset, test
        _check_gpus_for(nproc, device_name)
        raise typer.Exit(_launch_processes(launched, nproc))
    if rank0:
        err.print(
            f"{safe(dataset.name)}: {len(dataset.ratings):,} ratings, "
            f"{len(dataset.movies):,} movies",
            markup=False,
        )
    try:
        with _progress(as_json, quiet=not rank0) as (report, batches):
            trained = pipeline.run(
                dataset,
                config,
                runs_dir=s.runs_dir if rank0 else None,
                test_ratings=test,
                tune=tune,
                progress=report,
                batch_progress=batches,
                parallel=parallel,
            )
    except RuntimeError as exc:  # torch's allocator: "can't allocate memory", CUDA OOM
        if "out of memory" in str(exc) or "allocate" in str(exc):
            raise EnvError(
                f"out of memory training {config.factors} factors on {device_name}: "
                "use fewer --factors or a smaller --batch-size"
            ) from None
        raise
    finally:
        if parallel is not None:
            from fmstore.train import distributed

            distributed.finish()
    result, config, run_dir = trained.result, trained.config, trained.run_dir
    if not rank0:
        return
    if not math.isfinite(result.metrics.get("valid_rmse", math.nan)):
        warn(
            f"run {run_dir.name} has no validation ratings (--valid-fraction "
            f"{config.valid_fraction:g}): its valid RMSE is undefined and early stopping never "
            "applied; judge it with `fmstore evaluate --test-ratings FILE`"
        )
    summary = {"run_id": run_dir.name, "path": str(run_dir), **result.metrics}
    if as_json:
        print_json(summary)
    else:
        m = result.metrics
        if not config.rating_model:
            out.print(
                f"run {run_dir.name}: implicit data, the ranking model alone: served Recall@10 "
                f"{m.get('valid_recall@10', math.nan):.4f} NDCG@10 "
                f"{m.get('valid_ndcg@10', math.nan):.4f}, {m['train_seconds']:.1f}s on "
                f"{result.device}"
            )
            return
        test_part = f", test RMSE {m['test_rmse']:.4f}" if "test_rmse" in m else ""
        ranking_part = (
            f", served Recall@10 {m['valid_recall@10']:.4f} NDCG@10 {m['valid_ndcg@10']:.4f}"
            if "valid_recall@10" in m
            else ""
        )
        seconds = m["train_seconds"] + (m["refit"]["seconds"] if "refit" in m else 0.0)
        refit_part = f"; refitted on all {m['refit']['n_train']:,} ratings" if "refit" in m else ""
        out.print(
            f"run {run_dir.name}: valid RMSE {m['valid_rmse']:.4f} (best epoch {m['best_epoch']}/{m['epochs_run']})"
            f"{test_part}{ranking_part}{refit_part}, {seconds:.1f}s on {result.device}"
        )


@contextlib.contextmanager
def _progress(as_json: bool, quiet: bool):
    """(report, batch report) for pipeline.run: a bar for the epochs and one for the current
    epoch's ratings on stderr, each stage also as a line unless --json; (None, None) when quiet
    (the other ranks of a data-parallel run)."""
    if quiet:
        yield None, None
        return
    with progress_bar(*_training_columns()) as progress:
        epochs_task = progress.add_task("training", total=None)
        epoch_task = progress.add_task("epoch 1", total=None, unit="ratings")
        current = {"epoch": 0}

        def report(message: str, done: int, total: int) -> None:
            progress.update(epochs_task, completed=done, total=total, description=message)
            if not as_json:
                err.print(message, markup=False)

        def on_batches(epoch: int, done: int, total: int) -> None:
            if epoch != current["epoch"]:  # a new epoch: its own bar, rate and ETA
                current["epoch"] = epoch
                progress.reset(epoch_task, total=total, description=f"epoch {epoch}")
            progress.update(epoch_task, completed=done)

        yield report, (on_batches if show_progress() else None)


def _training_columns() -> tuple:
    """The bars' columns: what, bar, percent, ratings per second (the epoch bar), ETA. (rich's
    progress module loads here, not when `fmstore query` starts.)"""
    from rich.progress import (
        BarColumn,
        ProgressColumn,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RatingsPerSecond(ProgressColumn):
        def render(self, task) -> Text:
            if task.fields.get("unit") != "ratings" or not task.speed:
                return Text("")
            return Text(f"{task.speed:,.0f} ratings/s", style="progress.data.speed")

    return (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        RatingsPerSecond(),
        TimeRemainingColumn(),
    )


def _join_parallel_run(device: str):
    """This process's Parallel when torchrun (or --nproc) started it as one of several, else
    None."""
    world_size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world_size <= 1:
        return None
    from fmstore.train import distributed

    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return distributed.init(rank, world_size, local_rank, device)


def _check_gpus_for(nproc: int, device) -> None:
    if device.type != "cuda":
        return
    import torch

    if nproc > torch.cuda.device_count():
        raise ConfigError(
            f"--nproc {nproc} on CUDA needs one GPU per process, and "
            f"{torch.cuda.device_count()} are visible; use --nproc {torch.cuda.device_count()}"
        )


def _launch_processes(options: dict, nproc: int) -> int:
    """`fmstore train` with the same options as `nproc` processes of one data-parallel run."""
    from fmstore.train import distributed

    argv = ["fmstore", "train"]  # run by torchrun as `python -m fmstore train ...`
    for name, value in options.items():
        if name in ("nproc", "as_json", "lr_milestones") or value is None:
            continue
        flag = name.replace("_", "-")
        if isinstance(value, bool):  # --refit/--no-refit style switches
            argv.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            argv += [f"--{flag}", str(value)]
    for milestone in options["lr_milestones"] or ():
        argv += ["--lr-milestone", str(milestone)]
    if options["as_json"]:
        argv.append("--json")
    env = dict(os.environ)
    if options["home"] is None:
        env.setdefault("FMSTORE_HOME", str(settings(None).home))
    threads = None if "OMP_NUM_THREADS" in env else distributed.default_threads(nproc)
    return distributed.launch(argv, nproc, env, threads=threads)
