"""Vector store: the published Qdrant collections, behind one small interface, two engines.

- base.py: the schema (VectorSpec, CollectionSpec, movies_spec, users_spec), the query types
  (QueryFilter, Hit), the VectorStore interface with the steps both engines share.
- edge.py: `EdgeStore`, Qdrant Edge in-process; the embedded default.
- server.py: `ServerStore`, qdrant-client against a Qdrant server.
- memory.py: `MemoryStore`, NumPy arrays in this process: a run served before it is published.
- here: `open_store`, which picks the engine from the settings.

The caller (publish, recommend) never knows which engine it has. Importing this package is cheap
on purpose (the CLI query path aims at < 1 s wall time): the engines import qdrant_edge /
qdrant_client only when they are used.
"""

from __future__ import annotations

from fmstore.config import Settings
from fmstore.vectors.base import (
    DISTANCES,
    CollectionSpec,
    Hit,
    QueryFilter,
    VectorSpec,
    VectorStore,
    longest_vector,
    movies_spec,
    users_spec,
)
from fmstore.vectors.edge import EdgeStore
from fmstore.vectors.memory import MemoryStore
from fmstore.vectors.server import ServerStore

__all__ = [
    "DISTANCES",
    "CollectionSpec",
    "EdgeStore",
    "Hit",
    "MemoryStore",
    "QueryFilter",
    "ServerStore",
    "VectorSpec",
    "VectorStore",
    "longest_vector",
    "movies_spec",
    "open_store",
    "users_spec",
]


def open_store(settings: Settings, *, wait: float = 0.0) -> VectorStore:
    """A Qdrant server when FMSTORE_QDRANT_URL is set, else the embedded Edge store in home
    (waiting up to `wait` seconds for another process's lock on it)."""
    if settings.qdrant_url:
        import warnings

        from qdrant_client import QdrantClient

        settings.check()  # a malformed URL: one line, never the client's parse error
        with warnings.catch_warnings():
            # "Api key is used with an insecure connection": the CLI warns in one line of its own
            warnings.filterwarnings("ignore", message="Api key is used with an insecure")
            # No compatibility check at construction: it costs a round trip on every CLI call
            # and, with the server down, prints a warning before our one-line StoreError.
            client = QdrantClient(
                url=settings.qdrant_url,
                api_key=settings.qdrant_api_key,
                check_compatibility=False,
            )
        return ServerStore(client)
    return EdgeStore(settings.qdrant_path, wait=wait)
