"""Live updates: a user's new ratings and new movies served from the live publication in
milliseconds, without retraining (`fmstore rate`, `fmstore movies add`,
`Recommender.add_ratings`).

The ratings and movies are recorded in the catalog (append-only tables), then each touched
user's point is recomputed from all their ratings against the live movies' vectors (the ranking
model's closed form, the rating model's fold-in) and new movies' points from their genres and
year, and upserted into the live collections under the store's write lock. apply.py has the
order of work and the repair after a crash; run.py the live run's arrays and the math;
export.py writes a dataset folder that includes the recorded updates, to train on them.

    from fmstore.updates import Updater
    Updater(store, engine).add_ratings({42: {318: 5.0}})

`fmstore publish` and `--rollback` bring the newly live collections up to date before they
return; a program that calls fmstore.publish.publish() or rollback() itself calls
`Updater(store, engine).sync()` after it (any later update does it too).
"""

from fmstore.updates.apply import Applied, Updater
from fmstore.updates.run import LiveRun

__all__ = ["Applied", "LiveRun", "Updater"]
