"""Where a dataset's CSV files come from: a folder or a GroupLens .zip, read as raw bytes (the
fingerprint is over the raw bytes). Opening a source already checks that the required files exist.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

from fmstore.datasets.types import LINKS_FILE, MOVIES_FILE, RATINGS_FILE
from fmstore.errors import DataError


class Source:
    """Where the CSV files of one dataset come from."""

    name: str
    path: Path

    def label(self, file: str) -> str:
        """How error messages name `file` (ratings.csv, ...)."""
        raise NotImplementedError

    def has(self, file: str) -> bool:
        raise NotImplementedError

    def read(self, file: str) -> bytes:
        raise NotImplementedError

    def stat_key(self) -> list:
        """Cheap identity of the source files: (path, size, mtime_ns) of each."""
        raise NotImplementedError


class FolderSource(Source):
    def __init__(self, path: Path, shown: str):
        self.path = path
        self.shown = shown
        self.name = path.name
        for required in (RATINGS_FILE, MOVIES_FILE):
            if not (path / required).is_file():
                raise DataError(_missing_file_message(path, shown, required))

    def label(self, file: str) -> str:
        return str(Path(self.shown) / file)

    def has(self, file: str) -> bool:
        return (self.path / file).is_file()

    def read(self, file: str) -> bytes:
        try:
            return (self.path / file).read_bytes()
        except OSError as exc:
            raise DataError(
                f"{self.label(file)}: cannot be read ({exc.strerror}); check its permissions"
            ) from None

    def stat_key(self) -> list:
        key = []
        for file in (RATINGS_FILE, MOVIES_FILE, LINKS_FILE):
            p = self.path / file
            st = p.stat() if p.is_file() else None
            key.append([str(p), st.st_size if st else None, st.st_mtime_ns if st else None])
        return key


def _missing_file_message(folder: Path, shown: str, required: str) -> str:
    hint = ""
    # A common slip: passing the parent of the dataset folder (e.g. where the zip was unpacked).
    subs = [d for d in sorted(folder.iterdir()) if d.is_dir() and (d / required).is_file()]
    if len(subs) == 1:
        hint = f" (did you mean {Path(shown) / subs[0].name}?)"
    return (
        f"{shown} has no {required}{hint}; pass a MovieLens folder holding "
        f"{RATINGS_FILE} and {MOVIES_FILE}, or its .zip"
    )


class ZipSource(Source):
    def __init__(self, path: Path, shown: str):
        self.path = path
        self.shown = shown
        self.name = path.stem
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise DataError(self._corrupt_message(exc)) from None
        self.members = self._find_members(names)

    def _corrupt_message(self, exc: BaseException) -> str:
        return (
            f"{self.shown} is not a readable zip archive (truncated or corrupt: {exc}); "
            "download it again"
        )

    def _find_members(self, names: list[str]) -> dict[str, str]:
        # GroupLens zips hold their files in one top folder (ml-latest-small/ratings.csv); accept
        # the files at the root too. Anything deeper is not ours (e.g. __MACOSX copies).
        folders = sorted(
            {
                n.rsplit("/", 1)[0] if "/" in n else ""
                for n in names
                if n.rsplit("/", 1)[-1] == RATINGS_FILE and n.count("/") <= 1
            }
        )
        if not folders:
            raise DataError(
                f"{self.shown} holds no {RATINGS_FILE} (at its root or in one top "
                "folder); pass a GroupLens MovieLens zip"
            )
        if len(folders) > 1:
            raise DataError(
                f"{self.shown} holds several {RATINGS_FILE} files (in "
                f"{', '.join(f or '/' for f in folders)}); pass a zip with one dataset"
            )
        prefix = folders[0] + "/" if folders[0] else ""
        members = {
            f: prefix + f for f in (RATINGS_FILE, MOVIES_FILE, LINKS_FILE) if prefix + f in names
        }
        if MOVIES_FILE not in members:
            raise DataError(
                f"{self.shown} has {prefix}{RATINGS_FILE} but no {prefix}{MOVIES_FILE};"
                " pass a complete MovieLens zip"
            )
        return members

    def label(self, file: str) -> str:
        return f"{self.shown} member {self.members.get(file, file)}"

    def has(self, file: str) -> bool:
        return file in self.members

    def read(self, file: str) -> bytes:
        try:
            with zipfile.ZipFile(self.path) as zf:
                return zf.read(self.members[file])
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise DataError(self._corrupt_message(exc)) from None

    def stat_key(self) -> list:
        st = self.path.stat()
        return [[str(self.path), st.st_size, st.st_mtime_ns]]


def open_source(path: str | Path) -> Source:
    """A folder or a zip by what `path` is; errors name it as the user wrote it."""
    shown = str(path)
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"no such file or folder: {shown}; pass a MovieLens folder (with "
            f"{RATINGS_FILE} and {MOVIES_FILE}) or its .zip"
        )
    p = Path(os.path.abspath(p))
    if p.is_dir():
        return FolderSource(p, shown)
    if p.suffix.lower() == ".csv":
        raise DataError(
            f"{shown} is a single CSV file; pass the folder that holds "
            f"{RATINGS_FILE} and {MOVIES_FILE} (or its .zip)"
        )
    return ZipSource(p, shown)
