"""Literal, loop-per-query float64 oracles of the baseline re-rankers, written from the papers.

Dense N x N matrices (N = Q + G) and plain loops: only for small test data.
Rank lists use numpy's stable argsort (ties by index), as the fast code does.
"""

from __future__ import annotations

import numpy as np


def combined(qg: np.ndarray, gg: np.ndarray, qq: np.ndarray) -> np.ndarray:
    """C = [[qq, qg], [qg^T, gg]] in float64."""
    qg, gg, qq = (np.asarray(x, dtype=np.float64) for x in (qg, gg, qq))
    return np.block([[qq, qg], [qg.T, gg]])


def k_reciprocal(qg, gg, qq, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    """Zhong et al. (CVPR 2017), k-reciprocal encoding + Jaccard distance, as their re_ranking does."""
    n_query, n_gallery = np.shape(qg)
    n = n_query + n_gallery
    squared = combined(qg, gg, qq) ** 2
    col_max = squared.max(axis=0)
    col_max[col_max == 0] = 1.0
    dist = (squared / col_max).T  # each column over its maximum, then transposed
    rank = np.argsort(dist, axis=1, kind="stable")

    def reciprocal(i: int, k: int) -> list[int]:
        forward = rank[i, : k + 1]
        return [int(j) for j in forward if i in rank[j, : k + 1]]

    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n))
    for i in range(n):
        r_i = reciprocal(i, k1)
        expansion = list(r_i)
        for cand in r_i:
            r_c = reciprocal(cand, half)
            if len(set(r_c) & set(r_i)) > 2.0 / 3.0 * len(r_c):
                expansion += r_c
        expansion = np.unique(np.array(expansion, dtype=np.int64))  # may be empty
        weight = np.exp(-dist[i, expansion])
        v[i, expansion] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    out = np.empty((n_query, n_gallery))
    for i in range(n_query):
        for j in range(n_gallery):
            s = np.minimum(v[i], v[n_query + j]).sum()
            jaccard = 1.0 - s / (2.0 - s)
            out[i, j] = jaccard * (1.0 - lambda_value) + dist[i, n_query + j] * lambda_value
    return out


def ecn(qg, gg, qq, t: int, q: int, k: int) -> np.ndarray:
    """Sarfraz et al. (CVPR 2018), ECN with the rank-list distance, loop per query.

    Each item is first in its own list; lists are cut at N; a pair whose
    rank-list score is 0 gets 1 + its plain distance.
    """
    n_query, n_gallery = np.shape(qg)
    n = n_query + n_gallery
    d = combined(qg, gg, qq)
    rank = np.empty((n, n), dtype=np.int64)
    for a in range(n):
        order = np.argsort(d[a], kind="stable")
        rank[a] = np.concatenate([[a], order[order != a]])
    k, t, q = min(k, n), min(t, n - 1), min(q, n - 1)
    weight = np.zeros((n, n))  # weight[a, j] = k + 1 - pos_a(j), 1-based positions, 0 beyond k
    for a in range(n):
        for pos in range(k):
            weight[a, rank[a, pos]] = k - pos
    sim = weight @ weight.T
    rank_dist = np.empty((n, n))
    for a in range(n):
        lo, hi = sim[a].min(), sim[a].max()
        rank_dist[a] = 1.0 - ((sim[a] - lo) / (hi - lo) if hi > lo else 0.0)

    def expanded(a: int) -> list[int]:
        top = [int(x) for x in rank[a, 1 : t + 1]]
        return top + [int(y) for x in top for y in rank[x, 1 : q + 1]]

    size = t + t * q
    out = np.empty((n_query, n_gallery))
    for p in range(n_query):
        for j in range(n_gallery):
            g = n_query + j
            mean = (sum(rank_dist[e, g] for e in expanded(p)) + sum(rank_dist[e, p] for e in expanded(g))) / (2 * size)
            score = 1.0 - mean
            out[p, j] = 1.0 - score if score > 0 else 1.0 + d[p, g]
    return out


def split(c: np.ndarray, n_query: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(qg, gg, qq) blocks of a combined [N, N] matrix."""
    return c[:n_query, n_query:], c[n_query:, n_query:], c[:n_query, :n_query]


def random_blocks(n_query: int, n_gallery: int, seed: int, *, levels: int = 0, symmetric: bool = True):
    """Random (qg, gg, qq) float64 distances with a zero diagonal.

    ``levels`` > 0 draws integers in [1, levels] instead of continuous values:
    many exact ties. ``symmetric=False`` keeps C != C^T.
    """
    rng = np.random.default_rng(seed)
    n = n_query + n_gallery
    c = rng.integers(1, levels + 1, (n, n)).astype(np.float64) if levels else rng.random((n, n)) + 0.01
    if symmetric:
        c = np.triu(c, 1) + np.triu(c, 1).T
    np.fill_diagonal(c, 0.0)
    return split(c, n_query)


def clustered_blocks(n_query: int, n_gallery: int, n_classes: int, seed: int, dim: int = 8):
    """(qg, gg, qq) float32 Euclidean distances between clustered L2-normalised features."""
    from tests.icfrr.engine_data import clustered_features, euclidean

    fq, fg, _, _ = clustered_features(n_query, n_gallery, n_classes, dim, seed)
    return euclidean(fq, fg), euclidean(fg, fg), euclidean(fq, fq)


def assert_no_dense_combined_matrix(method, monkeypatch) -> None:
    """``method(qg, gg, qq)`` at N = 2000 allocates less than one dense [N, N] float32 (tracemalloc).

    The rank-list chunks are made small, and the compiled kernels are loaded
    before tracing starts.
    """
    import tracemalloc

    from icfrr.baselines import _ranks

    qg, gg, qq = clustered_blocks(100, 1900, n_classes=20, seed=10)
    n = 2000
    monkeypatch.setattr(_ranks, "CHUNK_BYTES", 8 * 50_000)
    method(qg[:2, :20].copy(), gg[:20, :20].copy(), qq[:2, :2].copy())
    tracemalloc.start()
    try:
        method(qg, gg, qq)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n * n * 4, f"{peak / 1e6:.1f} MB traced: a dense [N, N] float32 would be {n * n * 4 / 1e6:.0f} MB"
