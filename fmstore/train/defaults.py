"""Batch size and learning rate that follow the data size, unless the caller gave them.

Measured on this project's 2-core machine (benchmarks/quality.py, benchmarks/train_speed.py):

- ml-latest-small (90,752 training ratings): batch 1024, lr 0.003 give valid RMSE 0.8100; larger
  batches there leave too few steps per epoch for 40 epochs of Adam to converge as well.
- ml-latest shape (25M training ratings, k = 120): batch 2^19, lr 0.03 run at 1.6-1.95M ratings/s
  and reach valid RMSE 0.6718 after 2 epochs, against 466k ratings/s and 0.6983 with batch 1024,
  lr 0.003. At that size a step is bound by the rows it touches, and a batch of 2^19 ratings
  touches each user and movie row for many ratings at once; there are still ~48 steps per epoch.

Between the two, the batch keeps at least 32 steps per epoch (the largest power of two up to
n / 32, at most 2^19) with the large-batch lr: a rule, not a measurement, at sizes we have not
measured; `--batch-size` and `--lr` override it. One check in between (synthetic, 2M ratings,
k=64): the rule's batch 32768, lr 0.03 reached valid RMSE 0.6730 (early stop at epoch 28,
113 s on a loaded 2-core machine), while batch 1024, lr 0.003 reached 0.6691 after 8 epochs at
tens of times the time per epoch: the rule trades a little accuracy for speed there.
"""

from __future__ import annotations

from dataclasses import replace

from fmstore.config import TrainConfig

SMALL_DATA = 1_000_000  # training ratings below which the ml-latest-small settings apply
SMALL_BATCH, SMALL_LR = 1024, 0.003
LARGE_BATCH, LARGE_LR = 1 << 19, 0.03
MIN_STEPS_PER_EPOCH = 32


def resolve_defaults(config: TrainConfig, n_train: int) -> tuple[TrainConfig, dict]:
    """`config` with batch_size and lr filled in for `n_train` training ratings where they are
    None, and {name: {"value", "chosen", "why"}} saying for each whether it was given or chosen."""
    if n_train < SMALL_DATA:
        batch, lr = SMALL_BATCH, SMALL_LR
        why = (
            f"{n_train:,} training ratings (< {SMALL_DATA:,}): the settings tuned on "
            "ml-latest-small (benchmarks/quality.py)"
        )
    else:
        batch = min(LARGE_BATCH, _power_of_two_at_most(n_train // MIN_STEPS_PER_EPOCH))
        lr = LARGE_LR
        why = (
            f"{n_train:,} training ratings (>= {SMALL_DATA:,}): large batches (at least "
            f"{MIN_STEPS_PER_EPOCH} steps per epoch, at most {LARGE_BATCH:,}) with lr {LARGE_LR}, "
            "measured faster and more accurate at 25M ratings (benchmarks/train_speed.py)"
        )
    chosen = {}
    for name, value in (("batch_size", batch), ("lr", lr)):
        given = getattr(config, name)
        if given is None:
            chosen[name] = {"value": value, "chosen": True, "why": why}
        else:
            chosen[name] = {"value": given, "chosen": False, "why": "given"}
    resolved = replace(config, **{name: c["value"] for name, c in chosen.items()})
    return resolved, chosen


def _power_of_two_at_most(n: int) -> int:
    return 1 << max(n, 1).bit_length() - 1
