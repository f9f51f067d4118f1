"""The ranking model's settings found on the user's own data: nu, reg, alpha0 and conf_alpha chosen by
the served NDCG@10 on an inner split of the training ratings, never by constants tuned once on
ml-latest-small (measured on a MovieLens set they were not chosen on, the constants lost 27% NDCG
to EASE while the same model searched this way beat it).

The search is a coordinate walk on a RankingGrid: start at the config's values, try one grid step
down and up along each axis, move to the best neighbour only when it beats the incumbent by more
than one standard error of the paired per-user difference (train.tune.choose: on an inner split
of a few hundred users, neighbours differ by noise as often as by merit), and keep walking along
an axis while that pays; stop after a round without a move. Each point is a fit of `sweeps`
alternating sweeps from the same seeded start (fewer than the final fit: the ordering of points
settles early). Not warm started from the incumbent: measured on the planted data, a neighbour
started from the incumbent's vectors stays near them for a few sweeps (NDCG 0.247 against 0.322
from scratch at conf_alpha 1, starting from conf_alpha 0), which biases every comparison towards
the incumbent.

The walk's reg is the L2 of an average user, whatever nu: a point is fitted with reg * S^(1 - nu),
S = alpha0 n_items + the mean ratings per user (the frequency scale of an average user), which is
the model's own reg at nu 1. So a step along nu keeps the users' L2 where it was and moves L2 onto
the movies (whose scale alpha0 n_users + n_i is smaller) and onto rarely rated rows; with the raw
reg, nu 0.5 at reg 0.003 is a hundred times less L2 (held-out NDCG@10 0.097 against 0.239 on
ml-latest-small's half-users split), a step the walk would never take. nu below 1 is what closed
EASE's lead on that sparser split (README). A pinned reg (`--ranking-set reg=`) is fitted as given.

Large datasets: the inner split is carved from a sample of users above `max_ratings` training
ratings (train.tune.search_split), so a point costs a fit of that sample.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from fmstore.config import INNER_FRACTION, RankingGrid, TrainConfig
from fmstore.datasets import Dataset
from fmstore.errors import ConfigError
from fmstore.evaluate.indexing import CSR
from fmstore.evaluate.metrics import user_ndcg
from fmstore.features import Vocabulary, encode
from fmstore.train.tune import choose, gain_in_standard_errors, search_split

SEARCH_SWEEPS = 4  # alternating sweeps per point of the search (the final fit: config.iterations)
MAX_ROUNDS = 2  # rounds over the axes; the second only after a move in the first
# Above this many training ratings the search runs on a sample of users: at 27.75M ratings a
# point on a 2M sample cost 42 s and the walk 11 points (462 s, more than the FM's training)
MAX_RANKING_SEARCH_RATINGS = 1_000_000
MIN_SEARCH_USERS = 10  # inner-split users with a liked held-out movie below which nothing is judged


@dataclass
class RankingPoint:
    """One fitted point: its values, its mean inner NDCG@10, how it compared."""

    values: dict
    ndcg: float
    seconds: float
    gain_se: float | None = None  # standard errors above the incumbent it was compared with
    fitted_reg: float | None = None  # the model's reg at this point: values' reg * S^(1 - nu)


@dataclass
class RankingSearch:
    """The search: every point fitted, the chosen one, on what ratings."""

    grid: RankingGrid
    points: list[RankingPoint]
    best: int
    n_train: int
    n_valid: int
    users_ranked: int
    sampled_users: int | None
    seconds: float

    @property
    def chosen(self) -> dict:
        """{nu, reg, alpha0, conf_alpha} of the best point, reg as the model takes it."""
        best = self.points[self.best]
        return dict(best.values) | {"reg": best.fitted_reg}

    def apply(self, config: TrainConfig) -> TrainConfig:
        """`config` with the chosen values in its ranking_config."""
        ranking = dataclasses.replace(config.ranking_config, **self.chosen)
        return dataclasses.replace(config, ranking_config=ranking)

    def to_json(self) -> dict:
        """What a run's manifest keeps (metrics.ranking_search)."""
        return {
            "chosen": self.chosen,
            "inner_ndcg@10": self.points[self.best].ndcg,
            "grid": self.grid.to_dict(),
            "points": [dataclasses.asdict(p) for p in self.points],
            "selection": "coordinate walk from the given values; a neighbour replaces the "
            "incumbent only with an inner NDCG@10 more than one standard error higher (paired "
            "over users); a point's reg is an average user's L2, fitted as reg * S^(1 - nu) "
            "(fitted_reg; S = alpha0 n_items + mean ratings per user) unless reg was given",
            "sweeps_per_point": SEARCH_SWEEPS,
            "n_search_train": self.n_train,
            "n_search_valid": self.n_valid,
            "users_ranked": self.users_ranked,
            "sampled_users": self.sampled_users,
            "seconds": round(self.seconds, 3),
        }


def search_ranking(
    dataset: Dataset,
    config: TrainConfig,
    grid: RankingGrid | None = None,
    *,
    inner_fraction: float = INNER_FRACTION,
    max_ratings: int = MAX_RANKING_SEARCH_RATINGS,
    sweeps: int = SEARCH_SWEEPS,
    progress=None,
) -> RankingSearch | None:
    """Search nu, reg, alpha0 and conf_alpha of `config.ranking_config` on an inner split of the
    run's training ratings (never its validation split). `progress(message, done, total)`
    hears each point. None when the ratings are too few to judge anything on (fewer than
    MIN_SEARCH_USERS users with a liked movie in the inner split)."""
    from fmstore.train.ranking import fit_ratings

    grid = grid or RankingGrid()
    started = time.perf_counter()
    try:
        split = search_split(dataset, config, inner_fraction, max_ratings)
    except ConfigError:  # too few ratings to split
        return None
    problem = _InnerProblem(dataset, config, split)
    if len(problem.users) < MIN_SEARCH_USERS:
        return None
    base = dataclasses.replace(config.ranking_config, iterations=sweeps)
    reg_follows_nu = "reg" not in config.ranking_pinned
    start = {name: getattr(base, name) for name in grid.axes()}
    if reg_follows_nu:  # the config's reg as the walk's coordinate: an average user's L2
        start["reg"] = start["reg"] / problem.reg_factor(start)
    axes = {
        name: _with_value(values, start[name])
        for name, values in grid.axes().items()
        if name not in config.ranking_pinned
    }

    points: list[RankingPoint] = []
    per_user: list[np.ndarray] = []  # each point's -NDCG per user: lower is better, as choose()
    fitted: dict[tuple, int] = {}

    def evaluate(values: dict) -> int:
        key = tuple(values.values())
        if key in fitted:
            return fitted[key]
        if progress:
            progress(f"ranking search: {_describe(values)} ({len(points) + 1})", len(points), 0)
        t0 = time.perf_counter()
        reg = values["reg"] * problem.reg_factor(values) if reg_follows_nu else values["reg"]
        model = problem.fit(fit_ratings, dataclasses.replace(base, **values | {"reg": reg}))
        ndcg = problem.ndcg(model)
        seconds = round(time.perf_counter() - t0, 3)
        points.append(RankingPoint(values, float(ndcg.mean()), seconds, fitted_reg=reg))
        per_user.append(-ndcg)
        fitted[key] = len(points) - 1
        return fitted[key]

    incumbent = evaluate(start)
    for _ in range(MAX_ROUNDS):
        moved = False
        for name, values in axes.items():
            while True:
                here = values.index(points[incumbent].values[name])
                neighbours = [
                    evaluate(points[incumbent].values | {name: values[j]})
                    for j in (here - 1, here + 1)
                    if 0 <= j < len(values)
                ]
                for i in neighbours:
                    if points[i].gain_se is None:
                        points[i].gain_se = gain_in_standard_errors(per_user, i, incumbent)
                winner = choose(per_user, [incumbent, *neighbours], incumbent)
                if winner == incumbent:
                    break
                incumbent, moved = winner, True
        if not moved:
            break
    if progress:
        progress(f"ranking search: chose {_describe(points[incumbent].values)}", 1, 1)
    return RankingSearch(
        grid,
        points,
        incumbent,
        len(split.train_rows),
        len(split.valid_rows),
        int(len(per_user[0])),
        split.sampled_users,
        time.perf_counter() - started,
    )


class _InnerProblem:
    """The inner split as the ranking model sees it: the fit's ratings and vocabulary, and the
    held-out relevant movies of each user it knows."""

    def __init__(self, dataset: Dataset, config: TrainConfig, split):
        self.movies = dataset.movies
        self.train = dataset.ratings.take(split.train_rows)
        self.vocab = Vocabulary.build(self.train, dataset.movies, config.fields, dataset.users)
        self.seed = config.seed
        n_users = len(self.vocab.user_ids)
        self.mean_count = len(self.train) / max(n_users, 1)  # ratings of an average user
        seen = encode(self.train, self.vocab, dataset.movies)
        held = encode(dataset.ratings.take(split.valid_rows), self.vocab, dataset.movies)
        liked = config.ranking_config.liked_at  # RELEVANT_MIN on MovieLens's scale
        good = (held.user < n_users) & (held.rating >= liked)  # known users, liked
        self.exclude = CSR.build(seen.user, seen.item, n_users)
        self.relevant = CSR.build(held.user[good], held.item[good], n_users)
        self.users = np.unique(held.user[good])

    def reg_factor(self, values: dict) -> float:
        """S^(1 - nu): the model's reg over the walk's (an average user's L2 at any nu), S =
        alpha0 n_items + the mean ratings per user, the frequency scale of an average user."""
        scale = values["alpha0"] * len(self.movies) + self.mean_count
        return float(scale ** (1.0 - values["nu"]))

    def fit(self, fit_ratings, ranking_config):
        """The ranking model of the inner training ratings at `ranking_config`."""
        return fit_ratings(self.train, self.vocab, self.movies, ranking_config, seed=self.seed)

    def ndcg(self, model) -> np.ndarray:
        """NDCG@10 of each held-out user with a liked movie, ranked by `model`."""
        return user_ndcg(model, self.exclude, self.relevant, self.users)


def _with_value(values: tuple[float, ...], value: float) -> list[float]:
    """The axis' values with `value` (the config's) in its place, so the walk can start there."""
    return sorted(set(float(v) for v in values) | {float(value)})


def _describe(values: dict) -> str:
    return ", ".join(f"{name} {value:g}" for name, value in values.items())
