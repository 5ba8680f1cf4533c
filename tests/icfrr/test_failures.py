"""icfrr.failures against brute force: one query and one slot at a time, in plain Python."""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from icfrr.failures import LOSS_TOL, confusions, failure_signature


def random_problem(seed: int, q: int = 40, g: int = 60, n: int = 15, classes: int = 5):
    rng = np.random.default_rng(seed)
    labels_q = rng.integers(0, classes, q)
    labels_q[:3] = -1
    labels_g = rng.integers(0, classes + 1, g)  # one gallery class no query has
    labels_g[:2] = -1
    before = np.stack([rng.permutation(g)[:n] for _ in range(q)])
    after = np.stack([rng.permutation(g)[: n + 3] for _ in range(q)])
    return before, after, labels_q, labels_g


def brute_confusions(before, after, labels_q, labels_g, k):
    n_q = Counter(int(x) for x in labels_q if x != -1)
    held = {0: Counter(), 1: Counter()}
    for side, top in enumerate((before, after)):
        for q in range(len(labels_q)):
            if labels_q[q] == -1:
                continue
            for j in top[q][:k]:
                if labels_g[j] not in (-1, labels_q[q]):
                    held[side][(int(labels_q[q]), int(labels_g[j]))] += 1
    out = {}
    for pair in sorted(set(held[0]) | set(held[1])):
        b = held[0][pair] / (n_q[pair[0]] * k)
        a = held[1][pair] / (n_q[pair[0]] * k)
        out[pair] = (b, a, a - b)
    return out


@pytest.mark.parametrize("seed,k", [(0, 10), (1, 1), (2, 15)])
def test_confusions_match_brute_force(seed, k):
    before, after, lq, lg = random_problem(seed)
    got = confusions(before, after, lq, lg, k)
    want = brute_confusions(before, after, lq, lg, k)
    pairs = list(zip(got.query_label.tolist(), got.other_label.tolist()))
    assert pairs == list(want)  # same pairs, sorted by query class then other class
    assert got.k == k
    for i, pair in enumerate(pairs):
        b, a, c = want[pair]
        assert got.share_before[i] == pytest.approx(b, abs=1e-15)
        assert got.share_after[i] == pytest.approx(a, abs=1e-15)
        assert got.change[i] == pytest.approx(c, abs=1e-15)
        assert got.n_queries[i] == sum(1 for x in lq if x == pair[0])
    # Every known query's slots: own class + other classes + unknown-label items = k.
    assert np.all(got.query_label != got.other_label)


def test_confusions_k_above_the_stored_top_n_is_refused():
    before, after, lq, lg = random_problem(3)
    with pytest.raises(ValueError, match=r"k=16 exceeds the stored top-15; pick k <= 15"):
        confusions(before, after, lq, lg, 16)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        confusions(before, after, lq, lg, 0)
    with pytest.raises(ValueError, match="outside"):
        confusions(before + 100, after, lq, lg, 5)


def brute_signature(before, lq, lg, ap_b, ap_a, kq, n_bins):
    m = min(kq, before.shape[1])
    rows = []
    for q in range(len(lq)):
        if lq[q] == -1 or np.isnan(ap_b[q]) or np.isnan(ap_a[q]):
            continue
        hits = sum(1 for j in before[q][:m] if lg[j] == lq[q])
        rows.append((q, Fraction(hits, m), ap_a[q] - ap_b[q]))
    bins = []
    for b in range(n_bins):
        lo, hi = Fraction(b, n_bins), Fraction(b + 1, n_bins)
        inside = [c for _, p, c in rows if lo <= p < hi or (b == n_bins - 1 and p == 1)]
        bins.append((len(inside), float(np.mean(inside)) if inside else float("nan"),
                     sum(1 for c in inside if c < 0)))
    # X: the precision value below which the summed change is the most negative (smallest on ties).
    totals = [(x, math.fsum(c for _, p, c in rows if p < x)) for x in sorted({p for _, p, _ in rows})[1:]]
    lowest = min((t for _, t in totals), default=0.0)
    threshold = None
    if lowest < -LOSS_TOL:
        threshold = next(x for x, t in totals if t <= lowest + LOSS_TOL)
    return m, rows, bins, threshold


@pytest.mark.parametrize("seed,kq,n_bins", [(0, 10, 10), (1, 4, 3), (2, 200, 10), (3, 7, 1)])
def test_signature_matches_brute_force(seed, kq, n_bins):
    before, _, lq, lg = random_problem(seed, classes=3)
    rng = np.random.default_rng(seed)
    ap_b = rng.random(lq.size)
    # AP changes tied to the initial precision, so a threshold exists on most seeds.
    m = min(kq, before.shape[1])
    prec = (lg[before[:, :m]] == lq[:, None]).mean(1)
    ap_a = ap_b + (prec - 0.3) * 0.5 + rng.normal(0, 0.05, lq.size)
    ap_a[5] = np.nan
    got = failure_signature(before, lq, lg, ap_b, ap_a, kq=kq, n_bins=n_bins)
    cutoff, rows, bins, threshold = brute_signature(before, lq, lg, ap_b, ap_a, kq, n_bins)
    assert got.cutoff == cutoff
    assert got.queries.tolist() == [q for q, _, _ in rows]
    np.testing.assert_allclose(got.precision, [float(p) for _, p, _ in rows], rtol=0, atol=1e-15)
    np.testing.assert_allclose(got.change, [c for _, _, c in rows], rtol=0, atol=0)
    assert got.bin_n.tolist() == [n for n, _, _ in bins]
    np.testing.assert_allclose(got.bin_mean_change, [m_ for _, m_, _ in bins], rtol=1e-12, atol=1e-15)
    assert got.bin_losing.tolist() == [x for _, _, x in bins]
    np.testing.assert_allclose(got.bin_lo, np.arange(n_bins) / n_bins)
    if threshold is None:
        assert got.threshold is None and got.n_below == 0
    else:
        assert got.threshold == pytest.approx(float(threshold), abs=1e-15)
        below = [c for _, p, c in rows if p < threshold]
        above = [c for _, p, c in rows if p >= threshold]
        assert got.n_below == len(below) and got.mean_below == pytest.approx(np.mean(below), abs=1e-12)
        assert got.n_above == len(above)
        if above:
            assert got.mean_above == pytest.approx(np.mean(above), abs=1e-12)


def test_signature_threshold_on_a_hand_made_case():
    # Four queries of class 0; gallery items 0-1 are class 0, 2-3 class 1. Initial top-2 precision
    # 0, 0.5, 0.5, 1 with AP changes -0.3, +0.1, -0.05, +0.2. Summed below 0.5: -0.3; below 1:
    # -0.25. Both groups lose on average; X = 0.5 is where the loss is largest.
    before = np.array([[2, 3], [0, 2], [3, 1], [0, 1]])
    lq, lg = np.zeros(4, dtype=np.int64), np.array([0, 0, 1, 1])
    ap_b = np.full(4, 0.5)
    ap_a = ap_b + np.array([-0.3, 0.1, -0.05, 0.2])
    got = failure_signature(before, lq, lg, ap_b, ap_a, kq=5, n_bins=2)
    assert got.cutoff == 2 and got.threshold == 0.5 and got.n_below == 1 and got.n_above == 3
    assert got.mean_below == pytest.approx(-0.3) and got.mean_above == pytest.approx(0.25 / 3)
    assert got.bin_n.tolist() == [1, 3] and got.bin_losing.tolist() == [1, 1]
    # A gain of +0.4 at precision 0.5 instead: below 1 the sum is +0.05, below 0.5 still -0.3.
    got = failure_signature(before, lq, lg, ap_b, ap_b + np.array([-0.3, 0.4, -0.05, 0.2]), kq=5)
    assert got.threshold == 0.5 and got.n_below == 1
    # When every low-precision query gains, there is no threshold.
    got = failure_signature(before, lq, lg, ap_b, ap_b + 0.1, kq=2)
    assert got.threshold is None and got.n_below == 0 and got.n_above == 4


def test_signature_bad_input():
    before, _, lq, lg = random_problem(4)
    ap = np.zeros(lq.size)
    with pytest.raises(ValueError, match="kq must be"):
        failure_signature(before, lq, lg, ap, ap, kq=0)
    with pytest.raises(ValueError, match="ap_before and ap_after"):
        failure_signature(before, lq, lg, ap[:-1], ap, kq=3)
