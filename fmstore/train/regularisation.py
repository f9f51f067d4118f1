"""Each feature's L2 coefficient in the rating FM's loss: what the training loop, both engines
and the data-parallel path apply (one copy, imported by loop.py and distributed.py)."""

from __future__ import annotations

import torch

from fmstore.config import TrainConfig
from fmstore.model import FactorizationMachine


def config_reg(model: FactorizationMachine, users, items, config: TrainConfig) -> torch.Tensor:
    """feature_reg with the coefficients a training's config asks for."""
    return feature_reg(
        model,
        users,
        items,
        config.weight_decay,
        config.prior_reg,
        config.rated_reg,
        config.field_reg,
    )


def feature_reg(
    model: FactorizationMachine,
    users,
    items,
    weight_decay: float,
    prior_reg: float,
    rated_reg: float = 1.0,
    field_reg: dict[str, float] | None = None,
) -> torch.Tensor:
    """Each feature's L2 coefficient per occurrence: weight_decay + prior_reg / n_j.

    n_j is how many training ratings feature j takes part in. Penalising weight_decay per
    occurrence is the SGD-matrix-factorisation habit (a feature seen often is held back often);
    prior_reg / n_j per occurrence adds up to prior_reg |theta_j|^2 per epoch whatever n_j is: a
    Gaussian prior, which holds the id features of rarely rated movies and rarely rating users
    near zero instead of letting one enthusiastic rating make a movie "the best" (their genres and
    year still speak for them). The `rated` field's features take rated_reg times that, and the
    features of each field named in `field_reg` (user, movie, genre, year) that many times it:
    a regularisation per field, as libFM's MCMC learns one per group (the search's per-field
    stage finds them on an inner split, train/tune.py)."""
    n_features = model.v.shape[0]
    counts = torch.zeros(n_features, dtype=torch.float64)
    sides = (
        (model.user_index, model.user_weight, users),
        (model.item_index, model.item_weight, items),
    )
    for index, weight, rows in sides:
        # ratings per row
        per_row = torch.bincount(rows.long().cpu(), minlength=len(index)).double()
        present = (weight.cpu() != 0).double() * per_row[:, None]
        counts.index_add_(0, index.cpu().reshape(-1).long(), present.reshape(-1))
        if model.has_rated and index is model.user_index:  # each rated movie: its users' ratings
            user_of = torch.repeat_interleave(per_row, model.rated_indptr.cpu().diff())
            counts.index_add_(0, model.rated_index.cpu(), user_of)
    scale = weight_decay + prior_reg / counts.clamp(min=1.0)
    if model.has_rated:
        first, size = model.rated_span
        scale[first : first + size] *= rated_reg
    for name, multiplier in (field_reg or {}).items():
        if name not in model.field_spans:
            raise ValueError(
                f"field_reg names {name!r}: the model's fields are {sorted(model.field_spans)}"
            )
        first, size = model.field_spans[name]
        scale[first : first + size] *= multiplier
    return scale.to(dtype=model.v.dtype, device=model.v.device)
