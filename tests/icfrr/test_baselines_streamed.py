"""The baselines streamed from features by query chunks against their dense paths on the same features.

The dense paths are tested against literal transcriptions (baseline_oracles.py,
qe_oracles.py); here the streamed form must give the same distances up to the
float rounding of distances computed in other blocks, and rankings that are a
valid ascending sort of the dense distances (near-ties may swap).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icfrr import pairwise_distances
from icfrr.ann import GraphSpec, item_neighbours, rank_lists
from icfrr.baselines import ecn, k_reciprocal, query_expansion as qe
from icfrr.baselines.expanded_cross_neighbourhood import ecn_chunks
from icfrr.baselines.k_reciprocal_encoding import k_reciprocal_chunks
from tests.icfrr.engine_data import clustered_features

TIE_TOL = 1e-6


def features(n_query: int = 23, n_gallery: int = 70, seed: int = 0):
    fq, fg, _, _ = clustered_features(n_query, n_gallery, 4, 16, seed)
    return fq, fg


def dense_blocks(fq: np.ndarray, fg: np.ndarray):
    """qg, gg, qq as jobs.artifacts makes them from features (float32, 0 on the diagonals)."""
    fq_t, fg_t = torch.from_numpy(fq), torch.from_numpy(fg)
    gg, qq = pairwise_distances(fg_t, fg_t).numpy(), pairwise_distances(fq_t, fq_t).numpy()
    np.fill_diagonal(gg, 0.0)
    np.fill_diagonal(qq, 0.0)
    return pairwise_distances(fq_t, fg_t).numpy(), gg, qq


def gather(chunks, n_query: int) -> tuple[np.ndarray, int]:
    """The chunks stitched together (checking they cover the queries in order), and their count."""
    parts, start = [], 0
    for rows, block in chunks:
        assert rows.start == start and block.shape[0] == rows.stop - rows.start and block.dtype == np.float32
        parts.append(block)
        start = rows.stop
    assert start == n_query
    return np.concatenate(parts), len(parts)


def assert_same_rankings(streamed: np.ndarray, dense: np.ndarray, atol: float) -> None:
    np.testing.assert_allclose(streamed, dense, rtol=0, atol=atol)
    order = np.argsort(streamed, axis=1, kind="stable")
    ranked = np.take_along_axis(dense.astype(np.float64), order, axis=1)
    assert (np.diff(ranked, axis=1) >= -TIE_TOL).all(), "the streamed ranking is not a sort of the dense distances"


QE_CASES = [
    ("alpha_qe", dict(qe_n=3, qe_alpha=3.0)),
    ("alpha_qe", dict(qe_n=70, qe_alpha=0.0)),
    ("dba", dict(dba_n=5, dba_alpha=3.0)),
    ("dba_alpha_qe", dict(dba_n=4, dba_alpha=3.0, qe_n=6, qe_alpha=1.0)),
]


@pytest.mark.parametrize("name, params", QE_CASES)
def test_query_expansion_chunks_equal_the_dense_path(name, params):
    fq, fg = features()
    dense = getattr(qe, name)(None, None, fq=fq, fg=fg, **params)
    streamed, n_chunks = gather(getattr(qe, f"{name}_chunks")(fq, fg, chunk_bytes=4_000, **params), len(fq))
    assert n_chunks > 3
    assert_same_rankings(streamed, dense, atol=1e-5)


@pytest.mark.parametrize("k1, k2, lam", [(20, 6, 0.3), (5, 1, 0.0), (3, 3, 1.0), (8, 2, 0.5)])
def test_k_reciprocal_chunks_equal_the_dense_path(k1, k2, lam):
    fq, fg = features(seed=k1)
    dense = k_reciprocal(*dense_blocks(fq, fg), k1=k1, k2=k2, lambda_value=lam)
    chunks = k_reciprocal_chunks(fq, fg, k1=k1, k2=k2, lambda_value=lam, chunk_bytes=3_000)
    streamed, n_chunks = gather(chunks, len(fq))
    assert n_chunks > 3
    assert_same_rankings(streamed, dense, atol=1e-5)


def test_k_reciprocal_chunks_with_duplicate_items_and_one_query():
    fq, fg = features(1, 30, seed=4)
    fg = np.concatenate([fg, fg[:3]])          # exact duplicates: distance 0 to another item
    dense = k_reciprocal(*dense_blocks(fq, fg), k1=6, k2=3, lambda_value=0.3)
    streamed, _ = gather(k_reciprocal_chunks(fq, fg, k1=6, k2=3, lambda_value=0.3, chunk_bytes=1), 1)
    assert_same_rankings(streamed, dense, atol=1e-5)


def test_k_reciprocal_chunks_hold_nothing_of_size_n_by_n():
    import tracemalloc

    fq, fg = features(100, 1900, seed=10)
    n = 2000
    list(k_reciprocal_chunks(fq[:2], fg[:20], k1=5, k2=3))        # compile the kernels before tracing
    tracemalloc.start()
    try:
        for _ in k_reciprocal_chunks(fq, fg, k1=20, k2=6, chunk_bytes=400_000):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < n * n * 4, f"{peak / 1e6:.1f} MB traced: a dense [N, N] float32 would be {n * n * 4 / 1e6:.0f} MB"


@pytest.mark.parametrize("call, match", [
    (lambda fq, fg: k_reciprocal_chunks(fq, fg, k1=0), "k1"),
    (lambda fq, fg: next(k_reciprocal_chunks(fq, fg[:, :5])), "same width"),
    (lambda fq, fg: qe.alpha_qe_chunks(fq, fg, qe_n=-1), "qe_n must be"),
    (lambda fq, fg: next(qe.dba_chunks(fq, fg[:, :5])), "same width"),
    (lambda fq, fg: ecn_chunks(fq, fg, t=0), "t"),
    (lambda fq, fg: next(ecn_chunks(fq, fg[:, :5])), "same width"),
])
def test_bad_input_gives_a_one_line_value_error(call, match):
    fq, fg = features(3, 10)
    with pytest.raises(ValueError, match=match) as info:
        call(fq, fg)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("t, q, k", [(3, 8, 25), (1, 1, 1), (2, 4, 10), (5, 3, 93)])
def test_ecn_chunks_equal_the_dense_path(t, q, k):
    fq, fg = features(seed=t + k)
    dense = ecn(*dense_blocks(fq, fg), t=t, q=q, k=k)
    streamed, n_chunks = gather(ecn_chunks(fq, fg, t=t, q=q, k=k, chunk_bytes=3_000), len(fq))
    assert n_chunks > 3
    assert_same_rankings(streamed, dense, atol=1e-6)


def test_ecn_chunks_without_overlap_fall_back_like_the_dense_path():
    fq, fg = features(12, 60, seed=5)
    dense = ecn(*dense_blocks(fq, fg), t=1, q=1, k=2)      # short lists: many pairs share nothing
    assert (dense > 1).any() and (dense < 1).any()
    streamed, _ = gather(ecn_chunks(fq, fg, t=1, q=1, k=2, chunk_bytes=1), 12)
    assert ((streamed > 1) == (dense > 1)).all()
    assert_same_rankings(streamed, dense, atol=1e-6)


# The rank lists from a neighbour index (``--graph``): an exact graph, and FAISS searching every cell (exact too),
# must give the dense path's result; an approximate one only lists fewer true neighbours.
EXACT_FINDERS = {
    "exact graph": lambda f, w: rank_lists(f, w, GraphSpec("exact")),
    "ivf, every cell searched": lambda f, w: rank_lists(f, w, GraphSpec("ivf", {"nlist": 3, "nprobe": 3})),
}


@pytest.mark.parametrize("finder", list(EXACT_FINDERS))
def test_k_reciprocal_and_ecn_with_an_exact_index_equal_the_dense_path(finder):
    pytest.importorskip("faiss")
    fq, fg = features(seed=2)
    blocks = dense_blocks(fq, fg)
    find = EXACT_FINDERS[finder]
    dense = k_reciprocal(*blocks, k1=8, k2=3, lambda_value=0.3)
    streamed, _ = gather(k_reciprocal_chunks(fq, fg, k1=8, k2=3, lambda_value=0.3, chunk_bytes=3_000,
                                             neighbours=find), len(fq))
    assert_same_rankings(streamed, dense, atol=1e-5)
    dense = ecn(*blocks, t=3, q=4, k=12)
    streamed, _ = gather(ecn_chunks(fq, fg, t=3, q=4, k=12, chunk_bytes=3_000, neighbours=find), len(fq))
    assert_same_rankings(streamed, dense, atol=1e-6)


def test_rank_lists_put_each_item_first_then_its_nearest_others():
    fq, fg = features(5, 40, seed=7)
    f = torch.from_numpy(np.concatenate([fq, fg]))
    d = pairwise_distances(f, f).numpy().astype(np.float64)
    np.fill_diagonal(d, -1.0)                                # itself first
    np.testing.assert_array_equal(rank_lists(f, 6, GraphSpec("exact")), np.argsort(d, axis=1, kind="stable")[:, :6])
    assert rank_lists(f, 100, GraphSpec("exact")).shape == (45, 45)
    assert item_neighbours("exact") is None and item_neighbours(None) is None


def test_an_approximate_index_gives_lists_of_distinct_items_each_first():
    pytest.importorskip("faiss")
    fq, fg = features(seed=3)
    f = torch.from_numpy(np.concatenate([fq, fg]))
    ranks = item_neighbours("hnsw")(f, 9)
    assert ranks.shape == (93, 9) and (ranks[:, 0] == np.arange(93)).all()
    assert all(len(set(row)) == 9 for row in ranks.tolist())
    streamed, _ = gather(ecn_chunks(fq, fg, neighbours=item_neighbours("hnsw")), len(fq))
    assert np.isfinite(streamed).all()


@pytest.mark.parametrize("m", [0, 1, 2, 7, 64, 900])
def test_the_compiled_sort_unique_of_k_reciprocal_equals_numpys(m):
    from numba import njit

    from icfrr.baselines.k_reciprocal_encoding import _sort_unique

    sort_unique = njit(lambda buf, m: _sort_unique(buf, m))  # a compiled helper: reached from compiled code only
    rng = np.random.default_rng(m)
    buf = rng.integers(0, max(m // 3, 1), m + 4).astype(np.int64)   # repeats, and a tail it must not read
    want = np.unique(buf[:m])
    n_unique = sort_unique(buf, m)
    np.testing.assert_array_equal(buf[:n_unique], want)


def test_the_package_gives_the_functions_after_their_modules_were_imported() -> None:
    """This file imported the modules first (above); their names must not hide the functions
    (a module named like its function is bound on the package and wins over ``__getattr__``)."""
    import icfrr.baselines.expanded_cross_neighbourhood as ecn_module
    import icfrr.baselines.k_reciprocal_encoding as kr_module
    from icfrr.baselines import ecn, k_reciprocal

    assert ecn is ecn_module.ecn and k_reciprocal is kr_module.k_reciprocal
