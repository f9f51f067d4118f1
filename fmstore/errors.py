"""User-facing errors.

Every error a user can cause or fix is an FmstoreError whose message is one line saying what is
wrong and what to do. The CLI prints that line (secrets masked, control characters escaped, long
values clipped) and exits with the error's `exit_code`:

    2  input: a flag, an argument, a data or ratings file, a run folder, a title or id not found
    3  environment: an FMSTORE_* setting (or its flag), the home folder, the database or Qdrant
       (unreachable, refusing, in use), memory, disk, the terminal's encoding
    1  a bug (an "internal error"); 130 interrupted
"""


class FmstoreError(Exception):
    """Base class: `str(error)` is the one-line message shown to the user."""

    exit_code = 2


class DataError(FmstoreError):
    """An input file is missing, malformed or inconsistent (names file, line and value)."""


class ConfigError(FmstoreError):
    """A setting or flag has a value that cannot work."""


class NotFoundError(FmstoreError):
    """A run, movie, user or publication that was asked for does not exist."""


class AmbiguousError(FmstoreError):
    """A name matches several things (a title several movies, a run id's start several runs);
    the message lists them."""


class EnvError(FmstoreError):
    """The environment cannot work: a malformed FMSTORE_* setting, an unusable home folder,
    not enough memory or disk, an output that cannot be written."""

    exit_code = 3


class StoreError(EnvError):
    """The vector store or the catalog refused an operation or is unreachable."""


class MissingDependencyError(FmstoreError):
    """An optional dependency a command needs is not installed (an environment problem)."""

    exit_code = 3


class ArgumentError(ConfigError):
    """A library function's argument has a value that cannot work. `argument` names it, so that
    the CLI can say which flag it was: str() reads "batch_size -5: use 1 or more"."""

    def __init__(self, argument: str, value: object, advice: str):
        self.argument, self.value, self.advice = argument, value, advice
        super().__init__(f"{argument} {value!r}: {advice}")


class StoreBusyError(StoreError):
    """The embedded store is locked by another process (`pid`, None when unknown)."""

    def __init__(self, message: str, pid: int | None = None):
        self.pid = pid
        super().__init__(message)


class PublishRecordError(StoreError):
    """The aliases switched (the publication is live) but the catalog could not record it."""
