"""Qdrant Edge and the disk: what a new shard can come to take (the space publish checks
first), which Edge errors mean a full disk or a store that cannot be written, and the private
copy of a shard that a reader opens when the store cannot be written (docs/reliability.md, "A
full disk")."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from fmstore.errors import StoreError

if TYPE_CHECKING:
    from fmstore.vectors.base import CollectionSpec

# What a shard takes on disk, measured with qdrant-edge-py 0.9.0 (docs/reliability.md, "A full
# disk"): its files take about 36 MB of preallocated, sparse space before any point, each payload
# index about 8.5 MB more, and each named vector's storage grows in chunks of 32 MiB. Counted in
# full: Edge may write into any of those holes later.
MiB = 1024 * 1024
_SHARD_FILES = 40 * MiB
_PAYLOAD_INDEX = 9 * MiB
_VECTOR_CHUNK = 32 * MiB
_PER_POINT = 256  # id tracker, version and flags of one point, with room to spare
# Free space below which a shard is not opened in place (Edge's open writes its config, segment
# JSON and status words, a few MiB at most): a reader opens a private copy instead.
LOAD_ROOM = 64 * MiB


def edge_bytes(spec: CollectionSpec, points: int, payload_bytes: int) -> int:
    """Disk space a new shard of `points` points can come to take, holes filled."""
    indexes = len(spec.keyword_indexes) + len(spec.integer_indexes)
    vectors = sum(-(-max(points, 1) * v.size * 4 // _VECTOR_CHUNK) for v in spec.vectors)
    return (
        _SHARD_FILES
        + indexes * _PAYLOAD_INDEX
        + vectors * _VECTOR_CHUNK
        + points * _PER_POINT
        + 2 * payload_bytes  # the payload storage and the indexes' copies of its values
    )


def mib_text(n: int) -> str:
    return f"{n / MiB:,.1f} MiB"


def disk_full(error: BaseException) -> bool:
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "os error 28" in text


def cannot_write(error: BaseException) -> bool:
    """Edge failed because it could not write: a full disk, a read-only file system, no
    permission."""
    text = str(error)
    denied = ("Read-only file system", "os error 30", "Permission denied", "os error 13")
    return disk_full(error) or any(words in text for words in denied)


def private_copy(folder: Path) -> Path:
    """A copy of a shard's folder outside the store, holes kept as holes (Edge's files are
    mostly preallocated zeros): in /dev/shm where it can be written, else the temporary folder."""
    import tempfile

    shm = Path("/dev/shm")
    base = tempfile.mkdtemp(prefix="fmstore-shard-", dir=shm if os.access(shm, os.W_OK) else None)
    copy = Path(base) / folder.name
    for source in sorted(folder.rglob("*")):
        target = copy / source.relative_to(folder)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(source, "rb") as src, open(target, "wb") as dst:
            for block in iter(lambda: src.read(1 << 20), b""):
                if block.count(0) == len(block):
                    dst.seek(len(block), os.SEEK_CUR)  # a hole stays a hole
                else:
                    dst.write(block)
            dst.truncate()
    return copy


def check_room(path: Path, collections: list[tuple[CollectionSpec, int, int]]) -> None:
    """StoreError when the file system of `path` cannot hold new shards of (spec, points,
    payload bytes), before a byte of them is written."""
    needed = sum(edge_bytes(spec, points, payload) for spec, points, payload in collections)
    probe = path if path.exists() else path.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise StoreError(
            f"not enough disk space for the new publication in {path}: "
            f"{mib_text(free)} free, {mib_text(needed)} needed (its collections' points and Qdrant "
            "Edge's preallocated files); free some space, e.g. `fmstore prune --keep 2`, "
            "and publish again (what is live keeps serving)"
        )
