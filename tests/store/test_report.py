"""store.report's reads through icfrr.comparison, against a store written with the real writer,
whose per-query APs were chosen so that winners, deltas and significance are known
(tests/store/report_store.py).

Oracles: the chosen arrays themselves (means, best run by the last-iteration
rule), icfrr.stats' tests on those arrays, and a literal transcription of
Holm's adjusted p-values. The formats' tests are tests/jobs/test_report_format.py.
"""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import pytest

from icfrr import comparison, registry, stats
from icfrr.registry import METRIC_KEYS
from jobs import report_format
from store import report
from store.db import connect_reader
from tests.store.report_store import FACTORS, StoredRun, build, con, runs, store  # noqa: F401 (fixtures)


def holm_literal(p: list[float]) -> list[float]:
    """Holm's adjusted p-values transcribed from the definition: with p_(1) <= ... <= p_(m),
    adj p_(k) = min(1, max over j <= k of (m - j + 1) * p_(j))."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out = [0.0] * m
    for k in range(1, m + 1):
        out[order[k - 1]] = min(1.0, max((m - j + 1) * p[order[j - 1]] for j in range(1, k + 1)))
    return out


def _known(x: np.ndarray) -> np.ndarray:
    return x[~np.isnan(x)]


def _column(run: StoredRun, key: str, iteration: int) -> np.ndarray:
    """The per-query values of one metric the store holds (AP times the metric's factor)."""
    return run.ap[iteration] * FACTORS[registry.metric(key).column]


def _oracle(tested: list[tuple[np.ndarray, np.ndarray]], test: str) -> np.ndarray:
    """Raw p-values [rows, metrics] of stats.paired_p on (candidate AP, baseline AP) pairs,
    each metric's values being AP times its factor."""
    return np.array([[stats.paired_p(_known(a * FACTORS[registry.metric(m).column]),
                                     _known(b * FACTORS[registry.metric(m).column]), test)
                      for m in METRIC_KEYS] for a, b in tested])


def test_rows_are_the_best_run_per_method_by_the_last_iteration(con, runs) -> None:
    cmp = report.comparison(con, dataset="demo")
    demo = {k: r for k, r in runs.items() if len(k) == 1}
    # the premise: B has the best iteration of all, A the best last iteration
    assert max(np.nanmean(a) for a in demo["B"].ap.values()) > \
        max(np.nanmean(a) for a in demo["A"].ap.values())
    want = {}
    for r in demo.values():
        score = r.metric("map_all", r.last)
        if r.method not in want or score > want[r.method].metric("map_all", want[r.method].last):
            want[r.method] = r
    assert [row.role for row in cmp.rows] == ["initial", "method", "method", "method"]
    assert [row.method for row in cmp.rows] == [None, "icfrr", "k_reciprocal", "dba"]
    assert [row.label for row in cmp.rows] == [comparison.INITIAL, "ICFRR", "k-reciprocal", "DBA"]
    for row in cmp.rows[1:]:
        assert row.run_id == want[row.method].run_id
    assert cmp.rows[1].run_id == runs["A"].run_id and cmp.rows[2].run_id == runs["C"].run_id
    assert cmp.metrics == METRIC_KEYS and cmp.dataset == "demo" and cmp.backbone == "synthetic"


def test_values_and_deltas_are_the_stored_means(con, runs) -> None:
    cmp = report.comparison(con, dataset="demo")
    by_id = {r.run_id: r for k, r in runs.items() if len(k) == 1}
    initial = cmp.rows[0]
    assert initial.iteration == 0
    for row in cmp.rows:
        run = by_id[row.run_id]
        assert row.iteration == (0 if row.role == "initial" else run.last)
        for m in METRIC_KEYS:
            assert row.values[m] == pytest.approx(run.metric(m, row.iteration), abs=1e-12)
            assert row.deltas[m] == pytest.approx(
                run.metric(m, row.iteration) - run.metric(m, 0), abs=1e-12)
            assert initial.values[m] == pytest.approx(run.metric(m, 0), abs=1e-12)
    assert cmp.rows[1].deltas["map_all"] == pytest.approx(0.10, abs=0.005)
    assert cmp.rows[3].deltas["map_all"] == pytest.approx(-0.05, abs=0.005)


@pytest.mark.parametrize("test", ["randomisation", "t", "wilcoxon"])
def test_default_baseline_is_each_runs_initial_ranking(con, runs, test) -> None:
    cmp = report.comparison(con, dataset="demo", test=test)
    pairs = [(runs[x].ap[runs[x].last], runs[x].ap[0]) for x in "ACE"]
    raw = _oracle(pairs, test)
    for row, (a, b), p_row in zip(cmp.rows[1:], pairs, raw):
        assert row.n_pairs == _known(a).size == 23  # the query of unknown label is left out
        assert row.ap_diff == pytest.approx(float(np.mean(_known(a) - _known(b))))
        np.testing.assert_allclose([row.p_values[m] for m in METRIC_KEYS], p_row)
        assert row.p_value == row.p_values["map_all"]
    # Holm over the family rows x metrics (15 tests), not per metric
    adjusted = np.array(holm_literal(list(raw.ravel()))).reshape(raw.shape)
    for row, adj in zip(cmp.rows[1:], adjusted):
        np.testing.assert_allclose([row.p_holms[m] for m in METRIC_KEYS], adj)
        assert row.p_holm == row.p_holms["map_all"]
        for m, q in zip(METRIC_KEYS, adj):  # the mark of each value follows its own test
            d = row.diffs[m]
            assert row.marks[m] == ("" if q >= cmp.alpha else
                                    comparison.BETTER if d > 0 else comparison.WORSE)
    assert math.isnan(cmp.rows[0].p_value) and cmp.rows[0].n_pairs == 0
    assert [r.mark for r in cmp.rows] == ["", comparison.BETTER, "", comparison.WORSE]
    # every metric of A and E is significant: the mark is on all of them, not just mAP@all
    assert all(m == comparison.BETTER for m in cmp.rows[1].marks.values())
    assert all(m == comparison.WORSE for m in cmp.rows[3].marks.values())
    assert cmp.n_tested == 3 and cmp.n_tests == 15 and stats.PAIRED_TESTS[test] in cmp.note()
    assert "3 rows × 5 metrics = 15 tests" in cmp.note()


def test_baseline_method_is_its_best_run_and_is_not_tested(con, runs) -> None:
    cmp = report.comparison(con, dataset="demo", baseline="k_reciprocal", test="t")
    assert [r.role for r in cmp.rows] == ["initial", "method", "baseline", "method"]
    base = runs["C"]
    b = base.ap[base.last]
    raw = _oracle([(base.ap[0], b), (runs["A"].ap[runs["A"].last], b),
                   (runs["E"].ap[runs["E"].last], b)], "t")
    tested = [r for r in cmp.rows if r.role != "baseline"]
    got = np.array([[r.p_values[m] for m in METRIC_KEYS] for r in tested])
    np.testing.assert_allclose(got, raw)
    np.testing.assert_allclose([[r.p_holms[m] for m in METRIC_KEYS] for r in tested],
                               np.reshape(holm_literal(list(raw.ravel())), raw.shape))
    assert [r.mark for r in cmp.rows] == ["", comparison.BETTER, "", comparison.WORSE]
    assert "k-reciprocal (run 3)" in cmp.baseline


def test_deltas_are_measured_from_the_chosen_baseline(con, runs) -> None:
    base = runs["C"]
    by_id = {r.run_id: r for k, r in runs.items() if len(k) == 1}
    cmp = report.comparison(con, dataset="demo", baseline="k_reciprocal")
    for row in cmp.rows:
        run = by_id[row.run_id]
        for m in METRIC_KEYS:
            want = run.metric(m, row.iteration) - base.metric(m, base.last)
            assert row.deltas[m] == pytest.approx(want, abs=1e-12), (row.label, m)
    assert all(d == 0.0 for d in cmp.rows[2].deltas.values())  # the baseline itself
    assert "Δ: change from k-reciprocal (run 3)" in report_format.to_text(cmp)
    assert "Δ: change from the run's own initial ranking" in \
        report_format.to_text(report.comparison(con, dataset="demo"))


def test_each_method_row_says_how_many_configurations_it_is_the_best_of(con, runs) -> None:
    cmp = report.comparison(con, dataset="demo")
    demo = [r for k, r in runs.items() if len(k) == 1]
    want = {m: sum(r.method == m for r in demo) for m in ("icfrr", "k_reciprocal", "dba")}
    assert want == {"icfrr": 2, "k_reciprocal": 2, "dba": 1}
    assert [r.n_configs for r in cmp.rows] == [0, want["icfrr"], want["k_reciprocal"],
                                               want["dba"]]
    text = report_format.to_text(cmp)
    assert "best of 2" in text and "best of 1" in text
    recs = list(csv.DictReader(io.StringIO(report_format.to_csv(cmp))))
    assert [int(r["n_configs"]) for r in recs] == [0, 2, 2, 1]


def test_baseline_run_that_is_no_methods_best_gets_its_own_row(con, runs) -> None:
    d = runs["D"]
    for baseline in (d.run_id, str(d.run_id)):
        cmp = report.comparison(con, dataset="demo", baseline=baseline)
        assert [(r.role, r.run_id) for r in cmp.rows] == [
            ("initial", d.run_id), ("baseline", d.run_id), ("method", runs["A"].run_id),
            ("method", runs["C"].run_id), ("method", runs["E"].run_id)]
        assert cmp.rows[1].iteration == d.last and cmp.n_tested == 4
        # the initial ranking is 0.02 above D on every query: better
        assert cmp.rows[0].mark == comparison.BETTER and cmp.rows[3].mark == comparison.BETTER


def test_dataset_and_backbone_by_name_or_id(con, runs) -> None:
    by_name = report.comparison(con, dataset="other", backbone="bb_b")
    assert [r.run_id for r in by_name.rows] == [runs["other-bb_b"].run_id] * 2
    by_id = report.comparison(con, dataset=by_name.dataset_id, backbone=by_name.artifact_id)
    by_text = report.comparison(con, dataset=str(by_name.dataset_id),
                                backbone=str(by_name.artifact_id))
    assert report_format.to_csv(by_id) == report_format.to_csv(by_text) == report_format.to_csv(by_name)  # NaN != NaN


def test_single_dataset_store_needs_no_dataset(tmp_path) -> None:
    db, runs = build(tmp_path, other=False)
    with connect_reader(db) as c:
        cmp = report.comparison(c)
    assert cmp.dataset == "demo" and len(cmp.rows) == 4


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, r"several datasets: demo \(id 1\), other \(id 2\)"),
    ({"dataset": "nope"}, "no finished runs on dataset 'nope'"),
    ({"dataset": "other"}, "several distance sets.*--backbone"),
    ({"dataset": "other", "backbone": "vit"}, "no runs of dataset other on backbone 'vit'"),
    ({"dataset": "demo", "metrics": ["map_all", "map"]}, "unknown metric 'map'; known: map_all"),
    ({"dataset": "demo", "metrics": []}, "no metric given"),
    ({"dataset": "demo", "baseline": "ecn"}, "no runs of method 'ecn'.*initial, icfrr"),
    ({"dataset": "demo", "baseline": 99}, "run 99 is no finished run"),
    ({"dataset": "demo", "baseline": 6}, "run 6 is no finished run on demo"),  # other dataset
    ({"dataset": "demo", "test": "z"}, "unknown test 'z'"),
    ({"dataset": "demo", "alpha": 1.5}, "alpha must lie"),
])
def test_bad_input_is_one_line(con, kwargs, match) -> None:
    with pytest.raises(report.ReportError, match=match) as info:
        report.comparison(con, **kwargs)
    assert "\n" not in str(info.value)


def test_empty_store_is_refused(tmp_path) -> None:
    from store.db import connect_writer
    connect_writer(tmp_path / "e.duckdb").close()
    with connect_reader(tmp_path / "e.duckdb") as c, \
            pytest.raises(report.ReportError, match="no finished runs"):
        report.comparison(c)


def test_metric_subset_keeps_the_order_and_moves_the_mark(con) -> None:
    cmp = report.comparison(con, dataset="demo", metrics=["p_100", "map_all"])
    assert cmp.metrics == ("p_100", "map_all")
    assert set(cmp.rows[1].values) == {"p_100", "map_all"}
    sub = report.comparison(con, dataset="demo", metrics=["p_25"])
    assert sub.rows[1].marks == {"p_25": comparison.BETTER} and sub.n_tests == 3
    assert sub.rows[1].mark == "" and math.isnan(sub.rows[1].p_value)  # no headline shown
    text = report_format.to_text(sub)
    assert "ICFRR" + comparison.BETTER not in text
    assert any(ln.startswith("ICFRR") and comparison.BETTER in ln for ln in text.splitlines())
