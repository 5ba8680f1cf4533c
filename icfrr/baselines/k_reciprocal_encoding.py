"""k-reciprocal re-ranking with Jaccard distance (Zhong, Zheng, Cao & Li, CVPR 2017).

"Re-ranking Person Re-identification with k-reciprocal Encoding". This module
returns the quantity of the authors' public ``re_ranking`` step for step, but
never holds an ``N x N`` matrix (N = Q + G): neighbour lists are found chunk
by chunk and kept sparse, V is a sparse matrix, and the Jaccard distance is a
min-sum through an inverted index on V's columns, one query at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from icfrr._checks import check_positive_int
from icfrr._compiled import helper, kernel
from icfrr.chunks import CHUNK_BYTES, rows_per_chunk
from icfrr._sorting import on_row_slices
from icfrr.baselines._inputs import ItemFeatures, Matrix, check_fraction, distance_blocks, same_type_as
from icfrr.baselines._ranks import combined_entries, neighbour_lists, ranked_rows, row_chunks

if TYPE_CHECKING:
    from icfrr.ann import RankListFinder


def k_reciprocal(
    qg: Matrix, gg: Matrix, qq: Matrix, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3
) -> Matrix:
    """Re-ranked query-gallery distances by k-reciprocal encoding (Zhong et al., CVPR 2017).

    Over the N = Q + G items together, with C = [[qq, qg], [qg^T, gg]]:

    1. d(i, j) = C[j, i]^2 / max_r C[r, i]^2  (squared, each column divided by its
       maximum, then transposed, as the authors do; a column whose maximum is 0 is
       left as zeros);
    2. N(i, k): the first k + 1 items of i's rank list by d(i, .), ties by index
       (numpy's stable argsort); R(i, k) = {j in N(i, k) : i in N(j, k)};
    3. R*(i) = R(i, k1) united with every R(j, h), j in R(i, k1), h = round(k1 / 2)
       (halves to even, as numpy rounds), for which
       |R(j, h) & R(i, k1)| > 2/3 |R(j, h)|;
    4. V[i, j] = exp(-d(i, j)) / sum_{l in R*(i)} exp(-d(i, l)) for j in R*(i), else 0;
    5. local query expansion (when k2 != 1): V[i] <- mean of V[j] over the first k2
       items j of i's rank list;
    6. d_J(i, j) = 1 - s / (2 - s), s = sum_l min(V[i, l], V[j, l]) (the Jaccard
       distance, l over all N items), and the result, for query i and gallery item j,
       d*(i, j) = (1 - lambda_value) d_J(i, j) + lambda_value d(i, j).

    Rank lists shorter than asked (k1 + 1, round(k1/2) + 1 or k2 at least N) are
    cut at N, as slicing does in the authors' code. Arithmetic is float64
    throughout (the authors use float32 from step 1 on).

    Args:
        qg: query-gallery distances [Q, G].
        gg: gallery-gallery distances [G, G].
        qq: query-query distances [Q, Q].
        k1: neighbourhood size of the k-reciprocal sets (>= 1).
        k2: local query expansion size (>= 1; 1 turns expansion off).
        lambda_value: weight of the original distance, in [0, 1].

    Returns:
        [Q, G] re-ranked distances, smaller = closer: a numpy array or a torch
        tensor (on qg's device) like ``qg``; float32 when qg is float32, else float64.

    Raises:
        ValueError: on a bad parameter, shape, or NaN/inf in the distances.

    Example:
        Gallery items at 0, 3, 8 and 10 on a line, the query at 5.2. Item 0 is
        the farthest from the query but the nearest neighbour of item 1, the
        query's nearest: the k-reciprocal sets and the expansion over the
        query's first ``k2`` items bring it up to second, ahead of the pair at 8 and 10.

        >>> import numpy as np
        >>> from icfrr.baselines import k_reciprocal
        >>> g, q = np.array([0.0, 3.0, 8.0, 10.0]), np.array([5.2])
        >>> qg, gg, qq = abs(q[:, None] - g), abs(g[:, None] - g), abs(q[:, None] - q)
        >>> qg.argsort(axis=1).tolist()
        [[1, 2, 3, 0]]
        >>> k_reciprocal(qg, gg, qq, k1=2, k2=2, lambda_value=0.3).argsort(axis=1).tolist()
        [[1, 0, 2, 3]]
    """
    k1, k2, lam = _check(k1, k2, lambda_value)
    qg_np, gg_np, qq_np = distance_blocks(qg, gg, qq)
    n_query, n_gallery = qg_np.shape
    n_items = n_query + n_gallery
    k_full, k_qe = min(k1 + 1, n_items), min(k2, n_items)
    scale = np.empty(n_items, dtype=np.float64)  # max_r C[r, i]^2, or 1 where that is 0
    ranks = neighbour_lists(qg_np, gg_np, qq_np, max(k_full, k_qe), columns=True, transform=_normaliser(scale))
    v = _expanded_v(ranks, k1, k2, scale, lambda cols, rows: combined_entries(qg_np, gg_np, qq_np, cols, rows))
    v_query, v_gallery = _split(v, n_query)
    out = np.empty((n_query, n_gallery), dtype=qg_np.dtype)
    _mix_rows(v_query, v_gallery, qg_np, scale[:n_query], lam, out)
    return same_type_as(out, qg)


def k_reciprocal_chunks(
    fq: Matrix, fg: Matrix, *, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
    chunk_bytes: int = CHUNK_BYTES, neighbours: RankListFinder | None = None,
) -> Iterator[tuple[slice, np.ndarray]]:
    """``k_reciprocal`` from features, one chunk of queries at a time: nothing [Q, G] or [N, N] is held.

    The distances are Euclidean between the rows of ``fq`` and ``fg`` (as given:
    normalise them first where the dense path would). Each item's rank list
    is found from its row of distances to the N items, a chunk of rows at a
    time; the k-reciprocal sets and V are sparse over the N items; the Jaccard
    distances are computed per chunk of queries against the gallery. The
    result equals ``k_reciprocal`` on the distance matrices of the same
    features up to float rounding of the distances (which can only matter at
    near-ties of a rank list).

    Args:
        fq: float [Q, D] query features.
        fg: float [G, D] gallery features.
        k1, k2, lambda_value: as in ``k_reciprocal``.
        chunk_bytes: bytes of one chunk of distance rows.
        neighbours: ``(features [N, D], width) -> int64 [N, width]`` rank lists (each item
            first): an approximate index's (``icfrr.ann.item_neighbours``) instead of every
            item's full row of distances ranked (None, the default: equal to ``k_reciprocal``).
            Step 1's per-item maximum still takes one pass over the rows of distances (no sort).

    Yields:
        (the chunk's query slice, float32 numpy [B, G] re-ranked distances), in query order.

    Raises:
        ValueError: a bad parameter, features of different widths, or NaN/inf (on the first chunk).
    """
    k1, k2, lam = _check(k1, k2, lambda_value)
    return _chunks_from_features(fq, fg, k1, k2, lam, chunk_bytes, neighbours)


def _chunks_from_features(fq: Matrix, fg: Matrix, k1: int, k2: int, lam: float, budget: int,
                          neighbours: RankListFinder | None) -> Iterator[tuple[slice, np.ndarray]]:
    items = ItemFeatures(fq, fg)
    n_query, n_items = items.n_query, items.n_items
    k_full, k_qe = min(k1 + 1, n_items), min(k2, n_items)
    scale = np.empty(n_items, dtype=np.float64)
    peaks = _peaks(scale)
    if neighbours is None:
        ranks = ranked_rows(items.rows, n_query, n_items, max(k_full, k_qe), transform=peaks, budget=budget)
    else:
        ranks = neighbours(items.features, max(k_full, k_qe))
        for start, stop in row_chunks(n_query, n_items, budget):   # step 1's maxima (C is symmetric here)
            peaks(items.rows(start, stop), start, stop)
    v = _expanded_v(ranks, k1, k2, scale, items.entries)
    v_query, v_gallery = _split(v, n_query)
    del v, ranks
    step = rows_per_chunk(n_query, 8 * items.n_gallery, budget)
    for start in range(0, n_query, step):
        rows = slice(start, min(start + step, n_query))
        qg = items.query_gallery(rows)
        out = np.empty(qg.shape, dtype=np.float32)
        _mix_rows(v_query[rows], v_gallery, qg, scale[rows], lam, out)
        yield rows, out


def _check(k1: int, k2: int, lambda_value: float) -> tuple[int, int, float]:
    return check_positive_int(k1, "k1"), check_positive_int(k2, "k2"), check_fraction(lambda_value, "lambda_value")


def _normaliser(scale: np.ndarray) -> Callable[[np.ndarray, int, int], None]:
    """Step 1 on a chunk of rows of C^T, in place, keeping each row's maximum in ``scale``."""

    def normalise(chunk: np.ndarray, start: int, stop: int) -> None:
        np.square(chunk, out=chunk)
        peak = chunk.max(axis=1)
        peak[peak == 0] = 1.0
        scale[start:stop] = peak
        chunk /= peak[:, None]

    return normalise


def _peaks(scale: np.ndarray) -> Callable[[np.ndarray, int, int], None]:
    """Step 1's divisors only, for float32 rows that are then ranked as they are: x -> x^2 / peak is
    strictly increasing on float32 values taken to float64 (the square is exact and distinct squares
    stay distinct through the division), so the rank lists equal those of the normalised rows."""

    def peaks(chunk: np.ndarray, start: int, stop: int) -> None:
        peak = np.square(chunk.max(axis=1), dtype=np.float64)
        peak[peak == 0] = 1.0
        scale[start:stop] = peak

    return peaks


def _expanded_v(ranks: np.ndarray, k1: int, k2: int, scale: np.ndarray,
                entries: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> sp.csr_matrix:
    """V after steps 2-5, CSR [N, N]; ``entries(rows, cols)`` gives C[rows, cols] elementwise."""
    n_items = ranks.shape[0]
    k_full, k_half, k_qe = min(k1 + 1, n_items), min(int(np.around(k1 / 2.0)) + 1, n_items), min(k2, n_items)
    v = _encoding(ranks, k_full, k_half, scale, entries)
    if k2 != 1:
        rows = np.repeat(np.arange(n_items), k_qe)
        mean = sp.csr_matrix(
            (np.full(rows.size, 1.0 / k_qe), (rows, ranks[:, :k_qe].ravel())), shape=(n_items, n_items)
        )
        v = (mean @ v).tocsr()
    return v


def _split(v: sp.csr_matrix, n_query: int) -> tuple[sp.csr_matrix, sp.csc_matrix]:
    """V's query rows (CSR, sorted) and gallery rows as CSC: column l -> the gallery items with V[., l] != 0."""
    v_query = v[:n_query].tocsr()
    v_query.sort_indices()
    return v_query, v[n_query:].tocsc()


def _mix_rows(v_query: sp.csr_matrix, v_gallery: sp.csc_matrix, qg: np.ndarray, scale: np.ndarray, lam: float,
              out: np.ndarray) -> None:
    """Step 6 for the queries of ``v_query`` (whose rows of qg and scale are given), into ``out``."""
    _jaccard_mix(
        v_query.indptr, v_query.indices, v_query.data,
        v_gallery.indptr, v_gallery.indices, v_gallery.data,
        qg, scale, lam, out,
    )  # fmt: skip


def _encoding(
    ranks: np.ndarray, k_full: int, k_half: int, scale: np.ndarray,
    entries: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> sp.csr_matrix:
    """V (steps 2-4) as a CSR matrix [N, N]."""
    n_items = ranks.shape[0]
    recip_full = _reciprocal(ranks, k_full)
    recip_half = _reciprocal(ranks, k_half)
    sets, sizes = _expanded_sets(ranks, k_full, k_half, recip_full, recip_half)
    keep = np.arange(sets.shape[1]) < sizes[:, None]
    rows = np.repeat(np.arange(n_items), sizes)
    cols = sets[keep]
    values = entries(cols, rows)  # d(i, j) uses C[j, i]
    weights = np.exp(-(np.square(values) / scale[rows]))
    weights /= np.bincount(rows, weights=weights, minlength=n_items)[rows]  # R*(i) may be empty (ties at 0)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    return sp.csr_matrix((weights, cols, indptr), shape=(n_items, n_items))


def _reciprocal(ranks: np.ndarray, k: int) -> np.ndarray:
    """mask [N, k]: ranks[i, p] has i among its own first k items."""
    out = np.zeros((ranks.shape[0], k), dtype=np.bool_)
    on_row_slices(lambda start, stop: _reciprocal_rows(ranks, k, out, start, stop), ranks.shape[0])
    return out


# The kernels below are serial and release the GIL: their rows are spread over threads by ``on_row_slices``
# instead of ``parallel=True``, whose parfor compile cost seconds on a fresh cache.
@kernel
def _reciprocal_rows(ranks, k, out, start, stop) -> None:  # pragma: no cover - compiled
    for i in range(start, stop):
        for p in range(k):
            j = ranks[i, p]
            for r in range(k):
                if ranks[j, r] == i:
                    out[i, p] = True
                    break


def _expanded_sets(
    ranks: np.ndarray, k_full: int, k_half: int, recip_full: np.ndarray, recip_half: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """R*(i) of every item: (sets [N, cap] sorted ascending in the first sizes[i] places, sizes [N])."""
    n = ranks.shape[0]
    sets = np.empty((n, k_full + k_full * k_half), dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    on_row_slices(lambda start, stop: _expanded_sets_rows(ranks, k_full, k_half, recip_full, recip_half, sets, sizes,
                                                          start, stop), n)
    return sets, sizes


@kernel
def _expanded_sets_rows(ranks, k_full, k_half, recip_full, recip_half, sets, sizes, start, stop
                        ) -> None:  # pragma: no cover - compiled
    for i in range(start, stop):
        buf = sets[i]
        m = np.int64(0)  # not a literal 0: typing would first compile _sort_unique for Literal[int](0) too
        for p in range(k_full):
            if recip_full[i, p]:
                buf[m] = ranks[i, p]
                m += 1
        n_recip = m
        for a in range(n_recip):
            c = buf[a]
            size = 0
            overlap = 0
            for p in range(k_half):
                if recip_half[c, p]:
                    size += 1
                    x = ranks[c, p]
                    for b in range(n_recip):
                        if buf[b] == x:
                            overlap += 1
                            break
            if overlap > 2.0 / 3.0 * size:
                for p in range(k_half):
                    if recip_half[c, p]:
                        buf[m] = ranks[c, p]
                        m += 1
        sizes[i] = _sort_unique(buf, m)


@helper
def _sort_unique(buf, m) -> int:  # pragma: no cover - compiled
    """Sort ``buf[:m]`` ascending in place (heapsort: O(m log m) for any k1, and a small compile), move the
    distinct values to the front; returns how many (``np.unique``'s result, without its compile cost)."""
    for root in range(m // 2 - 1, -1, -1):
        _sift_down(buf, root, m)
    for end in range(m - 1, 0, -1):
        top = buf[0]
        buf[0] = buf[end]
        buf[end] = top
        _sift_down(buf, np.int64(0), end)  # np.int64: a literal 0 compiles a second _sift_down
    n_unique = 0
    for a in range(m):
        if n_unique == 0 or buf[a] != buf[n_unique - 1]:
            buf[n_unique] = buf[a]
            n_unique += 1
    return n_unique


@helper
def _sift_down(heap, root, n) -> None:  # pragma: no cover - compiled
    """Restore the max-heap ``heap[:n]`` below ``root``."""
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and heap[child + 1] > heap[child]:
            child += 1
        if heap[root] >= heap[child]:
            return
        value = heap[root]
        heap[root] = heap[child]
        heap[child] = value
        root = child


def _jaccard_mix(q_indptr, q_indices, q_data, g_indptr, g_rows, g_data, qg, scale, lam, out) -> None:
    """``_jaccard_mix_rows`` for every query of ``qg``, rows spread over threads."""
    on_row_slices(lambda start, stop: _jaccard_mix_rows(q_indptr, q_indices, q_data, g_indptr, g_rows, g_data, qg,
                                                        scale, lam, out, start, stop), qg.shape[0])


@kernel
def _jaccard_mix_rows(
    q_indptr, q_indices, q_data, g_indptr, g_rows, g_data, qg, scale, lam, out, start, stop
) -> None:  # pragma: no cover - compiled
    """out[i, j] = (1 - lam) (1 - s / (2 - s)) + lam qg[i, j]^2 / scale[i], s = sum_l min(V[i, l], V[Q + j, l])."""
    n_gallery = qg.shape[1]
    for i in range(start, stop):
        acc = np.zeros(n_gallery)
        for a in range(q_indptr[i], q_indptr[i + 1]):
            col = q_indices[a]
            value = q_data[a]
            for b in range(g_indptr[col], g_indptr[col + 1]):
                acc[g_rows[b]] += min(value, g_data[b])
        for j in range(n_gallery):
            s = acc[j]
            d = np.float64(qg[i, j])
            out[i, j] = (1.0 - s / (2.0 - s)) * (1.0 - lam) + (d * d / scale[i]) * lam
