"""ServerStore: `qdrant-client` against a Qdrant server (or `QdrantClient(":memory:")` in tests),
with real server-side aliases and payload indexes. qdrant_client is imported only when used.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Any, Iterable, Iterator
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from fmstore.errors import FmstoreError, StoreError
from fmstore.vectors.base import FilterSpelling, VectorStore, _one_line

if TYPE_CHECKING:  # only for annotations: importing qdrant_client costs most of a second
    from qdrant_client import QdrantClient

    from fmstore.vectors.base import CollectionSpec, Placement, QueryFilter


class ServerStore(VectorStore):
    """qdrant-client against a server (or ":memory:" local mode, which speaks the same API).

    Aliases are the server's own; switch_aliases is a single update_collection_aliases request
    (delete + create of every alias), which Qdrant applies atomically.
    """

    backend = "server"

    def __init__(self, client: QdrantClient):
        self.client = client
        options = client.init_options
        self._secret = options.get("api_key")
        self.where = _describe(options)

    # -- the interface ---------------------------------------------------------------------------

    def _create_collection(self, name: str, spec: CollectionSpec, placement: Placement) -> None:
        from qdrant_client import models

        self._check_name(name)
        distance = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT}
        with self._errors():
            if name in self.list_collections():
                # a re-publish rewrites it completely; the server drops its aliases with it
                self.client.delete_collection(name)
            self.client.create_collection(
                name,
                vectors_config={
                    v.name: models.VectorParams(size=v.size, distance=distance[v.distance])
                    for v in spec.vectors
                },
                shard_number=placement.shards,
                replication_factor=placement.replicas,
                write_consistency_factor=placement.write_consistency,
            )
            indexes = [(f, models.PayloadSchemaType.KEYWORD) for f in spec.keyword_indexes]
            indexes += [(f, models.PayloadSchemaType.INTEGER) for f in spec.integer_indexes]
            with warnings.catch_warnings():
                # local mode (tests) warns that payload indexes do nothing there; a server uses them
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for field, schema in indexes:
                    self.client.create_payload_index(name, field, field_schema=schema, wait=True)

    def upsert(
        self, name: str, ids: np.ndarray, vectors: dict[str, np.ndarray], payloads: list[dict]
    ) -> None:
        from qdrant_client import models

        id_list, arrays = self._check_batch(ids, vectors, payloads)
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

    def switch_aliases(self, mapping: dict[str, str]) -> None:
        """All aliases in one update_collection_aliases request, which Qdrant applies
        atomically: delete each existing alias and create it on its new collection."""
        from qdrant_client import models

        self._check_switch(mapping)
        with self._errors():
            existing = {a.alias_name for a in self.client.get_aliases().aliases}
        operations: list[Any] = []
        for alias, collection in mapping.items():
            if alias in existing:
                # Deleting an alias that does not exist fails on a server: only delete a real one.
                delete = models.DeleteAlias(alias_name=alias)
                operations.append(models.DeleteAliasOperation(delete_alias=delete))
            create = models.CreateAlias(collection_name=collection, alias_name=alias)
            operations.append(models.CreateAliasOperation(create_alias=create))
        with self._errors():
            self.client.update_collection_aliases(change_aliases_operations=operations)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # -- hooks for VectorStore.search / retrieve -------------------------------------------------

    def _query(
        self, name: str, vector: list[float], using: str, limit: int, filter: QueryFilter | None
    ) -> Iterable[Any]:
        with self._errors(name):
            response = self.client.query_points(
                name,
                query=vector,
                using=using,
                limit=limit,
                query_filter=self._filter(filter),
                with_payload=True,
            )
        return response.points

    def _fetch(self, name: str, ids: list[int], with_vectors: list[str] | bool) -> Iterable[Any]:
        with self._errors(name):
            return self.client.retrieve(name, ids, with_payload=True, with_vectors=with_vectors)

    def _filter_spelling(self) -> FilterSpelling:
        from qdrant_client import models

        def field_range(field: str, low: int | None, high: int | None) -> Any:
            return models.FieldCondition(key=field, range=models.Range(gte=low, lte=high))

        return FilterSpelling(
            any_of=lambda field, values: models.FieldCondition(
                key=field, match=models.MatchAny(any=values)
            ),
            between=field_range,
            not_ids=lambda ids: models.HasIdCondition(has_id=ids),
            combine=lambda must, must_not: models.Filter(must=must, must_not=must_not),
        )

    # -- plumbing --------------------------------------------------------------------------------

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
                raise self._not_published(name) from None
            detail = _one_line(error.content.decode("utf-8", "replace"))
            raise StoreError(
                self._redact(f"{self.where} answered {error.status_code}: {detail}")
            ) from None
        except ValueError as error:  # local mode reports a missing collection this way
            if name is not None and "not found" in str(error):
                raise self._not_published(name) from None
            raise StoreError(self._redact(f"{self.where}: {_one_line(error)}")) from None
        except ResponseHandlingException as error:
            raise StoreError(
                self._redact(f"cannot reach {self.where}: {_one_line(error.source)}")
            ) from None
        except Exception as error:  # gRPC, OS-level and anything else: still one line
            raise StoreError(self._redact(f"{self.where} failed: {_one_line(error)}")) from None

    def _redact(self, message: str) -> str:
        return message.replace(self._secret, "***") if self._secret else message


def _describe(options: dict) -> str:
    """Where a client points, for messages: "Qdrant at <url>", the URL without user:password."""
    if options.get("location") == ":memory:":
        return "in-memory Qdrant"
    if options.get("path"):
        return f"local Qdrant at {options['path']}"
    url = options.get("url") or options.get("location") or options.get("host") or "localhost"
    parts = urlsplit(url)
    if parts.username or parts.password:
        port = f":{parts.port}" if parts.port else ""
        url = urlunsplit(parts._replace(netloc=parts.hostname + port))
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
