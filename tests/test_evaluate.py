"""Evaluation: metric functions on hand-computed cases, baselines, runs and cold start on the
planted fixture (where the right answer is known: users in group g love movies in group g)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from planted import GROUPS, group_of_movie, group_of_user

from fmstore import datasets
from fmstore import evaluate as ev
from fmstore.config import TrainConfig
from fmstore.datasets import Dataset, Ratings
from fmstore.errors import ConfigError, DataError
from fmstore.serving import fold_in
from fmstore.train import train


def ratings(rows) -> Ratings:
    a = np.array(rows, dtype=np.float64).reshape(-1, 3)
    n = len(a)
    return Ratings(
        a[:, 0].astype(np.int64),
        a[:, 1].astype(np.int64),
        a[:, 2].astype(np.float32),
        np.arange(n, dtype=np.int64),
    )


# ---- metric primitives -------------------------------------------------------------------------


def test_rmse_and_mae():
    assert ev.rmse([1.0, 2.0, 4.0], [2.0, 2.0, 2.0]) == pytest.approx(math.sqrt(5 / 3))
    assert ev.mae([1.0, 2.0, 4.0], [2.0, 2.0, 2.0]) == pytest.approx(1.0)


def test_recall_and_ndcg_exact_values():
    hits = np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], bool)
    n_rel = np.array([2, 3, 5])
    np.testing.assert_allclose(ev.recall_at_k(hits, n_rel, 2), [0.5, 0.0, 0.2])
    np.testing.assert_allclose(ev.recall_at_k(hits, n_rel, 4), [1.0, 0.0, 0.2])
    # implicit's definition: hits / min(k, relevant); user 2 (5 relevant, 1 hit in the top 2)
    np.testing.assert_allclose(ev.capped_recall_at_k(hits, n_rel, 2), [0.5, 0.0, 0.5])
    np.testing.assert_allclose(ev.capped_recall_at_k(hits, n_rel, 4), [1.0, 0.0, 0.25])
    # user 0: DCG = 1/log2(2) + 1/log2(4) = 1.5; ideal (2 relevant) = 1 + 1/log2(3)
    # user 2: DCG = 1/log2(3); ideal (min(5, 4) = 4 hits) = 1 + 1/log2(3) + 1/2 + 1/log2(5)
    ideal4 = 1 + 1 / math.log2(3) + 0.5 + 1 / math.log2(5)
    np.testing.assert_allclose(
        ev.ndcg_at_k(hits, n_rel, 4),
        [1.5 / (1 + 1 / math.log2(3)), 0.0, (1 / math.log2(3)) / ideal4],
    )
    assert ev.ndcg_at_k(np.ones((1, 3), bool), np.array([3]), 3)[0] == pytest.approx(1.0)


def test_top_k_is_sorted_best_first():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    assert ev.top_k(scores, 2).tolist() == [[1, 3], [0, 1]]
    assert ev.top_k(scores, 10).tolist() == [[1, 3, 2, 0], [0, 1, 2, 3]]


class Fixed:
    """A predictor with given score rows."""

    def __init__(self, scores):
        self.s = np.asarray(scores, np.float32)

    def predict(self, users, items):
        return self.s[users, items]

    def scores(self, users):
        return self.s[users]


def test_ranking_excludes_training_items_and_skips_users_without_relevant_items():
    # user 0 ranks items 1,2,3,4 (item 0 was rated in training): relevant {2, 4} -> hits [0, 1]
    # user 1 has no relevant held-out item: skipped. Relevant item 0 of user 0 is also a training
    # item and does not count.
    predictor = Fixed([[5, 4, 3, 2, 1], [5, 4, 3, 2, 1]])
    exclude = ev.CSR.build(np.array([0]), np.array([0]), 2)
    relevant = ev.CSR.build(np.array([0, 0, 0]), np.array([2, 4, 0]), 2)
    m = ev.ranking_metrics(
        predictor, exclude, relevant, np.array([0, 1]), 5, recall_ks=(2, 4), ndcg_k=2
    )
    assert m["users_ranked"] == 1
    assert m["recall@2"] == pytest.approx(0.5) and m["recall@4"] == pytest.approx(1.0)
    assert m["capped_recall@2"] == pytest.approx(0.5) and m["capped_recall@4"] == 1.0
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_top_hits_kernel_matches_the_numpy_path():
    # random scores without ties, training items, relevant items (some also seen) and blocked
    # movies: the numba kernel's hits and counts are the NumPy argpartition path's
    from fmstore.evaluate import topk

    rng = np.random.default_rng(3)
    n_users, n_items, depth = 300, 500, 20
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float32)
    seen_u, seen_i = rng.integers(0, n_users, 20_000), rng.integers(0, n_items, 20_000)
    rel_u, rel_i = rng.integers(0, n_users, 400), rng.integers(0, n_items, 400)
    exclude = ev.CSR.build(seen_u, seen_i, n_users)
    relevant = ev.CSR.build(rel_u, rel_i, n_users)
    blocked = rng.random(n_items) < 0.05
    rows = rng.permutation(n_users)[:200]
    hits, n_rel = topk.top_hits(scores[rows], rows, exclude, relevant, depth, blocked)
    want_hits, want_n = topk._top_hits_numpy(scores[rows], rows, exclude, relevant, depth, blocked)
    np.testing.assert_array_equal(n_rel, want_n)
    np.testing.assert_array_equal(hits[n_rel > 0], want_hits[n_rel > 0])
    assert hits.any() and (n_rel == 0).any()


def test_top_hits_ranks_ties_in_column_order():
    from fmstore.evaluate import topk

    scores = np.array([[1.0, 2.0, 2.0, 2.0, 0.0]], np.float32)
    empty = ev.CSR.build(np.zeros(0, np.int64), np.zeros(0, np.int64), 1)
    relevant = ev.CSR.build(np.array([0]), np.array([3]), 1)
    hits, n_rel = topk.top_hits(scores, np.array([0]), empty, relevant, 3)
    assert hits.tolist() == [[False, False, True]] and n_rel.tolist() == [1]


def test_csr_block_gathers_rows_in_any_order():
    csr = ev.CSR.build(np.array([2, 0, 2, 1]), np.array([7, 5, 8, 6]), 3)
    local, items = csr.block(np.array([2, 0]))
    assert sorted(zip(local.tolist(), items.tolist())) == [(0, 7), (0, 8), (1, 5)]


# ---- baselines ---------------------------------------------------------------------------------


def test_popularity_counts_and_means():
    pop = ev.fit_popularity(np.array([0, 0, 1]), np.array([4.0, 5.0, 1.0]), 3)
    assert pop.counts.tolist() == [2, 1, 0]
    # a movie nobody rated gets the global mean
    np.testing.assert_allclose(pop.predict(np.zeros(3, int), np.arange(3)), [4.5, 1.0, 10 / 3])
    assert ev.top_k(pop.scores(np.array([0])), 3)[0].tolist() == [0, 1, 2]


def test_biases_match_surprise_als_loop():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 6, 40), rng.integers(0, 5, 40)
    r = rng.choice([1.0, 2.5, 3.0, 4.0, 5.0], 40)
    fitted = ev.fit_biases(u, i, r, 7, 6, sweeps=3)
    # surprise.prediction_algorithms.optimize_baselines.baseline_als, written out
    mu, bu, bi = r.mean(), np.zeros(7), np.zeros(6)
    for _ in range(3):
        for item in range(6):
            rows = i == item
            bi[item] = np.sum(r[rows] - mu - bu[u[rows]]) / (10 + rows.sum())
        for user in range(7):
            rows = u == user
            bu[user] = np.sum(r[rows] - mu - bi[i[rows]]) / (15 + rows.sum())
    np.testing.assert_allclose(fitted.user_bias, bu, atol=1e-6)
    np.testing.assert_allclose(fitted.item_bias, bi, atol=1e-6)
    assert fitted.w0 == pytest.approx(mu)


def test_biases_recover_an_additive_matrix():
    a, b = np.array([-0.5, 0.0, 0.5]), np.array([1.0, -1.0, 0.0, 0.5])
    u, i = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    r = 3.0 + a[u] + b[i]
    fitted = ev.fit_biases(u, i, r, 3, 4, reg_user=0.0, reg_item=0.0, sweeps=50)
    np.testing.assert_allclose(fitted.predict(u, i), r, atol=1e-5)
    assert ev.top_k(fitted.scores(np.array([0])), 4)[0].tolist() == [0, 3, 2, 1]


def test_evaluate_predictors_on_a_tiny_synthetic_case():
    # users 1, 2; movies 10, 20, 30 (movies.csv order 30, 10, 20)
    train_r = ratings([[1, 10, 5], [1, 20, 3], [2, 10, 4]])
    test_r = ratings([[1, 30, 4], [2, 20, 5], [2, 30, 2]])
    rows = ev.Rows(np.array([1, 2]), np.array([30, 10, 20]))
    report = ev.evaluate_predictors(
        ev.baselines(train_r, rows), train_r, test_r, rows, recall_ks=(1, 2), ndcg_k=1
    )
    pop = report[ev.POPULARITY]
    # popularity predicts movie means: 30 -> global mean 4, 20 -> 3
    assert pop["rmse"] == pytest.approx(ev.rmse([4.0, 3.0, 4.0], [4, 5, 2]))
    # user 1 ranks only movie 30 (relevant) -> hit; user 2 ranks 20 (1 rating) over 30 (0): hit
    assert pop["users_ranked"] == 2 and pop["recall@1"] == pytest.approx(1.0)


def test_unknown_users_and_movies_are_handled():
    rows = ev.Rows(np.array([1, 2]), np.array([30, 10, 20]))
    assert rows.users(np.array([2, 9])).tolist() == [1, 2]  # 9 -> the "unknown user" row
    with pytest.raises(DataError, match="movie 99"):
        rows.items(np.array([99]))


# ---- runs on the planted fixture -----------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_report(planted_runs):
    return ev.evaluate_run(planted_runs[0])


def test_run_model_beats_popularity_on_planted(planted_report):
    m, pop = planted_report.rows[ev.MODEL], planted_report.rows[ev.POPULARITY]
    assert m["recall@10"] > pop["recall@10"] + 0.2, planted_report.rows
    assert m["ndcg@10"] > pop["ndcg@10"] + 0.2
    assert m["rmse"] < planted_report.rows[ev.BIASES]["rmse"] and m["rmse"] < pop["rmse"]


def test_run_metrics_agree_with_training(planted_runs, planted_report):
    """The NumPy serving form reproduces the torch model's validation RMSE exactly."""
    manifest = json.loads((planted_runs[0] / "manifest.json").read_text())
    assert planted_report.n_test == manifest["metrics"]["n_valid"]
    assert planted_report.rows[ev.MODEL]["rmse"] == pytest.approx(
        manifest["metrics"]["valid_rmse"], abs=1e-5
    )
    assert planted_report.rows[ev.MODEL]["mae"] == pytest.approx(
        manifest["metrics"]["valid_mae"], abs=1e-5
    )


def test_sigmoid_link_serving_form_matches_training(planted_dataset, planted_train):
    config = TrainConfig(**(planted_train | dict(epochs=5, link="sigmoid")))
    result = train(planted_dataset, config)
    report = ev.evaluate_result(result, planted_dataset, config)
    assert report.rows[ev.MODEL]["rmse"] == pytest.approx(result.metrics["valid_rmse"], abs=1e-5)


def test_run_with_test_ratings_file(planted_runs, tmp_path):
    test_file = tmp_path / "test.csv"
    # one in-group rating per group, as if from a later period
    test_file.write_text("userId,movieId,rating,timestamp\n1,1,5.0,1\n31,15,5.0,2\n61,29,4.5,3\n")
    report = ev.evaluate_run(planted_runs[0], test_ratings=test_file)
    assert report.n_test == 3 and report.test_source == str(test_file)


def test_run_refuses_another_dataset(planted_runs, planted_dataset, tmp_path):
    from planted import write_planted

    other = datasets.load_dataset(write_planted(tmp_path / "other", seed=5))
    with pytest.raises(DataError, match="fingerprint"):
        ev.evaluate_run(planted_runs[0], dataset=other)


def test_run_whose_dataset_moved(planted_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(planted_runs[0], run)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["dataset"]["source"] = str(tmp_path / "gone")
    (run / "manifest.json").write_text(json.dumps(manifest))  # not a listed (hashed) file
    with pytest.raises(DataError, match="no longer there"):
        ev.evaluate_run(run)


# ---- cold start ----------------------------------------------------------------------------------


def test_cold_start_split_holds_users_and_movies_out():
    rng = np.random.default_rng(1)
    r = ratings(
        np.column_stack(
            [rng.integers(1, 51, 500), rng.integers(1, 41, 500), rng.integers(1, 6, 500)]
        )
    )
    split = ev.cold_start_split(r, user_fraction=0.2, movie_fraction=0.1, seed=3)
    assert len(split.user_ids) == 10 and len(split.movie_ids) == 4
    assert not np.isin(split.train.user_id, split.user_ids).any()
    assert not np.isin(split.train.movie_id, split.movie_ids).any()
    assert np.isin(split.cold_users.user_id, split.user_ids).all()
    assert not np.isin(split.cold_users.movie_id, split.movie_ids).any()
    assert np.isin(split.cold_movies.movie_id, split.movie_ids).all()
    again = ev.cold_start_split(r, user_fraction=0.2, movie_fraction=0.1, seed=3)
    assert np.array_equal(again.user_ids, split.user_ids)
    with pytest.raises(ConfigError):
        ev.cold_start_split(r, user_fraction=1.0)


@pytest.fixture(scope="module")
def cold_planted(planted_dataset, planted_train):
    split = ev.cold_start_split(
        planted_dataset.ratings, user_fraction=0.2, movie_fraction=0.1, seed=0
    )
    # planted timestamps follow movie ids, so a user's "first" ratings would all be of group 0:
    # shuffle them, so that the first n ratings are a random sample
    split.cold_users.timestamp = np.random.default_rng(0).permutation(len(split.cold_users))
    warm = Dataset(
        "planted",
        planted_dataset.source,
        planted_dataset.fingerprint,
        split.train,
        planted_dataset.movies,
    )
    config = TrainConfig(**planted_train)
    return split, train(warm, config), config


def test_fold_in_gets_the_group_right(planted_dataset, cold_planted):
    split, result, config = cold_planted
    form = result.model.serving_form()
    rows = ev.Rows(result.vocab.user_ids, planted_dataset.movies.movie_id)
    rated = np.isin(planted_dataset.movies.movie_id, np.unique(split.train.movie_id))
    checked = 0
    for user in split.user_ids:
        mine = split.cold_users.take(split.cold_users.user_id == user)
        first = np.argsort(mine.timestamp, kind="stable")[:5]
        if (mine.rating[first] < 4).all():
            continue  # only dislikes: which of the two other groups is not determined
        checked += 1
        items = rows.items(mine.movie_id[first])
        p, b_u = fold_in(
            form.item_vectors[items],
            form.item_bias[items],
            mine.rating[first],
            w0=form.w0,
            weight_decay=config.weight_decay,
            prior=config.prior_reg,
        )
        scores = form.item_bias + form.item_vectors @ p
        top = planted_dataset.movies.movie_id[rated][np.argsort(-scores[rated])][:5]
        assert all(group_of_movie(int(m)) == group_of_user(int(user)) for m in top), (user, top)
    assert checked >= len(split.user_ids) // 2


def test_cold_users_fold_in_beats_weighted_and_popularity(planted_dataset, cold_planted):
    split, result, config = cold_planted
    form = result.model.serving_form()
    rows = ev.evaluate_cold_users(
        form.item_vectors,
        form.item_bias,
        form.w0,
        config.weight_decay,
        prior=config.prior_reg,
        movies=planted_dataset.movies,
        train=result.train_ratings,
        cold=split.cold_users,
        sizes=(3, 5, 10),
        blocked_movie_ids=split.movie_ids,
    )
    by = {(r["method"], r["n"]): r for r in rows}
    assert {r["users"] for r in rows} == {len(split.user_ids)}
    for n in (3, 5, 10):
        fold, pop, weighted = by[ev.FOLD_IN, n], by[ev.POPULARITY, n], by[ev.WEIGHTED, n]
        assert fold["recall@10"] > pop["recall@10"] + 0.2, rows
        assert fold["rmse"] < weighted["rmse"] and fold["rmse"] < pop["rmse"], rows
        assert n < 5 or fold["rmse"] < 1.0, rows  # ratings are 1-2 or 4.5-5: a group guess is ~1.6


def test_cold_movies_are_scored_from_their_genre(planted_dataset, cold_planted):
    split, result, config = cold_planted
    form = result.model.serving_form()
    model = ev.BiasedMF.from_serving(
        form.item_vectors, form.item_bias, form.user_vectors, form.user_bias, form.w0
    )
    rows = {
        r["method"]: r
        for r in ev.evaluate_cold_movies(
            model,
            result.vocab.user_ids,
            movies=planted_dataset.movies,
            train=result.train_ratings,
            cold=split.cold_movies,
        )
    }
    # the genre feature carries part of the group structure (the movie id the rest): about 1.2
    # against 1.6-1.7 without it, where random group guessing would be ~1.8
    genre = rows["model (genre + year)"]["rmse"]
    assert genre < rows["model w0 + b_u (no movie features)"]["rmse"] - 0.3, rows
    assert genre < rows["global mean"]["rmse"] - 0.3, rows
    assert genre < rows[ev.BIASES + " (b_i = 0)"]["rmse"] - 0.3, rows


def test_run_cold_start_end_to_end(planted_dataset, planted_train):
    config = TrainConfig(**(planted_train | dict(epochs=15)))
    report = ev.run_cold_start(
        planted_dataset, config, user_fraction=0.1, movie_fraction=0.1, sizes=(5, 10)
    )
    assert report.n_cold_users == 9 and report.n_cold_movies == round(len(GROUPS) * 12 * 0.1)
    assert {r["n"] for r in report.users} == {5, 10} and len(report.movies) == 4
    json.dumps(report.to_json())


# ---- CLI ---------------------------------------------------------------------------------------------


def test_cli_evaluate_json_and_table(planted_runs, tmp_path, fmstore_cli):
    result = fmstore_cli(tmp_path, "evaluate", str(planted_runs[0]), "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload["metrics"]) == {ev.MODEL, ev.SERVED, ev.POPULARITY, ev.BIASES}
    for ranked in (ev.MODEL, ev.SERVED):  # what is served: the ranking model's order
        assert (
            payload["metrics"][ranked]["recall@10"] > payload["metrics"][ev.POPULARITY]["recall@10"]
        )
    # the stars shown beside the served list are the rating model's
    assert payload["metrics"][ev.SERVED]["rmse"] == payload["metrics"][ev.MODEL]["rmse"]
    table = fmstore_cli(tmp_path, "evaluate", str(planted_runs[0]))
    assert table.returncode == 0 and "Recall@10" in table.stdout and ev.BIASES in table.stdout
    assert "capped Recall@10" in table.stdout and "min(K, relevant)" in table.stdout
    model = payload["metrics"][ev.MODEL]
    assert model["capped_recall@10"] >= model["recall@10"]  # min(10, relevant) <= relevant


def test_cli_evaluate_bad_input_is_one_line(
    planted_runs, tmp_path, fmstore_cli, assert_one_line_error
):
    assert_one_line_error(fmstore_cli(tmp_path, "evaluate", "no-such-run"), "no-such-run")
    missing = str(tmp_path / "missing.csv")
    result = fmstore_cli(tmp_path, "evaluate", str(planted_runs[0]), "--test-ratings", missing)
    assert_one_line_error(result, "missing.csv")
