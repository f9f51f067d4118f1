"""A run's manifest.json: its format and keys checked before anything reads the run, and every
file's sha256 compared with the one it lists."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fmstore.errors import DataError, NotFoundError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1

# What every manifest has; a run folder missing one of these is corrupt.
REQUIRED_KEYS = ("run_id", "created_at", "dataset", "config", "metrics", "serving", "files")
_REQUIRED_SERVING = ("w0", "link", "rating_range")


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
    if missing or not isinstance(manifest.get("files"), dict):
        raise DataError(
            f"{path}: the manifest lacks {', '.join(missing) or 'a files table'}; "
            "the run folder is corrupt, retrain"
        )


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
