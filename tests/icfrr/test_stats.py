"""Paired statistics against independent oracles: brute-force sign-flip and
signed-rank enumerations, and the textbook paired t formula."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps

from icfrr import stats


def _all_signs(n: int) -> np.ndarray:
    return np.array(list(itertools.product([-1.0, 1.0], repeat=n)))


def _brute_sign_flip_p(d: np.ndarray) -> float:
    """P(|mean(s * d)| >= |mean(d)|) over all 2**n sign patterns s."""
    null = np.abs(_all_signs(d.size) @ d) / d.size
    return float(np.mean(null >= abs(d.mean()) - 1e-12))


def _brute_wilcoxon_p(d: np.ndarray) -> float:
    """Exact two-sided signed-rank p-value for distinct non-zero |d|."""
    d = d[d != 0]
    ranks = sps.rankdata(np.abs(d))
    w_obs = ranks[d > 0].sum()
    mu = ranks.sum() / 2.0
    w_null = (_all_signs(d.size) > 0) @ ranks
    return float(np.mean(np.abs(w_null - mu) >= abs(w_obs - mu) - 1e-9))


def _t_formula(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    d = a - b
    n = d.size
    t = d.mean() / (d.std(ddof=1) / math.sqrt(n))
    return t, 2.0 * sps.t.sf(abs(t), n - 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fisher_exact_matches_brute_force_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.random(11), rng.random(11)
    p, exact = stats.fisher_randomization_p(a, b)
    assert exact
    assert p == pytest.approx(_brute_sign_flip_p(a - b), abs=1e-12)


def test_fisher_monte_carlo_close_to_exact_and_reproducible() -> None:
    rng = np.random.default_rng(5)
    a = rng.random(15)
    b = a - 0.08 + 0.2 * rng.random(15)  # a mild effect, p neither 0 nor 1
    exact_p = _brute_sign_flip_p(a - b)
    p1, exact = stats.fisher_randomization_p(a, b, n_resamples=20000, seed=3)
    p2, _ = stats.fisher_randomization_p(a, b, n_resamples=20000, seed=3)
    assert not exact
    assert p1 == p2
    se = math.sqrt(exact_p * (1 - exact_p) / 20000)
    assert abs(p1 - exact_p) < 5 * se + 1e-4


def test_fisher_detects_a_consistent_shift_and_never_returns_zero() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(500)
    a = b + 0.05 + 0.01 * rng.standard_normal(500)
    p, exact = stats.fisher_randomization_p(a, b, n_resamples=999)
    assert not exact
    assert p == pytest.approx(1 / 1000)


def test_ttest_matches_formula() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.random(40), rng.random(40)
    t, p = stats.paired_ttest(a, b)
    t_ref, p_ref = _t_formula(a, b)
    assert t == pytest.approx(t_ref, rel=1e-10)
    assert p == pytest.approx(p_ref, rel=1e-10)


@pytest.mark.parametrize("seed", [0, 4])
def test_wilcoxon_exact_matches_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.random(10), rng.random(10)
    assert stats.wilcoxon_p(a, b) == pytest.approx(_brute_wilcoxon_p(a - b), rel=1e-9)


def test_win_tie_loss_and_mean_difference_by_hand() -> None:
    a = np.array([0.5, 0.2, 0.9, 0.3, np.nan, 0.1])
    b = np.array([0.4, 0.2, 1.0, 0.3, 0.5, np.nan])
    assert stats.win_tie_loss(a, b) == (1, 2, 1)
    assert stats.mean_difference(a, b) == pytest.approx((0.1 + 0.0 - 0.1 + 0.0) / 4)


def test_compare_paired_drops_nan_pairs_and_agrees_with_parts() -> None:
    rng = np.random.default_rng(11)
    a, b = rng.random(30), rng.random(30)
    a[3] = np.nan
    res = stats.compare_paired(a, b)
    keep = ~np.isnan(a)
    assert res.n == 29
    assert res.mean_a == pytest.approx(a[keep].mean())
    assert res.mean_b == pytest.approx(b[keep].mean())
    assert res.wins + res.ties + res.losses == 29
    assert res.p_ttest == pytest.approx(_t_formula(a[keep], b[keep])[1])


def test_identical_inputs_give_no_difference() -> None:
    a = np.array([0.1, 0.5, 0.7])
    res = stats.compare_paired(a, a.copy())
    assert (res.wins, res.ties, res.losses) == (0, 3, 0)
    assert res.mean_diff == 0.0
    assert res.p_fisher == 1.0
    assert math.isnan(res.p_ttest) and math.isnan(res.p_wilcoxon)


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="equal length"):
        stats.compare_paired(np.zeros(3), np.zeros(4))


# ------------------------------------------------------------------------------ Holm


def _holm_rejects(p: list[float], level: float) -> list[bool]:
    """Holm's procedure as Holm (1979) states it: order the p-values, reject
    H_(1), H_(2), ... while p_(j) <= level / (m - j + 1), stop at the first failure."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    reject = [False] * m
    for j, i in enumerate(order, start=1):
        if p[i] > level / (m - j + 1):
            break
        reject[i] = True
    return reject


def test_holm_hand_checked_example() -> None:
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert stats.holm([]).size == 0


@pytest.mark.parametrize("seed", range(6))
def test_holm_adjusted_p_is_the_smallest_level_that_rejects(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, 9))
    p = np.round(rng.uniform(0, 0.2, size=m) ** 2, 4)  # rounding makes ties
    p[rng.integers(0, m)] = p[0]
    adjusted = stats.holm(p)
    # just above and below each adjusted value (exactly at it, float rounding of
    # p * (m - j + 1) against level / (m - j + 1) could go either way)
    levels = np.unique(np.concatenate([np.linspace(0, 1, 401), adjusted * (1 + 1e-9),
                                       adjusted * (1 - 1e-9)]))
    for level in levels:
        want = _holm_rejects(p.tolist(), float(level))
        got = [bool(a <= level) for a in adjusted]
        assert got == want, (p, level)


def test_holm_leaves_nan_out_of_the_family_and_refuses_bad_values() -> None:
    got = stats.holm([np.nan, 0.02, 0.01])
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], [0.02, 0.02])  # m = 2, not 3
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.5, 1.5])
    with pytest.raises(ValueError, match="1-D"):
        stats.holm([[0.1]])


def test_paired_p_dispatches_to_each_test() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.uniform(size=20), rng.uniform(size=20)
    assert stats.paired_p(a, b, "randomisation") == stats.fisher_randomization_p(a, b)[0]
    assert stats.paired_p(a, b, "t") == stats.paired_ttest(a, b)[1]
    assert stats.paired_p(a, b, "wilcoxon") == stats.wilcoxon_p(a, b)
    with pytest.raises(ValueError, match="unknown test"):
        stats.paired_p(a, b, "z")


# ------------------------------------------------------------------ bootstrap intervals


def _clustered(seed: int, n_classes: int = 60, per_class: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Per-query values with a shared per-class effect (correlated within a class)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_classes), per_class)
    values = 0.5 + 0.15 * rng.normal(size=n_classes)[groups] + 0.1 * rng.normal(size=groups.size)
    return values, groups


@pytest.mark.parametrize("seed", [0, 1])
def test_bootstrap_interval_agrees_with_a_normal_approximation_by_hand(seed: int) -> None:
    values, groups = _clustered(seed)
    mean = values.mean()
    # resampling classes: the ratio estimator's standard error, sum_g (S_g - mean N_g)^2
    sums = np.array([values[groups == g].sum() for g in np.unique(groups)])
    counts = np.array([(groups == g).sum() for g in np.unique(groups)])
    k = sums.size
    se_class = math.sqrt(k / (k - 1) * np.sum((sums - mean * counts) ** 2)) / counts.sum()
    # resampling queries: s / sqrt(n) (n - 1 in s, as the bootstrap's plug-in is n)
    se_query = values.std(ddof=0) / math.sqrt(values.size)
    z = sps.norm.ppf(0.975)
    for grp, se in ((groups, se_class), (None, se_query)):
        lo, hi = stats.bootstrap_ci(values, grp, n_boot=2000, seed=seed)
        assert lo < mean < hi
        assert (hi - lo) == pytest.approx(2 * z * se, rel=0.2)
    # the class interval is the wider: queries of one class are correlated
    assert np.diff(stats.bootstrap_ci(values, groups)) > 1.5 * np.diff(stats.bootstrap_ci(values))


def test_bootstrap_is_seeded_drops_nan_and_handles_constant_values() -> None:
    values, groups = _clustered(3, n_classes=20)
    assert stats.bootstrap_ci(values, groups, seed=4) == stats.bootstrap_ci(values, groups, seed=4)
    assert stats.bootstrap_ci(values, groups, seed=4) != stats.bootstrap_ci(values, groups, seed=5)
    with_nan = np.append(values, np.nan)
    assert stats.bootstrap_ci(with_nan, np.append(groups, 99), seed=1) == \
        stats.bootstrap_ci(values, groups, seed=1)
    assert stats.bootstrap_ci(np.full(10, 0.25), np.arange(10) % 3) == (0.25, 0.25)
    assert all(math.isnan(v) for v in stats.bootstrap_ci(values[:4], np.zeros(4)))
