"""docs/qdrant-contract.md is executable: its examples, run with qdrant-client alone against a store
that fmstore published, give the same rankings as fmstore's Recommender."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from planted import rated_movie_ids
from qdrant_client import QdrantClient, models

from fmstore import catalog, runs
from fmstore.publish import publish
from fmstore.recommend import Recommender
from fmstore.vectors import ServerStore

DOC = Path(__file__).resolve().parents[1] / "docs" / "qdrant-contract.md"
EXAMPLE = re.compile(r"<!-- example: (?P<name>[\w-]+) -->\s*```python\n(?P<code>.*?)```", re.S)


def examples() -> dict[str, str]:
    found = {m["name"]: m["code"] for m in EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))}
    assert set(found) == {
        "serving-config",
        "similar",
        "similarity",
        "new-user",
        "new-user-qdrant",
        "known-user",
    }, sorted(found)
    return found


@pytest.fixture
def published(catalog_url, planted_runs):
    """Planted run 0 published by fmstore to an in-memory Qdrant and each SQL backend."""
    engine = catalog.make_engine(catalog_url)
    client = QdrantClient(":memory:")
    store = ServerStore(client)
    publish(planted_runs[0], store, engine)
    yield client, Recommender(store, engine), catalog_url
    store.close()
    engine.dispose()


@pytest.fixture
def published_store(planted_runs, tmp_path):
    """Planted run 0 published to an in-memory Qdrant and SQLite: (client, store, engine)."""
    engine = catalog.make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    client = QdrantClient(":memory:")
    store = ServerStore(client)
    publish(planted_runs[0], store, engine)
    yield client, store, engine
    store.close()
    engine.dispose()
    store.close()
    engine.dispose()


def run_example(name: str, **variables) -> dict:
    namespace = dict(variables)
    exec(compile(examples()[name], f"{DOC.name}:{name}", "exec"), namespace)
    return namespace


def test_collections_match_the_doc(published):
    client, rec, _ = published
    k, kr = rec.factors, rec.rank_factors
    for alias, vectors in (
        ("movies", {"item": ("Dot", kr), "score": ("Dot", k + 1), "rank": ("Dot", kr + 1)}),
        ("users", {"score": ("Dot", k + 1), "rank": ("Dot", kr + 1)}),
    ):
        info = client.get_collection(alias)
        got = {name: (p.distance.value, p.size) for name, p in info.config.params.vectors.items()}
        assert got == vectors
    aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    # named by publication: movies__<run_id>__<token>, and users of the same publication
    assert aliases["movies"] == rec.movies_collection
    assert aliases["movies"].startswith(f"movies__{rec.run_id}__p")
    assert aliases["users"] == "users" + aliases["movies"][len("movies") :]


def test_examples_give_fmstore_rankings(published, capsys):
    client, rec, catalog_url = published
    config = run_example("serving-config", client=client, catalog_url=catalog_url)
    assert config["run_id"] == rec.run_id
    assert (config["w0"], config["reg"]) == pytest.approx((rec.w0, rec.weight_decay))
    assert (config["rating_min"], config["rating_max"]) == rec.rating_range
    shared = {k: config[k] for k in ("w0", "reg", "prior_reg", "rating_min", "rating_max")}

    for movie_id in (1, rated_movie_ids(2)[3]):
        ns = run_example("similar", client=client, movie_id=movie_id)
        ids, similarities = rec.similar_items(movie_id, N=10)
        assert [h.id for h in ns["hits"]] == ids.tolist()
        # fmstore shows the raw score as a similarity in [-1, 1], in the same order
        shown = run_example(
            "similarity",
            client=client,
            movie_id=movie_id,
            hits=ns["hits"],
            item_norm_max=config["item_norm_max"],
        )
        np.testing.assert_allclose(shown["similarity"], similarities, rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(similarities) <= 1) and np.all(np.diff(similarities) <= 0)

    for group in range(3):
        ratings = {m: 5.0 for m in rated_movie_ids(group)[:3]} | {
            rated_movie_ids((group + 1) % 3)[0]: 1.0
        }
        ns = run_example("new-user", client=client, ratings=ratings, **shared)
        ids, scores = rec.recommend_for_ratings(ratings, N=10)
        assert [h.id for h in ns["hits"]] == ids.tolist()
        np.testing.assert_allclose([h.score for h in ns["hits"]], scores, rtol=1e-5, atol=1e-6)
        p_u, b_u = rec.recalculate_user(ratings)
        np.testing.assert_allclose(ns["p_u"], p_u, rtol=1e-5, atol=1e-6)
        assert ns["b_u"] == pytest.approx(b_u, abs=1e-6)
        predicted = [
            min(
                max(
                    ns["w0"] + ns["b_u"] + float(np.dot(h.vector["score"], [*ns["p_u"], 1.0])),
                    ns["rating_min"],
                ),
                ns["rating_max"],
            )
            for h in ns["hits"]
        ]
        np.testing.assert_allclose(predicted, rec.predicted_ratings(p_u, b_u, ids), atol=1e-5)

    for user_id in (1, 40, 77):
        ns = run_example("known-user", client=client, user_id=user_id, **shared)
        ids, scores = rec.recommend(user_id, N=10)
        assert [h.id for h in ns["hits"]] == ids.tolist()
        assert not set(ids.tolist()) & set(rec.seen_items(user_id).tolist())
        np.testing.assert_allclose([h.score for h in ns["hits"]], scores, rtol=1e-5, atol=1e-6)
        assert ns["b_u"] == pytest.approx(rec.user_vector(user_id)[1])
    # user 1 and movie 1 both exist: the movie must not be dropped as a "mentioned example"
    everything = client.query_points(
        "movies",
        query=models.RecommendQuery(recommend=models.RecommendInput(positive=[1])),
        using="rank",
        lookup_from=models.LookupLocation(collection="users", vector="rank"),
        limit=1000,
    ).points
    assert 1 in {h.id for h in everything} and len(everything) == client.count("movies").count
    assert "Movie" in capsys.readouterr().out  # the examples print their hits


def test_known_user_example_excludes_everything_they_rated(published, planted_runs):
    """The `rated` payload is every movie the published run saw the user rate."""
    client, rec, _ = published
    seen, _ = runs.seen_movies(planted_runs[0], 5)
    rated = client.retrieve("users", [5])[0].payload["rated"]
    assert sorted(rated) == sorted(seen.tolist())
    ids, _ = rec.recommend(5, N=50)
    assert not set(ids.tolist()) & set(rated)


def test_a_new_users_qdrant_only_query_equals_fmstores(published_store):
    """Recommend with each rated movie once per half star: the list and scores of `fmstore
    query --rated` (Recommender.recommend_for_ratings, the weighted default), rated movies out."""
    client, store, engine = published_store
    rec = Recommender(store, engine)
    for group in range(3):
        ratings = {m: 4.5 for m in rated_movie_ids(group)[:3]} | {
            rated_movie_ids((group + 1) % 3)[0]: 1.0
        }
        ns = run_example("new-user-qdrant", client=client, ratings=ratings)
        ids, scores = rec.recommend_for_ratings(ratings, N=10)
        assert [h.id for h in ns["hits"]] == ids.tolist()
        np.testing.assert_allclose([h.score for h in ns["hits"]], scores, rtol=1e-5, atol=1e-6)


def test_a_rated_user_is_a_known_user_for_qdrant(published_store):
    """After `fmstore rate` (Updater.add_ratings), the known-user example finds the new user and
    answers as fmstore does, without what they rated."""
    from fmstore.updates import Updater

    client, store, engine = published_store
    ratings = {m: 5.0 for m in rated_movie_ids(1)[:3]}
    Updater(store, engine).add_ratings({123_456: ratings})
    rec = Recommender(store, engine)
    shared = {"w0": rec.w0, "rating_min": rec.rating_range[0], "rating_max": rec.rating_range[1]}
    ns = run_example("known-user", client=client, user_id=123_456, **shared)
    ids, scores = rec.recommend(123_456, N=10)
    assert [h.id for h in ns["hits"]] == ids.tolist()
    assert not set(ids.tolist()) & set(ratings)
    np.testing.assert_allclose([h.score for h in ns["hits"]], scores, rtol=1e-5, atol=1e-6)
