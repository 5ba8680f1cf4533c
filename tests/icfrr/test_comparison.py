"""icfrr.comparison on arrays (no database): the best-run rule against brute force, the paired
tests against scipy.stats, Holm against its definition, and the rows' values, deltas and marks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from icfrr import comparison as C
from icfrr.registry import HEADLINE, METRIC_KEYS

WHERE = C.Distances("d", 1, 1, "b")


def _summary(run_id: int, method: str, headline: float, initial: float = 0.2,
             params: dict | None = None, last: int = 1) -> C.RunSummary:
    values = {k: headline for k in METRIC_KEYS}
    return C.RunSummary(run_id, method, params or {}, last, values, {k: initial for k in METRIC_KEYS})


def holm_literal(p: list[float]) -> list[float]:
    """adj p_(k) = min(1, max over j <= k of (m - j + 1) p_(j)), NaN left out of m."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    order = sorted(idx, key=lambda i: p[i])
    m = len(order)
    out = [math.nan] * len(p)
    for k in range(1, m + 1):
        out[order[k - 1]] = min(1.0, max((m - j + 1) * p[order[j - 1]] for j in range(1, k + 1)))
    return out


def test_best_run_is_the_highest_headline_at_the_last_iteration_earliest_on_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        runs = [_summary(i, str(rng.choice(["icfrr", "dba", "mine"])),
                         float(rng.choice([0.1, 0.2, 0.3, math.nan]))) for i in range(1, 12)]
        best = C.best_runs(runs)
        for key in {r.method for r in runs}:
            mine = [r for r in runs if r.method == key]
            finite = [r for r in mine if not math.isnan(r.values[HEADLINE.key])]
            want = (min(finite, key=lambda r: (-r.values[HEADLINE.key], r.run_id)) if finite
                    else min(mine, key=lambda r: r.run_id))
            assert best[key] is want
        assert list(best) == [k for k in ("icfrr", "dba", "mine") if k in best]  # registry order


def test_paired_rows_keep_the_queries_both_hold() -> None:
    a = (np.array([0, 2, 3, 7]), np.array([[0.0], [2.0], [3.0], [7.0]]))
    b = (np.array([2, 5, 7]), np.array([[20.0], [50.0], [70.0]]))
    x, y = C.paired_rows(a, b)
    assert x[:, 0].tolist() == [2.0, 7.0] and y[:, 0].tolist() == [20.0, 70.0]


def test_paired_tests_match_scipy_and_drop_nan_pairs() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((40, 2)), rng.random((40, 2))
    a[3, 0] = np.nan
    n, diffs, ps = C.paired_tests(a, b, "t")
    keep = ~np.isnan(a[:, 0])
    assert n == 40
    assert diffs[0] == pytest.approx(np.mean(a[keep, 0] - b[keep, 0]))
    assert ps[0] == pytest.approx(sps.ttest_rel(a[keep, 0], b[keep, 0]).pvalue)
    assert ps[1] == pytest.approx(sps.ttest_rel(a[:, 1], b[:, 1]).pvalue)
    assert C.paired_tests(a[:, 1:], b[:, 1:], "wilcoxon")[2][0] == pytest.approx(
        sps.wilcoxon(a[:, 1], b[:, 1]).pvalue)
    n0, d0, p0 = C.paired_tests(np.full((3, 1), np.nan), np.zeros((3, 1)), "t")
    assert n0 == 0 and math.isnan(d0[0]) and math.isnan(p0[0])


@pytest.mark.parametrize("diff,p,want", [(0.1, 0.01, C.BETTER), (-0.1, 0.01, C.WORSE),
                                         (0.1, 0.05, ""), (0.0, 0.0, ""), (0.1, math.nan, "")])
def test_significance_mark(diff: float, p: float, want: str) -> None:
    assert C.significance_mark(diff, p, 0.05) == want


def _store(q: int = 30, seed: int = 1):
    """Three runs of two methods with per-query AP; metric m's values are AP times (1 + j/10)."""
    rng = np.random.default_rng(seed)
    ap0 = rng.random(q) * 0.5
    aps = {1: ap0 + 0.2 + rng.normal(0, 0.05, q), 2: ap0 + 0.1 + rng.normal(0, 0.05, q),
           3: ap0 - 0.02 + rng.normal(0, 0.05, q)}
    methods = {1: "icfrr", 2: "icfrr", 3: "k_reciprocal"}
    factor = np.array([1 + j / 10 for j in range(len(METRIC_KEYS))])
    per_query = {(r, 0): ap0 for r in aps} | {(r, 1): a for r, a in aps.items()}
    runs = [C.RunSummary(r, methods[r], {"kg": 8} if methods[r] == "icfrr" else {"k1": 20}, 1,
                         {k: float(np.mean(aps[r]) * factor[j]) for j, k in enumerate(METRIC_KEYS)},
                         {k: float(np.mean(ap0) * factor[j]) for j, k in enumerate(METRIC_KEYS)})
            for r in aps]

    def values(run_id: int, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(q), per_query[(run_id, iteration)][:, None] * factor[None, :]

    return runs, values, per_query, factor


def test_comparison_rows_against_scipy_and_holm() -> None:
    runs, values, per_query, factor = _store()
    cmp = C.build_comparison(runs, values, WHERE, C.ComparisonOptions(test="t"))
    assert [r.role for r in cmp.rows] == ["initial", "method", "method"]
    assert [(r.method, r.run_id) for r in cmp.rows[1:]] == [("icfrr", 1), ("k_reciprocal", 3)]
    assert [r.n_configs for r in cmp.rows] == [0, 2, 1]
    raw = []
    for r in cmp.rows[1:]:
        a, b = per_query[(r.run_id, 1)], per_query[(r.run_id, 0)]
        raw.append([sps.ttest_rel(a * f, b * f).pvalue for f in factor])
    flat = holm_literal([p for row in raw for p in row])
    for i, r in enumerate(cmp.rows[1:]):
        for j, m in enumerate(METRIC_KEYS):
            assert r.p_values[m] == pytest.approx(raw[i][j])
            assert r.p_holms[m] == pytest.approx(flat[i * len(METRIC_KEYS) + j])
            assert r.deltas[m] == pytest.approx((np.mean(per_query[(r.run_id, 1)])
                                                 - np.mean(per_query[(r.run_id, 0)])) * factor[j])
    assert cmp.rows[1].mark == C.BETTER and cmp.rows[1].n_pairs == 30
    assert cmp.rows[0].params == "" and cmp.rows[1].params == "KG 8"
    assert all(math.isnan(p) for p in cmp.rows[0].p_values.values())
    assert cmp.n_tests == 2 * len(METRIC_KEYS)


def test_a_baseline_run_that_is_no_methods_best_gets_its_own_untested_row() -> None:
    runs, values, per_query, _ = _store()
    cmp = C.build_comparison(runs, values, WHERE,
                             C.ComparisonOptions(baseline=2, test="t", metrics=["map_all"]))
    assert [(r.role, r.run_id) for r in cmp.rows] == [("initial", 2), ("baseline", 2),
                                                      ("method", 1), ("method", 3)]
    assert cmp.baseline == "ICFRR (run 2)" and cmp.rows[1].n_pairs == 0
    want = sps.ttest_rel(per_query[(3, 1)], per_query[(2, 1)]).pvalue
    assert cmp.rows[3].p_value == pytest.approx(want)
    assert cmp.rows[3].mark == C.WORSE


@pytest.mark.parametrize("kwargs,match", [({"metrics": ["nope"]}, "unknown metric"),
                                          ({"metrics": []}, "no metric"),
                                          ({"test": "z"}, "unknown test"),
                                          ({"alpha": 1.0}, "alpha"),
                                          ({"baseline": "ecn"}, "no runs of method 'ecn'"),
                                          ({"baseline": 99}, "run 99 is no finished run")])
def test_bad_input_is_one_line(kwargs, match) -> None:
    runs, values, _, _ = _store()
    with pytest.raises(C.ReportError, match=match) as exc:
        C.build_comparison(runs, values, WHERE, C.ComparisonOptions(**kwargs))
    assert "\n" not in str(exc.value)
