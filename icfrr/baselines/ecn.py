"""Expanded Cross Neighborhood re-ranking, rank-list variant (Sarfraz et al., CVPR 2018).

"A Pose-Sensitive Embedding for Person Re-Identification with Expanded Cross
Neighborhood Re-Ranking". Rank lists over the combined query+gallery set are
found chunk by chunk; the rank-list similarities are sparse products through
an inverted index, so no ``N x N`` matrix (N = Q + G) is ever held.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import get_num_threads, njit, prange

from icfrr._checks import check_positive_int
from icfrr.baselines._inputs import Matrix, distance_blocks, same_type_as
from icfrr.baselines._ranks import neighbour_lists


def ecn(qg: Matrix, gg: Matrix, qq: Matrix, *, t: int = 3, q: int = 8, k: int = 25) -> Matrix:
    """Re-ranked query-gallery distances by ECN with the rank-list distance (Sarfraz et al., CVPR 2018).

    Over the N = Q + G items together, ranked by the combined distances
    C = [[qq, qg], [qg^T, gg]] (each item first in its own list, then the others
    by distance, ties by index; the authors rank by cosine distance of
    L2-normalised features, the same order as Euclidean):

    - rank-list similarity (the authors' ``rankdist``): with pos_a(j) the 1-based
      position of j in a's list, S(a, b) = sum_j f_a(j) f_b(j),
      f_a(j) = max(0, k + 1 - pos_a(j)); min-max normalised per row,
      S~(a, b) = (S(a, b) - min_c S(a, c)) / (max_c S(a, c) - min_c S(a, c))
      (0 where the row is constant), and R(a, b) = 1 - S~(a, b);
    - expanded neighbourhood N(p, t, q) = {p_1 .. p_M}: the t nearest neighbours of
      p (positions 2..t+1) followed by the q nearest neighbours of each of them,
      M = t + t q (a multiset);
    - ECN(p, g) = 1 / (2M) sum_{j=1..M} [R(p_j, g) + R(g_j, p)]   (Eq. 1 of the paper);
    - the rank-list score s(p, g) = 1 - ECN(p, g) is 0 where no item of either
      expanded neighbourhood shares a top-k neighbour with the other side (at
      large N the rank lists' row minimum is 0, so score 0 means no overlap).
      Those pairs would all tie at 1; they fall back to the plain distance,
      ranked after every pair with overlap: the result there is 1 + qg[p, g].

    The result is ECN(p, g) where s(p, g) > 0, else 1 + qg[p, g]. k, t and q at
    or beyond N are cut (k to N, t and q to N - 1).

    Args:
        qg: query-gallery distances [Q, G] (non-negative, for the fallback order).
        gg: gallery-gallery distances [G, G].
        qq: query-query distances [Q, Q].
        t: nearest neighbours in the expanded neighbourhood (>= 1).
        q: neighbours of each of those (>= 1).
        k: rank-list length of the rank-list similarity (>= 1).

    Returns:
        [Q, G] re-ranked distances, smaller = closer: a numpy array or a torch
        tensor (on qg's device) like ``qg``; float32 when qg is float32, else float64.

    Raises:
        ValueError: on a bad parameter, shape, or NaN/inf in the distances.
    """
    t = check_positive_int(t, "t")
    q = check_positive_int(q, "q")
    k = check_positive_int(k, "k")
    qg_np, gg_np, qq_np = distance_blocks(qg, gg, qq)
    n_query, n_gallery = qg_np.shape
    n_items = n_query + n_gallery
    k, t, q = min(k, n_items), min(t, n_items - 1), min(q, n_items - 1)

    def self_first(chunk: np.ndarray, start: int, stop: int) -> None:
        chunk[np.arange(stop - start), np.arange(start, stop)] = -np.inf

    ranks = neighbour_lists(qg_np, gg_np, qq_np, max(k, t + 1, q + 1), columns=False, transform=self_first)
    top = ranks[:, 1 : t + 1]
    expanded = np.concatenate([top, ranks[top, 1 : q + 1].reshape(n_items, t * q)], axis=1)

    # The weights f_a(j) as a sparse [N, N] matrix, and its inverted index (column j -> items a with f_a(j) > 0).
    rows = np.repeat(np.arange(n_items), k)
    weights = np.tile(np.arange(k, 0, -1, dtype=np.int64), n_items)
    inverted = sp.csr_matrix((weights, (rows, ranks[:, :k].ravel())), shape=(n_items, n_items)).tocsc()
    n_blocks = 4 * get_num_threads()  # thread-sized blocks of rows, each with its own scratch arrays
    row_min = _row_minima(ranks[:, :k], inverted.indptr, inverted.indices, inverted.data, min(n_blocks, n_items))
    row_max = int(np.sum(np.arange(k, 0, -1, dtype=np.int64) ** 2))  # S(a, a), the largest in every row
    spread = (row_max - row_min).astype(np.float64)
    scale = np.divide(1.0, spread, out=np.zeros(n_items), where=spread > 0)

    # Gallery side: sum_j S~(g_j, p) for all p, one gallery item at a time, kept as [G, Q].
    cross_g = np.empty((n_gallery, n_query))
    overlap_g = np.empty((n_gallery, n_query), dtype=np.bool_)
    _cross_sums(expanded[n_query:], ranks[:, :k], scale, row_min, inverted.indptr, inverted.indices, inverted.data,
                0, n_query, cross_g, overlap_g, min(n_blocks, n_gallery))  # fmt: skip
    # Query side, then the result, one query at a time.
    cross_q = np.empty((n_query, n_gallery))
    overlap_q = np.empty((n_query, n_gallery), dtype=np.bool_)
    _cross_sums(expanded[:n_query], ranks[:, :k], scale, row_min, inverted.indptr, inverted.indices, inverted.data,
                n_query, n_items, cross_q, overlap_q, min(n_blocks, n_query))  # fmt: skip
    del inverted
    score = cross_q
    score += cross_g.T
    score /= 2 * expanded.shape[1]
    del cross_g
    overlap = overlap_q
    overlap |= overlap_g.T
    out = np.where(overlap, 1.0 - score, 1.0 + qg_np).astype(qg_np.dtype, copy=False)
    return same_type_as(out, qg)


@njit(parallel=True, cache=True)
def _row_minima(top, indptr, indices, data, n_blocks) -> np.ndarray:  # pragma: no cover - compiled
    """min_c S(a, c) for every item a: 0 unless a shares a top-k item with every item."""
    n, k = top.shape
    out = np.zeros(n, dtype=np.int64)
    for blk in prange(n_blocks):
        acc = np.zeros(n, dtype=np.int64)
        touched = np.empty(n, dtype=np.int64)
        for a in range(blk * n // n_blocks, (blk + 1) * n // n_blocks):
            count = 0
            for pos in range(k):
                j = top[a, pos]
                for x in range(indptr[j], indptr[j + 1]):
                    b = indices[x]
                    if acc[b] == 0:
                        touched[count] = b
                        count += 1
                    acc[b] += (k - pos) * data[x]
            if count == n:
                out[a] = acc.min()
            for x in range(count):
                acc[touched[x]] = 0
    return out


@njit(parallel=True, cache=True)
def _cross_sums(
    expanded, top, scale, row_min, indptr, indices, data, lo, hi, sums, overlap, n_blocks
) -> None:  # pragma: no cover - compiled
    """sums[r, b - lo] = sum_{e in expanded[r]} S~(e, b) for items lo <= b < hi; overlap: a term is > 0.

    S~(e, b) = (S(e, b) - row_min[e]) * scale[e], S(e, b) = sum_j f_e(j) f_b(j),
    computed as sum_j y(j) f_b(j) with y(j) = sum_e scale[e] f_e(j) through the
    inverted index; the integer sum of S(e, b) - row_min[e] tells overlap exactly.
    """
    n_rows, m = expanded.shape
    n = top.shape[0]
    k = top.shape[1]
    width = hi - lo
    for blk in prange(n_blocks):
        y = np.zeros(n)
        y_int = np.zeros(n, dtype=np.int64)
        touched = np.empty(n, dtype=np.int64)
        acc = np.zeros(width)
        acc_int = np.zeros(width, dtype=np.int64)
        for r in range(blk * n_rows // n_blocks, (blk + 1) * n_rows // n_blocks):
            count = 0
            offset = 0.0
            offset_int = 0
            for c in range(m):
                e = expanded[r, c]
                offset += scale[e] * row_min[e]
                offset_int += row_min[e]
                for pos in range(k):
                    j = top[e, pos]
                    if y_int[j] == 0:
                        touched[count] = j
                        count += 1
                    y[j] += scale[e] * (k - pos)
                    y_int[j] += k - pos
            for x in range(count):
                j = touched[x]
                for z in range(indptr[j], indptr[j + 1]):
                    b = indices[z]
                    if lo <= b < hi:
                        acc[b - lo] += y[j] * data[z]
                        acc_int[b - lo] += y_int[j] * data[z]
                y[j] = 0.0
                y_int[j] = 0
            for b in range(width):
                sums[r, b] = acc[b] - offset
                overlap[r, b] = acc_int[b] > offset_int
                acc[b] = 0.0
                acc_int[b] = 0
