"""Publish: complete collections, atomic alias switch, catalog records; on both engines and both
SQL backends (one test body each)."""

from __future__ import annotations

import numpy as np
import pytest
from planted import GROUPS, MOVIES_PER_GROUP, UNRATED_PER_GROUP, USERS_PER_GROUP
from sqlalchemy.orm import Session

from fmstore import artifact, catalog
from fmstore.errors import NotFoundError
from fmstore.publish import physical_name, prune, publish, rollback

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
    assert vector_store.resolve_alias("movies") == physical_name("movies", run_id)
    assert vector_store.resolve_alias("users") == physical_name("users", run_id)
    assert vector_store.count("movies") == N_MOVIES and vector_store.count("users") == N_USERS

    # the stored score vector is [q_i, b_i] exactly, unrated movies included
    serving = artifact.load_serving(run_dir)
    unrated = int(serving.movie_ids[-1])
    got = vector_store.retrieve("movies", [unrated], vectors=["score", "item"])[unrated]
    row = int(np.flatnonzero(serving.movie_ids == unrated)[0])
    np.testing.assert_allclose(
        got[0]["score"], np.append(serving.item_vectors[row], serving.item_bias[row]), rtol=1e-6
    )
    assert got[1]["n_ratings"] == 0 and got[1]["run_id"] == run_id and got[1]["genres"] == ["Drama"]

    with Session(engine) as s:
        assert catalog.movie_count(s) == N_MOVIES
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
    publish(old, vector_store, engine, batch_size=8)
    with pytest.raises(RuntimeError, match="injected"):
        publish(new, FailingStore(vector_store, fail_at=3), engine, batch_size=8)
    assert vector_store.resolve_alias("movies") == physical_name("movies", old.name)
    assert vector_store.resolve_alias("users") == physical_name("users", old.name)
    with Session(engine) as s:
        failed = catalog.publications(s, status="failed")
        assert {p.run_id for p in failed} == {new.name} and all(p.error for p in failed)

    publish(new, vector_store, engine, batch_size=8)  # the next attempt succeeds
    assert vector_store.resolve_alias("movies") == physical_name("movies", new.name)
    assert vector_store.count("movies") == N_MOVIES


def test_rollback_and_prune(vector_store, engine, planted_runs):
    old, new = planted_runs
    publish(old, vector_store, engine)
    publish(new, vector_store, engine)
    assert rollback(vector_store, engine) == old.name
    assert vector_store.resolve_alias("movies") == physical_name("movies", old.name)
    assert vector_store.resolve_alias("users") == physical_name("users", old.name)
    with pytest.raises(NotFoundError):
        rollback(vector_store, engine)  # nothing older than `old`


def test_prune_keeps_the_newest_and_the_live(vector_store, engine, planted_runs):
    old, new = planted_runs
    publish(old, vector_store, engine)
    publish(new, vector_store, engine)
    assert prune(vector_store, engine, keep=2) == []
    deleted = prune(vector_store, engine, keep=1)
    assert set(deleted) == {physical_name("movies", old.name), physical_name("users", old.name)}
    assert vector_store.count("movies") == N_MOVIES
    with pytest.raises(NotFoundError):
        rollback(vector_store, engine)  # the earlier publication is gone


def test_popularity_prior_is_in_the_score_and_ratings_stay_exact(
    vector_store, engine, planted_runs
):
    from fmstore.recommend import Recommender

    run_dir = planted_runs[0]
    publish(run_dir, vector_store, engine, popularity_weight=0.5)
    serving = artifact.load_serving(run_dir)
    rows = {r["movie_id"]: r for r in artifact.load_movie_rows(run_dir)}
    movie = int(serving.movie_ids[0])
    vectors, payload = vector_store.retrieve("movies", [movie], vectors=["score"])[movie]
    boost = 0.5 * np.log1p(rows[movie]["n_ratings"])
    assert payload["popularity_boost"] == pytest.approx(boost, rel=1e-6) and boost > 0
    assert vectors["score"][-1] == pytest.approx(serving.item_bias[0] + boost, rel=1e-5)

    # a rating predicted from a hit is still the FM's own: w0 + b_u + b_i + <p_u, q_i>
    rec = Recommender(vector_store, engine)
    p_u, b_u = serving.user_vectors[0], float(serving.user_bias[0])
    ids, scores = rec.rank_for_vector(p_u, N=5)
    for movie_id, score in zip(ids.tolist(), scores.tolist()):
        i = int(np.flatnonzero(serving.movie_ids == movie_id)[0])
        fm = serving.w0 + b_u + serving.item_bias[i] + serving.item_vectors[i] @ p_u
        boost_i = rec.movie_info([movie_id])[movie_id]["popularity_boost"]
        assert rec.predict_rating(b_u, score, boost_i) == pytest.approx(
            min(max(fm, 0.5), 5.0), abs=1e-4
        )
    rec.close()

    # re-publishing with another weight rewrites the collection instead of skipping it
    assert not publish(run_dir, vector_store, engine, popularity_weight=0.0).skipped
