"""Download a GroupLens MovieLens zip, verify its md5 and unpack it; nothing is left behind
unless all three succeed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable

from fmstore.datasets.csvtext import check_header
from fmstore.datasets.sources import check_member_size
from fmstore.datasets.types import MOVIES_COLUMNS, MOVIES_FILE, RATINGS_COLUMNS, RATINGS_FILE
from fmstore.errors import DataError

log = logging.getLogger(__name__)

DATASET_NAMES = ("ml-latest-small", "ml-latest", "ml-25m", "ml-32m")
DEFAULT_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"
# Used only when the published {url}.md5 cannot be fetched. Computed from the GroupLens zip.
KNOWN_MD5 = {"ml-latest-small": "31a303aabbc519bd33d025e44d6c2570"}

_DOWNLOAD_CHUNK = 1 << 20
_NETWORK_TIMEOUT_S = 60


def fetch_dataset(
    name: str,
    dest: Path,
    url: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download a GroupLens MovieLens zip, verify its md5, unpack it to `dest/name`; return that.

    Nothing is left in `dest` unless the download verified and unpacked completely.
    """
    if name not in DATASET_NAMES and url is None:
        raise DataError(
            f"unknown dataset '{name}'; choose one of {', '.join(DATASET_NAMES)} or pass --url"
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise DataError(
            f"dataset name '{name}' must be a plain folder name (letters, digits, '.', '_', '-')"
        )
    dest = Path(dest)
    target = dest / name
    if _looks_like_dataset(target):
        return target
    if target.exists():
        raise DataError(
            f"{target} exists but is not a MovieLens dataset (no valid "
            f"{RATINGS_FILE}/{MOVIES_FILE}); remove it or choose another destination"
        )
    url = url or DEFAULT_URL.format(name=name)
    expected = _published_md5(url) or KNOWN_MD5.get(name)
    if expected is None:
        raise DataError(
            f"no checksum for {url} (could not fetch {url}.md5 and none is built in"
            f" for '{name}'); refusing an unverified download"
        )
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {dest} ({exc.strerror}); choose another destination"
        ) from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".zip.part", dir=dest)
    tmp_zip = Path(tmp_name)
    tmp_dir: Path | None = None
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _download(url, out, progress)
        if actual != expected:
            raise DataError(
                f"checksum mismatch for {url}: md5 {actual}, expected {expected}; "
                "the download is corrupt or the file changed, try again"
            )
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=dest))
        folder = _unpack(tmp_zip, tmp_dir, url)
        os.replace(folder, target)
        return target
    finally:
        tmp_zip.unlink(missing_ok=True)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _looks_like_dataset(folder: Path) -> bool:
    """Cheap check that a folder holds readable MovieLens ratings and movies files."""
    try:
        for file, columns in ((RATINGS_FILE, RATINGS_COLUMNS), (MOVIES_FILE, MOVIES_COLUMNS)):
            with open(folder / file, "rb") as f:
                check_header(f.readline(), file, columns)
        return True
    except (OSError, DataError):
        return False


def _published_md5(url: str) -> str | None:
    """The md5 GroupLens publishes at {url}.md5 ("<hex>" or "<hex>  <file>"), if reachable."""
    try:
        with urllib.request.urlopen(url + ".md5", timeout=_NETWORK_TIMEOUT_S) as response:
            text = response.read(4096).decode("ascii", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.info("no published checksum at %s.md5 (%s)", url, exc)
        return None
    match = re.search(r"\b([0-9a-fA-F]{32})\b", text)
    return match.group(1).lower() if match else None


def _download(url: str, out, progress: Callable[[int, int | None], None] | None) -> str:
    """Stream `url` into `out`; return the md5 hex of what was written."""
    digest = hashlib.md5()
    done = 0
    try:
        with urllib.request.urlopen(url, timeout=_NETWORK_TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress:
                progress(0, total)
            while chunk := response.read(_DOWNLOAD_CHUNK):
                out.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        raise DataError(
            f"could not download {url}: HTTP {exc.code} {exc.reason}; check the "
            "network or pass --url"
        ) from None
    except urllib.error.URLError as exc:
        raise DataError(
            f"could not download {url}: {exc.reason}; check the network or pass --url"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(
            f"could not download {url}: {exc}; check the network or pass --url"
        ) from None
    return digest.hexdigest()


def _unpack(zip_path: Path, into: Path, url: str) -> Path:
    """Extract the zip into `into` and return the folder holding ratings.csv and movies.csv."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():  # declared sizes bound what extractall writes
                check_member_size(url, info.filename, info.file_size, info.compress_size)
            zf.extractall(into)  # extractall strips absolute paths and '..' components
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"the zip downloaded from {url} cannot be unpacked ({exc}); download it again"
        ) from None
    candidates = [into] + [d for d in sorted(into.iterdir()) if d.is_dir()]
    for folder in candidates:
        if (folder / RATINGS_FILE).is_file() and (folder / MOVIES_FILE).is_file():
            return folder
    raise DataError(
        f"the zip downloaded from {url} holds no {RATINGS_FILE} and {MOVIES_FILE}; "
        "pass the URL of a MovieLens zip"
    )
