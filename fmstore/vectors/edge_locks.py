"""The embedded store's two locks (Qdrant Edge).

The writers' lock, `<store>/.lock`: one writer at a time (publish, rollback, prune, live
updates), held until the writer closes the store; it holds the holder's pid, so a second writer's
error names it. Readers never take it.

The shards lock is for a live collection written in place while other processes read it.

A publish never needs this: it writes new collection folders that nobody reads until the alias
switch. Live updates (`fmstore rate`, `fmstore movies add`) write into the collections being
served, and Edge is not made for that: opening a shard rewrites some of its files (it compacts a
payload journal), and an instance keeps what it read at open in memory. Measured without this:
four reader processes querying while `rate` updated the same users made the writer fail
("Tracker journal ... is shorter than expected"). So:

- `<store>/.shards.lock` is held shared by a reader while it opens or queries a shard, and
  exclusively by the writer while it writes one in place: a reader waits at most for one
  update's write and flush (milliseconds), never for a publish;
- the writer opens the shard afresh for each in-place write and closes it after the flush, then
  bumps the collection's generation (`<store>/.generations/<name>`, replaced atomically): a
  reader whose open instance is older reopens it before its next query.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from fmstore.errors import StoreBusyError
from fmstore.fileio import atomic_write_text

LOCK_NAME = ".shards.lock"
GENERATIONS = ".generations"


@contextlib.contextmanager
def shards_locked(store: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold `<store>/.shards.lock` shared (readers) or exclusively (an in-place writer). A store
    where the file cannot be made (a read-only home) has no in-place writer to wait for."""
    import portalocker

    path = Path(store) / LOCK_NAME
    try:
        handle = open(path, "a+" if exclusive or os.access(store, os.W_OK) else "r")
    except OSError:
        if exclusive:
            raise
        yield
        return
    with handle:
        portalocker.lock(handle, portalocker.LOCK_EX if exclusive else portalocker.LOCK_SH)
        try:
            yield
        finally:
            portalocker.unlock(handle)


def generation(store: Path, name: str) -> tuple[int, int] | None:
    """What a reader compares with the generation its open shard was loaded at (None: never
    written in place)."""
    try:
        stat = (Path(store) / GENERATIONS / name).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def bump_generation(store: Path, name: str) -> None:
    """Tell readers that `name` was written in place (a new inode each time: no two bumps look
    alike, however close in time)."""
    folder = Path(store) / GENERATIONS
    folder.mkdir(exist_ok=True)
    atomic_write_text(folder / name, f"{os.getpid()} {os.urandom(8).hex()}\n")


def take_writer_lock(store: Path, wait: float):
    """Lock `<store>/.lock` for this process, waiting up to `wait` seconds, and write our pid
    into it. Returns (lock, handle) for release_writer_lock; StoreBusyError naming the holder."""
    import portalocker

    store.mkdir(parents=True, exist_ok=True)
    lock = portalocker.Lock(
        store / ".lock",
        mode="a+",  # never truncated before the lock is ours: the holder's pid stays readable
        timeout=max(wait, 0.0),
        check_interval=0.05,
    )
    try:
        handle = lock.acquire()
    except portalocker.AlreadyLocked:
        pid = lock_holder(store / ".lock")
        who = f"process {pid}" if pid else "another process"
        waited = f" (waited {wait:g} s)" if wait > 0 else ""
        raise StoreBusyError(
            f"store in use by {who}{waited}: {store} has one writer at a time; "
            "wait for it to finish",
            pid,
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return lock, handle


def release_writer_lock(lock, handle) -> None:
    """Empty the lock file, then release it: the file names a holder only while one holds it, so
    a store that nobody uses is byte for byte what it was (a command refused on bad input leaves
    the home as it found it)."""
    try:
        handle.seek(0)
        handle.truncate()
        handle.flush()
    finally:
        lock.release()


def lock_holder(path: Path) -> int | None:
    """The pid the holder of the writers' lock wrote into it; None when unknown."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
