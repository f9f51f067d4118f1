"""fmstore.vectors: one behaviour test run on both engines, plus engine-specific checks.

Synthetic data with known answers: random q_i, b_i, so the right ranking for a query [p, 1] on
`score` is numpy's argsort of q @ p + b, and the nearest `item` of a movie is the movie itself.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from fmstore.config import Settings
from fmstore.errors import ConfigError, NotFoundError, StoreError
from fmstore.vectors import (
    EdgeStore,
    QueryFilter,
    ServerStore,
    VectorStore,
    movies_spec,
    open_store,
    users_spec,
)

K = 8
GENRES = ("Action", "Comedy", "Drama", "Horror")


def make_movies(n: int, seed: int, first_id: int = 1):
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n, dtype=np.int64) * 10  # sparse, like MovieLens ids
    q = rng.normal(size=(n, K)).astype(np.float32)
    b = rng.normal(scale=2.0, size=n).astype(np.float32)
    payloads = [
        {
            "movie_id": int(mid),
            "title": f"Movie {mid}",
            "year": 1980 + i % 40,
            "genres": [GENRES[i % 4], GENRES[(i // 4) % 4]] if i % 3 else [GENRES[i % 4]],
            "bias": float(b[i]),
            "n_ratings": i,
            "mean_rating": 3.0,
            "run_id": f"run{seed}",
        }
        for i, mid in enumerate(ids)
    ]
    return ids, q, b, payloads


def publish(store: VectorStore, name: str, ids, q, b, payloads, batch: int = 64) -> None:
    store.create_collection(name, movies_spec(K))
    score = np.hstack([q, b[:, None]])
    for start in range(0, len(ids), batch):
        sl = slice(start, start + batch)
        store.upsert(name, ids[sl], {"item": q[sl], "score": score[sl]}, payloads[sl])


@pytest.fixture(params=["edge", "server"])
def store(request, tmp_path):
    s = (
        EdgeStore(tmp_path / "qdrant")
        if request.param == "edge"
        else ServerStore(QdrantClient(":memory:"))
    )
    yield s
    s.close()


MOVIES = make_movies(200, seed=1)
P = np.random.default_rng(9).normal(size=K).astype(np.float32)


@pytest.fixture
def live(store: VectorStore) -> VectorStore:
    """A store with MOVIES published as `movies__a` and the alias `movies` on it."""
    publish(store, "movies__a", *MOVIES)
    store.switch_alias("movies", "movies__a")
    return store


def expected_scores() -> np.ndarray:
    _, q, b, _ = MOVIES
    return q @ P + b


def test_publish_counts_and_alias(store: VectorStore):
    publish(store, "movies__a", *MOVIES)
    assert store.count("movies__a") == 200
    assert store.collection_exists("movies__a") and not store.collection_exists("movies")
    store.switch_alias("movies", "movies__a")
    assert store.resolve_alias("movies") == "movies__a"


def test_item_vector_nearest_is_itself(live: VectorStore):
    ids, q, _, payloads = MOVIES
    hits = live.search("movies", q[17], using="item", limit=3)
    assert hits[0].id == ids[17] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[0].payload == payloads[17]


def test_score_vector_is_the_fm_ranking(live: VectorStore):
    ids = MOVIES[0]
    expected = expected_scores()
    hits = live.search("movies", np.append(P, 1.0), using="score", limit=10)
    order = np.argsort(-expected)[:10]
    assert [h.id for h in hits] == list(ids[order])
    np.testing.assert_allclose([h.score for h in hits], expected[order], rtol=1e-5, atol=1e-5)


_TOP3 = tuple(int(i) for i in MOVIES[0][np.argsort(-expected_scores())[:3]])
FILTERS = [
    (
        QueryFilter(genres=("Horror", "Drama")),
        lambda mid, pl: {"Horror", "Drama"} & set(pl["genres"]),
    ),
    (QueryFilter(year_min=1990, year_max=1995), lambda mid, pl: 1990 <= pl["year"] <= 1995),
    (QueryFilter(year_min=2010), lambda mid, pl: pl["year"] >= 2010),
    (QueryFilter(min_ratings=150), lambda mid, pl: pl["n_ratings"] >= 150),
    (QueryFilter(exclude_ids=_TOP3), lambda mid, pl: mid not in _TOP3),
    (
        QueryFilter(genres=("Comedy",), year_min=1985, min_ratings=20, exclude_ids=_TOP3),
        lambda mid, pl: (
            "Comedy" in pl["genres"]
            and pl["year"] >= 1985
            and pl["n_ratings"] >= 20
            and mid not in _TOP3
        ),
    ),
]


@pytest.mark.parametrize("flt, keep", FILTERS, ids=[str(f) for f, _ in FILTERS])
def test_filter_matches_numpy(live: VectorStore, flt: QueryFilter, keep):
    ids, _, _, payloads = MOVIES
    mask = np.array([keep(int(mid), pl) for mid, pl in zip(ids, payloads, strict=True)])
    want = [int(ids[i]) for i in np.argsort(-expected_scores()) if mask[i]][:10]
    got = [
        h.id for h in live.search("movies", np.append(P, 1.0), using="score", limit=10, filter=flt)
    ]
    assert got == want


def test_retrieve_is_bit_exact_for_dot(live: VectorStore):
    ids, q, b, payloads = MOVIES
    got = live.retrieve("movies", [int(ids[0]), int(ids[5]), 999_999], vectors=("score", "item"))
    assert set(got) == {ids[0], ids[5]}
    vecs, payload = got[int(ids[5])]
    np.testing.assert_array_equal(vecs["score"], np.append(q[5], b[5]))
    np.testing.assert_allclose(vecs["item"], q[5] / np.linalg.norm(q[5]), rtol=1e-6)  # Cosine
    assert payload == payloads[5]
    assert live.retrieve("movies", [int(ids[1])])[int(ids[1])] == ({}, payloads[1])


def test_alias_serves_old_publication_until_the_switch(live: VectorStore):
    ids, q = MOVIES[0], MOVIES[1]
    ids2, q2, b2, payloads2 = make_movies(50, seed=2, first_id=1000)
    publish(live, "movies__b", ids2, q2, b2, payloads2, batch=16)
    assert live.resolve_alias("movies") == "movies__a"
    assert live.search("movies", q[3], using="item", limit=1)[0].id == ids[3]
    live.switch_alias("movies", "movies__b")
    assert live.resolve_alias("movies") == "movies__b"
    assert live.count("movies") == 50
    assert live.search("movies", q2[3], using="item", limit=1)[0].id == ids2[3]
    assert live.list_collections() == ["movies__a", "movies__b"]


def test_recreating_a_collection_drops_points_and_aliases(live: VectorStore):
    ids, q, b, payloads = MOVIES
    live.switch_alias("previous", "movies__a")
    publish(live, "movies__a", ids[:7], q[:7], b[:7], payloads[:7])
    assert live.count("movies__a") == 7
    assert live.resolve_alias("previous") is None
    assert live.retrieve("movies__a", [int(ids[100])]) == {}


def test_deleting_the_aliased_collection_removes_the_alias(live: VectorStore):
    live.delete_collection("movies__a")
    live.delete_collection("movies__a")  # absent: no-op
    assert live.list_collections() == []
    assert live.resolve_alias("movies") is None


def test_nothing_published_is_one_clear_error(store: VectorStore):
    q = MOVIES[1]
    for call in (
        lambda: store.search("movies", q[0], using="item", limit=1),
        lambda: store.retrieve("nope", [1]),
        lambda: store.count("nope"),
    ):
        with pytest.raises(NotFoundError, match="run `fmstore publish` first"):
            call()
    with pytest.raises(NotFoundError):
        store.switch_alias("movies", "movies__zzz")


def test_users_collection_roundtrip(store: VectorStore):
    rng = np.random.default_rng(3)
    p = rng.normal(size=(5, K)).astype(np.float32)
    vectors = np.hstack([p, np.ones((5, 1), np.float32)])
    store.create_collection("users__a", users_spec(K))
    store.upsert(
        "users__a",
        np.array([1, 2, 3, 4, 5]),
        {"score": vectors},
        [{"user_id": i} for i in range(1, 6)],
    )
    got = store.retrieve("users__a", [4], vectors=("score",))
    np.testing.assert_array_equal(got[4][0]["score"], vectors[3])


def test_payloads_with_numpy_scalars_and_nulls(store: VectorStore):
    store.create_collection("movies__a", movies_spec(2))
    payloads = [
        {
            "movie_id": np.int64(1),
            "year": None,
            "n_ratings": np.int64(5),
            "genres": [],
            "bias": np.float32(0.5),
        },
        {"movie_id": 2, "year": 1999, "n_ratings": 3, "genres": ["Drama"], "bias": 0.25},
    ]
    store.upsert(
        "movies__a", np.array([1, 2]), {"item": np.ones((2, 2)), "score": np.ones((2, 3))}, payloads
    )
    got = store.retrieve("movies__a", [1, 2])
    assert got[1][1] == {"movie_id": 1, "year": None, "n_ratings": 5, "genres": [], "bias": 0.5}
    hits = store.search(
        "movies__a", np.ones(3), using="score", limit=5, filter=QueryFilter(year_min=1990)
    )
    assert [h.id for h in hits] == [2]


def test_bad_names_and_batches(store: VectorStore):
    with pytest.raises(ConfigError):
        store.create_collection("../escape", users_spec(K))
    store.create_collection("users__a", users_spec(K))
    with pytest.raises(ValueError):
        store.upsert("users__a", np.array([1, 2]), {"score": np.zeros((3, K + 1))}, [{}, {}])


def test_edge_alias_file_survives_reopen_and_store_is_locked(tmp_path):
    ids, q, b, payloads = make_movies(30, seed=4)
    with EdgeStore(tmp_path) as store:
        publish(store, "movies__a", ids, q, b, payloads)
        store.switch_alias("movies", "movies__a")
        # a second writer (process or store object) is refused while this one holds the lock;
        # a reader is not: it reads what the alias names
        with pytest.raises(StoreError, match=f"store in use by process {os.getpid()}"):
            EdgeStore(tmp_path).lock()
        with EdgeStore(tmp_path) as reader:
            assert reader.count("movies") == 30
    assert (tmp_path / "aliases.json").is_file()
    assert not list(tmp_path.glob(".tmp-*"))  # the atomic write left no temp file

    with EdgeStore(tmp_path) as store:
        assert store.resolve_alias("movies") == "movies__a"
        assert store.count("movies") == 30
        assert store.search("movies", q[4], using="item", limit=1)[0].id == ids[4]
        vecs, _ = store.retrieve("movies", [int(ids[2])], vectors=("score",))[int(ids[2])]
        np.testing.assert_array_equal(vecs["score"], np.append(q[2], b[2]))


def test_edge_refuses_server_only_options(tmp_path):
    with EdgeStore(tmp_path) as store, pytest.raises(ConfigError, match="Qdrant server"):
        store.create_collection("movies__a", movies_spec(K), shards=2)


def test_open_store_picks_engine(tmp_path):
    store = open_store(Settings(home=tmp_path))
    assert isinstance(store, EdgeStore) and store.path == tmp_path / "qdrant"
    store.close()
    store = open_store(Settings(home=tmp_path, qdrant_url="http://localhost:6333"))
    assert store.backend == "server"
    store.close()


def test_server_unreachable_is_one_line_without_api_key():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "api key on an insecure connection"
        store = open_store(Settings(qdrant_url="http://127.0.0.1:9", qdrant_api_key="s3cret-key"))
    with pytest.raises(StoreError) as info:
        store.search("movies", np.zeros(K), using="item", limit=1)
    message = str(info.value)
    assert "127.0.0.1:9" in message and "s3cret-key" not in message and "\n" not in message


def test_known_user_one_call_query_matches_vector_search():
    """The contract's no-fmstore-code query: recommend with the user's id, lookup_from `users`."""
    store = ServerStore(QdrantClient(":memory:"))
    ids, q, b, payloads = make_movies(120, seed=5)
    publish(store, "movies__r1", ids, q, b, payloads)
    store.switch_alias("movies", "movies__r1")
    p = np.random.default_rng(6).normal(size=(3, K)).astype(np.float32)
    user_vectors = np.hstack([p, np.ones((3, 1), np.float32)])
    store.create_collection("users__r1", users_spec(K))
    store.upsert(
        "users__r1",
        np.array([7, 8, 9]),
        {"score": user_vectors},
        [{"user_id": u} for u in (7, 8, 9)],
    )
    store.switch_alias("users", "users__r1")

    for row, user_id in enumerate((7, 8, 9)):
        one_call = store.client.query_points(
            "movies",
            query=models.RecommendQuery(recommend=models.RecommendInput(positive=[user_id])),
            using="score",
            lookup_from=models.LookupLocation(collection="users", vector="score"),
            limit=10,
        ).points
        by_vector = store.search("movies", user_vectors[row], using="score", limit=10)
        assert [h.id for h in one_call] == [h.id for h in by_vector]
        np.testing.assert_allclose(
            [h.score for h in one_call], [h.score for h in by_vector], rtol=1e-6
        )
        expected = q @ p[row] + b
        assert [h.id for h in by_vector] == list(ids[np.argsort(-expected)[:10]])
    store.close()


def test_a_writer_sweeps_what_a_killed_delete_left(tmp_path):
    """issue 18 (Low): `.trash-*` folders of a prune killed mid-delete go at the next write."""
    trash = tmp_path / "collections" / ".trash-movies__a-0123"
    (trash / "segments").mkdir(parents=True)
    with EdgeStore(tmp_path) as store:
        assert store.list_collections() == [] and trash.exists()  # a reader leaves it
        store.lock()
        assert not trash.exists()
