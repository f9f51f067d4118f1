"""Publish a run: movies and users into new physical Qdrant collections, then one alias switch.

Order of work, so that readers only ever see a complete publication:
  1. verify the run folder (sha256 of every file), make sure the catalog schema is current;
  2. record the run and the movie catalog rows, open a "running" publication row per alias;
  3. write `movies__<run_id>` and `users__<run_id>` completely, in batches, and check the counts;
  4. switch both aliases (each switch is one atomic operation), mark the publications succeeded.
Any failure before step 4 leaves the aliases where they were and marks the publications failed.

This module orchestrates artifact + catalog + vectors; it imports no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from fmstore import artifact, catalog
from fmstore.config import POPULARITY_WEIGHT
from fmstore.errors import NotFoundError, StoreError
from fmstore.serving import physical_name, run_id_of  # callers import these from here too
from fmstore.vectors import VectorStore, movies_spec, users_spec

ProgressFn = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class PublishResult:
    """What publish() did: the run, its physical collections, point counts, and whether it was
    skipped (already live and complete)."""

    run_id: str
    movies_collection: str
    users_collection: str
    movies: int
    users: int
    skipped: bool  # True when the run was already live and complete: nothing was rewritten


def publish(
    run_dir: Path,
    store: VectorStore,
    engine: Engine,
    *,
    movies_alias: str = "movies",
    users_alias: str = "users",
    batch_size: int = 1024,
    shards: int | None = None,
    replicas: int | None = None,
    write_consistency: int | None = None,
    popularity_weight: float = POPULARITY_WEIGHT,
    progress: ProgressFn | None = None,
) -> PublishResult:
    """Publish a run (the steps are the module docstring's): record it and its movies in the
    catalog, write `movies__<run_id>` and `users__<run_id>` completely, check the counts, then
    switch the aliases. Refuses a corrupt run before writing anything; re-publishing the live,
    complete run is skipped. `popularity_weight` sets the ranking prior
    boost_i = weight * log1p(n_ratings_i)."""
    manifest = artifact.load_manifest(run_dir)  # refuses a corrupt run before anything is written
    serving = artifact.load_serving(run_dir, manifest)
    movie_rows = artifact.load_movie_rows(run_dir)
    run_id = manifest["run_id"]
    movies_coll, users_coll = (
        physical_name(movies_alias, run_id),
        physical_name(users_alias, run_id),
    )

    catalog.ensure_schema(engine)
    with Session(engine) as session, session.begin():
        catalog.record_run(
            session,
            run_id=run_id,
            created_at=_parse_time(manifest["created_at"]),
            dataset_name=manifest["dataset"]["name"],
            dataset_fingerprint=manifest["dataset"]["fingerprint"],
            config={"train": manifest["config"], "serving": manifest["serving"]},
            metrics=manifest["metrics"],
            artifact_path=str(Path(run_dir).resolve()),
        )
        catalog.upsert_movies(session, movie_rows)

    expected = {movies_coll: len(serving.movie_ids), users_coll: len(serving.user_ids)}
    if popularity_weight < 0:
        from fmstore.errors import ConfigError

        raise ConfigError(
            f"--popularity-weight {popularity_weight}: use 0 (pure FM ranking) or more"
        )
    targets = {movies_alias: movies_coll, users_alias: users_coll}
    if _already_live(store, targets, expected, serving.movie_ids[0], popularity_weight):
        _record_noop(engine, run_id, store.backend, targets, expected)
        return PublishResult(
            run_id, movies_coll, users_coll, expected[movies_coll], expected[users_coll], True
        )

    pubs = {}
    with Session(engine) as session, session.begin():
        for alias, coll in ((movies_alias, movies_coll), (users_alias, users_coll)):
            pubs[alias] = catalog.start_publication(
                session, run_id=run_id, backend=store.backend, alias=alias, collection=coll
            )

    options = dict(shards=shards, replicas=replicas, write_consistency=write_consistency)
    try:
        k = serving.factors
        store.create_collection(movies_coll, movies_spec(k), **options)
        _write_movies(
            store, movies_coll, serving, movie_rows, popularity_weight, batch_size, progress
        )
        store.create_collection(users_coll, users_spec(k), **options)
        _write_users(store, users_coll, serving, run_dir, batch_size, progress)
        for coll, n in expected.items():
            got = store.count(coll)
            if got != n:
                raise StoreError(
                    f"{coll} holds {got} points after publishing, expected {n}; publish again"
                )
        store.switch_alias(movies_alias, movies_coll)
        store.switch_alias(users_alias, users_coll)
    except BaseException as exc:
        _finish(engine, pubs, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    _finish(
        engine,
        pubs,
        "succeeded",
        points={movies_alias: expected[movies_coll], users_alias: expected[users_coll]},
    )
    return PublishResult(
        run_id, movies_coll, users_coll, expected[movies_coll], expected[users_coll], False
    )


def _already_live(
    store: VectorStore, targets: dict[str, str], expected: dict[str, int], probe_id, weight
) -> bool:
    """Re-publishing the live run with the same options changes nothing: its collections are
    complete, aliased, and were written with the same popularity weight."""
    if not all(
        store.resolve_alias(a) == c and store.count(c) == expected[c] for a, c in targets.items()
    ):
        return False
    movies_coll = next(iter(targets.values()))
    payload = store.retrieve(movies_coll, [int(probe_id)]).get(int(probe_id), ({}, {}))[1]
    return payload.get("popularity_weight") == weight


def _record_noop(engine, run_id, backend, targets, expected) -> None:
    with Session(engine) as session, session.begin():
        for alias, coll in targets.items():
            pub = catalog.start_publication(
                session, run_id=run_id, backend=backend, alias=alias, collection=coll
            )
            catalog.finish_publication(session, pub, status="succeeded", points=expected[coll])


def _finish(
    engine,
    pubs: dict[str, int],
    status: str,
    *,
    points: dict | None = None,
    error: str | None = None,
) -> None:
    with Session(engine) as session, session.begin():
        for alias, pub in pubs.items():
            catalog.finish_publication(
                session, pub, status=status, points=(points or {}).get(alias), error=error
            )


def _write_movies(
    store,
    coll,
    serving: artifact.ServingArtifact,
    movie_rows: list[dict],
    popularity_weight,
    batch_size,
    progress,
) -> None:
    # `score` = [q_i, b_i + boost_i]: a Dot product with [p_u, 1] gives b_i + <p_u, q_i> + boost_i,
    # the FM ranking with the popularity prior (exactly the FM ranking when the weight is 0).
    n_ratings = np.array([row["n_ratings"] for row in movie_rows], dtype=np.float64)
    boost = (popularity_weight * np.log1p(n_ratings)).astype(np.float32)
    score = np.hstack([serving.item_vectors, (serving.item_bias + boost)[:, None]]).astype(
        np.float32
    )
    payloads = [
        {
            "movie_id": row["movie_id"],
            "title": row["title"],
            "year": row["year"],
            "genres": row["genres"],
            "bias": float(serving.item_bias[m]),
            "popularity_boost": float(boost[m]),
            "popularity_weight": popularity_weight,
            "n_ratings": row["n_ratings"],
            "mean_rating": row["mean_rating"],
            "run_id": serving.run_id,
        }
        for m, row in enumerate(movie_rows)
    ]
    vectors = {"item": serving.item_vectors, "score": score}
    _batched_upsert(
        store, coll, serving.movie_ids, vectors, payloads, batch_size, progress, "movies"
    )


def _write_users(
    store, coll, serving: artifact.ServingArtifact, run_dir, batch_size, progress
) -> None:
    n_ratings = _ratings_per_user(run_dir, serving.user_ids)
    score = np.hstack([serving.user_vectors, np.ones((len(serving.user_ids), 1), np.float32)])
    payloads = [
        {"user_id": int(u), "bias": float(b), "n_ratings": int(n), "run_id": serving.run_id}
        for u, b, n in zip(serving.user_ids, serving.user_bias, n_ratings, strict=False)
    ]
    _batched_upsert(
        store, coll, serving.user_ids, {"score": score}, payloads, batch_size, progress, "users"
    )


def _ratings_per_user(run_dir: Path, user_ids: np.ndarray) -> np.ndarray:
    from safetensors.numpy import load_file

    seen = load_file(str(Path(run_dir) / "seen.safetensors"))
    if not np.array_equal(seen["user_ids"], user_ids):
        raise StoreError(
            f"{run_dir}: seen.safetensors and serving.safetensors disagree on users; retrain"
        )
    return np.diff(seen["indptr"])


def _batched_upsert(store, coll, ids, vectors, payloads, batch_size, progress, what) -> None:
    n = len(ids)
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        store.upsert(
            coll, ids[start:end], {k: v[start:end] for k, v in vectors.items()}, payloads[start:end]
        )
        if progress:
            progress(what, end, n)


def _parse_time(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)


# ---- rollback and prune ------------------------------------------------------------------------


def rollback(
    store: VectorStore, engine: Engine, *, movies_alias: str = "movies", users_alias: str = "users"
) -> str:
    """Point both aliases back at the previous succeeded publication; returns its run id.

    The publications being left are marked rolled_back, so a second rollback goes one further back."""
    with Session(engine) as session, session.begin():
        live = store.resolve_alias(movies_alias)
        history = [p for p in catalog.publications(session, alias=movies_alias, status="succeeded")]
        older = [
            p for p in history if p.collection != live and store.collection_exists(p.collection)
        ]
        if live is None or not older:
            raise NotFoundError(
                f"no earlier complete publication of {movies_alias!r} to roll back to"
            )
        target_run = older[0].run_id
        users_target = physical_name(users_alias, target_run)
        if not store.collection_exists(users_target):
            raise NotFoundError(f"{users_target} was pruned; cannot roll back to run {target_run}")
        store.switch_alias(movies_alias, older[0].collection)
        store.switch_alias(users_alias, users_target)
        catalog.mark_rolled_back(
            session, run_id=run_id_of(live), aliases=(movies_alias, users_alias)
        )
        return target_run


def prune(
    store: VectorStore, engine: Engine, keep: int, *, aliases: tuple[str, ...] = ("movies", "users")
) -> list[str]:
    """Delete all but the `keep` most recently published physical collections of each alias,
    never the live one. Order comes from the catalog's publications; collections it does not
    know (left by a failed publish) count as the oldest."""
    if keep < 1:
        from fmstore.errors import ConfigError

        raise ConfigError(f"--prune {keep}: keep at least 1 collection")
    deleted = []
    for alias in aliases:
        live = store.resolve_alias(alias)
        with Session(engine) as session:
            newest_first = [p.collection for p in catalog.publications(session, alias=alias)]
        order = {coll: rank for rank, coll in enumerate(dict.fromkeys(newest_first))}
        physical = [c for c in store.list_collections() if c.startswith(f"{alias}__")]
        physical.sort(key=lambda c: order.get(c, len(order)))
        for coll in physical[keep:]:
            if coll != live:
                store.delete_collection(coll)
                deleted.append(coll)
    return deleted
