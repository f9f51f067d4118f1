"""A run's manifest.json: its format and keys checked before anything reads the run, and every
file's sha256 compared with the one it lists."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from fmstore.errors import DataError, NotFoundError
from fmstore.serving import LINKS

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# What every manifest has; a run folder missing one of these is corrupt.
REQUIRED_KEYS = ("run_id", "created_at", "dataset", "config", "metrics", "serving", "files")
_REQUIRED_SERVING = ("w0", "link", "rating_range")
# The JSON type each required key must have (a hand-edited manifest can hold anything).
_KEY_TYPES = {
    "run_id": str,
    "created_at": str,
    "dataset": dict,
    "config": dict,
    "metrics": dict,
    "serving": dict,
    "files": dict,
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    if missing:
        raise DataError(
            f"{path}: the manifest lacks {', '.join(missing)}; the run folder is corrupt, retrain"
        )
    for key, kind in _KEY_TYPES.items():
        if not isinstance(manifest[key], kind):
            raise DataError(
                f"{path}: the manifest's {key} is a {type(manifest[key]).__name__}, not a "
                f"{'string' if kind is str else 'JSON object'}; the run folder is corrupt, retrain"
            )


def check_servable(run_dir: Path, manifest: dict) -> None:
    """Refuse (DataError) a run whose manifest holds values that no query could serve: checked
    by publish before anything is written, because a publication of it would switch the aliases
    and then every query would fail. The sha256 table cannot catch these: it does not cover the
    manifest itself."""
    path = Path(run_dir) / MANIFEST
    run_id, serving = manifest["run_id"], manifest["serving"]

    def refuse(what: str) -> DataError:
        return DataError(f"{path}: {what}; the run folder is corrupt or was edited, retrain")

    if run_id != Path(run_dir).name:
        raise refuse(f"run_id {run_id!r} is not the run folder's name {Path(run_dir).name!r}")
    if "__" in run_id:
        raise refuse(f"run_id {run_id!r} contains '__' (it separates collection names' parts)")
    if not _finite(serving["w0"]):
        raise refuse(f"serving.w0 is {serving['w0']!r}, not a finite number")
    if serving["link"] not in LINKS:
        raise refuse(f"serving.link is {serving['link']!r}, not one of {', '.join(LINKS)}")
    scale = serving["rating_range"]
    if not (isinstance(scale, list) and len(scale) == 2 and all(map(_finite, scale))) or (
        scale[0] >= scale[1]
    ):
        raise refuse(f"serving.rating_range is {scale!r}, not [lowest, highest] finite numbers")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def load_manifest(run_dir: Path, verify: bool = True) -> dict:
    """The run's manifest, its format and keys checked; with `verify`, every listed file's
    sha256 must match. A manifest of a newer fmstore is refused, never half understood."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise NotFoundError(f"{run_dir}: no {MANIFEST}; not a run folder (see `fmstore runs`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DataError(
            f"{path}: unreadable manifest ({exc}); the run folder is corrupt, retrain"
        ) from None
    check_manifest(path, manifest)
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = Path(run_dir) / name
            if not file.is_file() or sha256_file(file) != expected:
                raise DataError(
                    f"{file}: missing or its sha256 does not match manifest.json; "
                    "the run folder is corrupt or was edited, retrain or restore it"
                )
    return manifest
