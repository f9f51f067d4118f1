"""Where a dataset's CSV files come from: a folder or a GroupLens .zip, read as raw bytes (the
fingerprint is over the raw bytes). Opening a source already checks that the required files exist.
"""

from __future__ import annotations

import hashlib
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
        """Cheap identity of the source files: (path, size, mtime_ns, sampled content hash) of
        each; see content_sample."""
        raise NotImplementedError


# The cache key samples each file's content: its first and last MiB and 62 evenly spaced 64 KiB
# blocks between them (at most 6 MiB read per file), hashed with its size. An edit that keeps
# size and mtime (a restored backup, a same-length fix) still changes the key unless it falls
# wholly outside every sampled block.
SAMPLE_EDGE = 1 << 20
SAMPLE_BLOCK = 1 << 16
SAMPLE_MIDDLE_BLOCKS = 62


def content_sample(path: Path) -> str:
    """sha256 over a file's size and its sampled blocks (the whole file when it is small)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(str(size).encode())
        if size <= 2 * SAMPLE_EDGE + SAMPLE_MIDDLE_BLOCKS * SAMPLE_BLOCK:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            return digest.hexdigest()
        step = (size - 2 * SAMPLE_EDGE) // (SAMPLE_MIDDLE_BLOCKS + 1)
        spans = [(0, SAMPLE_EDGE), (size - SAMPLE_EDGE, SAMPLE_EDGE)]
        spans += [
            (SAMPLE_EDGE + i * step, SAMPLE_BLOCK) for i in range(1, SAMPLE_MIDDLE_BLOCKS + 1)
        ]
        for offset, length in sorted(spans):
            f.seek(offset)
            digest.update(f.read(length))
    return digest.hexdigest()


def _file_key(path: Path) -> list:
    if not path.is_file():
        return [str(path), None, None, None]
    st = path.stat()
    return [str(path), st.st_size, st.st_mtime_ns, content_sample(path)]


# Zip members are refused past these, before a byte is inflated (their declared sizes), and
# while inflating (a forged header): a 676 KB zip must not become gigabytes in memory. The
# largest GroupLens member (ml-32m ratings.csv) is 0.9 GB at a ratio of about 4.
MAX_MEMBER_BYTES = 4 << 30
MAX_RATIO = 100
RATIO_FREE_BYTES = 16 << 20  # small members may compress as well as they like


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
        return [_file_key(self.path / file) for file in (RATINGS_FILE, MOVIES_FILE, LINKS_FILE)]


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
        """The member's bytes, inflated in blocks and refused as soon as it passes the limits."""
        member = self.members[file]
        try:
            with zipfile.ZipFile(self.path) as zf:
                info = zf.getinfo(member)
                self._check_member_size(member, info.file_size, info.compress_size)
                chunks, total = [], 0
                with zf.open(info) as f:
                    while block := f.read(1 << 20):
                        total += len(block)
                        self._check_member_size(member, total, info.compress_size)
                        chunks.append(block)
                return b"".join(chunks)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise DataError(self._corrupt_message(exc)) from None

    def _check_member_size(self, member: str, size: int, compressed: int) -> None:
        check_member_size(self.shown, member, size, compressed)

    def stat_key(self) -> list:
        return [_file_key(self.path)]


def check_member_size(shown: str, member: str, size: int, compressed: int) -> None:
    """Refuse a zip member that inflates past MAX_MEMBER_BYTES or MAX_RATIO (a zip bomb)."""
    if size > MAX_MEMBER_BYTES:
        raise DataError(
            f"{shown} member {member} inflates to more than {MAX_MEMBER_BYTES / 2**30:g} GiB; "
            "refused (unpack it yourself and pass the folder)"
        )
    if size > RATIO_FREE_BYTES and size > MAX_RATIO * max(compressed, 1):
        raise DataError(
            f"{shown} member {member} inflates more than {MAX_RATIO}x ({compressed:,} bytes "
            f"to {size:,}+); refused as a likely zip bomb"
        )


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
    if not p.is_file():  # a device or a pipe (/dev/zero) would be read without end
        raise DataError(
            f"{shown} is neither a folder nor a regular file; pass a MovieLens folder or its .zip"
        )
    if p.suffix.lower() == ".csv":
        raise DataError(
            f"{shown} is a single CSV file; pass the folder that holds "
            f"{RATINGS_FILE} and {MOVIES_FILE} (or its .zip)"
        )
    return ZipSource(p, shown)
