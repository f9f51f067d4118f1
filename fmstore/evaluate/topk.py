"""Each user's top K of a block of scores and which of them are hits, for the ranking metrics.

The metrics rank every movie for up to 20,000 users: at ml-latest's 53,889 movies a NumPy
argpartition of each [1024, n_items] block, with a bool matrix of relevant items beside it, took
most of the validation phase (about 150 s for four predictors on 2 cores). `top_hits` does it in
one numba pass per user, parallel over users: it marks the user's training items (skipped) and
relevant items (hits) in a small per-thread array, keeps the K best scores in a sorted buffer of
K slots as it scans the row, and writes only the [users, K] hits. Without numba (it is the
`train` extra) the NumPy path below does the same.

Ties: the kernel ranks equal scores by column order (the first column first); the NumPy path's
argpartition leaves the order of ties at the K-th place unspecified. Model scores are floats
and rarely tie; the popularity baseline's counts do, so its figures may move in the fourth digit.
"""

from __future__ import annotations

import numpy as np

from fmstore.evaluate.indexing import CSR

try:
    from numba import njit, prange
except ImportError:  # pragma: no cover - the `train` extra is what brings numba
    njit = None

_EXCLUDED = np.int8(1)
_RELEVANT = np.int8(2)


def top_hits(
    scores: np.ndarray,
    rows: np.ndarray,
    exclude: CSR,
    relevant: CSR,
    depth: int,
    blocked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(hits [len(rows), depth] bool, n_relevant [len(rows)]): for each user row `rows[r]`, whether
    its r-th row of `scores` ranks a relevant item at each of the first `depth` places, every item
    of `exclude` and every `blocked` item left out of the ranking, and how many relevant items it
    has (relevant items that are also excluded or blocked do not count)."""
    rows = np.asarray(rows, np.int64)
    n_items = scores.shape[1]
    blocked = np.zeros(n_items, np.bool_) if blocked is None else np.asarray(blocked, np.bool_)
    if _top_hits is None:
        return _top_hits_numpy(scores, rows, exclude, relevant, depth, blocked)
    hits = np.zeros((len(rows), depth), np.bool_)
    n_rel = np.zeros(len(rows), np.int64)
    _top_hits(
        np.asarray(scores, np.float32),
        rows,
        exclude.indptr,
        exclude.items,
        relevant.indptr,
        relevant.items,
        blocked,
        hits,
        n_rel,
    )
    return hits, n_rel


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, best first."""
    k = min(k, scores.shape[1])
    if k < scores.shape[1]:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(scores.shape[1]), scores.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def _top_hits_numpy(scores, rows, exclude, relevant, depth, blocked):
    """The same with NumPy: a bool matrix of relevant items and an argpartition per block."""
    scores = np.array(scores, dtype=np.float32)  # a writable copy
    rel = np.zeros(scores.shape, bool)
    rel[relevant.block(rows)] = True
    seen = exclude.block(rows)
    scores[seen] = -np.inf
    rel[seen] = False
    scores[:, blocked] = -np.inf
    rel[:, blocked] = False
    top = top_k(scores, depth)
    hits = np.zeros((len(rows), depth), bool)
    hits[:, : top.shape[1]] = np.take_along_axis(rel, top, 1)
    return hits, rel.sum(1)


if njit is None:
    _top_hits = None
else:

    @njit(parallel=True, cache=True)
    def _top_hits(scores, rows, ex_indptr, ex_items, rel_indptr, rel_items, blocked, hits, n_rel):
        n, n_items = scores.shape
        depth = hits.shape[1]
        n_blocks = min(n, 64)
        for b in prange(n_blocks):
            mark = np.zeros(n_items, np.int8)  # 1: excluded, 2: relevant
            best_score = np.empty(depth, np.float32)
            best_item = np.empty(depth, np.int64)
            for r in range(b * n // n_blocks, (b + 1) * n // n_blocks):
                u = rows[r]
                for t in range(ex_indptr[u], ex_indptr[u + 1]):
                    mark[ex_items[t]] = _EXCLUDED
                count = 0
                for t in range(rel_indptr[u], rel_indptr[u + 1]):
                    j = rel_items[t]
                    if mark[j] == 0 and not blocked[j]:
                        mark[j] = _RELEVANT
                        count += 1
                n_rel[r] = count
                if count > 0:
                    filled = 0
                    for j in range(n_items):
                        if mark[j] == _EXCLUDED or blocked[j]:
                            continue
                        s = scores[r, j]
                        if filled == depth and not s > best_score[depth - 1]:
                            continue
                        # insert after every score >= s: ties keep column order
                        place = filled if filled < depth else depth - 1
                        while place > 0 and best_score[place - 1] < s:
                            best_score[place] = best_score[place - 1]
                            best_item[place] = best_item[place - 1]
                            place -= 1
                        best_score[place] = s
                        best_item[place] = j
                        if filled < depth:
                            filled += 1
                    for p in range(filled):
                        hits[r, p] = mark[best_item[p]] == _RELEVANT
                for t in range(ex_indptr[u], ex_indptr[u + 1]):
                    mark[ex_items[t]] = 0
                for t in range(rel_indptr[u], rel_indptr[u + 1]):
                    mark[rel_items[t]] = 0
