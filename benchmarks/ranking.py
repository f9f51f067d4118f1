"""Ranking benchmark: what fmstore serves, beside implicit's ALS (tuned in the same run) and BPR,
on ml-latest-small's seed-0 90/10 split (relevant = held-out rating >= 4, each user ranks every
movie not rated in training). One markdown table per section.

    python benchmarks/ranking.py                    # every section (~10 min on a busy 2-core box)
    python benchmarks/ranking.py served cold items  # some of: served, cold, coldfm, items, time

- served: fmstore trained with --no-refit, published to a throwaway embedded store, and every
  user's top 10 asked of `Recommender.recommend` (what `fmstore query --user` runs); implicit ALS
  on the issue's grid (factors 64/128/256 x regularization 0.1/1/10, alpha 1) and BPR (k=64, 100
  iterations) on the same training ratings as 0/1.
- cold: 10% of users held out of training (fmstore's cold_start_split, seed 0), their first n
  ratings by time given (3/5/10/20), Recall@10 / NDCG@10 on the rest: the ranking model's weighted
  mean (the default) and fold-in, and implicit ALS's recalculate_user.
- items: for each (user, liked training movie), is one of the user's held-out liked movies among
  the movie's 10 neighbours: the published `item` vector (Dot, as served; Cosine too), the cosine
  of r_i, co-rating cosine and implicit's similar_items; support floors for the served one.
- coldfm: the rating model's new users (the stars shown): 10% of users and 10% of movies held
  out (fmstore's run_cold_start), their first n ratings by time (3/5/10/20), RMSE and Recall@10 /
  NDCG@10 of the FM built from them: weighted mean, fold-in, and with the `rated` field (SVD++ in
  FM form, `--rated-field`) the model's own side from the movies named, alone and + fold-in.
  Set RATED_REG to try the field's regularisation (default: TrainConfig's).
- time: valid RMSE when the last 10% of each user's ratings (by time) are held out.

implicit (0.7) is a benchmark-only dependency: `pip install -e .[bench]`.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fmstore import catalog, datasets, runs
from fmstore import evaluate as ev
from fmstore.config import TrainConfig
from fmstore.datasets import Dataset
from fmstore.datasets.splits import last_by_time
from fmstore.features import Vocabulary
from fmstore.publish import publish
from fmstore.recommend import Recommender
from fmstore.serving import implicit_weight, ranking_lambda, whiten_items, whitened_fold_in
from fmstore.train import train
from fmstore.train.ranking import fit_ratings
from fmstore.vectors import EdgeStore

REPO = Path(__file__).resolve().parent.parent
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
# the best of the served section's grid, for the cold and items sections
TUNED_ALS = dict(factors=256, regularization=10.0, alpha=1.0, iterations=15)


def markdown(headers, rows) -> str:
    cell = lambda x: f"{x:.4f}" if isinstance(x, float) else str(x)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows])


class Protocol:
    """The held-out split in row/column space: rows = training users, columns = movies.csv."""

    def __init__(self, result, dataset):
        self.rows = ev.Rows(result.vocab.user_ids, dataset.movies.movie_id)
        tr, va = result.train_ratings, result.valid_ratings
        self.tu, self.ti = self.rows.users(tr.user_id), self.rows.items(tr.movie_id)
        self.tr = tr.rating
        self.held = ev.HeldOut.build(
            (self.tu, self.ti),
            self.rows.users(va.user_id),
            self.rows.items(va.movie_id),
            va.rating.astype(np.float64),
            self.rows.n_users + 1,
        )

    def metrics(self, score_fn) -> dict:
        class P:
            scores = staticmethod(score_fn)

        return ev.ranking_metrics(
            P, self.held.exclude, self.held.relevant, self.held.ranked_users, self.rows.n_items
        )


def implicit_fit(u, i, n_users, n_items, kind="als", **kw):
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    ui = sp.csr_matrix((np.ones(len(u), np.float32), (u, i)), shape=(n_users, n_items))
    cls = AlternatingLeastSquares if kind == "als" else BayesianPersonalizedRanking
    model = cls(random_state=0, num_threads=THREADS, **kw)
    model.fit(ui, show_progress=False)
    return model


def served_section(dataset) -> None:
    config = TrainConfig(refit=False, device="cpu")
    t0 = time.perf_counter()
    result = train(dataset, config)
    fit_s = time.perf_counter() - t0
    P = Protocol(result, dataset)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = runs.save_run(result, dataset, config, Path(tmp) / "runs")
        engine = catalog.make_engine(f"sqlite:///{tmp}/catalog.db")
        store = EdgeStore(Path(tmp) / "qdrant")
        publish(run_dir, store, engine)
        rec = Recommender(store, engine)
        ids_of = P.rows.user_ids
        top = {}
        for row in P.held.ranked_users:
            if row >= len(ids_of):  # a held-out user without training ratings: nothing served
                top[row] = np.zeros(0, np.int64)
                continue
            ids, _ = rec.recommend(int(ids_of[row]), N=20)
            top[row] = P.rows.items(ids)
        store.close()
        engine.dispose()

    def served_scores(users):  # the store's top 20 as scores: rank 1 highest
        s = np.full((len(users), P.rows.n_items), -1e9, np.float32)
        for j, u in enumerate(users):
            s[j, top[int(u)]] = -np.arange(len(top[int(u)]), dtype=np.float32)
        return s

    m = P.metrics(served_scores)
    rows.append(
        (
            "fmstore served: Recommender.recommend on a published store",
            m["recall@10"],
            m["ndcg@10"],
            f"{fit_s:.1f} (FM + ranking)",
        )
    )
    ranking = result.ranking
    m = P.metrics(
        lambda u: (
            np.vstack(
                [ranking.user_vectors, np.zeros((1, ranking.user_vectors.shape[1]), np.float32)]
            )[u]
            @ ranking.item_vectors.T
            + ranking.item_scalar
        )
    )
    rows.append(
        (
            "fmstore ranking model, NumPy (same vectors)",
            m["recall@10"],
            m["ndcg@10"],
            f"{ranking.seconds:.1f}",
        )
    )
    counts = np.bincount(P.ti, minlength=P.rows.n_items).astype(np.float32)
    m = P.metrics(lambda u: np.broadcast_to(counts, (len(u), len(counts))))
    rows.append(("popularity", m["recall@10"], m["ndcg@10"], "0"))
    best = None
    for f in (64, 128, 256):
        for reg in (0.1, 1.0, 10.0):
            t = time.perf_counter()
            als = implicit_fit(
                P.tu,
                P.ti,
                P.rows.n_users,
                P.rows.n_items,
                factors=f,
                regularization=reg,
                alpha=1.0,
                iterations=15,
            )
            s = time.perf_counter() - t
            m = P.metrics(
                lambda u, a=als: (
                    a.user_factors[np.minimum(u, len(a.user_factors) - 1)] @ a.item_factors.T
                )
            )
            rows.append(
                (
                    f"implicit ALS factors {f} reg {reg:g} alpha 1",
                    m["recall@10"],
                    m["ndcg@10"],
                    f"{s:.1f}",
                )
            )
            if best is None or m["recall@10"] + m["ndcg@10"] > best[0]:
                best = (m["recall@10"] + m["ndcg@10"], rows[-1][0])
    t = time.perf_counter()
    bpr = implicit_fit(
        P.tu, P.ti, P.rows.n_users, P.rows.n_items, kind="bpr", factors=64, iterations=100
    )
    s = time.perf_counter() - t
    m = P.metrics(
        lambda u: bpr.user_factors[np.minimum(u, len(bpr.user_factors) - 1)] @ bpr.item_factors.T
    )
    rows.append(
        ("implicit BPR factors 64, 100 iterations", m["recall@10"], m["ndcg@10"], f"{s:.1f}")
    )
    print("\n## Served ranking (seed-0 90/10 split; implicit tuned on the grid in this run)\n")
    print(markdown(["system", "Recall@10", "NDCG@10", "fit s"], rows))
    print(
        f"\nbest implicit ALS on the grid: {best[1]}; fmstore valid RMSE {result.metrics['valid_rmse']:.4f}"
    )


def cold_section(dataset, sizes=(3, 5, 10, 20)) -> None:
    split = ev.cold_start_split(dataset.ratings, user_fraction=0.1, movie_fraction=0.0)
    warm = split.train
    config = TrainConfig()
    vocab = Vocabulary.build(warm, dataset.movies, config.fields)
    model = fit_ratings(warm, vocab, dataset.movies, config.ranking_config)
    rows_ = ev.Rows(vocab.user_ids, dataset.movies.movie_id)
    wu, wi = rows_.users(warm.user_id), rows_.items(warm.movie_id)
    als = implicit_fit(
        wu,
        wi,
        rows_.n_users,
        rows_.n_items,
        **TUNED_ALS,
    )
    rc = config.ranking_config
    lam = ranking_lambda(rc.reg, rc.alpha0, rc.nu, len(dataset.movies))
    whitened = whiten_items(model.item_vectors, rc.alpha0, lam)
    cold = split.cold_users
    order = np.lexsort((cold.movie_id, cold.timestamp, cold.user_id))
    users, items, stars = (
        cold.user_id[order],
        rows_.items(cold.movie_id[order]),
        cold.rating[order].astype(np.float64),
    )
    groups = [(items[users == u], stars[users == u]) for u in np.unique(users)]
    groups = [g for g in groups if len(g[0]) > max(sizes)]
    import scipy.sparse as sp

    out = []
    for n in sizes:
        vecs = {"weighted (default)": [], "fold-in": [], "implicit ALS recalculate_user": []}
        excl, rel = [], []
        for its, st in groups:
            ctx, r = its[:n], st[:n]
            vecs["weighted (default)"].append(r @ model.item_vectors[ctx] / r.sum())
            vecs["fold-in"].append(
                whitened_fold_in(whitened[ctx], implicit_weight(r, rc.confidence, rc.conf_alpha))
            )
            row = sp.csr_matrix(
                (np.ones(n, np.float32), (np.zeros(n, int), ctx)), shape=(1, rows_.n_items)
            )
            vecs["implicit ALS recalculate_user"].append(
                np.asarray(als.recalculate_user(0, row)).ravel()
            )
            excl.append(ctx)
            rel.append(its[n:][st[n:] >= 4.0])
        exclude = ev.CSR.build(
            np.repeat(np.arange(len(excl)), [len(e) for e in excl]), np.concatenate(excl), len(excl)
        )
        relevant = ev.CSR.build(
            np.repeat(np.arange(len(rel)), [len(e) for e in rel]), np.concatenate(rel), len(rel)
        )
        targets = {
            "weighted (default)": model.item_vectors,
            "fold-in": whitened,
            "implicit ALS recalculate_user": als.item_factors,
        }
        for name, v in vecs.items():
            V, T = np.array(v, np.float32), targets[name]

            class P:
                scores = staticmethod(lambda u, V=V, T=T: V[u] @ T.T)

            m = ev.ranking_metrics(
                P, exclude, relevant, np.arange(len(groups)), rows_.n_items, recall_ks=(10,)
            )
            out.append((name, n, m["recall@10"], m["ndcg@10"], m["users_ranked"]))
    print("\n## Cold start: held-out users, first n ratings by time given\n")
    print(markdown(["method", "n", "Recall@10", "NDCG@10", "users"], out))


def neighbours(V, k=10, candidates=None, dot=False):
    V = np.asarray(V, np.float64)
    norm = np.linalg.norm(V, axis=1)
    U = V if dot else V / np.where(norm > 0, norm, 1)[:, None]
    out = np.zeros((len(V), k), np.int64)
    for s in range(0, len(V), 2048):
        S = U[s : s + 2048] @ U.T
        if candidates is not None:
            S[:, ~candidates] = -np.inf
        S[np.arange(S.shape[0]), np.arange(s, s + S.shape[0])] = -np.inf
        out[s : s + 2048] = ev.top_k(S, k)
    return out


def items_section(dataset) -> None:
    from fmstore.datasets.splits import split_indices

    config = TrainConfig(refit=False)  # the seed-0 90/10 split, as in `served`
    tr, va = split_indices(len(dataset.ratings), 0.1, 0)
    train_r, valid_r = dataset.ratings.take(tr), dataset.ratings.take(va)
    vocab = Vocabulary.build(train_r, dataset.movies, config.fields)
    model = fit_ratings(train_r, vocab, dataset.movies, config.ranking_config)
    rows_ = ev.Rows(vocab.user_ids, dataset.movies.movie_id)
    tu, ti, trr = rows_.users(train_r.user_id), rows_.items(train_r.movie_id), train_r.rating
    vu, vi, vr = rows_.users(valid_r.user_id), rows_.items(valid_r.movie_id), valid_r.rating
    counts = np.bincount(ti, minlength=rows_.n_items)
    rc = config.ranking_config
    whitened = whiten_items(
        model.item_vectors, rc.alpha0, ranking_lambda(rc.reg, rc.alpha0, rc.nu, rows_.n_items)
    )
    rated = counts > 0
    X = np.zeros((rows_.n_items, rows_.n_users + 1), np.float32)
    X[ti, tu] = 1.0
    als = implicit_fit(
        tu,
        ti,
        rows_.n_users,
        rows_.n_items,
        **TUNED_ALS,
    )
    ids, _ = als.similar_items(np.arange(rows_.n_items), N=11)
    cands = {
        "served: item (whitened r_i), Dot": neighbours(whitened, candidates=rated, dot=True),
        "item (whitened r_i), Cosine": neighbours(whitened, candidates=rated),
        "cosine of r_i": neighbours(model.item_vectors, candidates=rated),
        "co-rating cosine": neighbours(X, candidates=rated),
        "implicit ALS 256/10/1 similar_items": np.array(
            [[j for j in r if j != s][:10] for s, r in enumerate(ids)]
        ),
    }
    for floor in (5, 10, 20, 50):
        cands[f"served, support floor {floor} ratings"] = neighbours(
            whitened, candidates=counts >= floor, dot=True
        )
    liked_valid = {}
    for u, i, r in zip(vu, vi, vr, strict=True):
        if r >= 4.0:
            liked_valid.setdefault(int(u), set()).add(int(i))
    pairs = [
        (int(u), int(i))
        for u, i, r in zip(tu, ti, trr, strict=True)
        if r >= 4.0 and int(u) in liked_valid
    ]
    out = []
    for name, N in cands.items():
        hits = sum(bool(liked_valid[u].intersection(N[i].tolist())) for u, i in pairs)
        out.append((name, hits / len(pairs), len(pairs)))
    print(
        "\n## Movies like X: hit rate@10 of held-out liked movies among a liked training movie's neighbours\n"
    )
    print(markdown(["neighbours", "hit rate@10", "(user, movie) pairs"], out))


def cold_fm_section(dataset, sizes=(3, 5, 10, 20)) -> None:
    rated_reg = float(os.environ.get("RATED_REG", TrainConfig.rated_reg))
    models = {
        "FM": TrainConfig(ranking=False, refit=False),
        "FM + rated field": TrainConfig(
            ranking=False,
            refit=False,
            fields=TrainConfig.fields + ("rated",),
            rated_reg=rated_reg,
        ),
    }
    rows, fits = [], []
    for name, config in models.items():
        report = ev.run_cold_start(dataset, config, sizes=sizes)
        fits.append((name, report.valid_rmse, report.train_seconds))
        for r in report.users:
            if r["method"] in ("popularity", "global-mean+biases") and name != "FM":
                continue
            rows.append((name, r["method"], r["n"], r["rmse"], r["recall@10"], r["ndcg@10"]))
    rows.sort(key=lambda r: (r[2], r[3]))
    print("\n## The rating model's new users: first n ratings by time given\n")
    print(markdown(["model", "method", "n", "RMSE", "Recall@10", "NDCG@10"], rows))
    print(f"\n(rated_reg {rated_reg}; {report.n_cold_users} held-out users)\n")
    print(markdown(["model", "valid RMSE of the warm model", "train s"], fits))


def time_section(dataset) -> None:
    r = dataset.ratings
    is_test = last_by_time(r.user_id, r.timestamp, 0.1)
    train_part = Dataset(
        dataset.name, dataset.source, dataset.fingerprint, r.take(~is_test), dataset.movies
    )
    config = TrainConfig(ranking=False, refit=False)
    result = train(train_part, config, test_ratings=r.take(is_test))
    m = result.metrics
    print("\n## Time-based split: the last 10% of each user's ratings held out\n")
    print(
        markdown(
            [
                "split",
                "valid RMSE (random 10% of the rest, early stopping)",
                "test RMSE (last 10% by time)",
                "best epoch",
            ],
            [("time", m["valid_rmse"], m["test_rmse"], m["best_epoch"])],
        )
    )


def main(argv) -> int:
    sections = set(argv) or {"served", "cold", "coldfm", "items", "time"}
    data = Path(os.environ.get("FMSTORE_DATA", REPO.parent / "shared" / "data" / "ml-latest-small"))
    dataset = datasets.load_dataset(data)
    t0 = time.perf_counter()
    for name, fn in (
        ("served", served_section),
        ("cold", cold_section),
        ("coldfm", cold_fm_section),
        ("items", items_section),
        ("time", time_section),
    ):
        if name in sections:
            fn(dataset)
            sys.stdout.flush()
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
