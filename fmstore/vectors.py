"""Vector store: the published Qdrant collections, behind one small interface, two engines.

- `EdgeStore`: Qdrant Edge (`qdrant-edge-py`), the Qdrant engine in-process. The embedded default.
  One EdgeShard per physical collection under `<path>/collections/<name>`; aliases live in
  `<path>/aliases.json`, rewritten atomically (temp file + fsync + os.replace).
- `ServerStore`: `qdrant-client` against a Qdrant server (or `QdrantClient(":memory:")` in tests),
  with real server-side aliases and payload indexes.

The caller (publish, recommend) never knows which one it has. See DESIGN.md, "The published
contract": points are MovieLens ids; vector `item` (Cosine, k) = q_i; vector `score` (Dot, k+1) =
[q_i, b_i]. `score` must be Dot: Cosine normalises stored vectors and would destroy the bias.

Importing this module is cheap on purpose (the CLI query path aims at < 1 s wall time): the
engines import qdrant_edge / qdrant_client only when they are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from fmstore.config import Settings
from fmstore.errors import ConfigError, FmstoreError, NotFoundError, StoreError

if TYPE_CHECKING:  # only for annotations: importing qdrant_client costs most of a second
    from qdrant_client import QdrantClient

DISTANCES = ("cosine", "dot")
# Collection and alias names become folder names on Edge; keep them to a portable alphabet.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")


# ---------------------------------------------------------------------------------------------
# Schema and query types (engine independent)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorSpec:
    name: str
    size: int
    distance: str  # "cosine" | "dot"

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ConfigError(f"vector '{self.name}': distance must be one of {DISTANCES}, not {self.distance!r}")
        if self.size < 1:
            raise ConfigError(f"vector '{self.name}': size must be >= 1, not {self.size}")


@dataclass(frozen=True)
class CollectionSpec:
    vectors: tuple[VectorSpec, ...]
    keyword_indexes: tuple[str, ...] = ()
    integer_indexes: tuple[str, ...] = ()


def movies_spec(k: int) -> CollectionSpec:
    """`movies`: item = q_i (Cosine, for similar movies), score = [q_i, b_i] (Dot, for ranking)."""
    return CollectionSpec(
        vectors=(VectorSpec("item", k, "cosine"), VectorSpec("score", k + 1, "dot")),
        keyword_indexes=("genres",),
        integer_indexes=("year", "n_ratings"),
    )


def users_spec(k: int) -> CollectionSpec:
    """`users`: score = [p_u, 1] (Dot), so `lookup_from` a user ranks movies by b_i + <p_u, q_i>."""
    return CollectionSpec(vectors=(VectorSpec("score", k + 1, "dot"),))


@dataclass(frozen=True)
class QueryFilter:
    genres: tuple[str, ...] = ()  # any of
    year_min: int | None = None
    year_max: int | None = None
    min_ratings: int | None = None  # payload n_ratings >= this
    exclude_ids: tuple[int, ...] = ()  # must_not has_id

    def is_empty(self) -> bool:
        return self == QueryFilter()


@dataclass(frozen=True)
class Hit:
    id: int
    score: float
    payload: dict


@runtime_checkable
class VectorStore(Protocol):
    """What publish and the query layer use. Both engines implement exactly this."""

    backend: str  # "edge" | "server"

    def create_collection(
        self,
        name: str,
        spec: CollectionSpec,
        *,
        shards: int | None = None,
        replicas: int | None = None,
        write_consistency: int | None = None,
    ) -> None:
        """Create a physical collection. One of that name is dropped first (a re-publish rewrites
        it completely), and with it, as on a server, the aliases that pointed at it."""

    def upsert(self, name: str, ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]) -> None:
        """One batch, applied and durable when this returns."""

    def count(self, name: str) -> int: ...
    def collection_exists(self, name: str) -> bool:
        """Physical collections only: False for an alias."""

    def list_collections(self) -> list[str]:
        """Physical collections, sorted."""

    def delete_collection(self, name: str) -> None:
        """Drop a collection and the aliases pointing at it; no-op when absent."""


    def resolve_alias(self, alias: str) -> str | None: ...
    def switch_alias(self, alias: str, collection: str) -> None: ...

    def search(
        self,
        collection_or_alias: str,
        vector: np.ndarray,
        *,
        using: str,
        limit: int,
        filter: QueryFilter | None = None,
    ) -> list[Hit]: ...

    def retrieve(
        self, collection_or_alias: str, ids: Sequence[int], *, vectors: Sequence[str] = ()
    ) -> dict[int, tuple[dict[str, np.ndarray], dict]]: ...

    def close(self) -> None: ...


def open_store(settings: Settings) -> VectorStore:
    """A Qdrant server when FMSTORE_QDRANT_URL is set, else the embedded Edge store in home."""
    if settings.qdrant_url:
        from qdrant_client import QdrantClient

        # No compatibility check at construction: it costs a round trip on every CLI call and,
        # with the server down, prints a warning before our one-line StoreError.
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, check_compatibility=False)
        return ServerStore(client)
    return EdgeStore(settings.qdrant_path)


# ---------------------------------------------------------------------------------------------
# Helpers shared by both engines
# ---------------------------------------------------------------------------------------------


def _check_name(name: str, what: str = "collection") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"invalid {what} name {name!r}: use letters, digits, '_', '-', '.'")
    return name


def _not_published(name: str, where: str) -> NotFoundError:
    return NotFoundError(f"no published collection '{name}' in {where}: run `fmstore publish` first")


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


def _check_batch(
    ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]
) -> tuple[list[int], dict[str, np.ndarray]]:
    """Validate one upsert batch; returns ids as Python ints and vectors as float32 [n, dim]."""
    id_list = [int(i) for i in np.asarray(ids).reshape(-1)]
    n = len(id_list)
    if len(payloads) != n:
        raise ValueError(f"upsert: {n} ids but {len(payloads)} payloads")
    out = {}
    for vname, array in vectors.items():
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != n:
            raise ValueError(f"upsert: vector '{vname}' has shape {array.shape}, expected ({n}, dim)")
        out[vname] = array
    return id_list, out


def _as_query_vector(vector: np.ndarray) -> list[float]:
    # float32 -> Python float is exact, so the engine sees exactly the float32 values.
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()


# ---------------------------------------------------------------------------------------------
# Qdrant Edge (embedded)
# ---------------------------------------------------------------------------------------------


class EdgeStore:
    """Qdrant Edge in-process: one EdgeShard per physical collection, aliases in a JSON file.

    One process at a time: the store folder is locked (flock on `<path>/.lock`) from the first
    operation until close(). Edge rewrites some of its files even when only loading a shard, so
    concurrent readers are not safe either.

    Shards are created with the write-ahead log off: a published collection is written once and
    never updated, and an interrupted publish never gets the alias. That halves the disk use and
    makes opening faster. Without a WAL, data is durable once flushed: upserts are visible at once,
    and switch_alias() and close() flush, so no alias ever points at data that is not on disk.
    (Flushing after every batch instead costs 0.1-0.25 s a flush here, most of a publish.)

    Search is exact: nothing here builds an HNSW index (EdgeShard.optimize() would), and at
    movie-catalog sizes a full scan takes about a millisecond.
    """

    backend = "edge"

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._shards: dict[str, Any] = {}  # physical name -> open EdgeShard
        self._dirty: set[str] = set()  # physical names written since their last flush
        self._lock_fd: int | None = None

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def _collections_dir(self) -> Path:
        return self.path / "collections"

    @property
    def _aliases_file(self) -> Path:
        return self.path / "aliases.json"

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreError(
                f"another fmstore process holds the store {self.path}: "
                "wait for it to finish (the embedded store opens in one process at a time)"
            ) from None
        self._lock_fd = fd

    @contextlib.contextmanager
    def _edge_errors(self, name: str) -> Iterator[None]:
        # qdrant_edge raises a bare Exception("Service runtime error: ..."): turn it into one line.
        try:
            yield
        except FmstoreError:
            raise
        except Exception as error:
            raise StoreError(f"Qdrant Edge failed on '{name}' in {self.path}: {_one_line(error)}") from error

    def _read_aliases(self) -> dict[str, str]:
        try:
            return json.loads(self._aliases_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise StoreError(f"cannot read {self._aliases_file}: {_one_line(error)}") from error

    def _write_aliases(self, aliases: dict[str, str]) -> None:
        # Readers see the old file or the new one, never a mix: write aside, fsync, rename, fsync dir.
        tmp = self.path / f".aliases.{uuid.uuid4().hex}.tmp"
        with open(tmp, "w") as f:
            json.dump(aliases, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._aliases_file)
        dir_fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _physical(self, name: str) -> str:
        """Alias -> collection; a collection name stays itself."""
        return self._read_aliases().get(name, name)

    def _shard(self, name: str) -> Any:
        """Open (and cache) the shard of a collection or alias; NotFoundError when there is none."""
        self._lock()
        physical = _check_name(self._physical(name))
        shard = self._shards.get(physical)
        if shard is None:
            folder = self._collections_dir / physical
            if not (folder / "edge_config.json").is_file():
                raise _not_published(name, str(self.path))
            from qdrant_edge import EdgeShard

            with self._edge_errors(physical):
                shard = EdgeShard.load(str(folder))
            self._shards[physical] = shard
        return shard

    def _flush(self, name: str) -> None:
        if name in self._dirty:
            with self._edge_errors(name):
                self._shards[name].flush()
            self._dirty.discard(name)

    def _drop(self, name: str) -> None:
        self._dirty.discard(name)
        shard = self._shards.pop(name, None)
        if shard is not None:
            with self._edge_errors(name):
                shard.close()
        folder = self._collections_dir / name
        if folder.exists():
            # Rename first (atomic), then delete: a crash mid-delete leaves no half collection
            # under a real name. Dot-names are never listed as collections.
            trash = self._collections_dir / f".trash-{name}-{uuid.uuid4().hex}"
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)

    # -- the interface --------------------------------------------------------------------------

    def create_collection(
        self,
        name: str,
        spec: CollectionSpec,
        *,
        shards: int | None = None,
        replicas: int | None = None,
        write_consistency: int | None = None,
    ) -> None:
        if (shards, replicas, write_consistency) != (None, None, None):
            raise ConfigError(
                "shards, replicas and write consistency need a Qdrant server (set FMSTORE_QDRANT_URL); "
                "the embedded store is a single shard"
            )
        _check_name(name)
        self._lock()
        if name in self._read_aliases():
            raise ConfigError(f"'{name}' is an alias in {self.path}; a collection cannot take its name")
        from qdrant_edge import Distance, EdgeConfig, EdgeShard, EdgeVectorParams, PayloadSchemaType, UpdateOperation

        distance = {"cosine": Distance.Cosine, "dot": Distance.Dot}
        config = EdgeConfig(
            vectors={v.name: EdgeVectorParams(size=v.size, distance=distance[v.distance]) for v in spec.vectors},
            wal_enabled=False,
        )
        self.delete_collection(name)  # a re-publish rewrites it completely; its aliases go too
        self._collections_dir.mkdir(parents=True, exist_ok=True)
        with self._edge_errors(name):
            shard = EdgeShard.create(str(self._collections_dir / name), config)
            self._shards[name] = shard
            # Indexes before the points: Edge fills them as points arrive.
            for field in spec.keyword_indexes:
                shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Keyword))
            for field in spec.integer_indexes:
                shard.update(UpdateOperation.create_field_index(field, PayloadSchemaType.Integer))
        self._dirty.add(name)

    def upsert(self, name: str, ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]) -> None:
        from qdrant_edge import Point, UpdateOperation

        id_list, arrays = _check_batch(ids, vectors, payloads)
        shard = self._shard(name)
        # One tolist() per array is far cheaper than per-row conversion; building the Points
        # (their payload dicts, really) is most of the cost of an upsert.
        rows = {vname: array.tolist() for vname, array in arrays.items()}
        points = [
            Point(pid, {vname: rows[vname][i] for vname in rows}, payloads[i]) for i, pid in enumerate(id_list)
        ]
        with self._edge_errors(name):
            shard.update(UpdateOperation.upsert_points(points))
        self._dirty.add(self._physical(name))

    def count(self, name: str) -> int:
        from qdrant_edge import CountRequest

        shard = self._shard(name)
        with self._edge_errors(name):
            return int(shard.count(CountRequest(exact=True)))

    def collection_exists(self, name: str) -> bool:
        self._lock()
        return bool(_NAME.match(name)) and (self._collections_dir / name / "edge_config.json").is_file()

    def list_collections(self) -> list[str]:
        self._lock()
        if not self._collections_dir.is_dir():
            return []
        return sorted(
            p.name
            for p in self._collections_dir.iterdir()
            if not p.name.startswith(".") and (p / "edge_config.json").is_file()
        )

    def delete_collection(self, name: str) -> None:
        """Drop a collection (no-op when absent) and, like a server, the aliases pointing at it."""
        _check_name(name)
        self._lock()
        self._drop(name)
        aliases = self._read_aliases()
        kept = {alias: target for alias, target in aliases.items() if target != name}
        if kept != aliases:
            self._write_aliases(kept)

    def resolve_alias(self, alias: str) -> str | None:
        self._lock()
        return self._read_aliases().get(alias)

    def switch_alias(self, alias: str, collection: str) -> None:
        _check_name(alias, "alias")
        self._lock()
        if not self.collection_exists(collection):
            raise NotFoundError(f"cannot point alias '{alias}' at '{collection}': no such collection in {self.path}")
        if self.collection_exists(alias):
            raise ConfigError(f"'{alias}' is a collection in {self.path}; an alias cannot take its name")
        self._flush(collection)  # the alias must never point at data that is not on disk yet
        aliases = self._read_aliases()
        aliases[alias] = collection
        self._write_aliases(aliases)

    def search(
        self,
        collection_or_alias: str,
        vector: np.ndarray,
        *,
        using: str,
        limit: int,
        filter: QueryFilter | None = None,
    ) -> list[Hit]:
        from qdrant_edge import Query, QueryRequest

        shard = self._shard(collection_or_alias)
        request = QueryRequest(
            limit=limit,
            query=Query.Nearest(_as_query_vector(vector), using=using),
            filter=_edge_filter(filter),
            with_payload=True,
        )
        with self._edge_errors(collection_or_alias):
            points = shard.query(request)
        return [Hit(int(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def retrieve(
        self, collection_or_alias: str, ids: Sequence[int], *, vectors: Sequence[str] = ()
    ) -> dict[int, tuple[dict[str, np.ndarray], dict]]:
        shard = self._shard(collection_or_alias)
        with self._edge_errors(collection_or_alias):
            records = shard.retrieve([int(i) for i in ids], True, list(vectors) if vectors else False)
        out = {}
        for record in records:
            stored = record.vector or {}
            vecs = {v: np.asarray(stored[v], dtype=np.float32) for v in vectors if v in stored}
            out[int(record.id)] = (vecs, dict(record.payload or {}))
        return out

    def close(self) -> None:
        try:
            for name in list(self._dirty):
                self._flush(name)
        finally:
            shards, self._shards, self._dirty = self._shards, {}, set()
        try:
            for name, shard in shards.items():
                with self._edge_errors(name):
                    shard.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # closing the descriptor releases the flock
                self._lock_fd = None

    def __enter__(self) -> "EdgeStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EdgeStore({str(self.path)!r})"


def _edge_filter(f: QueryFilter | None) -> Any:
    if f is None or f.is_empty():
        return None
    from qdrant_edge import FieldCondition, Filter, HasIdCondition, MatchAny, RangeFloat

    must = []
    if f.genres:
        must.append(FieldCondition("genres", match=MatchAny(list(f.genres))))
    if f.year_min is not None or f.year_max is not None:
        must.append(FieldCondition("year", range=RangeFloat(gte=f.year_min, lte=f.year_max)))
    if f.min_ratings is not None:
        must.append(FieldCondition("n_ratings", range=RangeFloat(gte=f.min_ratings)))
    must_not = [HasIdCondition({int(i) for i in f.exclude_ids})] if f.exclude_ids else None
    return Filter(must=must or None, must_not=must_not)


# ---------------------------------------------------------------------------------------------
# Qdrant server (qdrant-client)
# ---------------------------------------------------------------------------------------------


class ServerStore:
    """qdrant-client against a server (or ":memory:" local mode, which speaks the same API).

    Aliases are the server's own; switch_alias is a single update_collection_aliases request
    (delete + create), which Qdrant applies atomically.
    """

    backend = "server"

    def __init__(self, client: "QdrantClient"):
        self.client = client
        options = client.init_options
        self._secret = options.get("api_key")
        self.where = _describe(options)

    @contextlib.contextmanager
    def _errors(self, name: str | None = None) -> Iterator[None]:
        """Qdrant/transport exceptions -> one-line FmstoreErrors, never showing the API key."""
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        try:
            yield
        except FmstoreError:
            raise
        except UnexpectedResponse as error:
            if error.status_code == 404 and name is not None:
                raise _not_published(name, self.where) from None
            detail = _one_line(error.content.decode("utf-8", "replace"))
            raise StoreError(self._redact(f"{self.where} answered {error.status_code}: {detail}")) from None
        except ValueError as error:  # local mode reports a missing collection this way
            if name is not None and "not found" in str(error):
                raise _not_published(name, self.where) from None
            raise StoreError(self._redact(f"{self.where}: {_one_line(error)}")) from None
        except ResponseHandlingException as error:
            raise StoreError(self._redact(f"cannot reach {self.where}: {_one_line(error.source)}")) from None
        except Exception as error:  # gRPC, OS-level and anything else: still one line
            raise StoreError(self._redact(f"{self.where} failed: {_one_line(error)}")) from None

    def _redact(self, message: str) -> str:
        return message.replace(self._secret, "***") if self._secret else message

    def create_collection(
        self,
        name: str,
        spec: CollectionSpec,
        *,
        shards: int | None = None,
        replicas: int | None = None,
        write_consistency: int | None = None,
    ) -> None:
        from qdrant_client import models

        _check_name(name)
        distance = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT}
        with self._errors():
            if name in self.list_collections():
                # a re-publish rewrites it completely; the server drops its aliases with it
                self.client.delete_collection(name)
            self.client.create_collection(
                name,
                vectors_config={
                    v.name: models.VectorParams(size=v.size, distance=distance[v.distance]) for v in spec.vectors
                },
                shard_number=shards,
                replication_factor=replicas,
                write_consistency_factor=write_consistency,
            )
            indexes = [(f, models.PayloadSchemaType.KEYWORD) for f in spec.keyword_indexes]
            indexes += [(f, models.PayloadSchemaType.INTEGER) for f in spec.integer_indexes]
            with warnings.catch_warnings():
                # local mode (tests) warns that payload indexes do nothing there; a server uses them
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for field, schema in indexes:
                    self.client.create_payload_index(name, field, field_schema=schema, wait=True)

    def upsert(self, name: str, ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]) -> None:
        from qdrant_client import models

        id_list, arrays = _check_batch(ids, vectors, payloads)
        batch = models.Batch(
            ids=id_list,
            vectors={vname: array.tolist() for vname, array in arrays.items()},
            # the client cannot serialise numpy scalars (Edge can): accept the same payloads on both
            payloads=[_plain(p) for p in payloads],
        )
        with self._errors(name):
            self.client.upsert(name, points=batch, wait=True)

    def count(self, name: str) -> int:
        with self._errors(name):
            return int(self.client.count(name, exact=True).count)

    def collection_exists(self, name: str) -> bool:
        # Physical collections only (never true for an alias), like EdgeStore.
        return name in self.list_collections()

    def list_collections(self) -> list[str]:
        with self._errors():
            return sorted(c.name for c in self.client.get_collections().collections)

    def delete_collection(self, name: str) -> None:
        """Drop a collection (no-op when absent); the server drops aliases pointing at it."""
        with self._errors():
            self.client.delete_collection(name)

    def resolve_alias(self, alias: str) -> str | None:
        with self._errors():
            for a in self.client.get_aliases().aliases:
                if a.alias_name == alias:
                    return a.collection_name
        return None

    def switch_alias(self, alias: str, collection: str) -> None:
        from qdrant_client import models

        _check_name(alias, "alias")
        if not self.collection_exists(collection):
            raise NotFoundError(f"cannot point alias '{alias}' at '{collection}': no such collection in {self.where}")
        operations: list[Any] = []
        if self.resolve_alias(alias) is not None:
            # Deleting an alias that does not exist fails on a server: only delete a real one.
            operations.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        operations.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        with self._errors():
            self.client.update_collection_aliases(change_aliases_operations=operations)

    def search(
        self,
        collection_or_alias: str,
        vector: np.ndarray,
        *,
        using: str,
        limit: int,
        filter: QueryFilter | None = None,
    ) -> list[Hit]:
        with self._errors(collection_or_alias):
            response = self.client.query_points(
                collection_or_alias,
                query=_as_query_vector(vector),
                using=using,
                limit=limit,
                query_filter=_server_filter(filter),
                with_payload=True,
            )
        return [Hit(int(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def retrieve(
        self, collection_or_alias: str, ids: Sequence[int], *, vectors: Sequence[str] = ()
    ) -> dict[int, tuple[dict[str, np.ndarray], dict]]:
        with self._errors(collection_or_alias):
            records = self.client.retrieve(
                collection_or_alias,
                [int(i) for i in ids],
                with_payload=True,
                with_vectors=list(vectors) if vectors else False,
            )
        out = {}
        for record in records:
            stored = record.vector if isinstance(record.vector, dict) else {}
            vecs = {v: np.asarray(stored[v], dtype=np.float32) for v in vectors if v in stored}
            out[int(record.id)] = (vecs, dict(record.payload or {}))
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def __enter__(self) -> "ServerStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ServerStore({self.where!r})"


def _describe(options: dict) -> str:
    """Where a client points, for messages: "Qdrant at <url>", the URL without user:password."""
    if options.get("location") == ":memory:":
        return "in-memory Qdrant"
    if options.get("path"):
        return f"local Qdrant at {options['path']}"
    url = options.get("url") or options.get("location") or options.get("host") or "localhost"
    parts = urlsplit(url)
    if parts.username or parts.password:
        url = urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))
    return f"Qdrant at {url}"


def _plain(value: Any) -> Any:
    """numpy scalars (at any depth) -> Python values, for JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _server_filter(f: QueryFilter | None) -> Any:
    if f is None or f.is_empty():
        return None
    from qdrant_client import models

    must: list[Any] = []
    if f.genres:
        must.append(models.FieldCondition(key="genres", match=models.MatchAny(any=list(f.genres))))
    if f.year_min is not None or f.year_max is not None:
        must.append(models.FieldCondition(key="year", range=models.Range(gte=f.year_min, lte=f.year_max)))
    if f.min_ratings is not None:
        must.append(models.FieldCondition(key="n_ratings", range=models.Range(gte=f.min_ratings)))
    must_not = [models.HasIdCondition(has_id=[int(i) for i in f.exclude_ids])] if f.exclude_ids else None
    return models.Filter(must=must or None, must_not=must_not)
