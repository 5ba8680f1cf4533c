"""k-reciprocal re-ranking with Jaccard distance (Zhong, Zheng, Cao & Li, CVPR 2017).

"Re-ranking Person Re-identification with k-reciprocal Encoding". This module
returns the quantity of the authors' public ``re_ranking`` step for step, but
never holds an ``N x N`` matrix (N = Q + G): neighbour lists are found chunk
by chunk and kept sparse, V is a sparse matrix, and the Jaccard distance is a
min-sum through an inverted index on V's columns, one query at a time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numba import njit, prange

from icfrr._checks import check_positive_int
from icfrr.baselines._inputs import Matrix, check_fraction, distance_blocks, same_type_as
from icfrr.baselines._ranks import combined_entries, neighbour_lists


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
    """
    k1 = check_positive_int(k1, "k1")
    k2 = check_positive_int(k2, "k2")
    lam = check_fraction(lambda_value, "lambda_value")
    qg_np, gg_np, qq_np = distance_blocks(qg, gg, qq)
    n_query, n_gallery = qg_np.shape
    n_items = n_query + n_gallery
    k_full, k_half, k_qe = min(k1 + 1, n_items), min(int(np.around(k1 / 2.0)) + 1, n_items), min(k2, n_items)

    scale = np.empty(n_items, dtype=np.float64)  # max_r C[r, i]^2, or 1 where that is 0

    def normalise(chunk: np.ndarray, start: int, stop: int) -> None:
        np.square(chunk, out=chunk)
        peak = chunk.max(axis=1)
        peak[peak == 0] = 1.0
        scale[start:stop] = peak
        chunk /= peak[:, None]

    ranks = neighbour_lists(qg_np, gg_np, qq_np, max(k_full, k_qe), columns=True, transform=normalise)
    v = _encoding(ranks, k_full, k_half, scale, qg_np, gg_np, qq_np)
    if k2 != 1:
        rows = np.repeat(np.arange(n_items), k_qe)
        mean = sp.csr_matrix(
            (np.full(rows.size, 1.0 / k_qe), (rows, ranks[:, :k_qe].ravel())), shape=(n_items, n_items)
        )
        v = (mean @ v).tocsr()
    v_query = v[:n_query].tocsr()
    v_gallery = v[n_query:].tocsc()  # column l -> the gallery items with V[., l] != 0 (the inverted index)
    v_query.sort_indices()
    out = np.empty((n_query, n_gallery), dtype=qg_np.dtype)
    _jaccard_mix(
        v_query.indptr, v_query.indices, v_query.data,
        v_gallery.indptr, v_gallery.indices, v_gallery.data,
        qg_np, scale[:n_query], lam, out,
    )  # fmt: skip
    return same_type_as(out, qg)


def _encoding(
    ranks: np.ndarray, k_full: int, k_half: int, scale: np.ndarray, qg: np.ndarray, gg: np.ndarray, qq: np.ndarray
) -> sp.csr_matrix:
    """V (steps 2-4) as a CSR matrix [N, N]."""
    n_items = ranks.shape[0]
    recip_full = _reciprocal(ranks, k_full)
    recip_half = _reciprocal(ranks, k_half)
    sets, sizes = _expanded_sets(ranks, k_full, k_half, recip_full, recip_half)
    keep = np.arange(sets.shape[1]) < sizes[:, None]
    rows = np.repeat(np.arange(n_items), sizes)
    cols = sets[keep]
    entries = combined_entries(qg, gg, qq, cols, rows)  # d(i, j) uses C[j, i]
    weights = np.exp(-(np.square(entries) / scale[rows]))
    weights /= np.bincount(rows, weights=weights, minlength=n_items)[rows]  # R*(i) may be empty (ties at 0)
    indptr = np.concatenate([[0], np.cumsum(sizes)])
    return sp.csr_matrix((weights, cols, indptr), shape=(n_items, n_items))


@njit(parallel=True, cache=True)
def _reciprocal(ranks: np.ndarray, k: int) -> np.ndarray:  # pragma: no cover - compiled
    """mask [N, k]: ranks[i, p] has i among its own first k items."""
    n = ranks.shape[0]
    out = np.zeros((n, k), dtype=np.bool_)
    for i in prange(n):
        for p in range(k):
            j = ranks[i, p]
            for r in range(k):
                if ranks[j, r] == i:
                    out[i, p] = True
                    break
    return out


@njit(parallel=True, cache=True)
def _expanded_sets(
    ranks: np.ndarray, k_full: int, k_half: int, recip_full: np.ndarray, recip_half: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """R*(i) of every item: (sets [N, cap] sorted ascending in the first sizes[i] places, sizes [N])."""
    n = ranks.shape[0]
    sets = np.empty((n, k_full + k_full * k_half), dtype=np.int64)
    sizes = np.zeros(n, dtype=np.int64)
    for i in prange(n):
        buf = sets[i]
        m = 0
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
        unique = np.unique(buf[:m])
        buf[: unique.size] = unique
        sizes[i] = unique.size
    return sets, sizes


@njit(parallel=True, cache=True)
def _jaccard_mix(
    q_indptr, q_indices, q_data, g_indptr, g_rows, g_data, qg, scale, lam, out
) -> None:  # pragma: no cover - compiled
    """out[i, j] = (1 - lam) (1 - s / (2 - s)) + lam qg[i, j]^2 / scale[i], s = sum_l min(V[i, l], V[Q + j, l])."""
    n_query, n_gallery = qg.shape
    for i in prange(n_query):
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
