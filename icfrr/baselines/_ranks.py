"""Rank lists over the combined query+gallery set, built chunk by chunk.

The baselines rank the N = Q + G items together, over the combined matrix

    C = [[qq,   qg],
         [qg^T, gg]]            (N x N, never materialised)

Rows of C (or of C^T, i.e. columns of C) are assembled a chunk at a time from
the three blocks, so the memory held is O(chunk * N) plus the sparse
neighbour lists. Ties in distance are broken by index, the order numpy's
stable argsort gives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from icfrr._sorting import smallest_rows
from icfrr.chunks import CHUNK_BYTES, rows_per_chunk


def combined_rows(
    qg: np.ndarray, gg: np.ndarray, qq: np.ndarray, start: int, stop: int, *, columns: bool = False
) -> np.ndarray:
    """Rows ``start:stop`` of C (or of C^T with ``columns=True``) as float64 ``[stop - start, N]``.

    The chunk must lie on one side (all queries or all gallery items).
    """
    n_query = qg.shape[0]
    if stop <= n_query:  # query items
        left = qq[:, start:stop].T if columns else qq[start:stop]
        return np.concatenate([left, qg[start:stop]], axis=1, dtype=np.float64)
    a, b = start - n_query, stop - n_query
    right = gg[:, a:b].T if columns else gg[a:b]
    return np.concatenate([qg[:, a:b].T, right], axis=1, dtype=np.float64)


def combined_entries(qg: np.ndarray, gg: np.ndarray, qq: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``C[rows, cols]`` elementwise, as float64."""
    n_query = qg.shape[0]
    out = np.empty(rows.shape, dtype=np.float64)
    rq, cq = rows < n_query, cols < n_query
    for mask, block, r_off, c_off, swap in (
        (rq & cq, qq, 0, 0, False),
        (rq & ~cq, qg, 0, n_query, False),
        (~rq & cq, qg, n_query, 0, True),  # C[g, q] = qg[q, g]
        (~rq & ~cq, gg, n_query, n_query, False),
    ):
        r, c = rows[mask] - r_off, cols[mask] - c_off
        out[mask] = block[c, r] if swap else block[r, c]
    return out


def row_chunks(n_query: int, n_items: int, budget: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, stop) chunks of the N items, none straddling the query/gallery boundary.

    ``budget``: bytes of one float64 chunk of rows (default ``CHUNK_BYTES``).
    """
    step = rows_per_chunk(n_items, 8 * n_items, CHUNK_BYTES if budget is None else budget)
    for lo, hi in ((0, n_query), (n_query, n_items)):
        for start in range(lo, hi, step):
            yield start, min(start + step, hi)


def neighbour_lists(
    qg: np.ndarray,
    gg: np.ndarray,
    qq: np.ndarray,
    width: int,
    *,
    columns: bool,
    transform: Callable[[np.ndarray, int, int], None] | None = None,
) -> np.ndarray:
    """The first ``width`` entries of each item's rank list over the combined set.

    Args:
        width: how many entries to keep (cut at N).
        columns: rank the rows of C^T (the columns of C) instead of the rows of C.
        transform: ``f(chunk, start, stop)``, called on each float64 chunk of
            rows ``start:stop`` before it is ranked; it may modify the chunk in place.

    Returns:
        int64 [N, min(width, N)]: item indices, nearest first, ties by index.
    """
    n_query = qg.shape[0]
    return ranked_rows(lambda start, stop: combined_rows(qg, gg, qq, start, stop, columns=columns),
                       n_query, n_query + qg.shape[1], width, transform=transform)


def ranked_rows(
    rows: Callable[[int, int], np.ndarray],
    n_query: int,
    n_items: int,
    width: int,
    *,
    transform: Callable[[np.ndarray, int, int], None] | None = None,
    budget: int | None = None,
) -> np.ndarray:
    """The first ``width`` entries of each item's rank list, from its row of distances to the N items.

    Args:
        rows: ``rows(start, stop)`` -> float64 [stop - start, N], the distance rows of items
            ``start:stop`` (a chunk lies on one side: all queries or all gallery items).
        n_query: Q (the first Q items are the queries).
        n_items: N = Q + G.
        width: how many entries to keep (cut at N).
        transform: as in :func:`neighbour_lists`.
        budget: bytes of one chunk of rows (default ``CHUNK_BYTES``).

    Returns:
        int64 [N, min(width, N)]: item indices, nearest first, ties by index.
    """
    out = np.empty((n_items, min(width, n_items)), dtype=np.int64)
    for start, stop in row_chunks(n_query, n_items, budget):
        chunk = rows(start, stop)
        if transform is not None:
            transform(chunk, start, stop)
        out[start:stop] = smallest_rows(chunk, width)[0]
    return out
