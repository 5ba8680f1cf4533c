"""Expanded Cross Neighborhood re-ranking, rank-list variant (Sarfraz et al., CVPR 2018).

"A Pose-Sensitive Embedding for Person Re-Identification with Expanded Cross
Neighborhood Re-Ranking". Rank lists over the combined query+gallery set are
found chunk by chunk; the rank-list similarities are sparse products through
an inverted index, so no ``N x N`` matrix (N = Q + G) is ever held.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
from numba import get_num_threads, njit

from icfrr._checks import check_positive_int
from icfrr._compiled import kernel
from icfrr.chunks import CHUNK_BYTES, rows_per_chunk
from icfrr._sorting import on_row_slices
from icfrr.baselines._inputs import ItemFeatures, Matrix, distance_blocks, same_type_as
from icfrr.baselines._ranks import neighbour_lists, ranked_rows

if TYPE_CHECKING:
    from icfrr.ann import RankListFinder


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

    Example:
        ``k_reciprocal``'s example: gallery items at 0, 3, 8 and 10, the query
        at 5.2. Item 0 shares its nearest neighbour, item 1, with the query, so
        it comes second; items 2 and 3 share no top-2 neighbour with the
        query's side and fall back to 1 + their distance (3.8 and 5.8).

        >>> import numpy as np
        >>> from icfrr.baselines import ecn
        >>> g, q = np.array([0.0, 3.0, 8.0, 10.0]), np.array([5.2])
        >>> qg, gg, qq = abs(q[:, None] - g), abs(g[:, None] - g), abs(q[:, None] - q)
        >>> qg.argsort(axis=1).tolist()
        [[1, 2, 3, 0]]
        >>> ecn(qg, gg, qq, t=1, q=1, k=2).round(2).tolist()
        [[0.4, 0.1, 3.8, 5.8]]
    """
    t = check_positive_int(t, "t")
    q = check_positive_int(q, "q")
    k = check_positive_int(k, "k")
    qg_np, gg_np, qq_np = distance_blocks(qg, gg, qq)
    n_query, n_gallery = qg_np.shape
    n_items = n_query + n_gallery
    k, t, q = min(k, n_items), min(t, n_items - 1), min(q, n_items - 1)

    ranks = neighbour_lists(qg_np, gg_np, qq_np, max(k, t + 1, q + 1), columns=False, transform=_self_first)
    expanded, inverted, row_min, scale = _rank_list_parts(ranks, k, t, q)
    n_blocks = 4 * get_num_threads()  # thread-sized blocks of rows, each with its own scratch arrays

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


def ecn_chunks(
    fq: Matrix, fg: Matrix, *, t: int = 3, q: int = 8, k: int = 25, chunk_bytes: int = CHUNK_BYTES,
    neighbours: RankListFinder | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """``ecn`` from features, one chunk of queries at a time: nothing [Q, G] or [N, N] is held.

    The distances are Euclidean between the rows of ``fq`` and ``fg`` (as
    given). Rank lists are found from each item's row of distances to the N
    items, a chunk of rows at a time, and kept as [N, max(k, t + 1, q + 1)]
    indices; the query side of ECN goes through the inverted index of the
    rank lists as in ``ecn``, and the gallery side through a reverse index of
    the gallery items' expanded neighbourhoods, one query at a time. The
    result equals ``ecn`` on the distance matrices of the same features up to
    float rounding (sums taken in another order; near-ties of a rank list).

    Args:
        fq: float [Q, D] query features.
        fg: float [G, D] gallery features.
        t, q, k: as in ``ecn``.
        chunk_bytes: bytes of one chunk of distance rows.
        neighbours: ``(features [N, D], width) -> int64 [N, width]`` rank lists (each item
            first): an approximate index's (``icfrr.ann.item_neighbours``) instead of every
            item's full row of distances ranked (None, the default: equal to ``ecn``).

    Yields:
        (the chunk's query slice, float32 numpy [B, G] re-ranked distances), in query order.

    Raises:
        ValueError: a bad parameter, features of different widths, or NaN/inf (on the first chunk).
    """
    t, q, k = check_positive_int(t, "t"), check_positive_int(q, "q"), check_positive_int(k, "k")
    return _chunks_from_features(fq, fg, t, q, k, chunk_bytes, neighbours)


def _chunks_from_features(fq: Matrix, fg: Matrix, t: int, q: int, k: int, budget: int,
                          neighbours: RankListFinder | None) -> Iterator[tuple[slice, np.ndarray]]:
    items = ItemFeatures(fq, fg)
    n_query, n_gallery, n_items = items.n_query, items.n_gallery, items.n_items
    k, t, q = min(k, n_items), min(t, n_items - 1), min(q, n_items - 1)
    width = max(k, t + 1, q + 1)
    if neighbours is None:
        ranks = ranked_rows(items.rows, n_query, n_items, width, transform=_self_first, budget=budget)
    else:
        ranks = neighbours(items.features, width)
    expanded, inverted, row_min, scale = _rank_list_parts(ranks, k, t, q)
    top = ranks[:, :k]   # a view, as the dense path passes it (one compiled specialisation)
    m = expanded.shape[1]
    # Reverse index of the gallery side: item e -> the gallery items whose expanded neighbourhood holds it (times).
    reverse = sp.csr_matrix((np.ones(n_gallery * m, dtype=np.int64),
                             (expanded[n_query:].ravel(), np.repeat(np.arange(n_gallery), m))),
                            shape=(n_items, n_gallery))
    offset = (scale * row_min)[expanded[n_query:]].sum(axis=1)
    offset_int = row_min[expanded[n_query:]].sum(axis=1)
    n_blocks = 4 * get_num_threads()
    step = rows_per_chunk(n_query, 40 * n_gallery, budget)
    for start in range(0, n_query, step):
        rows = slice(start, min(start + step, n_query))
        b = rows.stop - rows.start
        cross_q = np.empty((b, n_gallery))
        overlap_q = np.empty((b, n_gallery), dtype=np.bool_)
        _cross_sums(expanded[rows], top, scale, row_min, inverted.indptr, inverted.indices, inverted.data,
                    n_query, n_items, cross_q, overlap_q, min(n_blocks, b))  # fmt: skip
        cross_g = np.empty((b, n_gallery))
        overlap_g = np.empty((b, n_gallery), dtype=np.bool_)
        _gallery_sums(rows.start, rows.stop, top, scale, inverted.indptr, inverted.indices, inverted.data,
                      reverse.indptr, reverse.indices, reverse.data, offset, offset_int, cross_g, overlap_g,
                      min(n_blocks, b))  # fmt: skip
        score = cross_q
        score += cross_g
        score /= 2 * m
        overlap_q |= overlap_g
        yield rows, np.where(overlap_q, 1.0 - score, 1.0 + items.query_gallery(rows)).astype(np.float32)


def _self_first(chunk: np.ndarray, start: int, stop: int) -> None:
    """Each item first in its own rank list (the chunk holds rows start:stop of the N items)."""
    chunk[np.arange(stop - start), np.arange(start, stop)] = -np.inf


def _rank_list_parts(ranks: np.ndarray, k: int, t: int, q: int
                     ) -> tuple[np.ndarray, sp.csc_matrix, np.ndarray, np.ndarray]:
    """From the rank lists: the expanded neighbourhoods [N, M], the weights f_a(j) as a CSC [N, N]
    matrix (the inverted index: column j -> items a with f_a(j) > 0), each row's minimum of S and
    1 / (max - min) of S (0 for a constant row)."""
    n_items = ranks.shape[0]
    top = ranks[:, 1 : t + 1]
    expanded = np.concatenate([top, ranks[top, 1 : q + 1].reshape(n_items, t * q)], axis=1)
    rows = np.repeat(np.arange(n_items), k)
    weights = np.tile(np.arange(k, 0, -1, dtype=np.int64), n_items)
    inverted = sp.csr_matrix((weights, (rows, ranks[:, :k].ravel())), shape=(n_items, n_items)).tocsc()
    n_blocks = 4 * get_num_threads()
    row_min = _row_minima(ranks[:, :k], inverted.indptr, inverted.indices, inverted.data, min(n_blocks, n_items))
    row_max = int(np.sum(np.arange(k, 0, -1, dtype=np.int64) ** 2))  # S(a, a), the largest in every row
    spread = (row_max - row_min).astype(np.float64)
    scale = np.divide(1.0, spread, out=np.zeros(n_items), where=spread > 0)
    return expanded, inverted, row_min, scale


def _on_blocks(kernel, args: tuple) -> None:
    """``kernel(*args, first, stop)`` over slices of blocks 0 .. args[-1] - 1 on the row thread pool.

    The kernels are serial and release the GIL: threads from ``on_row_slices``
    instead of ``parallel=True``, whose parfor compile cost seconds on a fresh cache.
    """
    on_row_slices(lambda first, stop: kernel(*args, first, stop), args[-1])


def _gallery_sums(*args) -> None:
    """``_gallery_sums_blocks`` over all its blocks (the arguments before ``first, stop``)."""
    _on_blocks(_gallery_sums_blocks, args)


@kernel
def _gallery_sums_blocks(
    lo, hi, top, scale, indptr, indices, data, rev_indptr, rev_items, rev_count, offset, offset_int, sums,
    overlap, n_blocks, first, stop,
) -> None:  # pragma: no cover - compiled
    """sums[p - lo, g] = sum_{e in expanded(g)} S~(e, p) for the queries lo <= p < hi; overlap: a term is > 0.

    Per query p: S(x, p) = sum_j f_x(j) f_p(j) for the items x sharing a top-k item
    with p (through the inverted index), then spread to the gallery items whose
    expanded neighbourhood holds x (the reverse index, with multiplicity);
    offset[g] = sum_e scale[e] row_min[e] and offset_int[g] = sum_e row_min[e].
    """
    n = top.shape[0]
    n_rows = hi - lo
    width = sums.shape[1]
    for blk in range(first, stop):
        s = np.zeros(n, dtype=np.int64)
        touched = np.empty(n, dtype=np.int64)
        acc = np.zeros(width)
        acc_int = np.zeros(width, dtype=np.int64)
        for r in range(blk * n_rows // n_blocks, (blk + 1) * n_rows // n_blocks):
            count = _similarities(lo + r, top, indptr, indices, data, s, touched)
            for c in range(count):
                x = touched[c]
                value = s[x]
                for z in range(rev_indptr[x], rev_indptr[x + 1]):
                    g = rev_items[z]
                    acc[g] += scale[x] * value * rev_count[z]
                    acc_int[g] += value * rev_count[z]
                s[x] = 0
            for g in range(width):
                sums[r, g] = acc[g] - offset[g]
                overlap[r, g] = acc_int[g] > offset_int[g]
                acc[g] = 0.0
                acc_int[g] = 0


@njit(cache=True, inline="always")
def _similarities(a, top, indptr, indices, data, acc, touched) -> int:  # pragma: no cover - compiled
    """acc[b] += S(a, b) for every item b sharing a top-k item with a (acc zero there before); their
    indices go to touched[:count]. Returns count."""
    k = top.shape[1]
    count = 0
    for pos in range(k):
        j = top[a, pos]
        for x in range(indptr[j], indptr[j + 1]):
            b = indices[x]
            if acc[b] == 0:
                touched[count] = b
                count += 1
            acc[b] += (k - pos) * data[x]
    return count


def _row_minima(top: np.ndarray, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, n_blocks: int
                ) -> np.ndarray:
    """min_c S(a, c) for every item a: 0 unless a shares a top-k item with every item."""
    out = np.zeros(top.shape[0], dtype=np.int64)
    _on_blocks(_row_minima_blocks, (top, indptr, indices, data, out, n_blocks))
    return out


@kernel
def _row_minima_blocks(top, indptr, indices, data, out, n_blocks, first, stop) -> None:  # pragma: no cover - compiled
    n = top.shape[0]
    for blk in range(first, stop):
        acc = np.zeros(n, dtype=np.int64)
        touched = np.empty(n, dtype=np.int64)
        for a in range(blk * n // n_blocks, (blk + 1) * n // n_blocks):
            count = _similarities(a, top, indptr, indices, data, acc, touched)
            if count == n:
                out[a] = acc.min()
            for x in range(count):
                acc[touched[x]] = 0


def _cross_sums(*args) -> None:
    """``_cross_sums_blocks`` over all its blocks (the arguments before ``first, stop``)."""
    _on_blocks(_cross_sums_blocks, args)


@kernel
def _cross_sums_blocks(
    expanded, top, scale, row_min, indptr, indices, data, lo, hi, sums, overlap, n_blocks, first, stop
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
    for blk in range(first, stop):
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
