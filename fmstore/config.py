"""Settings (where things live) and TrainConfig (how a model is trained).

Settings come from FMSTORE_* environment variables, overridden by CLI flags; only the CLI (fmstore/cli/) reads
the environment. Library code receives a Settings or explicit paths/clients as arguments.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping

# The ranking prior baked into the published `score` bias: b_i + weight * log1p(n_ratings_i).
# A model fitted to ratings predicts how much you would like a movie, not whether you would
# watch it; ranked on that alone, movies with one or two enthusiastic ratings fill every top 10
# (Recall@10 far below plain popularity). The prior is a documented, per-point payload field
# (`popularity_boost`), so a rating is still exact: w0 + b_u + score - popularity_boost.
# 0 publishes the pure FM ranking. Chosen on ml-latest-small: see benchmarks/quality.py.
POPULARITY_WEIGHT = 1.0


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
            home=Path(env.get("FMSTORE_HOME", ".fmstore")),
            database_url=env.get("FMSTORE_DATABASE_URL") or None,
            qdrant_url=env.get("FMSTORE_QDRANT_URL") or None,
            qdrant_api_key=env.get("FMSTORE_QDRANT_API_KEY") or None,
            movies_collection=env.get("FMSTORE_MOVIES_COLLECTION", "movies"),
            users_collection=env.get("FMSTORE_USERS_COLLECTION", "users"),
        )

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


@dataclass
class TrainConfig:
    """Everything that decides what a training run learns. Stored in the run manifest."""

    # Defaults chosen on ml-latest-small (seed-0 90/10 split): see benchmarks/quality.py.
    epochs: int = 40
    factors: int = 64
    lr: float = 0.003
    batch_size: int = 1024
    weight_decay: float = 0.03  # L2 per occurrence of a feature
    prior_reg: float = (
        5.0  # L2 per feature and epoch, spread over its occurrences (train.feature_reg)
    )
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    link: str = "identity"  # identity | sigmoid
    valid_fraction: float = 0.1
    patience: int = 3  # epochs without a better valid RMSE before early stopping
    fields: tuple[str, ...] = ("user", "movie", "genre", "year")
    rating_min: float = 0.5
    rating_max: float = 5.0
    lr_milestones: tuple[int, ...] = ()  # epochs at which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    init_std: float = 0.01

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
        for key in ("fields", "lr_milestones"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)
