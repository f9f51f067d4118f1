"""The ranking model (fmstore/train/ranking.py): it finds the planted groups, its stored user
vectors solve their normal equations exactly, it warm-starts and reports progress, and its
serving math (whitening, fold-in) is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted import GROUPS, group_of_movie, group_of_user, rated_movie_ids, write_planted

from fmstore import runs
from fmstore.config import RankingConfig
from fmstore.features import Vocabulary, encode, ranking_item_features
from fmstore.serving import implicit_weight, ranking_lambda, whiten_items, whitened_fold_in
from fmstore.threads import apply_threads
from fmstore.train import ranking, ranking_blocks
from fmstore.train.ranking import fit_ranking

# planted users rate at random: only the confidence in liked movies tells their taste
CONFIG = RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=8)


@pytest.fixture(scope="module")
def planted_data(planted_dataset):
    d = planted_dataset
    vocab = Vocabulary.build(d.ratings, d.movies, ("user", "movie", "genre", "year"))
    enc = encode(d.ratings, vocab, d.movies)
    features, n_features = ranking_item_features(vocab, d.movies)
    return d, vocab, enc, features, n_features


def _fit(planted_data, config=CONFIG, **options):
    d, vocab, enc, features, n_features = planted_data
    return fit_ranking(
        enc.user,
        enc.item,
        enc.rating,
        len(vocab.user_ids),
        len(d.movies),
        features,
        n_features,
        config,
        **options,
    )


def test_users_get_their_groups_movies_first(planted_data):
    d, vocab, enc, _, _ = planted_data
    model = _fit(planted_data)
    scores = model.scores(np.arange(len(vocab.user_ids)))
    scores[enc.user, enc.item] = -np.inf  # what they rated
    top = np.argsort(-scores, axis=1)[:, :3]
    right = [
        all(group_of_movie(int(d.movies.movie_id[j])) == group_of_user(int(u)) for j in top[r])
        for r, u in enumerate(vocab.user_ids)
    ]
    assert np.mean(right) >= 0.95


def _closed_form(model, enc, config, u):
    """The exact solve of user u's normal equations against the model's movie rows [r_i, c_i]:
    min_x sum_{j rated} w_j (<x, r_j> + c_j - 1)^2 + alpha0 sum_i (<x, r_i> + c_i)^2 + lam |x|^2."""
    q = model.item_rows.astype(np.float64)
    k = q.shape[1] - 1
    gramian = config.alpha0 * q.T @ q
    mine = enc.user == u
    rated = enc.item[mine]
    w = implicit_weight(enc.rating[mine], config.confidence, config.conf_alpha)
    lam = ranking_lambda(config.reg, config.alpha0, config.nu, len(q), len(rated))
    r, c = q[rated, :k], q[rated, k]
    A = gramian[:k, :k] + (r * w[:, None]).T @ r + lam * np.eye(k)
    b = (w * (1.0 - c)) @ r - gramian[:k, k]
    return np.linalg.solve(A, b)


@pytest.mark.parametrize("item_bias", [False, True])
def test_stored_user_vectors_solve_their_normal_equations(planted_data, item_bias):
    config = RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=4, item_bias=item_bias)
    _, vocab, enc, _, _ = planted_data
    model = _fit(planted_data, config)
    for u in range(len(vocab.user_ids)):
        exact = _closed_form(model, enc, config, u)
        error = np.linalg.norm(model.user_vectors[u] - exact) / np.linalg.norm(exact)
        assert error < 1e-4, (u, error)


def test_a_seed_gives_the_same_model_whatever_the_thread_count(planted_data):
    one = _fit(planted_data, seed=3)
    apply_threads(1)
    try:
        other = _fit(planted_data, seed=3)
    finally:
        apply_threads(None)
    for name in ("user_vectors", "item_vectors", "item_scalar", "feature_vectors"):
        np.testing.assert_array_equal(getattr(one, name), getattr(other, name))


def test_progress_hears_each_sweep_and_a_warm_start_starts_near_the_end(planted_data):
    heard = []
    config = RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=3)
    cold = _fit(planted_data, config, progress=lambda m, done, total: heard.append((m, done)))
    assert [done for _, done in heard] == [1, 2, 3]
    assert heard[0][0].startswith("ranking sweep 1/3 (")
    assert len(cold.sweep_seconds) == 3
    # one more sweep from the fitted model moves the movies far less than a first sweep does
    one = RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=1)
    warm = _fit(planted_data, one, init=cold)
    again = _fit(planted_data, one)
    moved_warm = np.linalg.norm(warm.item_vectors - cold.item_vectors)
    moved_cold = np.linalg.norm(again.item_vectors - cold.item_vectors)
    assert moved_warm < 0.5 * moved_cold
    np.testing.assert_allclose(warm.feature_vectors, cold.feature_vectors, atol=0.05)


def test_unrated_movies_are_their_features(planted_data):
    d, *_ = planted_data
    model = _fit(planted_data)
    # the two unrated Action movies share genre and (maybe) year bucket: nonzero vectors, and the
    # Action fans rank them above the other groups' unrated movies
    unrated = [j for j, m in enumerate(d.movies.movie_id) if m not in set(d.ratings.movie_id)]
    assert np.abs(model.item_vectors[unrated]).sum(1).min() > 0


def test_whitened_vectors_and_fold_in_are_the_ranking_models_user_step(planted_data):
    model = _fit(planted_data)
    c = CONFIG
    n_items = model.item_vectors.shape[0]
    lam = ranking_lambda(c.reg, c.alpha0, c.nu, n_items)
    U = whiten_items(model.item_vectors, c.alpha0, lam).astype(np.float64)
    R = model.item_vectors.astype(np.float64)
    A0 = c.alpha0 * R.T @ R + lam * np.eye(R.shape[1])
    np.testing.assert_allclose(U @ U.T, R @ np.linalg.solve(A0, R.T), rtol=1e-4, atol=1e-8)

    rated, stars = np.array([0, 3, 5]), np.array([5.0, 3.0, 4.5])
    w = implicit_weight(stars, c.confidence, c.conf_alpha)
    y = whitened_fold_in(U[rated], w)
    # the exact user step (with the one-rating L2 the whitening uses), c_i = 0 here
    A = A0 + (R[rated] * w[:, None]).T @ R[rated]
    p = np.linalg.solve(A, w @ R[rated])
    np.testing.assert_allclose(U @ y, R @ p, rtol=1e-4, atol=1e-7)


def test_cli_trains_validates_and_refits(tmp_path, fmstore_cli):
    data = write_planted(tmp_path / "data")
    small = ["--epochs", "8", "--factors", "8", "--lr", "0.03", "--batch-size", "256"]
    ranking = ["--ranking-factors", "8", "--ranking-iterations", "4"]
    result = fmstore_cli(
        tmp_path / "home", "train", "--data", str(data), *small, *ranking, "--json"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = runs.load_manifest(summary["path"])
    assert manifest["refit"] is True and manifest["ranking"]["factors"] == 8
    assert manifest["metrics"]["refit"]["n_train"] == manifest["dataset"]["n_ratings"]
    assert manifest["metrics"]["refit"]["epochs"] == manifest["metrics"]["best_epoch"]
    assert "served" in manifest["validation"]["metrics"]
    assert summary["valid_recall@10"] == manifest["validation"]["metrics"]["served"]["recall@10"]
    # the published model knows every rating: every user, and their seen movies are all of them
    seen, _ = runs.seen_movies(summary["path"], 1)
    assert len(seen) == 20
    shown = fmstore_cli(tmp_path / "home", "evaluate")
    assert shown.returncode == 0, shown.stderr
    assert "before the refit" in shown.stdout

    no_refit = fmstore_cli(
        tmp_path / "home2", "train", "--data", str(data), *small, *ranking, "--no-refit", "--json"
    )
    manifest = runs.load_manifest(json.loads(no_refit.stdout)["path"])
    assert manifest["refit"] is False and "refit" not in manifest["metrics"]


@pytest.mark.parametrize("group", range(len(GROUPS)))
def test_planted_fans_of_a_group_get_it_from_both_methods(planted_data, group):
    d, *_ = planted_data
    model = _fit(planted_data)
    col = {int(m): j for j, m in enumerate(d.movies.movie_id)}
    liked = np.array([col[m] for m in rated_movie_ids(group)[:3]])
    stars = np.full(3, 5.0)
    n_items = len(d.movies)
    lam = ranking_lambda(CONFIG.reg, CONFIG.alpha0, CONFIG.nu, n_items)
    U = whiten_items(model.item_vectors, CONFIG.alpha0, lam)
    for scores in (
        U @ whitened_fold_in(U[liked], implicit_weight(stars)),
        model.item_vectors @ (stars @ model.item_vectors[liked] / stars.sum()),
    ):
        scores[liked] = -np.inf
        top = np.argsort(-scores)[:6]
        assert [group_of_movie(int(d.movies.movie_id[j])) for j in top] == [group] * 6


def test_the_torch_half_steps_fit_the_same_model(planted_data):
    """fit_ranking(torch_device=...) (the path a CUDA training takes, run here on CPU): the rows'
    CG half steps in torch, the feature step on numba, the same model to float32 rounding."""
    config = RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=3)
    numba_fit = _fit(planted_data, config, seed=2)
    torch_fit = _fit(planted_data, config, seed=2, torch_device="cpu")
    for name in ("user_vectors", "item_vectors", "feature_vectors"):
        np.testing.assert_allclose(
            getattr(torch_fit, name), getattr(numba_fit, name), rtol=1e-3, atol=1e-4
        )


def test_factors_kept_in_the_eigenbasis_fit_the_same_model(planted_data, monkeypatch):
    """fit_ranking turns the factors once a half step and keeps them turned (_Basis); the model
    is the one a fit turning into each half step's basis and back gives, to float32 rounding."""
    config = RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=3)
    kept = _fit(planted_data, config, seed=2)
    monkeypatch.setattr(ranking, "_Basis", lambda k: None)
    turned_back = _fit(planted_data, config, seed=2)
    for name in ("user_vectors", "item_vectors", "feature_vectors"):
        np.testing.assert_allclose(
            getattr(kept, name), getattr(turned_back, name), rtol=1e-4, atol=2e-6
        )


def test_grouping_the_long_movies_fits_the_same_model(planted_data, monkeypatch):
    """The item step's grouped path (ranking_blocks) for every movie with more than 20 raters,
    in small groups, against the per-row path for all: the same model to
    float32 rounding (here the same bits: each row's rated columns come in the same order, so
    each row's sums are the same sequence of operations)."""
    config = RankingConfig(factors=8, reg=0.1, conf_alpha=5.0, iterations=3)
    monkeypatch.setattr(ranking_blocks, "LONG_ROW", 1 << 40)
    per_row = _fit(planted_data, config, seed=4)
    for name, value in [("LONG_ROW", 20), ("GROUP_ROWS", 7), ("GROUP_ENTRIES", 300)]:
        monkeypatch.setattr(ranking_blocks, name, value)
    grouped_rows = []
    solve = ranking_blocks.cg_groups

    def spy(plan, *args):
        grouped_rows.append(len(plan.rows))
        solve(plan, *args)

    monkeypatch.setattr(ranking_blocks, "cg_groups", spy)
    grouped = _fit(planted_data, config, seed=4)
    assert len(grouped_rows) == config.iterations and min(grouped_rows) > 10
    for name in ("user_vectors", "item_vectors", "feature_vectors"):
        np.testing.assert_allclose(
            getattr(grouped, name), getattr(per_row, name), rtol=1e-3, atol=1e-5
        )
