"""EdgeStore: Qdrant Edge (`qdrant-edge-py`), the Qdrant engine in-process; the embedded default.

One EdgeShard per physical collection under `<path>/collections/<name>`; aliases live in
`<path>/aliases.json`, rewritten atomically and durably (fmstore.fileio). qdrant_edge is imported
only when a store is used.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from fmstore.errors import ConfigError, FmstoreError, StoreError
from fmstore.fileio import atomic_write_text
from fmstore.vectors.base import _NAME, FilterSpelling, VectorStore, _one_line
from fmstore.vectors.edge_disk import (
    LOAD_ROOM,
    cannot_write,
    check_room,
    disk_full,
    mib_text,
    private_copy,
)
from fmstore.vectors.edge_locks import (
    bump_generation,
    generation,
    release_writer_lock,
    shards_locked,
    take_writer_lock,
)

if TYPE_CHECKING:
    from fmstore.vectors.base import CollectionSpec, Placement, QueryFilter


class EdgeStore(VectorStore):
    """Qdrant Edge in-process: one EdgeShard per physical collection, aliases in a JSON file.

    Any number of readers, one writer (docs/reliability.md, "Many readers at once"): writers
    (create, upsert, delete, switch, flush, lock()) hold an exclusive portalocker lock on
    `<path>/.lock` (naming the holder's pid) until close(); readers never wait for it: publishes
    write new collection folders, then switch the alias file in one atomic rename (live updates,
    which write into served collections, use the shards lock instead: edge_locks). Edge rewrites a few
    files of a shard when opening it, so the writer opens each new shard once before the switch
    (`_settle`) and readers' rewrites write the bytes already there. Readers create nothing.

    Shards are created with the write-ahead log off: a published collection is written once and
    never updated, and an interrupted publish never gets the alias. That halves the disk use and
    makes opening faster. Without a WAL, data is durable once flushed: upserts are visible at once,
    and switch_aliases() and close() flush, so no alias ever points at data that is not on disk.
    (Flushing after every batch instead costs 0.1-0.25 s a flush here, most of a publish.)

    Search is exact: nothing here builds an HNSW index (EdgeShard.optimize() would), and at
    movie-catalog sizes a full scan takes about a millisecond.
    """

    backend = "edge"

    def __init__(self, path: Path | str, *, wait: float = 0.0):
        self.path = Path(path)
        self.wait = float(wait)  # seconds to wait for another process's lock; 0: refuse at once
        self._shards: dict[str, Any] = {}  # physical name -> open EdgeShard
        self._dirty: set[str] = set()  # physical names written since their last flush
        self._created: set[str] = set()  # physical names created here, not yet opened again
        self._loaded_at: dict[str, Any] = {}  # physical name -> its generation when opened here
        self._copies: list[Path] = []  # private copies of shards a reader could not open in place
        self._lock_file: Any = None  # the held portalocker.Lock
        self._lock_handle: Any = None  # its open file, which holds our pid

    # -- the interface ---------------------------------------------------------------------------

    def check_placement(self, placement: Placement) -> None:
        if not placement.is_default():
            raise ConfigError(
                "shards, replicas and write consistency need a Qdrant server "
                "(set FMSTORE_QDRANT_URL); the embedded store is a single shard"
            )

    def _create_collection(self, name: str, spec: CollectionSpec, placement: Placement) -> None:
        self.check_placement(placement)
        self._check_name(name)
        self._lock()
        if name in self._read_aliases():
            raise ConfigError(
                f"'{name}' is an alias in {self.path}; a collection cannot take its name"
            )
        from qdrant_edge import (
            Distance,
            EdgeConfig,
            EdgeShard,
            EdgeVectorParams,
            PayloadSchemaType,
            UpdateOperation,
        )

        distance = {"cosine": Distance.Cosine, "dot": Distance.Dot}
        config = EdgeConfig(
            vectors={
                v.name: EdgeVectorParams(size=v.size, distance=distance[v.distance])
                for v in spec.vectors
            },
            wal_enabled=False,
        )
        self.delete_collection(name)  # a re-publish rewrites it completely; its aliases go too
        self._collections_dir.mkdir(parents=True, exist_ok=True)
        with self._edge_errors(name):
            shard = EdgeShard.create(str(self._collections_dir / name), config)
            self._shards[name] = shard
            self._created.add(name)
            # Indexes before the points: Edge fills them as points arrive.
            for field in spec.keyword_indexes:
                shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
            for field in spec.integer_indexes:
                shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Integer))
        self._dirty.add(name)

    def upsert(
        self, name: str, ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]
    ) -> None:
        from qdrant_edge import Point, UpdateOperation

        id_list, arrays = self._check_batch(ids, vectors, payloads)
        self._lock()
        # One tolist() per array is far cheaper than per-row conversion; building the Points
        # (their payload dicts, really) is most of the cost of an upsert.
        rows = {vname: array.tolist() for vname, array in arrays.items()}
        points = [
            Point(pid, {vname: rows[vname][i] for vname in rows}, payloads[i])
            for i, pid in enumerate(id_list)
        ]
        physical = self._physical(name)
        if physical not in self._created:  # a served collection: live updates (edge_locks)
            return self._write_in_place(physical, UpdateOperation.upsert_points(points))
        with self._edge_errors(name):
            self._shard(name).update(UpdateOperation.upsert_points(points))
        self._dirty.add(physical)

    def check_space(self, collections: list[tuple[CollectionSpec, int, int]]) -> None:
        """Refuse a publication the disk cannot hold, before a byte of it is written: Edge
        writes through memory maps into preallocated (sparse) files, and a full disk there is a
        SIGBUS that kills the process mid-write, not an error we could report."""
        check_room(self.path, collections)

    def count(self, name: str) -> int:
        from qdrant_edge import CountRequest

        with shards_locked(self.path, exclusive=False), self._edge_errors(name):
            return int(self._shard(name).count(CountRequest(exact=True)))

    def collection_exists(self, name: str) -> bool:
        shard_config = self._collections_dir / name / "edge_config.json"
        return bool(_NAME.match(name)) and shard_config.is_file()

    def list_collections(self) -> list[str]:
        if not self._collections_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self._collections_dir.iterdir()
            if not p.name.startswith(".") and (p / "edge_config.json").is_file()
        )

    def delete_collection(self, name: str) -> None:
        """Drop a collection (no-op when absent) and, like a server, the aliases pointing at it."""
        self._check_name(name)
        self._lock()
        self._drop(name)
        aliases = self._read_aliases()
        kept = {alias: target for alias, target in aliases.items() if target != name}
        if kept != aliases:
            self._write_aliases(kept)

    def resolve_alias(self, alias: str) -> str | None:
        return self._read_aliases().get(alias)

    def switch_aliases(self, mapping: dict[str, str]) -> None:
        """Every collection flushed first, then one atomic, durable rewrite of the alias file
        with all the aliases: a reader sees the old file or the new one, never a mix."""
        self._lock()
        self._check_switch(mapping)
        for collection in mapping.values():
            self.flush(collection)  # an alias must never point at data that is not on disk yet
            self._settle(self._physical(collection))
        aliases = self._read_aliases()
        aliases.update(mapping)
        self._write_aliases(aliases)

    def flush(self, name: str) -> None:
        self._lock()
        self._flush(self._physical(name))

    def lock(self) -> None:
        self._lock()

    def release(self) -> None:
        """Close the shards reading opened, unless this store writes (holds the lock): a
        writer's store stays as its owner left it. Shards reopen on the next read."""
        if self._lock_file is None:
            self.close()

    def close(self) -> None:
        try:
            for name in list(self._dirty):
                self._flush(name)
        finally:
            shards, self._shards, self._dirty = self._shards, {}, set()
            self._created = set()
        try:
            for name, shard in shards.items():
                with self._edge_errors(name):
                    shard.close()
        finally:
            copies, self._copies = self._copies, []
            for copy in copies:
                shutil.rmtree(copy.parent, ignore_errors=True)
            if self._lock_file is not None:
                self._unlock()

    @property
    def where(self) -> str:
        """The store's folder, for messages."""
        return str(self.path)

    # -- hooks for VectorStore.search / retrieve -------------------------------------------------

    def _query(
        self, name: str, vector: list[float], using: str, limit: int, filter: QueryFilter | None
    ) -> Iterable[Any]:
        from qdrant_edge import Query, QueryRequest

        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(vector, using=using),
            filter=self._filter(filter),
            with_payload=True,
        )
        with shards_locked(self.path, exclusive=False), self._edge_errors(name):
            return self._shard(name).query(request)

    def _fetch(self, name: str, ids: list[int], with_vectors: list[str] | bool) -> Iterable[Any]:
        with shards_locked(self.path, exclusive=False), self._edge_errors(name):
            return self._shard(name).retrieve(ids, True, with_vectors)

    def _filter_spelling(self) -> FilterSpelling:
        from qdrant_edge import FieldCondition, Filter, HasIdCondition, MatchAny, RangeFloat

        return FilterSpelling(
            any_of=lambda field, values: FieldCondition(field, match=MatchAny(values)),
            between=lambda field, low, high: FieldCondition(
                field, range=RangeFloat(gte=low, lte=high)
            ),
            not_ids=lambda ids: HasIdCondition(set(ids)),
            combine=lambda must, must_not: Filter(must=must, must_not=must_not),
        )

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def _collections_dir(self) -> Path:
        return self.path / "collections"

    @property
    def _aliases_file(self) -> Path:
        return self.path / "aliases.json"

    def _lock(self) -> None:
        """The writers' lock (edge_locks), held until close(); a writer then sweeps."""
        if self._lock_file is None:
            self._lock_file, self._lock_handle = take_writer_lock(self.path, self.wait)
            self._sweep_trash()

    def _sweep_trash(self) -> None:
        """Remove what a delete killed mid-way left (`.trash-*`, see _drop): only a writer
        deletes, and we are the only writer now."""
        if self._collections_dir.is_dir():
            for trash in self._collections_dir.glob(".trash-*"):
                shutil.rmtree(trash, ignore_errors=True)

    def _unlock(self) -> None:
        lock, handle = self._lock_file, self._lock_handle
        self._lock_file = self._lock_handle = None
        release_writer_lock(lock, handle)

    @contextlib.contextmanager
    def _edge_errors(self, name: str) -> Iterator[None]:
        # qdrant_edge raises a bare Exception("Service runtime error: ..."): turn it into one line.
        try:
            yield
        except FmstoreError:
            raise
        except Exception as error:
            if disk_full(error):
                raise StoreError(
                    f"disk full: Qdrant Edge could not write '{name}' in {self.path} "
                    f"({_one_line(error)}); free some space and try again"
                ) from error
            raise StoreError(
                f"Qdrant Edge failed on '{name}' in {self.path}: {_one_line(error)}"
            ) from error

    def _read_aliases(self) -> dict[str, str]:
        try:
            aliases = json.loads(self._aliases_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read {self._aliases_file}: {_one_line(error)}") from error
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()
        ):
            raise StoreError(
                f"{self._aliases_file} is corrupt: expected an object of alias -> collection "
                f"names, found {type(aliases).__name__}; restore it or publish again"
            )
        return aliases

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        # Readers see the old file or the new one, never a mix; durable, because an alias that
        # is lost in a power cut would silently roll a publish back.
        text = json.dumps(aliases, indent=2, sort_keys=True)
        atomic_write_text(self._aliases_file, text, durable=True)

    def _physical(self, name: str) -> str:
        """Alias -> collection; a collection name stays itself."""
        return self._read_aliases().get(name, name)

    def _shard(self, name: str) -> Any:
        """Open (and cache) the shard of a collection or alias; NotFoundError when there is none.
        Readers call it under the shards lock (edge_locks), never the writers' lock."""
        physical = self._check_name(self._physical(name))
        shard = self._shards.get(physical)
        now = generation(self.path, physical)
        if (
            shard is not None
            and physical not in self._created
            and self._loaded_at.get(physical, now) != now
        ):
            self._forget(physical)  # written in place since we opened it: reopen (edge_locks)
            shard = None
        if shard is None:
            folder = self._collections_dir / physical
            if not (folder / "edge_config.json").is_file():
                raise self._not_published(name)
            with self._edge_errors(physical):
                shard = self._load(folder)
            self._shards[physical], self._loaded_at[physical] = shard, now
        return shard

    def _write_in_place(self, name: str, operation: Any) -> None:
        """Apply `operation` to a collection readers may have open, as edge_locks says: under
        the shards lock, on a fresh instance, flushed and closed, then the generation bumped."""
        with shards_locked(self.path, exclusive=True):
            self._forget(name)  # what we hold may predate readers' rewrites of its files
            with self._edge_errors(name):
                shard = self._load(self._collections_dir / name)
                try:
                    shard.update(operation)
                    shard.flush()
                finally:
                    shard.close()
            bump_generation(self.path, name)

    def _forget(self, name: str) -> None:
        """Close our instance of a shard, if open (after its writes were flushed)."""
        shard = self._shards.pop(name, None)
        if shard is not None:
            with self._edge_errors(name):
                shard.close()

    def _load(self, folder: Path) -> Any:
        """EdgeShard.load, which writes into the shard; where that cannot be done (a full disk, a
        read-only home), a reader opens a private copy (edge_disk), removed on close()."""
        from qdrant_edge import EdgeShard

        if self._writable(folder):
            try:
                return EdgeShard.load(str(folder))
            except Exception as error:
                if self._lock_file is not None or not cannot_write(error):
                    raise  # a writer must write; other errors are not ours to work around
        elif self._lock_file is not None:
            raise StoreError(
                f"disk full or read-only: {self.path} has under {mib_text(LOAD_ROOM)} free or "
                "cannot be written, and Qdrant Edge writes into a collection when it opens it; "
                "free some space (queries go on answering meanwhile)"
            )
        copy = private_copy(folder)
        self._copies.append(copy)
        return EdgeShard.load(str(copy))

    @staticmethod
    def _writable(folder: Path) -> bool:
        """Whether a shard can be opened in place: Edge's mmapped writes into sparse files are a
        SIGBUS on a full disk, not an error, so the room is checked first."""
        try:
            return os.access(folder, os.W_OK) and shutil.disk_usage(folder).free >= LOAD_ROOM
        except OSError:
            return False

    def _settle(self, name: str) -> None:
        """Close a shard created here and open it again before an alias names it: Edge completes
        its files on the first open, which should be the writer's, not racing readers'."""
        if name not in self._created:
            return
        from qdrant_edge import EdgeShard

        self._created.discard(name)
        shard = self._shards.pop(name)
        with self._edge_errors(name):
            shard.close()
            self._shards[name] = EdgeShard.load(str(self._collections_dir / name))

    def _flush(self, name: str) -> None:
        if name in self._dirty:
            with self._edge_errors(name):
                self._shards[name].flush()
            self._dirty.discard(name)

    def _drop(self, name: str) -> None:
        self._dirty.discard(name)
        self._created.discard(name)
        self._forget(name)
        folder = self._collections_dir / name
        if folder.exists():
            # Rename first (atomic), then delete: a crash mid-delete leaves no half collection
            # under a real name. Dot-names are never listed as collections.
            trash = self._collections_dir / f".trash-{name}-{uuid.uuid4().hex}"
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
