"""Paired comparisons of per-query scores (for example AP of two rankings).

Two rankings of the same queries give two AP values per query; whether one
ranking is better is a paired question. Everything here takes two aligned
1-D arrays ``a`` (the candidate) and ``b`` (the baseline), drops the pairs in
which either value is NaN (queries of unknown label), and compares
``d = a - b``. The tests themselves come from ``scipy.stats``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

#: Differences at most this large (in absolute value) count as ties.
TIE_TOL = 1e-9


@dataclass(frozen=True)
class PairedComparison:
    """Summary of a paired comparison of ``a`` (candidate) against ``b`` (baseline).

    Attributes:
        n: Pairs compared (after dropping pairs with a NaN).
        mean_a: Mean of ``a``.
        mean_b: Mean of ``b``.
        mean_diff: Mean of ``a - b``.
        wins: Pairs with ``a > b`` (beyond ``TIE_TOL``).
        ties: Pairs with ``|a - b| <= TIE_TOL``.
        losses: Pairs with ``a < b``.
        t_statistic: Paired t statistic (NaN when undefined).
        p_ttest: Two-sided p-value of the paired t-test (NaN when undefined).
        p_wilcoxon: Two-sided p-value of the Wilcoxon signed-rank test
            (NaN when every difference is zero).
        p_fisher: Two-sided p-value of the Fisher randomisation (sign-flip) test.
        fisher_exact: Whether ``p_fisher`` enumerated every sign pattern.
    """

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    wins: int
    ties: int
    losses: int
    t_statistic: float
    p_ttest: float
    p_wilcoxon: float
    p_fisher: float
    fisher_exact: bool


def paired_arrays(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Align two score arrays and drop the pairs in which either value is NaN.

    Args:
        a: float [N] candidate scores.
        b: float [N] baseline scores, same queries in the same order.

    Returns:
        ``(a, b)`` as float64 arrays of equal length ``n <= N``.

    Raises:
        ValueError: The arrays are not 1-D or differ in length.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-D arrays of equal length, got shapes {a.shape} and {b.shape}")
    keep = ~(np.isnan(a) | np.isnan(b))
    return a[keep], b[keep]


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of ``a - b`` over the pairs without NaN (NaN when there are none)."""
    a, b = paired_arrays(a, b)
    return float(np.mean(a - b)) if a.size else math.nan


def win_tie_loss(a: np.ndarray, b: np.ndarray, tol: float = TIE_TOL) -> tuple[int, int, int]:
    """Count pairs where ``a`` beats, ties with, or loses to ``b``.

    Args:
        a: float [N] candidate scores.
        b: float [N] baseline scores.
        tol: Differences with ``|a - b| <= tol`` are ties.

    Returns:
        ``(wins, ties, losses)``.
    """
    a, b = paired_arrays(a, b)
    d = a - b
    wins = int(np.count_nonzero(d > tol))
    losses = int(np.count_nonzero(d < -tol))
    return wins, int(d.size - wins - losses), losses


def paired_ttest(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test of ``mean(a - b) == 0``.

    Returns:
        ``(t, p)``; both NaN with fewer than two pairs or zero variance of ``a - b``.
    """
    a, b = paired_arrays(a, b)
    d = a - b
    if d.size < 2 or np.ptp(d) == 0.0:
        return math.nan, math.nan
    res = sps.ttest_rel(a, b)
    return float(res.statistic), float(res.pvalue)


def wilcoxon_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test on ``a - b``.

    Zero differences are dropped (scipy's ``zero_method="wilcox"``); the
    exact null distribution is used for small samples without ties, the
    normal approximation otherwise (scipy's ``method="auto"``).

    Returns:
        The p-value, NaN when no difference is non-zero.
    """
    a, b = paired_arrays(a, b)
    if not np.any(np.abs(a - b) > 0.0):
        return math.nan
    return float(sps.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def fisher_randomization_p(
    a: np.ndarray, b: np.ndarray, *, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, bool]:
    """Two-sided Fisher randomisation (sign-flip permutation) test of ``mean(a - b)``.

    Under the null hypothesis the two members of each pair are exchangeable,
    so every sign pattern of ``d = a - b`` is equally likely; the p-value is
    the share of patterns whose ``|mean|`` reaches the observed one. When
    ``2**n <= n_resamples`` every pattern is enumerated
    (``scipy.stats.permutation_test``); otherwise ``n_resamples`` random
    patterns are drawn from a seeded generator (vectorised here: scipy's
    generic resampler takes seconds for thousands of queries) and the
    p-value is ``(hits + 1) / (n_resamples + 1)``, never zero.

    Args:
        a: float [N] candidate scores.
        b: float [N] baseline scores.
        n_resamples: Random sign patterns for the Monte-Carlo version.
        seed: Seed of the random sign patterns.

    Returns:
        ``(p, exact)``: the p-value (NaN without pairs) and whether it is exact.
    """
    a, b = paired_arrays(a, b)
    d = a - b
    if d.size == 0:
        return math.nan, True
    if not np.any(d != 0.0):
        return 1.0, True
    if 2 ** d.size <= n_resamples:
        res = sps.permutation_test(
            (d,),
            lambda x, axis: np.mean(x, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            alternative="two-sided",
        )
        return float(min(1.0, res.pvalue)), True
    rng = np.random.default_rng(seed)
    observed = abs(float(np.mean(d)))
    # Ties with the observed value count as hits despite float rounding.
    threshold = observed - 1e-12 * max(observed, float(np.max(np.abs(d))))
    hits = 0
    batch = max(1, min(n_resamples, 4_000_000 // d.size))
    for start in range(0, n_resamples, batch):
        m = min(batch, n_resamples - start)
        signs = rng.integers(0, 2, size=(m, d.size)).astype(np.float64) * 2.0 - 1.0
        hits += int(np.count_nonzero(np.abs(signs @ d) / d.size >= threshold))
    return (hits + 1) / (n_resamples + 1), False


def compare_paired(
    a: np.ndarray, b: np.ndarray, *, n_resamples: int = 9999, seed: int = 0
) -> PairedComparison:
    """Every summary and test of this module for one pair of score arrays.

    Args:
        a: float [N] candidate scores (for example AP after re-ranking).
        b: float [N] baseline scores (for example AP of the initial ranking).
        n_resamples: Random sign patterns for the Fisher randomisation test.
        seed: Seed of those sign patterns.

    Returns:
        A ``PairedComparison``.
    """
    a, b = paired_arrays(a, b)
    wins, ties, losses = win_tie_loss(a, b)
    t, p_t = paired_ttest(a, b)
    p_f, exact = fisher_randomization_p(a, b, n_resamples=n_resamples, seed=seed)
    return PairedComparison(
        n=int(a.size),
        mean_a=float(np.mean(a)) if a.size else math.nan,
        mean_b=float(np.mean(b)) if b.size else math.nan,
        mean_diff=mean_difference(a, b),
        wins=wins,
        ties=ties,
        losses=losses,
        t_statistic=t,
        p_ttest=p_t,
        p_wilcoxon=wilcoxon_p(a, b),
        p_fisher=p_f,
        fisher_exact=exact,
    )


#: The paired tests the comparison report can run: key -> name for captions.
PAIRED_TESTS: dict[str, str] = {
    "randomisation": "Fisher randomisation test",
    "t": "paired t-test",
    "wilcoxon": "Wilcoxon signed-rank test",
}


def paired_p(a: np.ndarray, b: np.ndarray, test: str = "randomisation") -> float:
    """Two-sided p-value of one paired test of ``a`` against ``b``.

    Args:
        a: float [N] candidate scores (NaN pairs are dropped).
        b: float [N] baseline scores.
        test: A key of :data:`PAIRED_TESTS`: ``randomisation``
            (:func:`fisher_randomization_p`), ``t`` (:func:`paired_ttest`) or
            ``wilcoxon`` (:func:`wilcoxon_p`).

    Returns:
        The p-value; NaN where the test is undefined (no pairs, or for ``t``
        and ``wilcoxon`` no variation of ``a - b``).

    Raises:
        ValueError: An unknown ``test``.
    """
    if test == "randomisation":
        return fisher_randomization_p(a, b)[0]
    if test == "t":
        return paired_ttest(a, b)[1]
    if test == "wilcoxon":
        return wilcoxon_p(a, b)
    raise ValueError(f"unknown test {test!r}; use one of {', '.join(PAIRED_TESTS)}")


def holm(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm, Scand. J. Statist. 1979).

    With the m finite p-values sorted ascending, p_(1) <= ... <= p_(m), the
    adjusted value of p_(i) is ``min(1, max_{j <= i} (m - j + 1) p_(j))``:
    the smallest family-wise level at which Holm's procedure (reject H_(1),
    H_(2), ... while p_(j) <= level / (m - j + 1), stop at the first that
    fails) rejects H_(i). ``scipy.stats.false_discovery_control`` offers only
    the Benjamini-Hochberg/-Yekutieli FDR corrections, hence this function.

    Args:
        pvalues: float [m'] raw p-values in [0, 1]; NaN entries (tests that
            were not run) stay NaN and do not count in m.

    Returns:
        float64 [m'] adjusted p-values, aligned with ``pvalues``.

    Raises:
        ValueError: Not 1-D, or a value outside [0, 1].
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"need a 1-D array of p-values, got shape {p.shape}")
    finite = np.flatnonzero(~np.isnan(p))
    if np.any((p[finite] < 0.0) | (p[finite] > 1.0)):
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


#: ``bootstrap_ci`` resampling units: whole classes (the default) or single queries.
RESAMPLE_UNITS = ("class", "query")


def bootstrap_ci(
    values: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Bootstrap confidence interval of a mean of per-query values (BCa, ``scipy.stats.bootstrap``).

    With ``groups`` the resampling unit is the group (a query class): classes
    are drawn with replacement and the statistic is the mean over all their
    queries (sum of the drawn classes' values / their query count), because
    the queries of one class are correlated. Without, single queries are drawn.
    The same ``seed`` draws the same resamples for any values of the same
    groups, so the interval of a difference ``a - b`` is a paired one.

    Args:
        values: float [N] per-query values (e.g. AP, or AP minus a baseline's);
            NaN entries are dropped.
        groups: int [N] the group of each value (None: resample values).
        n_boot: Bootstrap resamples (>= 1).
        seed: Seed of ``numpy.random.default_rng``.
        level: Confidence level in (0, 1).

    Returns:
        ``(lo, hi)``; ``(v, v)`` when every value is equal, NaN with fewer than
        2 units.
    """
    x = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(x)
    x = x[keep]
    if groups is None:
        sums, counts = x, np.ones_like(x)
    else:
        _, inverse = np.unique(np.asarray(groups)[keep], return_inverse=True)
        sums = np.bincount(inverse, weights=x)
        counts = np.bincount(inverse).astype(np.float64)
    if sums.size < 2:
        return (math.nan, math.nan)
    if np.all(x == x[0]):
        return (float(x[0]), float(x[0]))

    def ratio(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return sums[idx].sum(axis=axis) / counts[idx].sum(axis=axis)

    res = sps.bootstrap((np.arange(sums.size),), ratio, n_resamples=int(n_boot),
                        confidence_level=level, vectorized=True, method="BCa",
                        rng=np.random.default_rng(seed))
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))
