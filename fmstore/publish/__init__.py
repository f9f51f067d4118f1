"""Publishing: a run into Qdrant (movies + users) and the SQL catalog, as a transaction.

- checks.py: argument checks (before anything is written) and the crash tests' stage hook.
- points.py: the movies' and users' points, written in batches and verified.
- transaction.py: `publish`: new collections per publication, one switch of both aliases.
- history.py: `reconcile` (stale rows), `rollback`, `prune` (its own action), `status`.

This package orchestrates runs + catalog + vectors; it imports no torch.
"""

from fmstore.publish.checks import KILL_AT_ENV, STAGES
from fmstore.publish.history import prune, reconcile, rollback, rollback_target, status
from fmstore.publish.transaction import PublishResult, new_token, publish
from fmstore.serving import physical_name, run_id_of, sibling_collection

__all__ = [
    "KILL_AT_ENV",
    "STAGES",
    "PublishResult",
    "new_token",
    "physical_name",
    "prune",
    "publish",
    "reconcile",
    "rollback",
    "rollback_target",
    "run_id_of",
    "sibling_collection",
    "status",
]
