"""The comparison table from stored arrays: one row per re-ranking method (no database).

``store.report`` reads a store's finished runs (:class:`RunSummary`) and their
per-query values; :func:`build_comparison` picks the rows and runs the tests;
``jobs.report_format`` prints the result; :func:`to_records` gives its rows as
plain dicts (a DataFrame's input, and the CSV's columns).

Choices:

* **One artifact.** Rows are compared on one set of distances (dataset +
  backbone + per-class subset): a different backbone is a different initial
  ranking, so mixing them would compare backbones, not re-rankers.
* **Best run.** Each method's row is its run with the highest headline
  metric (:data:`icfrr.registry.HEADLINE`) at the run's *last* iteration,
  the configuration as run (earliest run on ties; :func:`best_runs`). Picking
  each run's best iteration instead would tune ICFRR's iteration count on the
  test queries themselves, which the single-shot baselines cannot profit from.
* **Significance.** For every metric shown, a paired test
  (:data:`icfrr.stats.PAIRED_TESTS`) of the row's per-query values against
  the baseline's; Holm's correction (:func:`icfrr.stats.holm`) runs over the
  whole family of tests, rows x metrics, and each value carries its own mark.
  The default baseline is each row's own initial ranking (iteration 0 of the
  same run: "does re-ranking help"). The changes (Δ) are measured from the
  same baseline.
* **Best of N.** Each method row says how many configurations (finished
  runs on these distances) its best run was chosen from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from icfrr import stats
from icfrr.labels import graph_text, method_label, method_order, params_text
from icfrr.protocols import TEST_LABEL
from icfrr.registry import HEADLINE, METRIC_KEYS
from icfrr.registry import metric as registry_metric

#: Label of the row of the initial ranking (no re-ranking).
INITIAL = "Initial ranking"
#: Family-wise level of the significance marks.
ALPHA = 0.05
#: Significance marks: better / worse than the baseline at level ``alpha``.
BETTER, WORSE = "†", "‡"

#: (run_id, iteration) -> (int64 [n] query_idx ascending, float64 [n, columns] values; NaN: unknown).
QueryValues = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


class ReportError(ValueError):
    """Input the report cannot use, with a one-line message saying what to pass instead."""


@dataclass(frozen=True)
class RunSummary:
    """One finished run as stored: its parameters and its summary metrics.

    Attributes:
        run_id: ``runs.run_id``.
        method: ``runs.method``.
        params: ``runs.params`` parsed ({} when unreadable).
        last: The run's last stored iteration.
        values: Metric key -> value at ``last`` (NaN: not stored).
        initial: Metric key -> value at iteration 0.
    """

    run_id: int
    method: str
    params: dict[str, object]
    last: int
    values: dict[str, float]
    initial: dict[str, float]

    def score(self) -> tuple[float, int]:
        """Sort key of the best-run rule: headline at the last iteration, earliest run on ties."""
        v = self.values[HEADLINE.key]
        return (-math.inf if math.isnan(v) else v, -self.run_id)


@dataclass(frozen=True)
class ReportRow:
    """One row of the comparison table.

    Attributes:
        label: Method label (registry), or ``INITIAL``.
        method: ``runs.method`` of the run; None for the initial ranking.
        role: ``initial`` (the initial ranking), ``method`` (a method's best run)
            or ``baseline`` (the run tested against, when it is no method's best).
        run_id: The run whose numbers the row shows.
        iteration: The iteration shown (the run's last; 0 for ``initial``).
        params: Compact parameter text, e.g. ``"KG 8, KQ 10, β 1, T 5"``.
        values: Metric key -> value at ``iteration``.
        deltas: Metric key -> value minus the baseline's: iteration 0 of the
            same run (baseline ``initial``) or the baseline run's value.
        n_pairs: Queries in the paired tests (0 when the row is not tested).
        ap_diff: Mean per-query AP difference, row minus baseline (NaN: not
            tested, or the headline metric is not shown).
        p_value: Raw two-sided p-value of the headline metric (NaN likewise).
        p_holm: Its Holm-adjusted p-value (family: rows x metrics; NaN likewise).
        mark: The headline metric's mark: ``BETTER``/``WORSE`` when
            ``p_holm < alpha``, else ``""``.
        n_configs: Finished runs of the row's method on these distances (its
            best run was picked from them); 0 for the initial ranking.
        diffs: Metric key -> mean per-query difference, row minus baseline.
        p_values: Metric key -> raw two-sided p-value.
        p_holms: Metric key -> Holm-adjusted p-value over rows x metrics.
        marks: Metric key -> ``BETTER``/``WORSE``/``""``, as ``mark``.
        graph: ``"graph ivf, recall@KG 0.93"`` when the run voted on an
            approximate gallery graph (or a baseline's k-NN sets on an approximate index),
            else "" (:func:`icfrr.labels.graph_text`).
    """

    label: str
    method: str | None
    role: str
    run_id: int
    iteration: int
    params: str
    values: dict[str, float]
    deltas: dict[str, float]
    n_pairs: int
    ap_diff: float
    p_value: float
    p_holm: float
    mark: str
    n_configs: int = 0
    diffs: dict[str, float] = field(default_factory=dict)
    p_values: dict[str, float] = field(default_factory=dict)
    p_holms: dict[str, float] = field(default_factory=dict)
    marks: dict[str, str] = field(default_factory=dict)
    graph: str = ""


@dataclass(frozen=True)
class Comparison:
    """The comparison table of one dataset and artifact.

    Attributes:
        dataset: Dataset name.
        dataset_id: Its ``datasets.dataset_id``.
        artifact_id: The distances compared (``artifacts.artifact_id``).
        backbone: Their backbone.
        metrics: Metric keys shown, in order.
        test: Key of :data:`icfrr.stats.PAIRED_TESTS`.
        alpha: Family-wise level of the marks.
        baseline: What the rows were tested against, in words.
        rows: The initial ranking first, then the baseline run when it is no
            method's best, then one row per method (registry order).
    """

    dataset: str
    dataset_id: int
    artifact_id: int
    backbone: str
    metrics: tuple[str, ...]
    test: str
    alpha: float
    baseline: str
    rows: tuple[ReportRow, ...]

    @property
    def n_tested(self) -> int:
        """Rows with at least one p-value."""
        return sum(any(not math.isnan(p) for p in r.p_values.values()) for r in self.rows)

    @property
    def n_tests(self) -> int:
        """Tests with a p-value, over rows x metrics (the size of Holm's family)."""
        return sum(not math.isnan(p) for r in self.rows for p in r.p_values.values())

    def note(self) -> str:
        """One sentence on the marks: baseline, test, correction and level."""
        rows = f"{self.n_tested} {'row' if self.n_tested == 1 else 'rows'}"
        metrics = f"{len(self.metrics)} {'metric' if len(self.metrics) == 1 else 'metrics'}"
        return (f"{BETTER}/{WORSE}: significantly better/worse than {self.baseline} "
                f"({stats.PAIRED_TESTS[self.test]} on each metric's per-query values, two-sided, "
                f"Holm-corrected across {rows} × {metrics} = {self.n_tests} tests, "
                f"α = {self.alpha:g})")

    def delta_note(self) -> str:
        """What the Δ columns are measured from, in words."""
        if self.baseline == "the initial ranking":
            return "Δ: change from the run's own initial ranking (iteration 0)"
        return f"Δ: change from {self.baseline}"

    def graph_note(self) -> str:
        """Which rows were built on an approximate gallery graph or k-NN index, with its recall; "" when none."""
        rows = [f"{r.label} (run {r.run_id}): {r.graph}" for r in self.rows
                if r.graph and r.role != "initial"]
        return ("approximate neighbours: " + "; ".join(rows)) if rows else ""


# ------------------------------------------------------------------------ checks


def check_metrics(metrics: Sequence[str] | None) -> tuple[str, ...]:
    """The metric keys to show (default every registry metric), duplicates dropped.

    Raises:
        ReportError: No metric, or an unknown one.
    """
    if metrics is None:
        return METRIC_KEYS
    if not metrics:
        raise ReportError(f"no metric given; pass one or more of {', '.join(METRIC_KEYS)}")
    bad = [m for m in metrics if m not in METRIC_KEYS]
    if bad:
        raise ReportError(f"unknown metric {bad[0]!r}; known: {', '.join(METRIC_KEYS)}")
    return tuple(dict.fromkeys(metrics))


def check_test(test: str, alpha: float) -> None:
    """Refuse an unknown paired test or a level outside (0, 1) (:class:`ReportError`)."""
    if test not in stats.PAIRED_TESTS:
        raise ReportError(f"unknown test {test!r}; use one of {', '.join(stats.PAIRED_TESTS)}")
    if not 0.0 < alpha < 1.0:
        raise ReportError(f"alpha must lie strictly between 0 and 1, got {alpha}")


@dataclass(frozen=True)
class Distances:
    """What a table compares on: a dataset and one set of its distances (an ``artifacts`` row).

    Attributes:
        dataset: Dataset name.
        dataset_id: Its ``datasets.dataset_id``.
        artifact_id: The distances (``artifacts.artifact_id``).
        backbone: Their backbone.
    """

    dataset: str
    dataset_id: int
    artifact_id: int
    backbone: str

    def __str__(self) -> str:
        return f"{self.dataset} ({self.backbone})"


@dataclass(frozen=True)
class ComparisonOptions:
    """The comparison's choices, checked when made (:class:`ReportError`, one line).

    Attributes:
        metrics: Metric keys to show (None: every registry metric; a tuple after checking).
        baseline: None or ``"initial"``: each row against iteration 0 of its
            own run; a method key: that method's best run; an int (or a
            string of digits): that run id, at its last iteration.
        test: A key of :data:`icfrr.stats.PAIRED_TESTS`.
        alpha: Family-wise level of the marks, in (0, 1).
    """

    metrics: Sequence[str] | None = None
    baseline: str | int | None = None
    test: str = "randomisation"
    alpha: float = ALPHA

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", check_metrics(self.metrics))
        check_test(self.test, self.alpha)


# ------------------------------------------------------------------------ rules


def best_runs(runs: Sequence[RunSummary]) -> dict[str, RunSummary]:
    """Method -> its best run: highest headline metric at the last iteration, earliest on ties.

    Returns:
        The methods in report order (:func:`icfrr.labels.method_order`).
    """
    best: dict[str, RunSummary] = {}
    for run in runs:
        if run.method not in best or run.score() > best[run.method].score():
            best[run.method] = run
    return {k: best[k] for k in sorted(best, key=method_order)}


def significance_mark(diff: float, p_adjusted: float, alpha: float) -> str:
    """``BETTER``/``WORSE`` when the adjusted p-value is below ``alpha`` and ``diff`` is not 0, else ""."""
    if math.isnan(p_adjusted) or not p_adjusted < alpha or diff == 0:
        return ""
    return BETTER if diff > 0 else WORSE


def paired_rows(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The value rows of two ``(query_idx [n], values [n, m])`` pairs for the queries both hold.

    Returns:
        ``(a_values [k, m], b_values [k, m])`` aligned by query, ascending query index.
    """
    _, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    return a[1][ia], b[1][ib]


def paired_tests(a: np.ndarray, b: np.ndarray, test: str) -> tuple[int, list[float], list[float]]:
    """Each column's paired test of ``a`` against ``b`` (float [n, m] aligned rows).

    Returns:
        ``(pairs, mean differences [m], raw p-values [m])``: ``pairs`` the most
        non-NaN pairs of any column; NaN for a column without pairs.
    """
    n, diffs, ps = 0, [], []
    for j in range(a.shape[1]):
        x, y = stats.paired_arrays(a[:, j], b[:, j])
        n = max(n, int(x.size))
        diffs.append(float(np.mean(x - y)) if x.size else math.nan)
        ps.append(stats.paired_p(x, y, test) if x.size else math.nan)
    return n, diffs, ps


# ------------------------------------------------------------------------ building


def _baseline_run(baseline: str | int | None, runs: Sequence[RunSummary],
                  best: Mapping[str, RunSummary], where: str) -> tuple[RunSummary | None, str]:
    """The baseline run (None: each row's own initial ranking) and its description."""
    by_id = {r.run_id: r for r in runs}
    if baseline is None or baseline == "initial":
        return None, "the initial ranking"
    if isinstance(baseline, int) or str(baseline).isdigit():
        run_id = int(baseline)
        if run_id not in by_id:
            raise ReportError(f"run {run_id} is no finished run on {where}; "
                              f"runs there: {', '.join(str(r) for r in sorted(by_id))}")
        run = by_id[run_id]
    elif baseline in best:
        run = best[str(baseline)]
    else:
        known = "initial, " + ", ".join(best)
        raise ReportError(f"no runs of method {baseline!r} on {where}; "
                          f"baselines there: {known} or a run id")
    return run, f"{method_label(run.method)} (run {run.run_id})"


def build_comparison(
    runs: Sequence[RunSummary],
    query_values: QueryValues,
    where: Distances,
    options: ComparisonOptions | None = None,
) -> Comparison:
    """The comparison table of the finished runs on one dataset's distances.

    Args:
        runs: Every finished run there (``store.report.finished_runs``), at least one.
        query_values: The per-query values of a (run, iteration), one column per
            metric shown, in ``options.metrics`` order (their ``query_metrics``
            columns, :func:`query_columns`).
        where: What the runs are on.
        options: Metrics, baseline, test and level (default: every metric against
            each run's initial ranking, the randomisation test, α = 0.05).

    Returns:
        A :class:`Comparison`; its first row is the initial ranking.

    Raises:
        ReportError: One line: an unknown baseline method or run.
    """
    options = options or ComparisonOptions()
    chosen, test, alpha = tuple(options.metrics or ()), options.test, options.alpha
    best = best_runs(runs)
    base_run, description = _baseline_run(options.baseline, runs, best, str(where))

    first = base_run if base_run is not None else next(iter(best.values()))
    planned: list[tuple[str, str | None, str, RunSummary, int]] = [(INITIAL, None, "initial", first, 0)]
    if base_run is not None and best[base_run.method] is not base_run:
        planned.append((method_label(base_run.method), base_run.method, "baseline", base_run,
                        base_run.last))
    for key, run in best.items():
        planned.append((method_label(key), key, "baseline" if run is base_run else "method", run,
                        run.last))

    base_q = query_values(base_run.run_id, base_run.last) if base_run is not None else None
    n_configs: dict[str, int] = {}
    for run in runs:
        n_configs[run.method] = n_configs.get(run.method, 0) + 1
    tested: list[tuple[int, list[float], list[float]]] = []
    for _label, _key, role, run, it in planned:
        if role == "baseline" or (role == "initial" and base_q is None):
            tested.append((0, [math.nan] * len(chosen), [math.nan] * len(chosen)))
            continue
        a, b = paired_rows(query_values(run.run_id, it),
                           base_q if base_q is not None else query_values(run.run_id, 0))
        tested.append(paired_tests(a, b, test))
    flat = stats.holm([p for _n, _d, ps in tested for p in ps])  # family: rows x metrics
    adjusted = [flat[i * len(chosen):(i + 1) * len(chosen)] for i in range(len(planned))]

    head = chosen.index(HEADLINE.key) if HEADLINE.key in chosen else None
    rows = []
    for (label, key, role, run, it), (n, diffs, ps), p_adj in zip(planned, tested, adjusted):
        values = first.initial if role == "initial" else run.values
        reference = base_run.values if base_run is not None else run.initial
        marks = {m: significance_mark(d, float(q), alpha) for m, d, q in zip(chosen, diffs, p_adj)}
        rows.append(ReportRow(
            label=label, method=key, role=role, run_id=run.run_id, iteration=it,
            params="" if role == "initial" else params_text(run.method, run.params),
            values={m: values[m] for m in chosen},
            deltas={m: values[m] - reference[m] for m in chosen},
            n_pairs=n,
            ap_diff=math.nan if head is None else diffs[head],
            p_value=math.nan if head is None else ps[head],
            p_holm=math.nan if head is None else float(p_adj[head]),
            mark="" if head is None else marks[HEADLINE.key],
            n_configs=0 if role == "initial" else n_configs[run.method],
            diffs=dict(zip(chosen, diffs)), p_values=dict(zip(chosen, ps)),
            p_holms={m: float(q) for m, q in zip(chosen, p_adj)}, marks=marks,
            graph="" if role == "initial" else graph_text(run.params)))
    return Comparison(dataset=where.dataset, dataset_id=where.dataset_id,
                      artifact_id=where.artifact_id, backbone=where.backbone, metrics=chosen,
                      test=test, alpha=alpha, baseline=description, rows=tuple(rows))


def query_columns(metrics: Sequence[str]) -> list[str]:
    """The ``query_metrics`` columns of metric keys, in order (``build_comparison``'s columns)."""
    return [registry_metric(m).column for m in metrics]


def to_records(cmp: Comparison) -> list[dict[str, object]]:
    """The rows as flat dicts (numbers as floats, NaN where undefined), CSV column order.

    Keys: role, method, label, run_id, iteration, params, n_configs, then
    each metric key followed by ``<metric>_mark``, each ``<metric>_delta``,
    n_pairs, ap_diff, mark, test, baseline, selection (how the rows were
    chosen: on the reported queries), the p-values: p_value, p_holm (the
    headline metric's), then ``<metric>_p`` and ``<metric>_p_holm`` for every
    metric; and last ``graph`` (the approximate gallery graph and its
    recall@KG) only when some row was built on one.
    ``pandas.DataFrame(to_records(cmp))`` gives the table as a frame.
    """
    with_graph = any(r.graph for r in cmp.rows)
    out = []
    for r in cmp.rows:
        rec: dict[str, object] = {"role": r.role, "method": r.method or "", "label": r.label,
                                  "run_id": r.run_id, "iteration": r.iteration,
                                  "params": r.params, "n_configs": r.n_configs}
        for m in cmp.metrics:
            rec[m] = r.values[m]
            rec[f"{m}_mark"] = r.marks[m]
        for m in cmp.metrics:
            rec[f"{m}_delta"] = r.deltas[m]
        rec.update(n_pairs=r.n_pairs, ap_diff=r.ap_diff, mark=r.mark, test=cmp.test,
                   baseline=cmp.baseline, selection=TEST_LABEL, p_value=r.p_value, p_holm=r.p_holm)
        for m in cmp.metrics:
            rec[f"{m}_p"] = r.p_values[m]
            rec[f"{m}_p_holm"] = r.p_holms[m]
        if with_graph:
            rec["graph"] = r.graph
        out.append(rec)
    return out


__all__ = ["ALPHA", "BETTER", "INITIAL", "WORSE", "Comparison", "ComparisonOptions", "Distances",
           "QueryValues", "ReportError",
           "ReportRow", "RunSummary", "best_runs", "build_comparison", "check_metrics", "check_test",
           "paired_rows", "paired_tests", "query_columns", "significance_mark", "to_records"]
