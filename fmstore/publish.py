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
from fmstore.errors import NotFoundError, StoreError
from fmstore.serving import (  # callers import physical_name, run_id_of from here too
    physical_name,
    ranking_lambda,
    run_id_of,
    whiten_items,
)
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
    progress: ProgressFn | None = None,
) -> PublishResult:
    """Publish a run (the steps are the module docstring's): record it and its movies in the
    catalog, write `movies__<run_id>` and `users__<run_id>` completely, check the counts, then
    switch the aliases. Refuses a corrupt run before writing anything; re-publishing the live,
    complete run is skipped. Which vectors are written: `served_vectors`."""
    manifest = artifact.load_manifest(run_dir)  # refuses a corrupt run before anything is written
    serving = artifact.load_serving(run_dir, manifest)
    vectors = served_vectors(serving, artifact.load_ranking(run_dir, manifest))
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
            config={"train": manifest["config"], "serving": manifest["serving"] | vectors.config},
            metrics=manifest["metrics"],
            artifact_path=str(Path(run_dir).resolve()),
        )
        catalog.upsert_movies(session, movie_rows)

    expected = {movies_coll: len(serving.movie_ids), users_coll: len(serving.user_ids)}
    targets = {movies_alias: movies_coll, users_alias: users_coll}
    if _already_live(store, targets, expected):
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
        k, rank_k = serving.factors, vectors.rank_k
        item_size = vectors.movies["item"].shape[1]
        spec = movies_spec(k, rank_k, item_size, vectors.config["item_distance"])
        store.create_collection(movies_coll, spec, **options)
        _write_movies(store, movies_coll, serving, vectors, movie_rows, batch_size, progress)
        store.create_collection(users_coll, users_spec(k, rank_k), **options)
        _write_users(store, users_coll, serving, vectors, run_dir, batch_size, progress)
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


def _already_live(store: VectorStore, targets: dict[str, str], expected: dict[str, int]) -> bool:
    """Re-publishing the live run changes nothing: its collections are complete and aliased."""
    return all(
        store.resolve_alias(a) == c and store.count(c) == expected[c] for a, c in targets.items()
    )


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


@dataclass
class ServedVectors:
    """The named vectors publish writes, and the serving config that says how to read them."""

    movies: dict[str, np.ndarray]  # item, score, (rank)
    users: dict[str, np.ndarray]  # score, (rank)
    rank_k: int | None
    config: dict  # merged into the catalog's serving config: "ranking", "item_vector", ...


# "movies like x" and the whitened vectors: see serving.whiten_items. Dot, not Cosine: the dot
# product of whitened vectors is exactly the top list of someone who named only x, and it measured
# best (benchmarks/ranking.py, item-to-item table).
ITEM_DISTANCE = "dot"


def served_vectors(
    serving: artifact.ServingArtifact, ranking: artifact.RankingArtifact | None
) -> ServedVectors:
    """score = [q_i, b_i] / [p_u, 1]: the rating FM, exact. With a ranking model: rank =
    [r_i, c_i] / [r_u, 1] and item = the whitened r_i (Dot). Without one (a run trained with
    --no-ranking): item = q_i (Cosine) and the FM's score is the only ranking."""
    ones = np.ones((len(serving.user_ids), 1), np.float32)
    movies = {"score": np.hstack([serving.item_vectors, serving.item_bias[:, None]])}
    users = {"score": np.hstack([serving.user_vectors, ones])}
    if ranking is None:
        movies["item"] = serving.item_vectors
        return ServedVectors(movies, users, None, {"ranking": None, "item_distance": "cosine"})
    lam = ranking_lambda(ranking.reg, ranking.alpha0, ranking.nu, ranking.n_items_train)
    movies["item"] = whiten_items(ranking.item_vectors, ranking.alpha0, lam)
    movies["rank"] = ranking.item_rows
    users["rank"] = np.hstack([ranking.user_vectors, ones])
    rank_k = int(ranking.item_vectors.shape[1])
    config = {
        "ranking": {
            "factors": rank_k,
            "alpha0": ranking.alpha0,
            "reg": ranking.reg,
            "nu": ranking.nu,
            "n_items": ranking.n_items_train,
            "confidence": ranking.confidence,
            "conf_alpha": ranking.conf_alpha,
        },
        "item_distance": ITEM_DISTANCE,
    }
    return ServedVectors(movies, users, rank_k, config)


def _write_movies(
    store,
    coll,
    serving: artifact.ServingArtifact,
    vectors: ServedVectors,
    movie_rows: list[dict],
    batch_size,
    progress,
) -> None:
    payloads = [
        {
            "movie_id": row["movie_id"],
            "title": row["title"],
            "year": row["year"],
            "genres": row["genres"],
            "bias": float(serving.item_bias[m]),
            "n_ratings": row["n_ratings"],
            "mean_rating": row["mean_rating"],
            "run_id": serving.run_id,
        }
        for m, row in enumerate(movie_rows)
    ]
    movies = {name: v.astype(np.float32) for name, v in vectors.movies.items()}
    _batched_upsert(
        store, coll, serving.movie_ids, movies, payloads, batch_size, progress, "movies"
    )


def _write_users(
    store,
    coll,
    serving: artifact.ServingArtifact,
    vectors: ServedVectors,
    run_dir,
    batch_size,
    progress,
) -> None:
    rated = _rated_per_user(run_dir, serving.user_ids)
    payloads = [
        {
            "user_id": int(u),
            "bias": float(b),
            "n_ratings": len(movies),
            "rated": movies,
            "run_id": serving.run_id,
        }
        for u, b, movies in zip(serving.user_ids, serving.user_bias, rated, strict=True)
    ]
    users = {name: v.astype(np.float32) for name, v in vectors.users.items()}
    _batched_upsert(store, coll, serving.user_ids, users, payloads, batch_size, progress, "users")


def _rated_per_user(run_dir: Path, user_ids: np.ndarray) -> list[list[int]]:
    """Each user's rated movie ids (everything the published model saw them rate)."""
    from safetensors.numpy import load_file

    seen = load_file(str(Path(run_dir) / "seen.safetensors"))
    if not np.array_equal(seen["user_ids"], user_ids):
        raise StoreError(
            f"{run_dir}: seen.safetensors and serving.safetensors disagree on users; retrain"
        )
    movie_ids, indptr = seen["movie_ids"].tolist(), seen["indptr"]
    return [movie_ids[indptr[r] : indptr[r + 1]] for r in range(len(user_ids))]


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
