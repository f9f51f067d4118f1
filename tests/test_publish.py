"""Publish: complete collections, atomic alias switch, catalog records; on both engines and both
SQL backends (one test body each)."""

from __future__ import annotations

import numpy as np
import pytest
from planted import GROUPS, MOVIES_PER_GROUP, UNRATED_PER_GROUP, USERS_PER_GROUP
from sqlalchemy.orm import Session

from fmstore import catalog, runs
from fmstore.errors import NotFoundError
from fmstore.publish import prune, publish, rollback, run_id_of

N_MOVIES = len(GROUPS) * (MOVIES_PER_GROUP + UNRATED_PER_GROUP)
N_USERS = len(GROUPS) * USERS_PER_GROUP


class FailingStore:
    """Wraps a store and raises on the n-th upsert: a publish that dies half-way."""

    def __init__(self, store, fail_at: int):
        self._store, self._left = store, fail_at

    def __getattr__(self, name):
        return getattr(self._store, name)

    def upsert(self, *args, **kwargs):
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("injected failure")
        return self._store.upsert(*args, **kwargs)


def test_publish_writes_everything_and_switches_aliases(vector_store, engine, planted_runs):
    run_dir = planted_runs[0]
    result = publish(run_dir, vector_store, engine, batch_size=16)
    run_id = run_dir.name
    assert (result.movies, result.users, result.skipped) == (N_MOVIES, N_USERS, False)
    # named by publication: movies__<run_id>__<token>, users of the same publication
    assert vector_store.resolve_alias("movies") == result.movies_collection
    assert vector_store.resolve_alias("users") == result.users_collection
    assert result.movies_collection.startswith(f"movies__{run_id}__")
    assert result.users_collection == "users" + result.movies_collection[len("movies") :]
    assert run_id_of(result.movies_collection) == run_id
    assert vector_store.count("movies") == N_MOVIES and vector_store.count("users") == N_USERS

    # the stored score vector is [q_i, b_i] exactly, unrated movies included
    serving = runs.load_serving(run_dir)
    unrated = int(serving.movie_ids[-1])
    got = vector_store.retrieve("movies", [unrated], vectors=["score", "item"])[unrated]
    row = int(np.flatnonzero(serving.movie_ids == unrated)[0])
    np.testing.assert_allclose(
        got[0]["score"], np.append(serving.item_vectors[row], serving.item_bias[row]), rtol=1e-6
    )
    assert got[1]["n_ratings"] == 0 and got[1]["run_id"] == run_id and got[1]["genres"] == ["Drama"]

    with Session(engine) as s:
        assert catalog.movie_count(s, run_id) == N_MOVIES
        pubs = catalog.publications(s)
        assert {(p.alias, p.status, p.points) for p in pubs} == {
            ("movies", "succeeded", N_MOVIES),
            ("users", "succeeded", N_USERS),
        }
        assert catalog.get_run(s, run_id).metrics["valid_rmse"] > 0


def test_republish_same_run_is_idempotent(vector_store, engine, planted_runs):
    first = publish(planted_runs[0], vector_store, engine)
    again = publish(planted_runs[0], vector_store, engine)
    assert again.skipped and again.movies == first.movies
    assert vector_store.count("movies") == N_MOVIES


def test_failure_half_way_keeps_previous_publication(vector_store, engine, planted_runs):
    old, new = planted_runs
    live = publish(old, vector_store, engine, batch_size=8)
    with pytest.raises(RuntimeError, match="injected"):
        publish(new, FailingStore(vector_store, fail_at=3), engine, batch_size=8)
    assert vector_store.resolve_alias("movies") == live.movies_collection
    assert vector_store.resolve_alias("users") == live.users_collection
    # the failed publication's collections are dropped: only the live ones remain
    assert vector_store.list_collections() == sorted(
        [live.movies_collection, live.users_collection]
    )
    with Session(engine) as s:
        failed = catalog.publications(s, status="failed")
        assert {p.run_id for p in failed} == {new.name} and all(p.error for p in failed)

    result = publish(new, vector_store, engine, batch_size=8)  # the next attempt succeeds
    assert vector_store.resolve_alias("movies") == result.movies_collection
    assert run_id_of(result.movies_collection) == new.name
    assert vector_store.count("movies") == N_MOVIES


def test_rollback_and_prune(vector_store, engine, planted_runs):
    old, new = planted_runs
    first = publish(old, vector_store, engine)
    publish(new, vector_store, engine)
    assert rollback(vector_store, engine) == old.name
    assert vector_store.resolve_alias("movies") == first.movies_collection
    assert vector_store.resolve_alias("users") == first.users_collection
    with pytest.raises(NotFoundError):
        rollback(vector_store, engine)  # nothing older than `old`


def test_prune_keeps_the_newest_the_live_and_the_rollback_target(
    vector_store, engine, planted_runs
):
    old, new = planted_runs
    first = publish(old, vector_store, engine)
    second = publish(new, vector_store, engine)
    third = publish(old, vector_store, engine)  # old run, new publication
    assert prune(vector_store, engine, keep=3) == []
    # keep=1 keeps the newest (= live) and the rollback target (the second), never less
    deleted = prune(vector_store, engine, keep=1)
    assert deleted == sorted([first.movies_collection, first.users_collection])
    assert vector_store.count("movies") == N_MOVIES
    assert prune(vector_store, engine, keep=1) == []
    assert rollback(vector_store, engine) == new.name
    assert vector_store.resolve_alias("users") == second.users_collection
    with pytest.raises(NotFoundError):
        rollback(vector_store, engine)  # the first publication is gone
    assert (
        vector_store.resolve_alias("movies") == second.movies_collection != third.movies_collection
    )


def test_published_vectors_are_both_models_exactly(vector_store, engine, planted_runs):
    """score = [q_i, b_i] (ratings stay exact), rank = [r_i, c_i] / [r_u, 1], item = whitened r_i:
    its dot products are r_x^T A0^-1 r_j, the one-movie user's ranking."""
    from fmstore.recommend import Recommender
    from fmstore.serving import ranking_lambda

    run_dir = planted_runs[0]
    publish(run_dir, vector_store, engine)
    serving, ranking = runs.load_serving(run_dir), runs.load_ranking(run_dir)
    ids = [int(m) for m in serving.movie_ids[:5]]
    got = vector_store.retrieve("movies", ids, vectors=["score", "rank", "item"])
    R = ranking.item_vectors.astype(np.float64)
    lam = ranking_lambda(ranking.reg, ranking.alpha0, ranking.nu, ranking.n_items_train)
    A0 = ranking.alpha0 * R.T @ R + lam * np.eye(R.shape[1])
    for row, movie in enumerate(ids):
        vectors, payload = got[movie]
        np.testing.assert_allclose(vectors["score"][:-1], serving.item_vectors[row], rtol=1e-5)
        assert vectors["score"][-1] == pytest.approx(serving.item_bias[row], rel=1e-5)
        assert payload["bias"] == pytest.approx(serving.item_bias[row], rel=1e-6)
        np.testing.assert_allclose(vectors["rank"], ranking.item_rows[row], rtol=1e-5, atol=1e-7)
    whitened = np.array([got[m][0]["item"] for m in ids], np.float64)
    exact = R[: len(ids)] @ np.linalg.solve(A0, R[: len(ids)].T)
    np.testing.assert_allclose(whitened @ whitened.T, exact, rtol=1e-3, atol=1e-8)

    # a rating predicted for a hit is the FM's own: w0 + b_u + b_i + <p_u, q_i>
    rec = Recommender(vector_store, engine)
    p_u, b_u = serving.user_vectors[0], float(serving.user_bias[0])
    predicted = rec.predicted_ratings(p_u, b_u, ids)
    fm = serving.w0 + b_u + serving.item_bias[:5] + serving.item_vectors[:5] @ p_u
    np.testing.assert_allclose(predicted, np.clip(fm, 0.5, 5.0), atol=1e-4)
    rec.close()


def test_prune_keep_counts_only_complete_publications(vector_store, engine, planted_runs):
    """issue 18, Medium 6: a failed publication takes no place among the `keep` newest."""
    old, new = planted_runs
    done = [publish(run, vector_store, engine) for run in (old, new, old)]
    with pytest.raises(RuntimeError, match="injected"):
        publish(new, FailingStore(vector_store, fail_at=2), engine, batch_size=8)
    assert prune(vector_store, engine, keep=3) == []
    kept = {c for r in done for c in (r.movies_collection, r.users_collection)}
    assert kept <= set(vector_store.list_collections())


def test_user_payloads_are_built_a_batch_at_a_time_and_read_like_a_list():
    # UserPayloads holds the rated movies as one array: any slice or index gives the payloads an
    # eager list would hold
    from types import SimpleNamespace

    from fmstore.publish.points import UserPayloads

    serving = SimpleNamespace(
        user_ids=np.array([3, 5, 9]), user_bias=np.array([0.5, -1.0, 0.0], np.float32), run_id="r"
    )
    movies, indptr = np.array([10, 11, 12, 20, 21]), np.array([0, 3, 3, 5])
    payloads = UserPayloads(serving, (movies, indptr))
    eager = [
        {"user_id": 3, "bias": 0.5, "n_ratings": 3, "rated": [10, 11, 12], "run_id": "r"},
        {"user_id": 5, "bias": -1.0, "n_ratings": 0, "rated": [], "run_id": "r"},
        {"user_id": 9, "bias": 0.0, "n_ratings": 2, "rated": [20, 21], "run_id": "r"},
    ]
    assert len(payloads) == 3 and payloads[0:3] == eager and payloads[1:10] == eager[1:]
    assert payloads[-1] == eager[-1] and payloads[::2] == eager[::2] and payloads[2:1] == []
    assert all(type(m) is int for m in payloads[0]["rated"])
