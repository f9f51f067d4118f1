"""User-facing errors.

Every error a user can cause or fix is an FmstoreError whose message is one line saying what is
wrong and what to do. The CLI prints that line and exits 2; nothing else reaches a user.
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
    """A title matches several movies; the message lists them."""


class StoreError(FmstoreError):
    """The vector store or the catalog refused an operation or is unreachable."""


class MissingDependencyError(FmstoreError):
    """An optional dependency a command needs is not installed (an environment problem)."""

    exit_code = 3
