"""Publishing: a run into Qdrant (movies + users) and the SQL catalog, as a transaction.

- checks.py: argument checks (before anything is written) and the crash tests' stage hook.
- points.py: the movies' and users' points, written in batches and verified.
- transaction.py: `publish`: new collections per publication, one switch of both aliases.
- history.py: `reconcile` (stale rows), `rollback`, `prune` (its own action), `status`.

This package orchestrates runs + catalog + vectors; it imports no torch.

The package can be called: `fmstore.publish(model)` publishes a notebook's model (fmstore.fit,
fmstore.load) and returns it served live, i.e. `model.publish(...)`.
"""

import sys
import types

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


class _CallablePackage(types.ModuleType):
    """This package, callable as `fmstore.publish(model, **options)` (see the docstring)."""

    def __call__(self, model, **options):
        if not hasattr(model, "publish"):
            raise TypeError(
                "fmstore.publish(model) takes a model of fmstore.fit or fmstore.load; to publish "
                "a run folder use fmstore.publish.publish(run_dir, store, engine)"
            )
        return model.publish(**options)


sys.modules[__name__].__class__ = _CallablePackage
