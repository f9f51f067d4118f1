"""Where users and movies sit in the score matrices: raw ids -> rows and columns, and per-row item
lists.

Rows are users in a fixed "user row" space: the training users in sorted id order (the
vocabulary's order), plus one last row for a user unseen at training, whose b_u and p_u are zero
(exactly what the model does with such a user). Columns are movies in movies.csv order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fmstore.errors import DataError
from fmstore.features import lookup_ids


@dataclass
class Rows:
    """A user-row space and the movies' columns: raw ids -> row/column indices."""

    user_ids: np.ndarray  # sorted; row len(user_ids) is "unknown user"
    movie_ids: np.ndarray  # movies.csv order
    _movie_order: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        self.user_ids = np.asarray(self.user_ids, np.int64)
        self._movie_order = np.argsort(self.movie_ids, kind="stable")

    @property
    def n_users(self) -> int:
        """Number of user rows."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of item columns (movies)."""
        return len(self.movie_ids)

    def users(self, raw: np.ndarray) -> np.ndarray:
        """User row of each raw id; unknown ids map to the last row (n_users)."""
        found = lookup_ids(self.user_ids, raw)
        return np.where(found >= 0, found, self.n_users)

    def items(self, raw: np.ndarray) -> np.ndarray:
        """Raw movie ids -> item columns; DataError for a movie not in the dataset."""
        found = lookup_ids(self.movie_ids[self._movie_order], raw)
        if (found < 0).any():
            bad = np.asarray(raw)[found < 0][0]
            raise DataError(
                f"movie {bad} is not in the dataset's movies.csv; the ratings do not "
                "belong to this dataset"
            )
        return self._movie_order[found]


def spans(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(span number, flat index) of every index of the spans [start, start + length), in order."""
    local = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.cumsum(lengths) - lengths
    flat = np.repeat(starts - offsets, lengths) + np.arange(lengths.sum())
    return local, flat


@dataclass
class CSR:
    """Items of each user row (compressed sparse rows, no values)."""

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def build(cls, users: np.ndarray, items: np.ndarray, n_rows: int) -> CSR:
        """The CSR of `items` grouped by row `users` (n_rows rows; order within a row kept)."""
        order = np.argsort(users, kind="stable")
        counts = np.bincount(users, minlength=n_rows)
        return cls(
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            np.asarray(items, np.int64)[order],
        )

    def block(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(local row, item) of every entry of `rows` (local row = position in `rows`)."""
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        local, flat = spans(starts, ends - starts)
        return local, self.items[flat]
