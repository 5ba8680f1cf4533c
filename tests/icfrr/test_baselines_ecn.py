"""ECN (rank-list variant) against a literal float64 loop-per-query oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icfrr.baselines import _ranks, ecn
from tests.icfrr import baseline_oracles as oracle

PARAMS = [(3, 8, 25), (1, 1, 1), (2, 3, 4), (1, 2, 3), (4, 2, 6)]


@pytest.mark.parametrize("t, q, k", PARAMS)
def test_matches_oracle_on_random_distances(t, q, k):
    qg, gg, qq = oracle.random_blocks(6, 30, seed=t + q + k)
    got = ecn(qg, gg, qq, t=t, q=q, k=k)
    assert got.dtype == np.float64 and got.shape == (6, 30)
    np.testing.assert_allclose(got, oracle.ecn(qg, gg, qq, t, q, k), rtol=0, atol=1e-9)


@pytest.mark.parametrize("t, q, k", PARAMS)
def test_matches_oracle_on_clustered_float32_features(t, q, k):
    qg, gg, qq = oracle.clustered_blocks(8, 60, n_classes=5, seed=k)
    got = ecn(qg, gg, qq, t=t, q=q, k=k)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, oracle.ecn(qg, gg, qq, t, q, k), rtol=1e-6, atol=1e-6)


def test_pairs_without_overlap_fall_back_to_the_plain_distance_behind_the_rest():
    qg, gg, qq = oracle.random_blocks(5, 80, seed=1)
    got = ecn(qg, gg, qq, t=1, q=1, k=2)
    fallback = got >= 1.0
    assert 0 < fallback.sum() < fallback.size  # both kinds of pairs are present
    np.testing.assert_allclose(got[fallback], 1.0 + qg[fallback], rtol=0, atol=1e-12)
    assert got[~fallback].max() < 1.0
    np.testing.assert_allclose(got, oracle.ecn(qg, gg, qq, 1, 1, 2), rtol=0, atol=1e-9)


def test_ties_follow_a_stable_sort_with_each_item_first_in_its_list():
    qg, gg, qq = oracle.random_blocks(5, 30, seed=2, levels=3)
    for t, q, k in [(2, 3, 4), (3, 8, 25), (1, 1, 2)]:
        np.testing.assert_allclose(ecn(qg, gg, qq, t=t, q=q, k=k), oracle.ecn(qg, gg, qq, t, q, k), rtol=0, atol=1e-9)


def test_duplicates_at_distance_zero_do_not_displace_the_item_itself():
    qg, gg, qq = oracle.random_blocks(4, 20, seed=3)
    gg, qg = gg.copy(), qg.copy()
    gg[3, 7] = gg[7, 3] = 0.0  # gallery 3 and 7 coincide: 3 has the lower index
    qg[0, 2] = 0.0
    got = ecn(qg, gg, qq, t=1, q=1, k=2)
    np.testing.assert_allclose(got, oracle.ecn(qg, gg, qq, 1, 1, 2), rtol=0, atol=1e-9)


def test_k_larger_than_a_class():
    qg, gg, qq = oracle.clustered_blocks(6, 24, n_classes=6, seed=4)
    np.testing.assert_allclose(ecn(qg, gg, qq, t=3, q=4, k=12), oracle.ecn(qg, gg, qq, 3, 4, 12), rtol=1e-6, atol=1e-6)


def test_parameters_beyond_the_item_count_are_cut_at_it():
    qg, gg, qq = oracle.random_blocks(3, 9, seed=5)  # N = 12
    got = ecn(qg, gg, qq, t=20, q=30, k=40)
    np.testing.assert_allclose(got, oracle.ecn(qg, gg, qq, 20, 30, 40), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(got, ecn(qg, gg, qq, t=11, q=11, k=12))


def test_one_query_and_one_gallery_item():
    qg, gg, qq = oracle.random_blocks(1, 25, seed=6)
    got = ecn(qg, gg, qq, t=2, q=3, k=5)
    assert got.shape == (1, 25)
    np.testing.assert_allclose(got, oracle.ecn(qg, gg, qq, 2, 3, 5), rtol=0, atol=1e-9)
    qg, gg, qq = oracle.random_blocks(1, 1, seed=6)
    np.testing.assert_allclose(ecn(qg, gg, qq), oracle.ecn(qg, gg, qq, 3, 8, 25), rtol=0, atol=1e-12)


def test_chunk_boundaries_do_not_matter(monkeypatch):
    qg, gg, qq = oracle.random_blocks(7, 23, seed=7)
    monkeypatch.setattr(_ranks, "CHUNK_BYTES", 8 * 70)
    np.testing.assert_allclose(ecn(qg, gg, qq, t=2, q=3, k=5), oracle.ecn(qg, gg, qq, 2, 3, 5), rtol=0, atol=1e-9)


def test_torch_in_torch_out():
    qg, gg, qq = oracle.clustered_blocks(4, 20, n_classes=3, seed=8)
    got = ecn(torch.from_numpy(qg), torch.from_numpy(gg), torch.from_numpy(qq), t=2, q=3, k=5)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), ecn(qg, gg, qq, t=2, q=3, k=5))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"t": 0}, "t must be an integer >= 1"),
        ({"q": -2}, "q must be an integer >= 1"),
        ({"k": 0}, "k must be an integer >= 1"),
        ({"k": 1.0}, "k must be an integer >= 1"),
        ({"gg": np.zeros((10, 11))}, r"gg must be the \[G, G\] = \[10, 10\]"),
        ({"qq": np.zeros((10, 10))}, r"qq must be the \[Q, Q\] = \[3, 3\]"),
        ({"qg": np.full((3, 10), np.nan)}, "qg contains NaN or infinite values"),
    ],
)
def test_bad_input_gives_one_line_value_error(change, message):
    qg, gg, qq = oracle.random_blocks(3, 10, seed=9)
    args = {"qg": qg, "gg": gg, "qq": qq, "t": 2, "q": 2, "k": 3} | change
    with pytest.raises(ValueError, match=message) as info:
        ecn(args.pop("qg"), args.pop("gg"), args.pop("qq"), **args)
    assert "\n" not in str(info.value)


def test_all_distances_zero():
    qg, gg, qq = np.zeros((3, 12)), np.zeros((12, 12)), np.zeros((3, 3))
    got = ecn(qg, gg, qq, t=2, q=2, k=4)
    np.testing.assert_allclose(got, oracle.ecn(qg, gg, qq, 2, 2, 4), rtol=0, atol=1e-12)
    assert np.isfinite(got).all()


def test_no_dense_combined_matrix_is_built(monkeypatch):
    oracle.assert_no_dense_combined_matrix(ecn, monkeypatch)
