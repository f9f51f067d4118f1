"""Settings (where things live) and TrainConfig (how a model is trained).

Settings come from FMSTORE_* environment variables, overridden by CLI flags; only the CLI (fmstore/cli/) reads
the environment. Library code receives a Settings or explicit paths/clients as arguments.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import parse_qsl, unquote, urlsplit

from fmstore.errors import ConfigError, EnvError


@dataclass(frozen=True)
class Settings:
    """Where fmstore keeps things: home folder, catalog URL, Qdrant URL and key (never printed),
    collection aliases. Built from FMSTORE_* variables by from_env."""

    home: Path = Path(".fmstore")
    database_url: str | None = None
    qdrant_url: str | None = None
    # Never printed: repr=False keeps it out of logs and tracebacks of the dataclass.
    qdrant_api_key: str | None = field(default=None, repr=False)
    movies_collection: str = "movies"
    users_collection: str = "users"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Settings from FMSTORE_* environment variables (or `env`), defaults for the rest."""
        env = os.environ if env is None else env
        return cls(
            home=Path(env.get("FMSTORE_HOME") or ".fmstore"),  # '' is unset, not "here"
            database_url=env.get("FMSTORE_DATABASE_URL") or None,
            qdrant_url=env.get("FMSTORE_QDRANT_URL") or None,
            qdrant_api_key=env.get("FMSTORE_QDRANT_API_KEY") or None,
            movies_collection=env.get("FMSTORE_MOVIES_COLLECTION", "movies"),
            users_collection=env.get("FMSTORE_USERS_COLLECTION", "users"),
        )

    def check(self) -> "Settings":
        """Refuse a malformed Qdrant or catalog URL in one line (EnvError, exit 3), before any
        work and without echoing a password; returns self."""
        if self.qdrant_url:
            check_qdrant_url(self.qdrant_url)
        if self.database_url:
            check_database_url(self.database_url)
        return self

    def secrets(self) -> list[str]:
        """Every secret these settings hold, for masking in messages."""
        found = [self.qdrant_api_key] if self.qdrant_api_key else []
        for url in (self.qdrant_url, self.database_url):
            found += url_secrets(url or "")
        return found

    @property
    def runs_dir(self) -> Path:
        """The folder of trained runs: home/runs."""
        return self.home / "runs"

    @property
    def qdrant_path(self) -> Path:
        """Folder of the embedded Qdrant Edge store."""
        return self.home / "qdrant"

    @property
    def catalog_url(self) -> str:
        """SQLAlchemy URL of the catalog: FMSTORE_DATABASE_URL, else a SQLite file in home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'catalog.db').resolve()}"


@dataclass(frozen=True)
class RankingConfig:
    """The ranking model (iALS in FM form, fmstore/train/ranking.py). Defaults: the best of a small
    grid on ml-latest-small's seed-0 90/10 split (benchmarks/ranking.py)."""

    factors: int = 256
    alpha0: float = 1.0  # weight of every unobserved pair as a weak negative
    reg: float = 0.003  # L2, scaled by each row's frequency ** nu
    nu: float = 1.0  # the search moves it (RankingGrid.nu), keeping an average user's L2
    confidence: str = "liked"  # binary | liked (1 + conf_alpha * (rating >= 4))
    conf_alpha: float = 1.0
    item_bias: bool = False  # learn the per-movie scalar c_i
    features: bool = True  # movie vectors include their genres' and year's embeddings
    # 8 sweeps: Recall@10 0.2530, NDCG@10 0.2647 on the seed-0 split (16: 0.2582, 0.2696) in half
    # the time, which keeps validation + refit of both models near 30 s on 2 CPU cores
    iterations: int = 8
    cg_steps: int = 3
    init_std: float = 0.1
    # the rating from which a movie counts as liked (serving.liked_at of the rating scale; the
    # pipeline sets it from the dataset's scale)
    liked_at: float = 4.0

    def to_dict(self) -> dict:
        """The config as plain JSON values (for the run manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "RankingConfig":
        """The config of a manifest's dict; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class TrainConfig:
    """Everything that decides what a training run learns. Stored in the run manifest."""

    # Defaults chosen on ml-latest-small (seed-0 90/10 split): see benchmarks/quality.py.
    epochs: int = 40
    factors: int = 64
    # None: follow the number of training ratings (fmstore.train.defaults.resolve_defaults: 0.003
    # and 1024 below a million ratings, 0.03 and up to 2^19 above); the run's manifest records the
    # values chosen and why.
    lr: float | None = None
    batch_size: int | None = None
    weight_decay: float = 0.03  # L2 per occurrence of a feature
    prior_reg: float = (
        5.0  # L2 per feature and epoch, spread over its occurrences (train.feature_reg)
    )
    # With the `rated` field: its features' L2 is rated_reg x that of the others. A rated movie's
    # y_j is in every rating of everyone who rated it, so it fits faster than any other feature.
    rated_reg: float = 100.0  # best of 1, 10, 100 (benchmarks/ranking.py coldfm)
    # A multiplier of one field's L2 (both terms, e.g. {"genre": 0.33}); a field not named keeps
    # 1. Found per dataset by the search's per-field stage (train/tune.py, TuneGrid.field_steps).
    field_reg: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    link: str = "identity"  # identity | sigmoid
    valid_fraction: float = 0.1
    # how the validation ratings are chosen (datasets.splits.split_rows): random | time (each
    # user's last valid_fraction) | leave-last-n (each user's last split_n) | users (whole users)
    split: str = "random"
    split_n: int = 1
    patience: int = 3  # epochs without a better valid RMSE before early stopping
    fields: tuple[str, ...] = ("user", "movie", "genre", "year")
    rating_min: float = 0.5
    rating_max: float = 5.0
    lr_milestones: tuple[int, ...] = ()  # epochs at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    init_std: float = 0.01
    # After the best epoch is chosen on the validation split, train again on every rating for
    # that many epochs, so the published model knows every rating (the manifest keeps both).
    refit: bool = True
    # Also fit the ranking model (fmstore.train.ranking) on the implicit signal.
    ranking: bool = True
    # False for implicit-only data (clicks, plays: no ratings): the rating FM is not trained (it
    # keeps w0 alone, every prediction the same) and the ranking model serves alone.
    rating_model: bool = True
    ranking_config: RankingConfig = field(default_factory=RankingConfig)
    # search the ranking model's nu, reg, alpha0 and conf_alpha on an inner split of the training
    # ratings before fitting it (fmstore/ranking_search.py); False keeps ranking_config as given
    tune_ranking: bool = True
    ranking_pinned: tuple[str, ...] = ()  # ranking_config settings given by hand: not searched

    def for_dataset(self, dataset) -> "TrainConfig":
        """This config for `dataset`: on its rating scale (1..10, 0..1, ...: predictions clamped
        to it, and "liked", the ranking model's confidence and the relevant movies, at the same
        share of it as 4 of MovieLens's 0.5..5), and without the rating model for implicit-only
        data. A MovieLens dataset leaves the config as it is."""
        from fmstore.serving import liked_at

        config = self
        scale = tuple(float(v) for v in getattr(dataset, "rating_scale", (0.5, 5.0)))
        if scale != (config.rating_min, config.rating_max):
            ranking = dataclasses.replace(config.ranking_config, liked_at=liked_at(scale))
            config = dataclasses.replace(
                config, rating_min=scale[0], rating_max=scale[1], ranking_config=ranking
            )
        if getattr(dataset, "implicit", False):  # no ratings: the ranking model alone
            config = dataclasses.replace(config, rating_model=False, ranking=True)
        return config

    def to_dict(self) -> dict:
        """The config as JSON-ready values (tuples as lists)."""
        d = asdict(self)
        d["fields"] = list(self.fields)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "TrainConfig":
        """A config back from to_dict(); unknown keys (from other versions) are ignored."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for key in ("fields", "lr_milestones", "ranking_pinned"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if isinstance(kwargs.get("ranking_config"), Mapping):
            kwargs["ranking_config"] = RankingConfig.from_dict(kwargs["ranking_config"])
        return cls(**kwargs)


# ---- the search of `fmstore tune` (fmstore.train.tune) ----------------------------------------

INNER_FRACTION = 0.1  # share of the training ratings the search validates on
MAX_SEARCH_RATINGS = 2_000_000  # above this many training ratings, search on a sample of users


@dataclass(frozen=True)
class TuneGrid:
    """The values searched: factors x weight_decay x prior_reg, every combination (full) or
    the regularisation first and then the width (staged, tune's default)."""

    # Around the constants measured on ml-latest-small (64, 0.03, 5.0): one step below and above
    # each, wide enough to move when the data asks for it: 27 points, of which the staged search
    # fits 11.
    factors: tuple[int, ...] = (32, 64, 128)
    weight_decay: tuple[float, ...] = (0.01, 0.03, 0.1)
    prior_reg: tuple[float, ...] = (2.0, 5.0, 12.0)
    # Stage 3, the per-field regularisation (a coordinate walk, train/tune.py): each field's L2
    # multiplied by each of these in turn, a step repeated while it keeps winning; () skips it.
    field_steps: tuple[float, ...] = ()

    def points(self) -> list[dict]:
        """Every combination, factors varying slowest (so the cheaper widths come first)."""
        return [
            {"factors": int(k), "weight_decay": float(wd), "prior_reg": float(pr)}
            for k, wd, pr in itertools.product(self.factors, self.weight_decay, self.prior_reg)
        ]

    def middle_factors(self) -> int:
        """The width the staged search fits the regularisation grid at."""
        return int(sorted(self.factors)[(len(self.factors) - 1) // 2])

    def regularisation_points(self) -> list[dict]:
        """Stage 1 of the staged search: weight_decay x prior_reg at the middle width."""
        return [
            {"factors": self.middle_factors(), "weight_decay": float(wd), "prior_reg": float(pr)}
            for wd, pr in itertools.product(self.weight_decay, self.prior_reg)
        ]

    def factor_points(self, regularisation: dict) -> list[dict]:
        """Stage 2: the other widths at the chosen regularisation."""
        others = [k for k in self.factors if k != self.middle_factors()]
        return [{**regularisation, "factors": int(k)} for k in others]

    def check(self) -> None:
        """Refuse an empty grid or a value no training accepts, naming the flag."""
        for name, values in dataclasses.asdict(self).items():
            flag = "--" + name.replace("_", "-")
            if not values and name != "field_steps":
                raise ConfigError(f"{flag}: give at least one value")
            if len(set(values)) != len(values):
                raise ConfigError(f"{flag} {_listed(values)}: a value is given twice")
        for k in self.factors:
            if k < 1:
                raise ConfigError(f"--factors {_listed(self.factors)}: {k} must be at least 1")
        for value in self.field_steps:
            if not value > 0 or value == 1:
                raise ConfigError(
                    f"--field-steps {_listed(self.field_steps)}: {value:g} must be positive and "
                    "not 1"
                )
        for name in ("weight_decay", "prior_reg"):
            for value in getattr(self, name):
                if not value >= 0:  # (NaN too)
                    flag = "--" + name.replace("_", "-")
                    raise ConfigError(
                        f"{flag} {_listed(getattr(self, name))}: {value:g} is negative"
                    )

    def to_dict(self) -> dict:
        """The grid as JSON-ready lists (what a tuned run's manifest records)."""
        return {name: list(values) for name, values in dataclasses.asdict(self).items()}


def _listed(values) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


# ---- URLs: checked before use, never printed with their secrets ---------------------------------

# Names whose values are secrets: query parameters (…?api_key=…) and libpq keywords (password=…).
_SECRET_NAMES = r"api[-_]?key|apikey|password|passwd|pwd|secret|token"
_SECRET_PARAMS = re.compile(rf"(?i)({_SECRET_NAMES})")
# name=value pairs whose name says secret: after ?, &, ;, a quote or a space, or at the start.
_SECRET_QUERY = re.compile(
    rf"(?P<name>(?:^|(?<=[?&;\s'\"]))(?:{_SECRET_NAMES})\s*=\s*)(?P<value>'[^']*'|[^&#\s'\"]*)",
    re.I,
)
# A word of text: a URL never spans whitespace or quotes.
_WORD = re.compile(r"[^\s'\"<>]+")
# `scheme:` and its slashes (one or more). Starts only where a run of letters starts, so that a
# long word costs one pass.
_SCHEME_SLASHES = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*:/+")
# What may stand just before a URL inside a word: `url=`, `(`, `[`, `,`.
_OPENERS = "=([{,"


def userinfo_span(word: str) -> tuple[int, int] | None:
    """Where the userinfo (`user:password`) of a URL-ish word is, as (start, end) with word[end]
    the @, in any shape a person may type: scheme://user:pw@host, scheme:/user:pw@ (one slash),
    user:pw@host/db and admin:pw@host:6333 (no scheme), an unencoded @ inside the password.
    None: no @ at all."""
    # The userinfo ends at the last @ before the query; a password holding an unencoded ? or #
    # puts its @ after them, so the whole word is searched when the first part has none.
    head = re.split(r"[?#]", word, maxsplit=1)[0]
    at = (head if "@" in head else word).rfind("@")
    if at < 0:
        return None
    before = word[:at]
    scheme = _SCHEME_SLASHES.search(before)
    if scheme and ":" in before[scheme.end() :]:
        return scheme.end(), at
    # no slashes: the userinfo starts the word, or follows `url=`, `(`...
    first_colon = before.find(":")
    return 1 + max(before.rfind(c, 0, max(first_colon, 0)) for c in _OPENERS), at


def password_span(word: str) -> tuple[int, int] | None:
    """Where the password of a URL-ish word is, as (start, end): see userinfo_span. None: no
    password."""
    span = userinfo_span(word)
    if span is None:
        return None
    colon = word.find(":", span[0], span[1])
    return (colon + 1, span[1]) if colon >= 0 else None


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every URL's password (user:***@, whatever the URL's shape), secret name=value
    pairs and the given secret strings replaced by ***. Linear in the text."""
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _WORD.sub(_mask_word, text)
    return _SECRET_QUERY.sub(lambda m: m["name"] + "***", text)


def _mask_word(match: re.Match) -> str:
    word = match.group()
    span = password_span(word) if "@" in word and ":" in word else None
    return word if span is None else f"{word[: span[0]]}***{word[span[1] :]}"


def url_secrets(url: str) -> list[str]:
    """The password and secret query values of a URL-ish value, whatever its shape (a malformed
    URL too), as written and percent-decoded: what must never be printed."""
    if url.startswith("-") and "=" in url:  # `--database-url=...` on a command line
        url = url.partition("=")[2]
    found = []
    span = password_span(url.strip())
    if span:
        password = url.strip()[span[0] : span[1]]
        found += [password, unquote(password)]
    for match in _SECRET_QUERY.finditer(url):
        value = match["value"].strip("'")
        found += [value, unquote(value)] if value else []
    return found


def _split(url: str, what: str):
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number in 0..65535)
    except ValueError as exc:
        reason = "its port is not a number from 1 to 65535" if "port" in str(exc) else exc
        raise EnvError(f"{what} {mask_secrets(url)!r} is malformed: {reason}") from None
    if parts.port == 0:
        raise EnvError(f"{what} {mask_secrets(url)!r}: port 0 is not a port")
    return parts


def check_qdrant_url(url: str) -> None:
    """Refuse (EnvError) a Qdrant URL that is not http(s)://host[:port], or carries its key."""
    what = "FMSTORE_QDRANT_URL (or --qdrant-url)"
    if url.strip() == ":memory:":
        raise EnvError(
            f"{what} ':memory:' would serve nothing that lasts; the embedded store is the "
            "default: unset it, or give a server's http(s)://host:port"
        )
    parts = _split(url, what)
    if parts.scheme not in ("http", "https"):
        raise EnvError(
            f"{what} {mask_secrets(url)!r}: use http://host:port or https://host:port "
            f"(scheme {parts.scheme or 'missing'!r})"
        )
    if not parts.hostname:
        raise EnvError(f"{what} {mask_secrets(url)!r} names no host")
    for name, _ in parse_qsl(parts.query):
        if _SECRET_PARAMS.search(name):
            raise EnvError(f"{what}: put the API key in FMSTORE_QDRANT_API_KEY, not in the URL")


def check_database_url(url: str) -> None:
    """Refuse (EnvError) a catalog URL that is not SQLite or Postgres with a numeric port."""
    what = "FMSTORE_DATABASE_URL (or --database-url)"
    parts = _split(url, what)
    scheme = parts.scheme.split("+")[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise EnvError(
            f"{what} {mask_secrets(url)!r}: the catalog is SQLite or Postgres "
            "(sqlite:///PATH or postgresql://user@host:port/db)"
        )
    if scheme != "sqlite" and not parts.hostname and "host=" not in parts.query:
        raise EnvError(f"{what} {mask_secrets(url)!r} names no host")


def insecure_api_key(settings: Settings) -> bool:
    """An API key that would travel over plain http to another machine."""
    if not (settings.qdrant_api_key and settings.qdrant_url):
        return False
    return urlsplit(settings.qdrant_url).scheme == "http"


# ---- the search of the ranking model's settings (fmstore.ranking_search) ------------------------


# The ranking model's settings its search moves (and `--ranking-set` may pin), in visiting order:
# nu first, the one that moved on ml-latest-small's splits (README), so the others are walked at it
RANKING_SEARCHED = ("nu", "reg", "alpha0", "conf_alpha")


@dataclass(frozen=True)
class RankingGrid:
    """The values the ranking model's search may move to, each axis in increasing order. The
    search starts from the config's values and moves one grid step at a time (ranking_search)."""

    # steps of about 3x: the served NDCG changes little within one, much across several
    reg: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
    alpha0: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 3.0)
    conf_alpha: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0)
    # the frequency exponent of the L2 (Rendle et al. 2022); walked at the same L2 for an average
    # user (ranking_search: reg is that user's, whatever nu), so that below 1 it moves L2 from the
    # users, whose counts are alpha0 n_items + n_u, to the movies, whose alpha0 n_users + n_i are
    # smaller, and onto rare rows
    nu: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)

    def axes(self) -> dict[str, tuple[float, ...]]:
        """{setting: its values}, in the order the search visits them (RANKING_SEARCHED)."""
        return {name: getattr(self, name) for name in RANKING_SEARCHED}

    def to_dict(self) -> dict:
        """The grid as plain JSON values (for the run manifest)."""
        return {name: list(values) for name, values in self.axes().items()}
