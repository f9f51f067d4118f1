"""Run folders on disk: new run ids, run ids checked never to be paths, the listing and the
latest run, and the temporary folders of trainings that were killed, cleaned on the next one."""

from __future__ import annotations

import os
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from fmstore.errors import AmbiguousError, DataError, NotFoundError
from fmstore.runs.manifest import MANIFEST, load_manifest

TMP_PREFIX = ".tmp-"
# A temporary run folder without a pid in its name (older versions) counts as stale after this.
_UNNAMED_TMP_STALE_SECONDS = 3600


def new_run_id(now: datetime | None = None) -> str:
    """A new run id: UTC time to the second plus 6 random hex digits ('20261129-105500-ab12cd')."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def check_run_name(runs_dir: Path, run_id: str) -> Path:
    """The folder of a run id: a plain name inside runs_dir, never a path out of it."""
    path = Path(runs_dir) / run_id
    inside = Path(runs_dir).resolve()
    if Path(run_id).name != run_id or run_id in (".", "..") or path.resolve().parent != inside:
        raise NotFoundError(
            f"run {run_id!r}: give a run id from `fmstore runs`, not a path "
            f"(runs live in {runs_dir})"
        )
    return path


def list_runs(runs_dir: Path) -> list[dict]:
    """Manifests of all runs (unverified, for listing), oldest first. A run folder whose manifest
    cannot be read is listed too, as {"run_id", "path", "created_at", "error"}: never hidden."""
    if not Path(runs_dir).is_dir():
        return []
    manifests = []
    for path in sorted(Path(runs_dir).iterdir()):
        if path.name.startswith(".") or not (path / MANIFEST).is_file():
            continue
        try:
            manifests.append(load_manifest(path, verify=False) | {"path": str(path)})
        except DataError as exc:
            manifests.append(unreadable_run(path, exc))
    return sorted(manifests, key=lambda m: (str(m.get("created_at", "")), str(m["run_id"])))


def unreadable_run(path: Path, exc: Exception) -> dict:
    """A listing entry for a run folder whose manifest cannot be read: shown, never hidden."""
    modified = datetime.fromtimestamp((path / MANIFEST).stat().st_mtime, timezone.utc)
    created = modified.isoformat(timespec="seconds")
    return {"run_id": path.name, "path": str(path), "created_at": created, "error": str(exc)}


def resolve_run(runs_dir: Path, run_id: str | None) -> Path:
    """Folder of `run_id` (a name inside runs_dir, never a path out of it, or the start of one
    name: '20261203-1623'), or of the latest run when None or "latest"; a latest run that cannot
    be read is refused, never skipped for an older one."""
    if run_id == "":  # `fmstore publish ""`: a slip (an unset shell variable), not "the latest"
        raise NotFoundError(
            "run '': give a run id (`fmstore runs` lists them), or none for the latest run"
        )
    if run_id and run_id != "latest":
        path = check_run_name(runs_dir, run_id)
        if (path / MANIFEST).is_file():
            return path
        starting = sorted(
            p
            for p in (Path(runs_dir).iterdir() if Path(runs_dir).is_dir() else ())
            if p.name.startswith(run_id) and not p.name.startswith(".") and (p / MANIFEST).is_file()
        )
        if len(starting) == 1:
            return starting[0]
        if len(starting) > 1:
            names = ", ".join(p.name for p in starting[:5]) + (" ..." if len(starting) > 5 else "")
            raise AmbiguousError(
                f"run {run_id!r} is the start of {len(starting)} runs ({names}); give more of it"
            )
        raise NotFoundError(f"no run {run_id!r} in {runs_dir}; `fmstore runs` lists them")
    runs = list_runs(runs_dir)
    if not runs:
        raise NotFoundError(
            f"no runs in {runs_dir}; train one first with `fmstore train --data PATH`"
        )
    if "error" in runs[-1]:
        raise DataError(
            f"the newest run {runs[-1]['run_id']} is unreadable, so there is no latest run to "
            f"use: {runs[-1]['error']}; name a run (`fmstore runs` lists them) or remove it"
        )
    return Path(runs[-1]["path"])


def remove_stale_temp_runs(runs_dir: Path) -> list[Path]:
    """Delete the temporary folders of trainings that were killed; returns them. A folder whose
    writer (the pid in its name) still runs is left alone."""
    removed = []
    for path in Path(runs_dir).glob(f"{TMP_PREFIX}*") if Path(runs_dir).is_dir() else ():
        if path.is_dir() and _is_stale(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _is_stale(tmp: Path) -> bool:
    _, at, pid = tmp.name.rpartition("@")
    if not at or not pid.isdigit():  # no pid: stale once old
        return time.time() - tmp.stat().st_mtime > _UNNAMED_TMP_STALE_SECONDS
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # it exists, but is another user's
        return False
    return int(pid) == os.getpid()
