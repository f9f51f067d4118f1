"""What both vector engines share: the collection schema, the query types, the VectorStore
interface (with the steps that are the same on both engines) and small checks.

See DESIGN.md, "The published contract": points are MovieLens ids; vector `item` (Cosine, k) =
q_i; vector `score` (Dot, k+1) = [q_i, b_i]. `score` must be Dot: Cosine normalises stored
vectors and would destroy the bias.

Nothing here imports qdrant_edge or qdrant_client: the engines do, when they are used.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple, Sequence, TypeVar

import numpy as np

from fmstore.errors import ConfigError, NotFoundError

DISTANCES = ("cosine", "dot")
# Collection and alias names become folder names on Edge; keep them to a portable alphabet.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,254}$")

_Store = TypeVar("_Store", bound="VectorStore")


# -- schema ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of a collection: its size and distance (cosine or dot)."""

    name: str
    size: int
    distance: str  # "cosine" | "dot"

    def __post_init__(self) -> None:
        if self.distance not in DISTANCES:
            raise ConfigError(
                f"vector '{self.name}': distance must be one of {DISTANCES}, not {self.distance!r}"
            )
        if self.size < 1:
            raise ConfigError(f"vector '{self.name}': size must be >= 1, not {self.size}")


@dataclass(frozen=True)
class CollectionSpec:
    """A collection's named vectors and the payload fields it indexes (keyword and integer)."""

    vectors: tuple[VectorSpec, ...]
    keyword_indexes: tuple[str, ...] = ()
    integer_indexes: tuple[str, ...] = ()


def movies_spec(
    k: int, rank_k: int | None = None, item_size: int | None = None, item_distance: str = "cosine"
) -> CollectionSpec:
    """`movies`: score = [q_i, b_i] (Dot: the rating model), item (for similar movies; k wide and
    Cosine unless told) and, with rank_k, rank = [r_i, c_i] (Dot: the ranking model)."""
    vectors = [
        VectorSpec("item", item_size or k, item_distance),
        VectorSpec("score", k + 1, "dot"),
    ]
    if rank_k:
        vectors.append(VectorSpec("rank", rank_k + 1, "dot"))
    return CollectionSpec(
        vectors=tuple(vectors), keyword_indexes=("genres",), integer_indexes=("year", "n_ratings")
    )


def users_spec(k: int, rank_k: int | None = None) -> CollectionSpec:
    """`users`: score = [p_u, 1] (Dot), so `lookup_from` a user ranks movies by b_i + <p_u, q_i>;
    with rank_k also rank = [r_u, 1] (Dot) for the ranking model."""
    vectors = [VectorSpec("score", k + 1, "dot")]
    if rank_k:
        vectors.append(VectorSpec("rank", rank_k + 1, "dot"))
    return CollectionSpec(vectors=tuple(vectors))


@dataclass(frozen=True)
class Placement:
    """How a server spreads a collection; None leaves it to the server. Edge is a single shard."""

    shards: int | None = None
    replicas: int | None = None
    write_consistency: int | None = None

    def is_default(self) -> bool:
        return self == Placement()


# -- queries -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryFilter:
    """Conditions on a search: any of `genres`, `year_min` <= year <= `year_max`, n_ratings >=
    `min_ratings`, and ids to leave out. The empty filter filters nothing."""

    genres: tuple[str, ...] = ()  # any of
    year_min: int | None = None
    year_max: int | None = None
    min_ratings: int | None = None  # payload n_ratings >= this
    exclude_ids: tuple[int, ...] = ()  # must_not has_id

    def is_empty(self) -> bool:
        """True when the filter has no condition at all."""
        return self == QueryFilter()


@dataclass(frozen=True)
class Hit:
    """One search result: the point id, its score (cosine or dot product) and its payload."""

    id: int
    score: float
    payload: dict


class FilterSpelling(NamedTuple):
    """How one engine writes the parts of a filter (VectorStore._filter decides which parts)."""

    any_of: Callable[[str, list[str]], Any]  # payload field matches any of the values
    between: Callable[[str, int | None, int | None], Any]  # low <= field <= high, None = open
    not_ids: Callable[[list[int]], Any]  # a must_not condition on point ids
    combine: Callable[[list[Any] | None, list[Any] | None], Any]  # must, must_not -> filter


# -- the interface -----------------------------------------------------------------------------


class VectorStore(abc.ABC):
    """What publish and the query layer use; EdgeStore and ServerStore are the two engines.

    The steps that read the same on both engines are written here once; an engine fills in the
    underscore hooks (_create_collection, _query, _fetch, _filter_spelling) and the rest.
    (A base class rather than a typing.Protocol for that reason; a duck-typed wrapper around a
    store, as in the tests, still works anywhere a VectorStore is expected.)
    """

    backend: str  # "edge" | "server"
    where: str  # the store, for messages: a folder or "Qdrant at <url>"

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
        self._create_collection(name, spec, Placement(shards, replicas, write_consistency))

    @abc.abstractmethod
    def upsert(
        self, name: str, ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]
    ) -> None:
        """One batch, applied and durable when this returns."""

    @abc.abstractmethod
    def count(self, name: str) -> int:
        """Number of points in a collection (or the collection an alias points at)."""

    @abc.abstractmethod
    def collection_exists(self, name: str) -> bool:
        """Physical collections only: False for an alias."""

    @abc.abstractmethod
    def list_collections(self) -> list[str]:
        """Physical collections, sorted."""

    @abc.abstractmethod
    def delete_collection(self, name: str) -> None:
        """Drop a collection and the aliases pointing at it; no-op when absent."""

    @abc.abstractmethod
    def resolve_alias(self, alias: str) -> str | None:
        """The physical collection `alias` points at, or None when there is no such alias."""

    def switch_alias(self, alias: str, collection: str) -> None:
        """Point one alias at a collection (see switch_aliases)."""
        self.switch_aliases({alias: collection})

    @abc.abstractmethod
    def switch_aliases(self, mapping: dict[str, str]) -> None:
        """Point every alias of `mapping` at its collection in ONE atomic operation: a reader
        sees all the old targets or all the new ones, never a mix. Each collection must exist
        and is durable (flushed) before any alias points at it."""

    def flush(self, name: str) -> None:
        """Make what was written to a collection durable (a no-op where upserts already are)."""
        return None

    def check_space(self, collections: list[tuple[CollectionSpec, int, int]]) -> None:
        """Refuse (StoreError) before writing new collections, given as (spec, points, payload
        bytes), that the store has no room for. A no-op where the store cannot tell (a server
        reports a full disk on the write itself, as an error)."""
        return None

    def check_placement(self, placement: Placement) -> None:
        """Refuse (ConfigError) a placement this engine cannot give, before anything is written."""
        return None

    def lock(self) -> None:
        """Take the store for this process before writing (a no-op where the engine has no
        process lock, as on a server)."""
        return None

    def search(
        self,
        collection_or_alias: str,
        vector: np.ndarray,
        *,
        using: str,
        limit: int,
        filter: QueryFilter | None = None,
    ) -> list[Hit]:
        """The `limit` points nearest to `vector` on the named vector `using`, best first."""
        points = self._query(collection_or_alias, _as_query_vector(vector), using, limit, filter)
        return [Hit(int(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def retrieve(
        self, collection_or_alias: str, ids: Sequence[int], *, vectors: Sequence[str] = ()
    ) -> dict[int, tuple[dict[str, np.ndarray], dict]]:
        """id -> (the named `vectors` as float32, payload) for the ids that exist."""
        with_vectors = list(vectors) if vectors else False
        records = self._fetch(collection_or_alias, [int(i) for i in ids], with_vectors)
        out = {}
        for record in records:
            stored = record.vector if isinstance(record.vector, dict) else {}
            vecs = {v: np.asarray(stored[v], dtype=np.float32) for v in vectors if v in stored}
            out[int(record.id)] = (vecs, dict(record.payload or {}))
        return out

    def release(self) -> None:
        """Let go of what reading opened (a Recommender's close() calls it on the store it was
        given); the store stays usable. A no-op here: a server's client is its owner's."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store (files, locks, connections); the store is unusable afterwards."""

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    # -- engine hooks ------------------------------------------------------------------------

    @abc.abstractmethod
    def _create_collection(self, name: str, spec: CollectionSpec, placement: Placement) -> None:
        """create_collection, with the server-only options gathered in `placement`."""

    @abc.abstractmethod
    def _query(
        self, name: str, vector: list[float], using: str, limit: int, filter: QueryFilter | None
    ) -> Iterable[Any]:
        """Nearest points (with .id, .score, .payload); the engine turns `filter` into its own
        with self._filter(filter)."""

    @abc.abstractmethod
    def _fetch(self, name: str, ids: list[int], with_vectors: list[str] | bool) -> Iterable[Any]:
        """Stored records (with .id, .vector, .payload) of those ids that exist."""

    @abc.abstractmethod
    def _filter_spelling(self) -> FilterSpelling: ...

    def _filter(self, f: QueryFilter | None) -> Any:
        """The engine's filter for `f`, None when it filters nothing. Which payload field each
        QueryFilter field tests is decided here, once; the engine only spells the conditions."""
        if f is None or f.is_empty():
            return None
        spell = self._filter_spelling()
        must = []
        if f.genres:
            must.append(spell.any_of("genres", list(f.genres)))
        if f.year_min is not None or f.year_max is not None:
            must.append(spell.between("year", f.year_min, f.year_max))
        if f.min_ratings is not None:
            must.append(spell.between("n_ratings", f.min_ratings, None))
        must_not = [spell.not_ids([int(i) for i in f.exclude_ids])] if f.exclude_ids else None
        return spell.combine(must or None, must_not)

    # -- checks and errors both engines use ----------------------------------------------------

    @staticmethod
    def _check_name(name: str, what: str = "collection") -> str:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"invalid {what} name {name!r}: use letters, digits, '_', '-', '.'")
        return name

    @staticmethod
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
                raise ValueError(
                    f"upsert: vector '{vname}' has shape {array.shape}, expected ({n}, dim)"
                )
            out[vname] = array
        return id_list, out

    def _not_published(self, name: str) -> NotFoundError:
        return NotFoundError(
            f"no published collection '{name}' in {self.where}: run `fmstore publish` first"
        )

    def _check_switch(self, mapping: dict[str, str]) -> None:
        """Every alias a valid name, every target an existing physical collection."""
        if not mapping:
            raise ValueError("switch_aliases: no aliases given")
        for alias, collection in mapping.items():
            self._check_name(alias, "alias")
            if not self.collection_exists(collection):
                raise self._no_such_collection(alias, collection)
            if self.collection_exists(alias):
                raise ConfigError(
                    f"'{alias}' is a collection in {self.where}; an alias cannot take its name"
                )

    def _no_such_collection(self, alias: str, collection: str) -> NotFoundError:
        return NotFoundError(
            f"cannot point alias '{alias}' at '{collection}': no such collection in {self.where}"
        )


def longest_vector(
    store: Any, name: str, ids: Sequence[int], using: str, batch: int = 2048
) -> float:
    """The largest length of the named vector `using` over the points `ids` of `name` (0 for
    none), read `batch` points at a time: any VectorStore's retrieve."""
    longest = 0.0
    for start in range(0, len(ids), batch):
        found = store.retrieve(name, list(ids[start : start + batch]), vectors=[using])
        for vectors, _ in found.values():
            longest = max(longest, float(np.linalg.norm(vectors[using].astype(np.float64))))
    return longest


def _one_line(error: BaseException) -> str:
    """An exception as one short line, for a user-facing message."""
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


def _as_query_vector(vector: np.ndarray) -> list[float]:
    # float32 -> Python float is exact, so the engine sees exactly the float32 values.
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
