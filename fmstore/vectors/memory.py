"""`MemoryStore`: a VectorStore held in NumPy arrays, for a run served before it is published.

fmstore.notebook serves a freshly trained run from its folder with the same `Recommender` that
serves a publication: the run's points (publish.points, the very vectors and payloads publish
writes) go into this store instead of Qdrant. Search is exact (every point scored: a run folder
fits in memory by construction), with Qdrant's semantics: Dot is the plain dot product, a Cosine
vector is stored normalised, filters match as Qdrant's do (a payload list matches `any_of` when
one of its values does; a missing or null field fails a range), ties keep insertion order.
Nothing persists: close() drops everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

import numpy as np

from fmstore.vectors.base import CollectionSpec, FilterSpelling, Placement, QueryFilter, VectorStore


class _Record(NamedTuple):
    """What _query and _fetch return: the shape of Qdrant's records."""

    id: int
    score: float
    vector: dict
    payload: dict


@dataclass
class _Collection:
    spec: CollectionSpec
    ids: list[int] = field(default_factory=list)
    row: dict[int, int] = field(default_factory=dict)  # point id -> row
    vectors: dict[str, list[np.ndarray]] = field(default_factory=dict)
    payloads: list[dict] = field(default_factory=list)
    _stacked: dict[str, np.ndarray] = field(default_factory=dict)

    def matrix(self, name: str) -> np.ndarray:
        """The named vector of every point as one float32 array (built once after writes)."""
        if name not in self._stacked:
            rows = self.vectors.get(name) or []
            size = next(v.size for v in self.spec.vectors if v.name == name)
            self._stacked[name] = np.stack(rows) if rows else np.zeros((0, size), np.float32)
        return self._stacked[name]


class MemoryStore(VectorStore):
    """Collections and aliases in this process's memory (see the module docstring)."""

    backend = "memory"

    def __init__(self, where: str = "memory"):
        self.where = where
        self._collections: dict[str, _Collection] = {}
        self._aliases: dict[str, str] = {}

    def _get(self, name: str) -> _Collection:
        physical = self._aliases.get(name, name)
        if physical not in self._collections:
            raise self._not_published(name)
        return self._collections[physical]

    def _create_collection(self, name: str, spec: CollectionSpec, placement: Placement) -> None:
        self._check_name(name)
        self.delete_collection(name)
        self._collections[name] = _Collection(spec)

    def upsert(
        self, name: str, ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]
    ) -> None:
        coll = self._get(name)
        id_list, arrays = self._check_batch(ids, vectors, payloads)
        cosine = {v.name for v in coll.spec.vectors if v.distance == "cosine"}
        for offset, point in enumerate(id_list):
            row = coll.row.get(point)
            if row is None:
                row = coll.row[point] = len(coll.ids)
                coll.ids.append(point)
                coll.payloads.append({})
            coll.payloads[row] = dict(payloads[offset])
            for vname, array in arrays.items():
                vector = array[offset]
                if vname in cosine:  # stored normalised, as Qdrant does
                    norm = float(np.linalg.norm(vector))
                    vector = vector / norm if norm else vector
                stored = coll.vectors.setdefault(vname, [])
                stored.extend([None] * (row + 1 - len(stored)))
                stored[row] = np.asarray(vector, np.float32)
        coll._stacked.clear()

    def count(self, name: str) -> int:
        return len(self._get(name).ids)

    def collection_exists(self, name: str) -> bool:
        return name in self._collections

    def list_collections(self) -> list[str]:
        return sorted(self._collections)

    def delete_collection(self, name: str) -> None:
        self._collections.pop(name, None)
        self._aliases = {a: c for a, c in self._aliases.items() if c != name}

    def resolve_alias(self, alias: str) -> str | None:
        return self._aliases.get(alias)

    def switch_aliases(self, mapping: dict[str, str]) -> None:
        self._check_switch(mapping)
        self._aliases.update(mapping)

    def close(self) -> None:
        self._collections.clear()
        self._aliases.clear()

    def _query(
        self, name: str, vector: list[float], using: str, limit: int, filter: QueryFilter | None
    ) -> Iterable[Any]:
        coll = self._get(name)
        if not coll.ids:
            return []
        query = np.asarray(vector, np.float32)
        distance = next(v.distance for v in coll.spec.vectors if v.name == using)
        if distance == "cosine":
            norm = float(np.linalg.norm(query))
            query = query / norm if norm else query
        scores = coll.matrix(using) @ query
        keep = self._filter(filter)
        if keep is not None:
            mask = np.fromiter((keep(coll.ids[r], p) for r, p in enumerate(coll.payloads)), bool)
            scores = np.where(mask, scores, -np.inf)
        order = np.argsort(-scores, kind="stable")[:limit]
        return [
            _Record(coll.ids[r], float(scores[r]), {}, coll.payloads[r])
            for r in order
            if scores[r] > -np.inf
        ]

    def _fetch(self, name: str, ids: list[int], with_vectors: list[str] | bool) -> Iterable[Any]:
        coll = self._get(name)
        names = [v.name for v in coll.spec.vectors] if with_vectors is True else with_vectors or []
        found = []
        for point in ids:
            row = coll.row.get(int(point))
            if row is not None:
                vectors = {n: coll.vectors[n][row] for n in names if n in coll.vectors}
                found.append(_Record(int(point), 0.0, vectors, coll.payloads[row]))
        return found

    def _filter_spelling(self) -> FilterSpelling:
        return FilterSpelling(any_of=_any_of, between=_between, not_ids=_not_ids, combine=_combine)


def _any_of(name: str, values: list[str]):
    wanted = set(values)

    def test(point: int, payload: dict) -> bool:
        value = payload.get(name)
        found = value if isinstance(value, list) else [value]
        return any(v in wanted for v in found)

    return test


def _between(name: str, low: int | None, high: int | None):
    def test(point: int, payload: dict) -> bool:
        value = payload.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return (low is None or value >= low) and (high is None or value <= high)

    return test


def _not_ids(ids: list[int]):
    excluded = set(ids)
    return lambda point, payload: point in excluded


def _combine(must, must_not):
    def test(point: int, payload: dict) -> bool:
        if must and not all(c(point, payload) for c in must):
            return False
        return not (must_not and any(c(point, payload) for c in must_not))

    return test
