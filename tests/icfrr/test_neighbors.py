"""Neighbour graphs against the literal rank matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numba import njit

import icfrr
from icfrr import literal
from icfrr._sorting import desc_key, sort_pairs
from tests.icfrr.engine_data import clustered_features, euclidean, random_case


def graph_from_rank_matrix(gg: np.ndarray, k: int) -> np.ndarray:
    """Brute force: neighbour r of item i is the j with R[i, j] == r."""
    ranks = literal.rank_matrix(gg)
    g = gg.shape[0]
    out = np.empty((g, k), dtype=np.int64)
    for i in range(g):
        for j in range(g):
            if 0 <= ranks[i, j] < k:
                out[i, ranks[i, j]] = j
    return out


@pytest.mark.parametrize("k", [1, 5, 29])
def test_matches_rank_matrix_on_random_distances(k):
    _, gg = random_case(1, 30, seed=k)
    graph = icfrr.neighbor_graph(gg, k)
    np.testing.assert_array_equal(graph.indices.numpy(), graph_from_rank_matrix(gg, k))
    want = np.take_along_axis(gg, graph.indices.numpy(), 1)
    np.testing.assert_array_equal(graph.distances.numpy(), want)
    assert graph.k == k and graph.n_items == 30


def test_ties_are_broken_by_index_like_a_stable_sort():
    rng = np.random.default_rng(0)
    gg = rng.integers(0, 3, (50, 50)).astype(np.float32)  # many exact ties, some at distance 0
    gg = np.minimum(gg, gg.T)
    np.fill_diagonal(gg, 0)
    for k in (1, 7, 20):
        np.testing.assert_array_equal(icfrr.neighbor_graph(gg, k).indices.numpy(), graph_from_rank_matrix(gg, k))


def test_k_is_clamped_to_gallery_size_minus_one():
    _, gg = random_case(1, 6, seed=0)
    graph = icfrr.neighbor_graph(gg, 100)
    assert graph.k == 5
    assert all(i not in row for i, row in enumerate(graph.indices.tolist()))


def test_one_item_gallery_has_no_neighbours():
    graph = icfrr.neighbor_graph(np.zeros((1, 1), np.float32), 4)
    assert tuple(graph.indices.shape) == (1, 0)


def test_from_features_matches_dense_distances():
    _, fg, _, _ = clustered_features(1, 300, 6, 24, seed=1)
    graph = icfrr.neighbor_graph_from_features(fg, 15, rows_per_chunk=64)  # several chunks
    dense = euclidean(fg, fg)
    np.fill_diagonal(dense, 0)
    want = graph_from_rank_matrix(dense, 15)
    # float32 matmul distances differ from exact ones by ~1e-7: allow swaps of near-ties only.
    assert np.mean(graph.indices.numpy() == want) > 0.99
    np.testing.assert_allclose(graph.distances.numpy(), np.take_along_axis(dense, want, 1), atol=1e-5)
    assert not (graph.indices.numpy() == np.arange(300)[:, None]).any()


def test_cosine_metric():
    _, fg, _, _ = clustered_features(1, 80, 4, 8, seed=2)
    graph = icfrr.neighbor_graph_from_features(fg * 3.0, 5, metric="cosine")
    cos = 1.0 - fg.astype(np.float64) @ fg.T.astype(np.float64)
    np.fill_diagonal(cos, 0)
    np.testing.assert_allclose(graph.distances.numpy(), np.take_along_axis(cos, graph.indices.numpy(), 1), atol=1e-5)


def test_pairwise_distances_matches_cdist():
    a = torch.randn(20, 7)
    b = torch.randn(30, 7)
    np.testing.assert_allclose(icfrr.pairwise_distances(a, b), torch.cdist(a, b), atol=1e-5)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: icfrr.neighbor_graph(np.zeros((3, 4), np.float32), 2), "square"),
        (lambda: icfrr.neighbor_graph(np.full((3, 3), np.nan, np.float32), 2), "NaN"),
        (lambda: icfrr.neighbor_graph(np.zeros((3, 3), np.float32), 0), "k must be"),
        (lambda: icfrr.neighbor_graph(np.zeros((0, 0), np.float32), 2), "empty"),
        (lambda: icfrr.neighbor_graph_from_features(np.zeros((5, 3), np.float32), 2, metric="l1"), "metric"),
        (lambda: icfrr.pairwise_distances(np.zeros((2, 3)), np.zeros((2, 4))), "widths"),
        (lambda: icfrr.NeighborGraph(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 3)), "matching"),
    ],
)
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("values", [3, 1000])  # many ties, and few
def test_cpu_partition_path_and_topk_path_agree(values):
    from icfrr._sorting import smallest_rows
    from icfrr.neighbors import _smallest_by_topk

    rng = np.random.default_rng(values)
    block = rng.integers(0, values, (64, 300)).astype(np.float32)
    block[:, 5] = -0.0  # negative zero ties with zero
    for k in (1, 10, 299):
        idx_a, dist_a = smallest_rows(block, k)
        idx_b, dist_b = _smallest_by_topk(torch.from_numpy(block.copy()), k)
        want = np.argsort(block, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx_a, want)
        np.testing.assert_array_equal(idx_b.numpy(), want)
        np.testing.assert_array_equal(dist_a, np.take_along_axis(block, want, 1))
        np.testing.assert_array_equal(dist_b.numpy(), dist_a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("values", [3, 1000])  # many ties, and few
def test_smallest_rows_is_the_stable_argsort_prefix_for_either_float_width(values, dtype):
    from icfrr._sorting import smallest_rows

    rng = np.random.default_rng(values)
    block = rng.integers(0, values, (64, 300)).astype(dtype)
    block[:, 7] = -np.inf  # an item put first in its own list, as ECN does
    block[:, 9] = -0.0  # ties with 0.0
    for k in (1, 10, 298, 299, 300, 301):
        want = np.argsort(block, axis=1, kind="stable")[:, :k]
        idx, dist = smallest_rows(block, k)
        np.testing.assert_array_equal(idx, want)
        assert idx.dtype == np.int64 and dist.dtype == dtype
        np.testing.assert_array_equal(dist, np.take_along_axis(block, want, 1))


def test_feature_distances_are_the_rows_of_pairwise_distances():
    rng = np.random.default_rng(0)
    fq, fg = rng.normal(size=(9, 5)).astype(np.float32), rng.normal(size=(13, 5)).astype(np.float32)
    for metric in ("euclidean", "cosine"):
        feats = icfrr.FeatureDistances(fq, fg, metric)
        assert feats.shape == (9, 13)
        np.testing.assert_allclose(feats(slice(2, 6)).numpy(), icfrr.pairwise_distances(fq, fg, metric)[2:6].numpy(),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="widths differ"):
        icfrr.FeatureDistances(fq, fg[:, :4])
    with pytest.raises(ValueError, match="unknown metric"):
        icfrr.FeatureDistances(fq, fg, "manhattan")


@njit
def _sort_desc(values):  # pragma: no cover - compiled
    """The engine's descending sort of float64 scores, as ``_update._rerank_row`` makes it
    (the sort and key map are compiled helpers: reached from compiled code only)."""
    n = values.shape[0]
    keys, positions = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.int32)
    for i in range(n):
        keys[i] = desc_key(values[i])
        positions[i] = i
    return sort_pairs(keys, positions)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 300, 5000])
def test_radix_sorts_equal_numpy_stable_sorts(n):
    from icfrr._sorting import stable_argsort_rows

    def value_of_key(key):  # the float a descending key stands for: the inverse of the key map, in numpy
        bits = ~np.uint64(key)
        return (bits & ~np.uint64(1 << 63) if bits >> np.uint64(63) else ~bits).view(np.float64)

    rng = np.random.default_rng(n)
    cases = [rng.normal(size=n), np.round(rng.normal(size=n), 2), np.where(rng.random(n) < 0.3, -0.0, 0.0),
             1.0 + rng.integers(0, 5, n) * 1e-12]  # the last: equal top 32 bits, different low bits
    for x in cases:
        want = np.argsort(-(x + 0.0), kind="stable")
        keys, positions = _sort_desc(x)
        np.testing.assert_array_equal(positions, want)
        np.testing.assert_array_equal([value_of_key(k) for k in keys], x[want] + 0.0)
        row = x.astype(np.float32)[None]
        order, values = stable_argsort_rows(row)
        np.testing.assert_array_equal(order[0], np.argsort(row[0] + np.float32(0.0), kind="stable"))
        np.testing.assert_array_equal(values[0], row[0][order[0]])


def test_streamed_euclidean_distances_equal_the_one_expression_form_bit_for_bit():
    """The chunked callers reuse the gallery's norms and fewer temporaries; the values must not move
    (cached artifacts and stored runs were made with the one-expression form)."""
    from icfrr.baselines._inputs import ItemFeatures

    rng = np.random.default_rng(3)
    q = torch.from_numpy(rng.normal(size=(70, 33)).astype(np.float32))
    g = torch.from_numpy(rng.normal(size=(90, 33)).astype(np.float32))

    def literal(a, b):
        return ((a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)).clamp_(min=0).sqrt_()

    assert torch.equal(icfrr.pairwise_distances(q, g), literal(q, g))
    assert torch.equal(icfrr.FeatureDistances(q, g)(slice(7, 41)), literal(q[7:41], g))
    items = ItemFeatures(q, g)
    both = torch.cat([q, g])
    want = literal(both[60:80], both).numpy()
    want[np.arange(20), np.arange(60, 80)] = 0.0
    np.testing.assert_array_equal(items.rows(60, 80), want)
    np.testing.assert_array_equal(items.query_gallery(slice(0, 25)), literal(q[:25], g).numpy())
    graph = icfrr.neighbor_graph_from_features(g, 5, rows_per_chunk=16)
    blocks = torch.cat([literal(g[s : s + 16], g) for s in range(0, 90, 16)]).numpy()  # the same row chunks
    np.testing.assert_array_equal(graph.distances.numpy(), np.take_along_axis(blocks, graph.indices.numpy(), 1))
