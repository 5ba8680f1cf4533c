"""Approximate gallery graphs (icfrr.ann) against the exact graph, and their recall against brute force."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from icfrr.ann import FaissMissing, GraphSpec, build_graph, default_spec, graph_recall, recall_sample
from icfrr.neighbors import NeighborGraph, neighbor_graph_from_features
from tests.icfrr.engine_data import clustered_features

pytest.importorskip("faiss")


def gallery(n: int = 600, seed: int = 0) -> np.ndarray:
    return clustered_features(1, n, 6, 16, seed)[1]


def brute_recall(approx: np.ndarray, exact: np.ndarray, c: int) -> float:
    return float(np.mean([len(set(a[:c]) & set(e[:c])) / c for a, e in zip(approx, exact)]))


def test_exact_kind_is_the_exact_graph():
    f = gallery()
    got, want = build_graph(f, 20, GraphSpec("exact")), neighbor_graph_from_features(f, 20)
    assert torch.equal(got.indices, want.indices) and torch.equal(got.distances, want.distances)


@pytest.mark.parametrize("per_cell", [{}, {"per_cell": 1}])
def test_ivf_searching_every_cell_finds_the_exact_neighbours(per_cell):
    f = gallery()
    nlist = default_spec("ivf", len(f)).params["nlist"]
    got = build_graph(f, 25, GraphSpec("ivf", {"nlist": nlist, "nprobe": nlist, **per_cell}))
    want = neighbor_graph_from_features(f, 25)
    assert torch.equal(got.indices, want.indices)
    np.testing.assert_allclose(got.distances, want.distances, rtol=0, atol=1e-5)


@pytest.mark.parametrize("nprobe", [1, 2])   # one cell of ~20 items holds fewer than k: such rows are completed exactly
def test_ivf_per_cell_few_cells_lists_k_distinct_other_items_and_misses_some(nprobe):
    f = gallery(800, seed=4)
    graph = build_graph(f, 30, GraphSpec("ivf", {"nlist": 40, "nprobe": nprobe, "per_cell": 1}))
    idx, dist = graph.indices.numpy(), graph.distances.numpy()
    assert not (idx == np.arange(len(f))[:, None]).any() and all(len(set(row)) == 30 for row in idx)
    lex = np.lexsort((idx, dist), axis=1)      # by (distance, index)
    assert (lex == np.arange(30)).all()
    np.testing.assert_allclose(dist, np.linalg.norm(f[:, None, :] - f[idx], axis=2), rtol=0, atol=1e-5)
    exact = neighbor_graph_from_features(f, 30).indices.numpy()
    assert brute_recall(idx, exact, 30) < 0.999     # two of forty cells searched: some neighbours are missed


def test_default_ivf_spec_keeps_its_parameters_up_to_100k_and_searches_per_cell_above():
    for g in (1000, 50_000, 100_000):   # 4 sqrt(G) cells (at most G / 39), 32 probed: as documented
        nlist = min(int(4 * g ** 0.5), g // 39)
        assert default_spec("ivf", g).params == {"nlist": nlist, "nprobe": min(32, nlist)}
    assert default_spec("ivf", 1_000_000).params == {"nlist": 2000, "nprobe": 32, "per_cell": 1}


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_graphs_list_k_distinct_other_items_nearest_first(kind):
    f = gallery()
    graph = build_graph(f, 30, default_spec(kind, len(f)))
    idx, dist = graph.indices.numpy(), graph.distances.numpy()
    assert idx.shape == (len(f), 30) and idx.min() >= 0 and idx.max() < len(f)
    assert not (idx == np.arange(len(f))[:, None]).any()
    assert all(len(set(row)) == 30 for row in idx)
    assert (np.diff(dist, axis=1) >= 0).all()
    true = np.linalg.norm(f[:, None, :] - f[idx], axis=2)
    np.testing.assert_allclose(dist, true, rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_recall_curve_equals_brute_force_at_every_cut_off(kind):
    f = gallery(800, seed=2)
    spec = GraphSpec("ivf", {"nlist": 20, "nprobe": 2}) if kind == "ivf" else default_spec("hnsw", 800)
    graph = build_graph(f, 40, spec)
    exact = neighbor_graph_from_features(f, 40).indices.numpy()
    sample = recall_sample(800, 300, seed=5)
    curve = graph_recall(graph, f, sample)
    assert len(curve) == 40
    want = [brute_recall(graph.indices.numpy()[sample], exact[sample], c) for c in range(1, 41)]
    np.testing.assert_allclose(curve, want, rtol=0, atol=1e-12)
    if kind == "ivf":
        assert min(curve) < 0.999        # two of twenty cells searched: some neighbours are missed


def test_recall_of_a_damaged_graph_counts_what_it_lost():
    f = gallery(200)
    exact = neighbor_graph_from_features(f, 10)
    idx = exact.indices.clone()
    idx[:, 0] = idx[:, 9]            # every item loses its nearest neighbour (listed twice instead)
    curve = graph_recall(NeighborGraph(idx, exact.distances), f, recall_sample(200))
    assert curve[0] == pytest.approx(0.0) and curve[9] == pytest.approx(0.9)
    assert graph_recall(exact, f, recall_sample(200)) == [1.0] * 10


def test_recall_sample_is_seeded_and_bounded():
    a, b = recall_sample(5000), recall_sample(5000)
    assert np.array_equal(a, b) and a.size == 1000 and len(set(a)) == 1000
    assert np.array_equal(recall_sample(300), np.arange(300))     # all items when fewer than 1000
    assert not np.array_equal(recall_sample(5000, seed=1), a)
    with pytest.raises(ValueError, match="1 to G = 300"):
        recall_sample(300, 301)


def test_missing_faiss_is_one_line_that_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)     # import faiss now raises ImportError
    with pytest.raises(FaissMissing, match="pip install faiss-cpu") as info:
        build_graph(gallery(50), 5, default_spec("ivf", 50))
    assert "\n" not in str(info.value)
    build_graph(gallery(50), 5, GraphSpec("exact"))      # the exact graph needs no FAISS


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown graph kind"):
        default_spec("lsh", 100)


def test_search_results_lose_self_and_fillers_and_keep_distance_then_index_order():
    """Against a full (distance, index) sort of every row: ties, the item itself, -1 fillers, unsorted rows."""
    from icfrr.ann import _without_self

    rng = np.random.default_rng(3)
    n, width, k = 400, 12, 9
    sq = np.sort(rng.integers(0, 6, (n, width)).astype(np.float32), axis=1)   # many equal distances
    found = np.stack([rng.permutation(50)[:width] for _ in range(n)]).astype(np.int64)
    items = rng.integers(0, 50, n)
    found[rng.random((n, width)) < 0.1] = -1                                   # FAISS's fillers
    sq[found < 0] = np.finfo(np.float32).max
    hit = rng.random(n) < 0.5
    found[hit, rng.integers(0, width, n)[hit]] = items[hit]                    # the item itself
    shuffled = rng.random(n) < 0.2                                             # rows not by distance
    sq[shuffled] = rng.permuted(sq[shuffled], axis=1)

    dist = np.sqrt(np.maximum(sq, 0)).astype(np.float32)
    bad = (found == items[:, None]) | (found < 0)
    dist[bad] = np.inf
    order = np.lexsort((np.where(bad, np.iinfo(np.int64).max, found), dist), axis=1)[:, :k]
    got_idx, got_dist = _without_self(found, sq, items, k)
    np.testing.assert_array_equal(got_idx, np.take_along_axis(found, order, axis=1))
    np.testing.assert_array_equal(got_dist, np.take_along_axis(dist, order, axis=1))
