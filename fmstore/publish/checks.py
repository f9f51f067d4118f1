"""What publish checks before it acts, and the stage hook the crash tests use.

Arguments are checked before anything is written; errors name the argument (ArgumentError), and
the CLI words them as its flags.
"""

from __future__ import annotations

import os
import signal

from fmstore.errors import ArgumentError

# Test-only: FMSTORE_TEST_KILL_AT=<stage>[:<signal>] makes a publishing process send itself the
# signal (SIGKILL by default) when it reaches <stage>, so that tests/test_crash_matrix.py can
# kill a real `fmstore publish` at every stage boundary. Unset in normal use: nothing happens.
KILL_AT_ENV = "FMSTORE_TEST_KILL_AT"
STAGES = (
    "before_upsert",  # publication rows written, nothing in the vector store yet
    "movies_upsert",  # after the first batch of movies
    "users_upsert",  # after the first batch of users
    "after_flush",  # both collections flushed
    "before_switch",  # both verified, aliases not switched yet
    "after_switch",  # aliases switched, the catalog's publication rows not yet succeeded
    "after_catalog",  # all done and recorded
)


def checkpoint(stage: str) -> None:
    """Reaching a stage boundary: a no-op unless a crash test asked to die here."""
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted:
        return
    name, _, signame = wanted.partition(":")
    if name == stage:
        if signame == "SIGINT":
            # Ctrl-C as a terminal delivers it: a process started in the background by a
            # non-interactive shell (CI) inherits SIGINT ignored, and Python then installs no
            # KeyboardInterrupt handler; the crash test is about what Ctrl-C does, so restore it.
            signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), getattr(signal, signame or "SIGKILL"))


def check_publish_arguments(
    *,
    movies_alias: str,
    users_alias: str,
    batch_size: int,
    shards: int | None,
    replicas: int | None,
    write_consistency: int | None,
) -> None:
    """Every argument of publish() that could fail later, checked before anything is written."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError("batch_size", batch_size, "use a whole number of 1 or more")
    for name, value in (
        ("shards", shards),
        ("replicas", replicas),
        ("write_consistency", write_consistency),
    ):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ArgumentError(name, value, "use a whole number of 1 or more")
    check_aliases(movies_alias, users_alias)


def check_aliases(movies_alias: str, users_alias: str) -> None:
    """Two distinct alias names without '__' (which separates alias, run and publication in a
    physical collection's name)."""
    for name, value in (("movies_alias", movies_alias), ("users_alias", users_alias)):
        if not isinstance(value, str) or not value or "__" in value:
            raise ArgumentError(name, value, "use a non-empty name without '__'")
    if movies_alias == users_alias:
        raise ArgumentError("users_alias", users_alias, "must differ from movies_alias")


def check_keep(keep: int) -> int:
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ArgumentError("keep", keep, "keep at least 1 publication")
    return keep
