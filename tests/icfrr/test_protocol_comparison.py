"""icfrr.protocol_comparison on arrays (no database): each method's choice against a brute-force
argmax, the paired test against scipy, Holm across the rows by its definition, and the records."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from icfrr import comparison as C
from icfrr import protocol_comparison as PC
from icfrr.registry import METRICS

Q = 36


def _cands(seed: int = 0) -> tuple[dict[str, PC.Candidates], np.ndarray, dict[int, C.RunSummary]]:
    """icfrr: runs 1, 2 with iterations 0..3; k_reciprocal: run 3 with iterations 0, 1."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), Q // 6)
    labels[0] = -1
    ap0 = rng.random(Q) * 0.5
    out = {}
    for key, spec in (("icfrr", [(1, 3), (2, 3)]), ("k_reciprocal", [(3, 1)])):
        rows = [(r, it) for r, n in spec for it in range(n + 1)]
        ap = np.stack([ap0 if it == 0 else ap0 + rng.normal(0.05 * it, 0.05, Q) for _, it in rows])
        ap[:, 0] = np.nan   # the query of unknown label
        out[key] = PC.Candidates(key, np.array([r for r, _ in rows]), np.array([i for _, i in rows]),
                                 {m.column: ap for m in METRICS})
    runs = {r: C.RunSummary(r, k, {"kg": 8, "n_iter": 3} if k == "icfrr" else {"k1": 20}, 1, {}, {})
            for r, k in ((1, "icfrr"), (2, "icfrr"), (3, "k_reciprocal"))}
    return out, labels, runs


def _build(**kwargs) -> PC.ProtocolComparison:
    cands, labels, runs = _cands()
    return PC.build_protocol_comparison(cands, labels, runs, C.Distances("d", 1, 1, "b"),
                                        PC.ProtocolOptions(**kwargs))


def test_test_protocol_picks_the_best_candidate_and_tests_it_against_scipy() -> None:
    cands, labels, _ = _cands()
    pc = _build(protocol="test", test="t", ci="none")
    known = labels != -1
    raw = []
    for row, key in zip(pc.rows[1:], ("icfrr", "k_reciprocal")):
        c = cands[key]
        means = [np.mean(v[known]) if it >= 1 else -np.inf for v, it in zip(c.values["ap"], c.iterations)]
        best = int(np.argmax(means))
        assert (row.run_id, row.iteration) == (c.run_ids[best], c.iterations[best])
        assert row.values["map_all"] == pytest.approx(means[best])
        raw.append(sps.ttest_rel(c.values["ap"][best][known], cands["icfrr"].values["ap"][0][known]).pvalue)
        assert row.p_value == pytest.approx(raw[-1])
        assert row.optimism == pytest.approx(0.0) and row.n_grid == int(np.sum(c.iterations >= 1))
    m = 2
    order = np.argsort(raw)
    want = np.minimum(1, np.maximum.accumulate([(m - j) * raw[i] for j, i in enumerate(order)]))
    assert [pc.rows[1 + i].p_holm for i in order] == pytest.approx(list(want))
    assert pc.rows[1].params == f"KG 8, T {pc.rows[1].iteration}"
    assert math.isnan(pc.rows[1].ci[0]) and pc.n_queries == Q - 1


def test_holdout_reports_on_the_other_classes_with_class_intervals() -> None:
    pc = _build(protocol="holdout", n_boot=200)
    assert len(pc.tuning_classes) == 3 and set(pc.tuning_classes).isdisjoint(pc.reported_classes)
    assert pc.n_queries == 3 * Q // 6 - (0 in pc.reported_classes)
    for r in pc.rows:
        lo, hi = r.ci
        assert lo <= r.values["map_all"] <= hi
    recs = PC.to_records(pc)
    assert [r["label"] for r in recs] == [r.label for r in pc.rows]
    assert {r["protocol"] for r in recs} == {"holdout"} and {r["split"] for r in recs} == {pc.split}


@pytest.mark.parametrize("kwargs,match", [({"protocol": "x"}, "unknown protocol"),
                                          ({"ci": "x"}, "unknown --ci"),
                                          ({"n_boot": 10}, "--n-boot"),
                                          ({"tune_fraction": 1.0}, "--tune-fraction"),
                                          ({"baseline": "ecn"}, "no runs of method 'ecn'"),
                                          ({"protocol": "cv", "folds": 9}, "fold")])
def test_bad_input_is_one_line(kwargs, match) -> None:
    with pytest.raises(C.ReportError, match=match) as exc:
        _build(**kwargs)
    assert "\n" not in str(exc.value)


def test_no_labels_is_refused() -> None:
    with pytest.raises(C.ReportError, match="no query labels"):
        PC.check_labels(np.full(4, -1), "d")
