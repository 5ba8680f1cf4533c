"""The sparse update (icfrr._sparse) against the dense kernel and the literal spec implementation.

The sparse path must give the dense path's rankings, scores and metrics bit
for bit: same float64 scores, same tie order (docs/SPEC.md section 7 allows
near-ties either way only against an oracle that sums in another order; both
engine paths sum the same integers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import icfrr
from icfrr import literal
from icfrr._update import ChunkSpec, run_rows_cpu
from icfrr.metrics import relevant_counts
from icfrr.neighbors import NeighborGraph
from icfrr.variants import Variant
from tests.icfrr.engine_data import clustered_case, random_case

VARIANTS = ["reference", "paper"]


def _paths(qg, nbr, lq, lg, *, kq, betas, n_iter, variant, top_n):
    """(dense, sparse) outputs of run_rows_cpu: each (top, scores, metric rows)."""
    g = qg.shape[1]
    kq = min(kq, g)
    nbr = np.ascontiguousarray(nbr, dtype=np.int32)
    weights = np.arange(g - 1, g - 1 - nbr.shape[1], -1, dtype=np.int64)
    args = (nbr, weights, kq, float((g - 1) * kq), np.asarray(betas, dtype=np.float64), n_iter,
            Variant.parse(variant), lg.astype(np.int64), top_n)
    lq, n_rel = lq.astype(np.int64), relevant_counts(lq, lg)
    return (run_rows_cpu(ChunkSpec(*args, sparse=False), qg, lq, n_rel),
            run_rows_cpu(ChunkSpec(*args, sparse=True), qg, lq, n_rel))


def _assert_same(dense, sparse):
    for name, a, b in zip(("top", "scores", "metrics"), dense, sparse):
        np.testing.assert_array_equal(b, a, err_msg=name)


def _quantised(n_query, n_gallery, seed):
    """Distances of 5 levels: many exact ties in the initial order and in the new scores."""
    rng = np.random.default_rng(seed)
    qg = rng.integers(0, 5, (n_query, n_gallery)).astype(np.float32)
    gg = rng.integers(1, 6, (n_gallery, n_gallery)).astype(np.float32)
    gg = np.minimum(gg, gg.T)
    np.fill_diagonal(gg, 0)
    return qg, gg


def _example():
    folder = "examples/custom/-1/"
    labels = torch.load(folder + "labels.pth", weights_only=True)
    qg = torch.load(folder + "qg_dists.pth", weights_only=True).numpy()
    gg = torch.load(folder + "gg_dists.pth", weights_only=True).numpy()
    return qg, gg, labels["query"].numpy(), labels["gallery"].numpy()


CASES = {
    # name: (data, kg, kq, betas, n_iter, top_n)
    "clustered": (lambda: clustered_case(20, 300, seed=1), 10, 8, [0.5, 1.0, 3.0], 4, 50),
    "random-full-ranking": (lambda: (*random_case(10, 200, seed=3), np.arange(10) % 3, np.arange(200) % 3),
                            5, 4, [0.5, 2.0], 3, 200),
    "ties-and-odd-betas": (lambda: (*_quantised(10, 120, 3), np.arange(10) % 3, np.arange(120) % 3),
                           6, 5, [0.5, 0.01, -0.3, 0.0], 3, 120),
    "kq*kg>G": (lambda: clustered_case(15, 120, seed=2), 30, 20, [0.5, 1.0], 6, 120),
    "everything-votes": (lambda: clustered_case(15, 120, seed=2), 119, 120, [0.7], 3, 10),
    "kq=kg=1": (lambda: clustered_case(15, 120, seed=2), 1, 1, [0.7], 8, 1),
    "published-example": (_example, 5, 5, [0.5, 1.0], 5, 48),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", list(CASES))
def test_sparse_update_equals_the_dense_kernel(name, variant):
    data, kg, kq, betas, n_iter, top_n = CASES[name]
    qg, gg, lq, lg = data()
    lq = lq.copy()
    lq[0] = -1  # an unknown label: its (unmasked) metric row must still agree
    nbr = icfrr.neighbor_graph(gg, kg).indices.numpy()
    dense, sparse = _paths(qg, nbr, lq, lg, kq=kq, betas=betas, n_iter=n_iter, variant=variant, top_n=top_n)
    _assert_same(dense, sparse)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sparse_path_through_rerank_chunks_gives_the_literal_rankings(variant, monkeypatch):
    # Without near-ties the literal float64 implementation's rankings are the exact answer.
    import icfrr.reranking

    monkeypatch.setattr(icfrr.reranking, "use_sparse", lambda *args: True)
    qg, gg = random_case(8, 60, seed=7)
    kw = dict(kg=6, kq=5, beta=0.8, n_iter=4, variant=variant)
    got = icfrr.rerank(qg, gg, device="cpu", **kw)
    want, _ = literal.literal_rerank(qg, gg, **kw)
    for t, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(g.numpy(), w, err_msg=f"iteration {t}")


def _random_graph(n_gallery: int, k: int, seed: int) -> np.ndarray:
    """k distinct other items per gallery item (the kernels only read the indices)."""
    rng = np.random.default_rng(seed)
    nbr = np.empty((n_gallery, k), dtype=np.int64)
    for i in range(n_gallery):
        row = rng.choice(n_gallery - 1, size=k, replace=False)
        nbr[i] = row + (row >= i)
    return nbr


def _class_distances(n_query, n_gallery, n_classes, seed):
    """Distances where same-class pairs are closer on average (so re-ranking moves relevant items)."""
    rng = np.random.default_rng(seed)
    lq, lg = rng.integers(0, n_classes, n_query), rng.integers(0, n_classes, n_gallery)
    qg = rng.random((n_query, n_gallery)).astype(np.float32) + 0.4 * (lq[:, None] != lg[None, :])
    return qg, lq, lg


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("k", [64, 512])
def test_tuberlin_shape(variant, k):
    # G and the class count of the TU-Berlin zero-shot test split; a few queries keep it fast.
    qg, lq, lg = _class_distances(4, 27989, 30, seed=k)
    nbr = _random_graph(27989, k, seed=1)
    dense, sparse = _paths(qg, nbr, lq, lg, kq=k, betas=[0.5, 1.0], n_iter=3, variant=variant, top_n=100)
    _assert_same(dense, sparse)


@pytest.mark.parametrize("variant", VARIANTS)
def test_medium_shape_every_position(variant):
    qg, lq, lg = _class_distances(6, 5000, 12, seed=3)
    nbr = _random_graph(5000, 20, seed=2)
    dense, sparse = _paths(qg, nbr, lq, lg, kq=16, betas=[0.5], n_iter=5, variant=variant, top_n=5000)
    _assert_same(dense, sparse)
    # And the dense path on the same inputs is a valid ranking: every item once per iteration.
    assert np.all(np.sort(sparse[0][0], axis=-1) == np.arange(5000))
