"""Run folders as found on disk: the manifest's format and keys, checked before anything reads
them, and the temporary folders of trainings that were killed, cleaned on the next one."""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from fmstore import __version__
from fmstore.errors import DataError, NotFoundError

FORMAT_VERSION = 1
# The validated model's predictions of the held-out ratings (before any refit); runs saved before
# fmstore kept them lack the file.
VALID_PREDICTIONS = "validation.safetensors"

# What every manifest has; a run folder missing one of these is corrupt.
REQUIRED_KEYS = ("run_id", "created_at", "dataset", "config", "metrics", "serving", "files")
_REQUIRED_SERVING = ("w0", "link", "rating_range")


def check_manifest(path: Path, manifest) -> None:
    """Refuse (DataError) a manifest that is not an object, is of a newer format_version, or
    lacks a key every run has."""
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: not a run manifest (a JSON object); the run folder is corrupt")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise DataError(f"{path}: no valid format_version; the run folder is corrupt, retrain")
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {version} is newer than this fmstore reads "
            f"({FORMAT_VERSION}); upgrade fmstore"
        )
    serving = manifest.get("serving") if isinstance(manifest.get("serving"), dict) else {}
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    missing += [f"serving.{key}" for key in _REQUIRED_SERVING if key not in serving]
    if missing or not isinstance(manifest.get("files"), dict):
        raise DataError(
            f"{path}: the manifest lacks {', '.join(missing) or 'a files table'}; "
            "the run folder is corrupt, retrain"
        )


TMP_PREFIX = ".tmp-"
# A temporary run folder without a pid in its name (older versions) counts as stale after this.
_UNNAMED_TMP_STALE_SECONDS = 3600


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


SERVING_ARRAYS = ("movie_ids", "item_vectors", "item_bias", "user_ids", "user_vectors", "user_bias")


def load_arrays(path: Path, wanted: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """A safetensors file (never a pickle) holding at least `wanted`; a damaged one is a
    one-line DataError."""
    try:
        arrays = load_file(str(path))
    except Exception as exc:  # safetensors' SafetensorError, OSError
        raise DataError(f"{path}: unreadable ({exc}); the run folder is corrupt, retrain") from None
    if missing := [name for name in wanted if name not in arrays]:
        raise DataError(f"{path} lacks {missing}; the run folder is corrupt, retrain")
    return arrays


def load_valid_predictions(run_dir: Path) -> dict[str, np.ndarray] | None:
    """{"actual", "predicted"}: the held-out ratings and the validated model's predictions of
    them, kept from before a refit; None for a run that has no such file."""
    path = Path(run_dir) / VALID_PREDICTIONS
    return load_arrays(path, ("actual", "predicted")) if path.is_file() else None


def versions() -> dict:
    """The versions a run was trained with (manifest["versions"])."""
    import torch

    return {
        "fmstore": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


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


def unreadable_run(path: Path, manifest: str, exc: Exception) -> dict:
    """A listing entry for a run folder whose manifest cannot be read: shown, never hidden."""
    from datetime import datetime, timezone

    modified = datetime.fromtimestamp((path / manifest).stat().st_mtime, timezone.utc)
    created = modified.isoformat(timespec="seconds")
    return {"run_id": path.name, "path": str(path), "created_at": created, "error": str(exc)}
