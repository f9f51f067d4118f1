"""`fmstore runs [show|compare|delete]`: the training runs, which one is live, one run in
detail, two runs side by side, and deleting one that nothing depends on."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from fmstore.cli.app import (
    HomeOpt,
    JsonOpt,
    app,
    check_home,
    example,
    fmt_number,
    note,
    out,
    print_json,
    safe,
    settings,
    warn,
)
from fmstore.cli.live import resolve_run
from fmstore.errors import ConfigError

runs_app = typer.Typer(
    rich_markup_mode=None,
    invoke_without_command=True,
    help="List the training runs (the live one marked with *); show, compare or delete them.",
    epilog=example("fmstore runs", "fmstore runs compare RUN_A RUN_B --json"),
)
app.add_typer(runs_app, name="runs")

CONFIG_COLUMNS = ("factors", "lr", "batch_size", "link", "seed")
METRIC_KEYS = (
    "valid_rmse",
    "valid_recall@10",
    "valid_ndcg@10",
    "valid_mae",
    "test_rmse",
    "test_mae",
    "best_epoch",
    "epochs_run",
    "train_seconds",
)


@runs_app.callback()
def runs(ctx: typer.Context, home: Optional[Path] = HomeOpt, as_json: bool = JsonOpt):
    """List the training runs, oldest first: the live one marked with *, their config and metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from fmstore import runs as run_folders

    s = settings(home)
    check_home(s, write=False)
    live = _live_run(s)
    manifests = run_folders.list_runs(s.runs_dir)
    broken = [m for m in manifests if "error" in m]
    rows = []
    for m in manifests:
        if "error" in m:
            continue
        try:
            rows.append(_row(m, live))
        except (TypeError, ValueError, AttributeError) as exc:  # a hand-edited manifest
            broken.append(m | {"error": f"{m['path']}/manifest.json: {exc}"})
    if as_json:
        unreadable = [{k: m[k] for k in ("run_id", "path", "error")} for m in broken]
        return print_json(rows + unreadable)
    for m in broken:  # a damaged run is reported, never hidden
        warn(f"run {m['run_id']} is unreadable: {m['error']}")
    if not rows:
        out.print("no readable runs" if broken else "no runs yet: `fmstore train --data PATH`")
        return
    table = Table("")
    # the run id is what every other command takes: a narrow terminal folds the others first
    table.add_column("run", no_wrap=True, min_width=max(len(r["run_id"]) for r in rows))
    for name in ("created", "dataset", "k", "lr", "batch", "link", "seed", "valid RMSE"):
        table.add_column(name)
    for name in ("Recall@10", "NDCG@10"):  # the served ranking's, on the validation split
        table.add_column(name)
    for name in ("test RMSE", "epochs", "seconds"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            "*" if r["live"] else "",
            safe(r["run_id"]),
            safe(str(r["created_at"])[:19]),  # to the second: the JSON keeps the microseconds
            safe(r["dataset"]),
            str(r["factors"]),
            f"{r['lr']:g}",
            str(r["batch_size"]),
            safe(r["link"]),
            str(r["seed"]),
            fmt_number(r["valid_rmse"]),
            fmt_number(r["valid_recall@10"]),
            fmt_number(r["valid_ndcg@10"]),
            fmt_number(r["test_rmse"]),
            str(r["epochs"]),
            fmt_number(r["seconds"], 1),
        )
    out.print(table)
    if live:
        out.print(f"* live: run {live}")


def _live_run(s) -> str | None:
    """The live run for a listing; when the store cannot say (another process holds the
    embedded store, a server is down), the listing goes on without the mark and says why."""
    from fmstore.cli.live import served
    from fmstore.errors import FmstoreError

    try:
        return served(s).live_run
    except FmstoreError as exc:
        note(f"cannot tell which run is live: {exc}")
        return None


_NUMBER_COLUMNS = ("factors", "lr", "batch_size", "seed", "valid_rmse", "test_rmse", "seconds")


def _row(manifest: dict, live: str | None) -> dict:
    """A listing row; ValueError naming the field when one has a type the table cannot show."""
    config, metrics = manifest["config"], manifest["metrics"]
    row = {
        "run_id": manifest["run_id"],
        "live": manifest["run_id"] == live,
        "created_at": manifest["created_at"],
        "dataset": manifest["dataset"].get("name"),
        **{key: config.get(key) for key in CONFIG_COLUMNS},
        "valid_rmse": metrics.get("valid_rmse"),
        "valid_recall@10": metrics.get("valid_recall@10"),
        "valid_ndcg@10": metrics.get("valid_ndcg@10"),
        "test_rmse": metrics.get("test_rmse"),
        "epochs": metrics.get("epochs_run"),
        "seconds": metrics.get("train_seconds"),
    }
    for key in _NUMBER_COLUMNS + ("dataset", "link"):
        value, text = row[key], key in ("dataset", "link")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and not (isinstance(value, str) if text else number):
            kind = "text" if text else "a number"
            raise ValueError(f"its {key} is {safe(repr(value))[:80]}, not {kind}")
    return row


@runs_app.command("show", epilog=example("fmstore runs show 20260101-120000-abcdef"))
def show(
    run: str = typer.Argument(..., help="Run id."),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """One run: dataset, config, metrics, the epochs, and whether it is live."""
    from fmstore import runs as run_folders
    from fmstore.report.collect import read_history

    s = settings(home)
    folder = resolve_run(s, run)
    m = run_folders.load_manifest(folder, verify=False)
    detail = {
        "run_id": m["run_id"],
        "path": str(folder),
        "live": _live_run(s) == m["run_id"],
        "created_at": m["created_at"],
        "device": m.get("device"),
        "dataset": m["dataset"],
        "config": m["config"],
        "metrics": {k: v for k, v in m["metrics"].items() if not isinstance(v, list)},
        "history": [vars(e) for e in read_history(folder / "history.csv")],
        "versions": m.get("versions", {}),
    }
    if as_json:
        return print_json(detail)
    out.print(f"run {detail['run_id']}" + ("  (live)" if detail["live"] else ""), highlight=False)
    table = Table("", "value", show_header=False)
    for section, rows in _sections(detail):
        table.add_section()
        table.add_row(f"[bold]{section}[/bold]", "")
        for key, value in rows:
            table.add_row(f"  {safe(key)}", safe(_shown(value)))
    out.print(table)
    epochs = Table("epoch", "train RMSE", "valid RMSE", title="epochs")
    for e in detail["history"]:
        epochs.add_row(str(e["epoch"]), fmt_number(e["train_rmse"]), fmt_number(e["valid_rmse"]))
    out.print(epochs)


@runs_app.command("compare", epilog=example("fmstore runs compare RUN_A RUN_B"))
def compare(
    run_a: str = typer.Argument(..., help="First run id."),
    run_b: str = typer.Argument(..., help="Second run id."),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """Two runs side by side: the settings that differ, and every metric with B minus A."""
    from fmstore import runs as run_folders

    s = settings(home)
    a, b = (run_folders.load_manifest(resolve_run(s, r), verify=False) for r in (run_a, run_b))
    keys = sorted(set(a["config"]) | set(b["config"]))
    config = [
        {"key": k, "a": a["config"].get(k), "b": b["config"].get(k)}
        for k in keys
        if a["config"].get(k) != b["config"].get(k)
    ]
    if a["dataset"]["fingerprint"] != b["dataset"]["fingerprint"]:
        config.insert(0, {"key": "dataset", "a": a["dataset"]["name"], "b": b["dataset"]["name"]})
    metrics = []
    for k in METRIC_KEYS:
        va, vb = a["metrics"].get(k), b["metrics"].get(k)
        if va is None and vb is None:
            continue
        delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
        metrics.append({"key": k, "a": va, "b": vb, "delta": delta})
    result = {"a": a["run_id"], "b": b["run_id"], "config": config, "metrics": metrics}
    if as_json:
        return print_json(result)
    table = Table("", f"A {a['run_id']}", f"B {b['run_id']}", "B - A")
    for row in config:
        table.add_row(row["key"], str(row["a"]), str(row["b"]), "")
    if not config:
        table.add_row("config", "same", "same", "")
    table.add_section()
    for row in metrics:
        table.add_row(
            row["key"], _cell(row["a"]), _cell(row["b"]), _cell(row["delta"], signed=True)
        )
    out.print(table)


# `runs show`: the config's keys by what they set (the rest: "rating model")
_VALIDATION_KEYS = ("split", "split_n", "valid_fraction", "seed", "patience", "refit")
_RUN_KEYS = ("device",)


def _sections(detail: dict) -> list[tuple[str, list]]:
    """`runs show`'s groups of (key, value): dataset, rating model, ranking model, validation,
    metrics."""
    d, config = detail["dataset"], dict(detail["config"])
    dataset = [
        ("name", d.get("name")),
        ("ratings", f"{d.get('n_ratings', 0):,} by {d.get('n_users', 0):,} users"),
        ("movies", f"{d.get('n_movies', 0):,}"),
        ("source", d.get("source")),
        ("created", f"{detail['created_at']} on {detail['device']}"),
    ]
    dataset += [(k, d[k]) for k in ("rating_scale", "read_as") if d.get(k)]
    ranking = list(_flat(config.pop("ranking_config", None) or {}))
    ranking += [
        (k, config.pop(k)) for k in ("ranking", "tune_ranking", "ranking_pinned") if k in config
    ]
    validation = [(k, config.pop(k)) for k in _VALIDATION_KEYS if k in config]
    rating = [(k, v) for k, v in config.items() if k not in _RUN_KEYS]
    metrics = list(_flat(detail["metrics"]))
    return [
        ("dataset", dataset),
        ("rating model", rating),
        ("ranking model", ranking),
        ("validation", validation),
        ("metrics", metrics),
    ]


def _shown(value) -> str:
    """A value for people: numbers rounded, lists joined, nothing as '-' (no Python reprs)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 and value != int(value) else f"{value:g}"
    if isinstance(value, (list, tuple)):
        if any(isinstance(v, (dict, list)) for v in value):
            return f"{len(value)} entries (runs show --json has them)"
        return ", ".join(_shown(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k} {_shown(v)}" for k, v in value.items()) or "-"
    return str(value)


def _flat(metrics: dict, prefix: str = ""):
    """(key, value) of each metric, a nested section's keys as "section.key"."""
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _cell(x, signed: bool = False) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:+.4f}" if signed else f"{x:.4f}"
    return f"{x:+d}" if signed else str(x)


@runs_app.command("delete", epilog=example("fmstore runs delete 20260101-120000-abcdef --yes"))
def delete(
    run: str = typer.Argument(..., help="Run id."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    home: Optional[Path] = HomeOpt,
    as_json: bool = JsonOpt,
):
    """Delete a run folder and its published collections. Refuses the live run and the run a
    rollback would return to."""
    from fmstore.cli.live import served

    s = settings(home)
    folder = resolve_run(s, run)
    run = folder.name  # a prefix, "latest" or "live" named this run
    _refuse_if_served(served(s), run)  # before asking: no prompt for a run that cannot go
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"deleting run {run} needs confirmation: pass --yes")
        typer.confirm(f"delete run {run} ({folder})?", abort=True)
    collections = _delete_run(s, run, folder)
    result = {"run_id": run, "deleted_collections": collections}
    if as_json:
        return print_json(result)
    out.print(f"deleted run {run}" + (f" and {', '.join(collections)}" if collections else ""))


def _refuse_if_served(state, run: str) -> None:
    if run == state.live_run:
        raise ConfigError(f"run {run} is live; publish or roll back to another run first")
    if run == state.rollback_target:
        raise ConfigError(
            f"run {run} is what `fmstore publish --rollback` would return to; "
            "publish a newer run first"
        )


def _delete_run(s, run: str, folder: Path) -> list[str]:
    """The run's collections, then its folder, under the store's lock; what is served is asked
    again under that lock, since a publish or rollback may have finished while the prompt
    waited (and the live run is never deleted)."""
    from fmstore.cli.live import has_store, served_by
    from fmstore.vectors import open_store

    if not has_store(s):
        _delete_folder(folder, run)
        return []
    with open_store(s) as store:
        store.lock()  # held until close: no publish, rollback or prune until we are done
        _refuse_if_served(served_by(s, store), run)
        collections = _delete_collections(s, store, run)
        _delete_folder(folder, run)
    return collections


def _delete_folder(folder: Path, run: str) -> None:
    trash = folder.with_name(f".deleting-{run}")
    folder.rename(trash)  # one step: the run is gone from listings before its files are
    shutil.rmtree(trash, ignore_errors=True)


def _delete_collections(s, store, run: str) -> list[str]:
    from fmstore.serving import run_id_of

    deleted = []
    existing = store.list_collections()
    for alias in (s.movies_collection, s.users_collection):
        # every publication of the run: <alias>__<run>__<publication> (or <alias>__<run>)
        for name in existing:
            if name.startswith(f"{alias}__") and run_id_of(name) == run:
                store.delete_collection(name)
                deleted.append(name)
    return deleted
