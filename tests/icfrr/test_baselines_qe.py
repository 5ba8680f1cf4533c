"""αQE, DBA and DBA+αQE against the literal float64 oracles, in both the feature and the distance form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icfrr.baselines import query_expansion as qe
from tests.icfrr import qe_oracles as oracle
from tests.icfrr.engine_data import clustered_features, euclidean

ATOL = 1e-5


def case(n_query=7, n_gallery=40, seed=3, dim=16):
    """Unit features (some pairs with negative similarity) and their exact distances."""
    fq, fg, _, _ = clustered_features(n_query, n_gallery, 4, dim, seed)
    return fq, fg, euclidean(fq, fg), euclidean(fg, fg)


def both_forms(method, fq, fg, qg, gg, **params):
    """(distance form, feature form) results of one method."""
    return method(qg, gg, **params), method(None, None, fq=fq, fg=fg, **params)


def run_oracle(name, fq, fg, **p):
    if name == "alpha_qe":
        return oracle.alpha_qe(fq, fg, p["qe_n"], p["qe_alpha"])
    if name == "dba":
        return oracle.dba_then_qe(fq, fg, p["dba_n"], p["dba_alpha"], 0, 0.0)
    return oracle.dba_then_qe(fq, fg, p["dba_n"], p["dba_alpha"], p["qe_n"], p["qe_alpha"])


CASES = [
    ("alpha_qe", dict(qe_n=3, qe_alpha=3.0)),
    ("alpha_qe", dict(qe_n=1, qe_alpha=2.5)),
    ("alpha_qe", dict(qe_n=5, qe_alpha=0.0)),  # average QE
    ("alpha_qe", dict(qe_n=40, qe_alpha=0.5)),  # every gallery item, negative similarities among them
    ("dba", dict(dba_n=3, dba_alpha=3.0)),
    ("dba", dict(dba_n=6, dba_alpha=0.0)),
    ("dba", dict(dba_n=39, dba_alpha=1.5)),
    ("dba_alpha_qe", dict(dba_n=3, dba_alpha=3.0, qe_n=4, qe_alpha=3.0)),
    ("dba_alpha_qe", dict(dba_n=10, dba_alpha=0.0, qe_n=2, qe_alpha=1.0)),
    ("dba_alpha_qe", dict(dba_n=39, dba_alpha=0.5, qe_n=40, qe_alpha=0.0)),
]


@pytest.mark.parametrize("name,params", CASES)
def test_both_forms_match_the_literal_oracle(name, params):
    fq, fg, qg, gg = case()
    want = run_oracle(name, fq, fg, **params)
    by_dist, by_feat = both_forms(getattr(qe, name), fq, fg, qg, gg, **params)
    assert by_dist.dtype == np.float32 and by_dist.shape == want.shape
    np.testing.assert_allclose(by_dist, want, atol=ATOL, rtol=0)
    np.testing.assert_allclose(by_feat, want, atol=ATOL, rtol=0)


def test_the_case_has_negative_similarities_so_the_clamp_is_exercised():
    fq, fg, _, _ = case()
    assert (fq @ fg.T).min() < -0.2 and (fg @ fg.T).min() < -0.2
    # with a positive α a negative similarity weighs 0, so expanding with all G items
    # equals expanding with the positive ones only
    sims = oracle.unit(fq) @ oracle.unit(fg).T
    q = oracle.unit(fq)[0]
    v = q + sum(max(s, 0) ** 0.5 * g for s, g in zip(sims[0], oracle.unit(fg)))
    want = np.linalg.norm(oracle.unit(fg) - v / np.linalg.norm(v), axis=1)
    np.testing.assert_allclose(qe.alpha_qe(None, None, qe_n=40, qe_alpha=0.5, fq=fq, fg=fg)[0], want, atol=ATOL)


def test_alpha_zero_is_average_query_expansion_by_hand():
    fq, fg, qg, gg = case()
    got = qe.alpha_qe(qg, gg, qe_n=4, qe_alpha=0.0)
    for i in range(len(fq)):
        top = np.argsort(qg[i], kind="stable")[:4]
        v = fq[i].astype(np.float64) + fg[top].astype(np.float64).sum(0)
        want = np.linalg.norm(fg - v / np.linalg.norm(v), axis=1)
        np.testing.assert_allclose(got[i], want, atol=ATOL)


def test_feature_and_distance_forms_agree_across_many_chunks(monkeypatch):
    fq, fg, qg, gg = case(n_query=50, n_gallery=300, seed=5, dim=24)
    monkeypatch.setattr(qe, "_BLOCK_BYTES", 4 * 300 * 40)  # forces chunks of one to a few rows
    for name, params in [("alpha_qe", dict(qe_n=10)), ("dba", dict(dba_n=10)), ("dba_alpha_qe", {})]:
        by_dist, by_feat = both_forms(getattr(qe, name), fq, fg, qg, gg, **params)
        np.testing.assert_allclose(by_dist, by_feat, atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        qe.dba_alpha_qe(qg, gg), oracle.dba_then_qe(fq, fg, 10, 3.0, 10, 3.0), atol=ATOL, rtol=0
    )


def test_the_chain_with_zero_neighbours_on_either_side_is_the_single_method():
    fq, fg, qg, gg = case()
    np.testing.assert_array_equal(qe.dba_alpha_qe(qg, gg, dba_n=0, qe_n=5), qe.alpha_qe(qg, gg, qe_n=5))
    np.testing.assert_array_equal(qe.dba_alpha_qe(qg, gg, dba_n=5, qe_n=0), qe.dba(qg, gg, dba_n=5))


@pytest.mark.parametrize("name, n", [("alpha_qe", "qe_n"), ("dba", "dba_n")])
def test_zero_neighbours_gives_the_initial_distances(name, n):
    fq, fg, qg, gg = case()
    by_dist, by_feat = both_forms(getattr(qe, name), fq, fg, qg, gg, **{n: 0})
    np.testing.assert_array_equal(by_dist, qg)  # the given distances, untouched
    np.testing.assert_allclose(by_feat, qg, atol=ATOL)


def test_n_is_clamped_to_the_gallery():
    fq, fg, qg, gg = case(n_gallery=12)
    np.testing.assert_array_equal(qe.alpha_qe(qg, gg, qe_n=500), qe.alpha_qe(qg, gg, qe_n=12))
    np.testing.assert_array_equal(qe.dba(qg, gg, dba_n=500), qe.dba(qg, gg, dba_n=11))
    np.testing.assert_allclose(qe.dba(qg, gg, dba_n=500), oracle.dba_then_qe(fq, fg, 11, 3.0, 0, 0.0), atol=ATOL)
    np.testing.assert_array_equal(
        qe.dba_alpha_qe(None, None, dba_n=99, qe_n=99, fq=fq, fg=fg),
        qe.dba_alpha_qe(None, None, dba_n=11, qe_n=12, fq=fq, fg=fg),
    )


def test_one_query_and_one_gallery_item():
    fq, fg, qg, gg = case(n_query=1)
    for name, params in CASES[:1] + CASES[4:5] + CASES[7:8]:
        want = run_oracle(name, fq, fg, **params)
        by_dist, by_feat = both_forms(getattr(qe, name), fq, fg, qg, gg, **params)
        assert by_dist.shape == (1, 40)
        np.testing.assert_allclose(by_dist, want, atol=ATOL)
        np.testing.assert_allclose(by_feat, want, atol=ATOL)
    # G = 1: DBA has nobody to add, αQE adds the one item
    one = qe.dba_alpha_qe(qg[:, :1], gg[:1, :1], dba_n=5, qe_n=5)
    np.testing.assert_allclose(one, oracle.alpha_qe(fq, fg[:1], 1, 3.0), atol=ATOL)


def test_exact_duplicates_in_the_gallery_match_the_oracle():
    fq, fg, _, _ = case(n_gallery=30, seed=8)
    fg = np.concatenate([fg, fg[[2, 5, 5, 11]]])  # exact duplicates: tied distances everywhere
    qg, gg = euclidean(fq, fg), euclidean(fg, fg)
    for name, params in [("alpha_qe", dict(qe_n=4, qe_alpha=1.0)), ("dba", dict(dba_n=3, dba_alpha=1.0)),
                         ("dba_alpha_qe", dict(dba_n=3, dba_alpha=1.0, qe_n=4, qe_alpha=1.0))]:
        want = run_oracle(name, fq, fg, **params)
        np.testing.assert_allclose(getattr(qe, name)(qg, gg, **params), want, atol=ATOL, rtol=0)


def test_a_tie_at_the_cut_takes_the_lower_index():
    # hand-made unit vectors in the plane: items 1 and 2 are mirror images about the query
    theta = 0.4
    fg = np.array([[1.0, 0.0], [math.cos(theta), math.sin(theta)], [math.cos(theta), -math.sin(theta)],
                   [-1.0, 0.0]], np.float32)
    fq = np.array([[1.0, 0.0]], np.float32)
    qg = np.array([[0.0, 2 * math.sin(theta / 2), 2 * math.sin(theta / 2), 2.0]], np.float32)
    gg = euclidean(fg, fg)
    for got in both_forms(qe.alpha_qe, fq, fg, qg, gg, qe_n=2, qe_alpha=1.0):
        # neighbours 0 and 1, not 2: a tie at the cut takes the lower index
        v = fg[0] + 1.0 * fg[0] + math.cos(theta) * fg[1]
        np.testing.assert_allclose(got[0], np.linalg.norm(fg - v / np.linalg.norm(v), axis=1), atol=ATOL)
        assert got[0, 1] < got[0, 2]
    off_axis = np.array([[math.cos(0.2), math.sin(0.2)]], np.float32)  # tells g_1 from g_2 apart
    for got in both_forms(qe.dba, off_axis, fg, euclidean(off_axis, fg), gg, dba_n=1, dba_alpha=1.0):
        # item 0's one neighbour is item 1 (tied with 2); item 3's (1 and 2, tied) weighs 0
        g0 = fg[0] + math.cos(theta) * fg[1]
        want = np.linalg.norm(off_axis[0] - np.stack([g0 / np.linalg.norm(g0), fg[3]]), axis=1)
        np.testing.assert_allclose(got[0, [0, 3]], want, atol=ATOL)


def test_types_follow_the_input():
    fq, fg, qg, gg = case()
    t = qe.dba_alpha_qe(torch.from_numpy(qg), torch.from_numpy(gg))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == qg.shape
    f = qe.alpha_qe(None, None, fq=torch.from_numpy(fq).double(), fg=torch.from_numpy(fg))
    assert isinstance(f, torch.Tensor) and f.dtype == torch.float32
    n = qe.dba(qg.astype(np.float64), gg.astype(np.float64))
    assert isinstance(n, np.ndarray) and n.dtype == np.float32
    np.testing.assert_allclose(t.numpy(), qe.dba_alpha_qe(qg, gg), atol=0)


def test_features_are_normalised_and_the_inputs_left_alone():
    fq, fg, qg, gg = case()
    fq2, fg2, qg2, gg2 = fq * 3.0, fg * 0.5, qg.copy(), gg.copy()
    np.testing.assert_allclose(
        qe.dba_alpha_qe(None, None, fq=fq2, fg=fg2), qe.dba_alpha_qe(None, None, fq=fq, fg=fg), atol=ATOL
    )
    qe.dba_alpha_qe(qg2, gg2)
    np.testing.assert_array_equal(qg2, qg)
    np.testing.assert_array_equal(gg2, gg)
    np.testing.assert_array_equal(fq2, fq * 3.0)


def test_distances_given_with_features_are_only_shape_checked():
    fq, fg, qg, gg = case()
    np.testing.assert_array_equal(qe.alpha_qe(qg * 0 + 5, gg, fq=fq, fg=fg), qe.alpha_qe(None, None, fq=fq, fg=fg))
    with pytest.raises(ValueError, match="qg has shape"):
        qe.alpha_qe(qg[:, :3], None, fq=fq, fg=fg)


def _bad(qg, gg):
    qg[0, 0] = np.nan
    return qg, gg


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda qg, gg: qe.alpha_qe(qg, gg, qe_n=-1), "qe_n must be an integer >= 0"),
        (lambda qg, gg: qe.alpha_qe(qg, gg, qe_n=2.5), "qe_n must be an integer >= 0"),
        (lambda qg, gg: qe.alpha_qe(qg, gg, qe_n=True), "qe_n must be an integer >= 0"),
        (lambda qg, gg: qe.dba(qg, gg, dba_alpha=-0.5), "dba_alpha must be a finite number >= 0"),
        (lambda qg, gg: qe.dba(qg, gg, dba_alpha=float("nan")), "dba_alpha must be a finite number >= 0"),
        (lambda qg, gg: qe.dba(qg, gg, dba_alpha=float("inf")), "dba_alpha must be a finite number >= 0"),
        (lambda qg, gg: qe.dba(qg, gg, dba_alpha="3"), "dba_alpha must be a finite number >= 0"),
        (lambda qg, gg: qe.dba_alpha_qe(qg, gg, dba_n=-2), "dba_n must be"),
        (lambda qg, gg: qe.dba_alpha_qe(qg, gg, qe_n=-2), "qe_n must be"),
        (lambda qg, gg: qe.dba_alpha_qe(qg, gg, dba_alpha=-1), "dba_alpha must be"),
        (lambda qg, gg: qe.dba_alpha_qe(qg, gg, qe_alpha=math.nan), "qe_alpha must be"),
        (lambda qg, gg: qe.alpha_qe(qg[0], gg), "qg must be a 2-D matrix"),
        (lambda qg, gg: qe.alpha_qe(qg, gg[:, :5]), r"gg must be \[G, G\] with G = 40"),
        (lambda qg, gg: qe.alpha_qe(qg, gg[:5, :5]), r"gg must be \[G, G\] with G = 40"),
        (lambda qg, gg: qe.alpha_qe(qg, None), "pass both qg"),
        (lambda qg, gg: qe.alpha_qe(None, None), "pass the distances qg and gg, or the features"),
        (lambda qg, gg: qe.alpha_qe(qg, gg, fq=np.ones((7, 3))), "pass both fq and fg"),
        (lambda qg, gg: qe.alpha_qe(qg[:0], gg), "at least one query"),
        (lambda qg, gg: qe.alpha_qe(qg * 1.8, gg), r"> 2, so it is not Euclidean"),
        (lambda qg, gg: qe.alpha_qe(qg, gg * 1.8), r"gg holds a distance of .* > 2"),
        (lambda qg, gg: qe.alpha_qe(qg - 0.5, gg), "negative distance"),
        (lambda qg, gg: qe.alpha_qe(*_bad(qg, gg)), "qg contains NaN"),
        (lambda qg, gg: qe.dba(qg, gg + np.eye(40, dtype=np.float32) * 0.1), "diagonal is not 0"),
        (lambda qg, gg: qe.dba(qg, np.triu(gg)), "gg is not symmetric"),
    ],
)
def test_bad_input_gives_a_clear_error(call, match):
    _, _, qg, gg = case()
    with pytest.raises(ValueError, match=match):
        call(qg.copy(), gg.copy())


@pytest.mark.parametrize(
    "fq_fn,fg_fn,match",
    [
        (lambda f: f[:, :5], lambda f: f, "same width"),
        (lambda f: f, lambda f: np.where(np.arange(len(f))[:, None] == 3, 0.0, f), "fg row 3 is all zeros"),
        (lambda f: np.where(f > 0.3, np.inf, f), lambda f: f, "fq contains NaN or infinite"),
        (lambda f: f[:0], lambda f: f, "at least one query"),
    ],
)
def test_bad_features_give_a_clear_error(fq_fn, fg_fn, match):
    fq, fg, _, _ = case()
    with pytest.raises(ValueError, match=match):
        qe.dba_alpha_qe(None, None, fq=fq_fn(fq), fg=fg_fn(fg))


def test_the_error_messages_are_one_line():
    _, _, qg, gg = case()
    with pytest.raises(ValueError) as err:
        qe.alpha_qe(qg * 1.8, gg)
    assert "\n" not in str(err.value) and "fq and fg" in str(err.value)
