"""k-reciprocal re-ranking against a literal float64 transcription of the authors' steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icfrr.baselines import _ranks, k_reciprocal
from tests.icfrr import baseline_oracles as oracle

PARAMS = [(20, 6, 0.3), (5, 1, 0.0), (3, 3, 1.0), (4, 2, 0.5), (1, 2, 0.3), (2, 1, 0.7)]


@pytest.mark.parametrize("k1, k2, lam", PARAMS)
def test_matches_oracle_on_random_distances(k1, k2, lam):
    qg, gg, qq = oracle.random_blocks(6, 30, seed=k1 + k2)
    got = k_reciprocal(qg, gg, qq, k1=k1, k2=k2, lambda_value=lam)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, k1, k2, lam), rtol=0, atol=1e-9)
    assert got.dtype == np.float64 and got.shape == (6, 30)


@pytest.mark.parametrize("k1, k2, lam", PARAMS)
def test_matches_oracle_on_clustered_float32_features(k1, k2, lam):
    qg, gg, qq = oracle.clustered_blocks(8, 45, n_classes=4, seed=k1)
    got = k_reciprocal(qg, gg, qq, k1=k1, k2=k2, lambda_value=lam)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, k1, k2, lam), rtol=0, atol=1e-6)


def test_columns_are_normalised_then_transposed_as_the_authors_do():
    # With C != C^T, rows and columns give different results: only the literal order matches.
    qg, gg, qq = oracle.random_blocks(5, 25, seed=3, symmetric=False)
    got = k_reciprocal(qg, gg, qq, k1=6, k2=3, lambda_value=0.4)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, 6, 3, 0.4), rtol=0, atol=1e-9)
    swapped = oracle.k_reciprocal(qg, gg.T, qq.T, 6, 3, 0.4)  # rows instead of columns, but qg stays
    assert np.abs(got - swapped).max() > 1e-3


def test_ties_follow_a_stable_sort():
    qg, gg, qq = oracle.random_blocks(5, 30, seed=0, levels=3)  # many exact ties
    for k1, k2 in [(4, 3), (7, 1), (10, 5)]:
        got = k_reciprocal(qg, gg, qq, k1=k1, k2=k2, lambda_value=0.3)
        np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, k1, k2, 0.3), rtol=0, atol=1e-9)


def test_duplicate_items_at_distance_zero():
    qg, gg, qq = oracle.random_blocks(4, 20, seed=1)
    gg = gg.copy()
    gg[3, 7] = gg[7, 3] = 0.0
    qg = qg.copy()
    qg[0, 5] = 0.0
    got = k_reciprocal(qg, gg, qq, k1=5, k2=4, lambda_value=0.3)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, 5, 4, 0.3), rtol=0, atol=1e-9)


def test_k1_larger_than_a_class():
    qg, gg, qq = oracle.clustered_blocks(6, 18, n_classes=6, seed=2)  # about 4 items a class
    got = k_reciprocal(qg, gg, qq, k1=10, k2=6, lambda_value=0.3)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, 10, 6, 0.3), rtol=0, atol=1e-6)


def test_k1_and_k2_beyond_the_item_count_are_cut_at_it():
    qg, gg, qq = oracle.random_blocks(3, 12, seed=4)  # N = 15
    got = k_reciprocal(qg, gg, qq, k1=40, k2=30, lambda_value=0.3)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, 40, 30, 0.3), rtol=0, atol=1e-9)
    # Every list is the whole set either way.
    np.testing.assert_array_equal(got, k_reciprocal(qg, gg, qq, k1=1000, k2=500, lambda_value=0.3))


def test_one_query():
    qg, gg, qq = oracle.random_blocks(1, 25, seed=5)
    got = k_reciprocal(qg, gg, qq, k1=6, k2=3, lambda_value=0.3)
    assert got.shape == (1, 25)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, 6, 3, 0.3), rtol=0, atol=1e-9)


def test_chunk_boundaries_do_not_matter(monkeypatch):
    qg, gg, qq = oracle.random_blocks(7, 23, seed=6)
    monkeypatch.setattr(_ranks, "CHUNK_BYTES", 8 * 70)  # 2 rows a chunk
    got = k_reciprocal(qg, gg, qq, k1=5, k2=3, lambda_value=0.3)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, 5, 3, 0.3), rtol=0, atol=1e-9)


def test_scaling_all_distances_changes_nothing():
    qg, gg, qq = oracle.random_blocks(4, 20, seed=7)
    a = k_reciprocal(qg, gg, qq, k1=5, k2=3)
    b = k_reciprocal(qg * 8.0, gg * 8.0, qq * 8.0, k1=5, k2=3)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_torch_in_torch_out():
    qg, gg, qq = oracle.clustered_blocks(4, 20, n_classes=3, seed=8)
    got = k_reciprocal(torch.from_numpy(qg), torch.from_numpy(gg), torch.from_numpy(qq), k1=5, k2=3)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == (4, 20)
    np.testing.assert_array_equal(got.numpy(), k_reciprocal(qg, gg, qq, k1=5, k2=3))


def _good():
    return oracle.random_blocks(3, 10, seed=9)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"k1": 0}, "k1 must be an integer >= 1"),
        ({"k1": 2.5}, "k1 must be an integer >= 1"),
        ({"k2": 0}, "k2 must be an integer >= 1"),
        ({"k2": True}, "k2 must be an integer >= 1"),
        ({"lambda_value": -0.1}, r"lambda_value must be a number in \[0, 1\]"),
        ({"lambda_value": 1.5}, r"lambda_value must be a number in \[0, 1\]"),
        ({"lambda_value": float("nan")}, r"lambda_value must be a number in \[0, 1\]"),
        ({"gg": np.zeros((9, 9))}, r"gg must be the \[G, G\] = \[10, 10\]"),
        ({"qq": np.zeros((3, 4))}, r"qq must be the \[Q, Q\] = \[3, 3\]"),
        ({"qg": np.zeros(10)}, "qg must be a 2-D matrix"),
        ({"qg": np.zeros((0, 10))}, "at least one query and one gallery item"),
        ({"gg": np.full((10, 10), np.nan)}, "gg contains NaN or infinite values"),
        ({"qq": np.full((3, 3), np.inf)}, "qq contains NaN or infinite values"),
        ({"qg": np.array([["a"] * 10] * 3)}, "qg must hold numbers"),
    ],
)
def test_bad_input_gives_one_line_value_error(change, message):
    qg, gg, qq = _good()
    args = {"qg": qg, "gg": gg, "qq": qq, "k1": 3, "k2": 2, "lambda_value": 0.3} | change
    with pytest.raises(ValueError, match=message) as info:
        k_reciprocal(args.pop("qg"), args.pop("gg"), args.pop("qq"), **args)
    assert "\n" not in str(info.value)


def test_all_distances_zero_leaves_some_sets_empty():
    # Every item ties at 0 with every other: lists are index order, so the items past
    # k1 are in no one's list and get empty k-reciprocal sets.
    qg, gg, qq = np.zeros((3, 12)), np.zeros((12, 12)), np.zeros((3, 3))
    got = k_reciprocal(qg, gg, qq, k1=4, k2=2, lambda_value=0.3)
    np.testing.assert_allclose(got, oracle.k_reciprocal(qg, gg, qq, 4, 2, 0.3), rtol=0, atol=1e-12)
    assert np.isfinite(got).all()


def test_no_dense_combined_matrix_is_built(monkeypatch):
    oracle.assert_no_dense_combined_matrix(k_reciprocal, monkeypatch)
