"""The comparison report: one row per re-ranking method, the paper's table for any store.

:func:`comparison` reads a store (through a reader connection, base tables
only: ``runs``, ``run_metrics``, ``query_metrics``, ``sweeps``, ``datasets``,
``artifacts``) and returns a :class:`Comparison`; :func:`to_text`,
:func:`to_csv` and :func:`to_latex` format it, :func:`to_records` gives its
rows as plain dicts (a DataFrame's input). ``python -m jobs.report`` and the
dashboard both build on these.

Choices:

* **One artifact.** Rows are compared on one set of distances (dataset +
  backbone + per-class subset, an ``artifacts`` row): a different backbone
  is a different initial ranking, so mixing them would compare backbones,
  not re-rankers. With runs on several artifacts of the dataset, the caller
  picks one (``backbone``: a backbone name or an artifact id).
* **Best run.** Each method's row is its run with the highest headline
  metric (:data:`icfrr.registry.HEADLINE`) at the run's *last* iteration,
  the configuration as run (earliest run on ties). Picking each run's best
  iteration instead would tune ICFRR's iteration count on the test queries
  themselves, which the single-shot baselines cannot profit from.
* **Significance.** For every metric shown, a paired test
  (:data:`icfrr.stats.PAIRED_TESTS`) of the row's per-query values (the
  metric's ``query_metrics`` column) against the baseline's; Holm's
  correction (:func:`icfrr.stats.holm`) runs over the whole family of tests,
  rows x metrics, and each value carries its own mark. The default baseline
  is each row's own initial ranking (iteration 0 of the same run: "does
  re-ranking help"). The changes (Δ) are measured from the same baseline.
* **Best of N.** Each method row says how many configurations (finished
  runs on these distances) its best run was chosen from.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import duckdb
import numpy as np

from icfrr import stats
from icfrr.protocols import TEST_LABEL
from icfrr.registry import HEADLINE, LABELS, METHOD_KEYS, METRIC_KEYS, method
from icfrr.registry import metric as registry_metric

#: Label of the row of the initial ranking (no re-ranking).
INITIAL = "Initial ranking"
#: Family-wise level of the significance marks.
ALPHA = 0.05
#: Significance marks: better / worse than the baseline at level ``alpha``.
BETTER, WORSE = "†", "‡"

#: Short symbols of method parameters in the compact parameter text.
_SYMBOLS: dict[str, str] = {
    "kg": "KG", "kq": "KQ", "beta": "β", "n_iter": "T", "variant": "variant",
    "k1": "k1", "k2": "k2", "lambda_value": "λ",
    "t": "t", "q": "q", "k": "k",
    "qe_n": "QE n", "qe_alpha": "QE α", "dba_n": "DBA n", "dba_alpha": "DBA α",
}
#: runs.params keys that are bookkeeping, not parameters (methods outside the registry).
_BOOKKEEPING = frozenset({"method", "best_iteration", "top_n", "asked_kg", "asked_kq"})


class ReportError(ValueError):
    """Input the report cannot use, with a one-line message saying what to pass instead."""


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


# ------------------------------------------------------------------------ reading


def _pick_dataset(con: duckdb.DuckDBPyConnection, dataset: str | int | None) -> tuple[int, str]:
    rows = con.execute("""
        SELECT d.dataset_id, d.name FROM datasets d
        WHERE EXISTS (SELECT 1 FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
                      WHERE s.dataset_id = d.dataset_id AND r.status = 'done')
        ORDER BY d.dataset_id
    """).fetchall()
    if not rows:
        raise ReportError("the store holds no finished runs; run python -m jobs.sweep first")
    listing = ", ".join(f"{name} (id {i})" for i, name in rows)
    if dataset is None:
        if len(rows) > 1:
            raise ReportError(f"the store holds several datasets: {listing}; pick one with --dataset")
        return int(rows[0][0]), str(rows[0][1])
    hits = [r for r in rows if r[1] == dataset]
    if not hits and (isinstance(dataset, int) or str(dataset).isdigit()):
        hits = [r for r in rows if r[0] == int(dataset)]
    if not hits:
        raise ReportError(f"no finished runs on dataset {dataset!r}; datasets with runs: {listing}")
    if len(hits) > 1:
        ids = ", ".join(str(r[0]) for r in hits)
        raise ReportError(f"several datasets are named {dataset!r} (ids {ids}); pass --dataset ID")
    return int(hits[0][0]), str(hits[0][1])


_ARTIFACT = "coalesce(r.artifact_id, s.artifact_id)"


def _pick_artifact(
    con: duckdb.DuckDBPyConnection, dataset_id: int, name: str, backbone: str | int | None
) -> tuple[int, str]:
    rows = con.execute(f"""
        SELECT {_ARTIFACT} AS artifact_id, any_value(a.backbone), any_value(a.per_class)
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        LEFT JOIN artifacts a ON a.artifact_id = {_ARTIFACT}
        WHERE s.dataset_id = ? AND r.status = 'done'
        GROUP BY ALL ORDER BY 1
    """, [dataset_id]).fetchall()
    listing = ", ".join(f"{bb} per_class {pc} (artifact {i})" for i, bb, pc in rows)
    if backbone is None:
        if len(rows) > 1:
            raise ReportError(f"dataset {name} has runs on several distance sets: {listing}; "
                              "pick one with --backbone NAME or ARTIFACT_ID")
        hits = rows
    else:
        hits = [r for r in rows if r[1] == backbone]
        if not hits and (isinstance(backbone, int) or str(backbone).isdigit()):
            hits = [r for r in rows if r[0] == int(backbone)]
        if not hits:
            raise ReportError(f"no runs of dataset {name} on backbone {backbone!r}; "
                              f"there are: {listing}")
        if len(hits) > 1:
            raise ReportError(f"backbone {backbone!r} has several distance sets on {name}: "
                              f"{listing}; pass --backbone ARTIFACT_ID")
    return int(hits[0][0]), str(hits[0][1])


@dataclass(frozen=True)
class _Run:
    run_id: int
    method: str
    params: dict[str, object]
    last: int
    values: dict[str, float]    # at the last iteration
    initial: dict[str, float]   # at iteration 0

    def score(self) -> tuple[float, int]:
        """Sort key of the best-run rule: headline at the last iteration, earliest run on ties."""
        v = self.values[HEADLINE.key]
        return (-math.inf if math.isnan(v) else v, -self.run_id)


def _metric_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {c[0] for c in con.execute("SELECT * FROM run_metrics LIMIT 0").description}


def _runs(con: duckdb.DuckDBPyConnection, dataset_id: int, artifact_id: int) -> list[_Run]:
    """Every finished run on these distances, with its last and initial metrics."""
    present = _metric_columns(con)
    keys = [k for k in METRIC_KEYS if k in present]  # a metric newer than the store: NaN
    cols = ", ".join([f"m.{k}" for k in keys] + [f"m0.{k}" for k in keys])
    rows = con.execute(f"""
        WITH last AS (SELECT run_id, max(iteration) AS it FROM run_metrics GROUP BY run_id)
        SELECT r.run_id, r.method, r.params, l.it{", " + cols if cols else ""}
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN last l ON l.run_id = r.run_id
        JOIN run_metrics m ON m.run_id = r.run_id AND m.iteration = l.it
        LEFT JOIN run_metrics m0 ON m0.run_id = r.run_id AND m0.iteration = 0
        WHERE r.status = 'done' AND s.dataset_id = ? AND {_ARTIFACT} = ?
        ORDER BY r.run_id
    """, [dataset_id, artifact_id]).fetchall()

    def values(vals: Sequence[object]) -> dict[str, float]:
        got = {k: math.nan if v is None else float(v) for k, v in zip(keys, vals)}
        return {k: got.get(k, math.nan) for k in METRIC_KEYS}

    out = []
    for run_id, meth, params, last, *vals in rows:
        try:
            parsed = json.loads(params) if params else {}
        except json.JSONDecodeError:
            parsed = {}
        out.append(_Run(int(run_id), str(meth), parsed if isinstance(parsed, dict) else {},
                        int(last), values(vals[:len(keys)]), values(vals[len(keys):])))
    return out


def _query_values(con: duckdb.DuckDBPyConnection, run_id: int, iteration: int,
                  columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query values of one stored (run, iteration): query_idx [n] and float [n, len(columns)].

    NULL (queries of unknown label, or a column newer than the store) is NaN.
    """
    present = {c[0] for c in con.execute("SELECT * FROM query_metrics LIMIT 0").description}
    sel = ", ".join(f"{c}::DOUBLE" if c in present else "NULL::DOUBLE" for c in columns)
    got = con.execute(f"SELECT query_idx, {sel} FROM query_metrics WHERE run_id = ? AND "
                      "iteration = ? ORDER BY query_idx", [run_id, iteration]).fetchnumpy()
    cols = list(got.values())
    idx = np.asarray(cols[0], dtype=np.int64)
    vals = [np.ma.filled(np.ma.asarray(c, dtype=np.float64), np.nan) for c in cols[1:]]
    return idx, (np.stack(vals, axis=1) if vals else np.empty((idx.size, 0)))


def _paired(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray]:
    """The rows of two :func:`_query_values` results for the queries both hold."""
    _, ia, ib = np.intersect1d(a[0], b[0], assume_unique=True, return_indices=True)
    return a[1][ia], b[1][ib]


def _fmt_value(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:g}"


def params_text(method_key: str, params: dict[str, object]) -> str:
    """Compact parameter text of a run, e.g. ``"KG 8, KQ 10, β 1, T 5"``.

    Registry methods show their grid parameters in registry order (a ``str``
    parameter only when it differs from its default, e.g. ``variant paper``);
    other methods every non-bookkeeping key of ``runs.params``.
    """
    try:
        grid = method(method_key).params
    except KeyError:
        names = [k for k in sorted(params) if k not in _BOOKKEEPING]
        return ", ".join(f"{_SYMBOLS.get(k, k)} {_fmt_value(params[k])}" for k in names)
    parts = []
    for p in grid:
        if p.name not in params or (p.kind is str and params[p.name] == p.default[0]):
            continue
        parts.append(f"{_SYMBOLS.get(p.name, p.name)} {_fmt_value(params[p.name])}")
    return ", ".join(parts)


def _label(method_key: str) -> str:
    try:
        return method(method_key).label
    except KeyError:
        return method_key


def _method_order(key: str) -> tuple[int, str]:
    return (METHOD_KEYS.index(key), "") if key in METHOD_KEYS else (len(METHOD_KEYS), key)


def _check_metrics(metrics: Sequence[str] | None) -> tuple[str, ...]:
    if metrics is None:
        return METRIC_KEYS
    if not metrics:
        raise ReportError(f"no metric given; pass one or more of {', '.join(METRIC_KEYS)}")
    bad = [m for m in metrics if m not in METRIC_KEYS]
    if bad:
        raise ReportError(f"unknown metric {bad[0]!r}; known: {', '.join(METRIC_KEYS)}")
    return tuple(dict.fromkeys(metrics))


def comparison(
    con: duckdb.DuckDBPyConnection,
    *,
    dataset: str | int | None = None,
    backbone: str | int | None = None,
    metrics: Sequence[str] | None = None,
    baseline: str | int | None = None,
    test: str = "randomisation",
    alpha: float = ALPHA,
) -> Comparison:
    """The comparison table: each method's best run on one dataset's distances.

    Each method present on the chosen distances gets one row: its run with the
    highest headline metric (mAP@all) at the run's LAST iteration, i.e. the
    configuration exactly as it was run (earliest run on ties). The
    alternative, each run's best iteration (``run_metrics`` holds every
    iteration, and ``store.read.runs`` reports it as ``best_iteration``),
    would choose ICFRR's iteration count on the very queries being reported;
    it is not used here. Every row shows the requested metrics at that
    iteration and their change from the run's iteration 0 (the initial
    ranking, or the baseline run's value when one is chosen). For every metric
    a paired test on its per-query values (``query_metrics``) against the
    baseline marks each value, Holm-corrected across rows x metrics.

    Args:
        con: A reader connection (``store.db.connect_reader``).
        dataset: Dataset name or id; None when the store holds runs on one
            dataset only.
        backbone: Which distances (``artifacts``) of the dataset: a backbone
            name or an artifact id; None when the dataset's runs use one.
        metrics: Metric keys to show (default: every registry metric).
        baseline: None or ``"initial"``: each row against iteration 0 of its
            own run; a method key: that method's best run; an int (or a
            string of digits): that run id, at its last iteration.
        test: ``randomisation``, ``t`` or ``wilcoxon`` (:data:`icfrr.stats.PAIRED_TESTS`).
        alpha: Family-wise level of the marks, in (0, 1).

    Returns:
        A :class:`Comparison`; its first row is the initial ranking.

    Raises:
        ReportError: With a one-line message: no runs, an unknown or ambiguous
            dataset/backbone, an unknown metric, test, method or run, or a
            baseline run on other distances.
    """
    chosen = _check_metrics(metrics)
    if test not in stats.PAIRED_TESTS:
        raise ReportError(f"unknown test {test!r}; use one of {', '.join(stats.PAIRED_TESTS)}")
    if not 0.0 < alpha < 1.0:
        raise ReportError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    dataset_id, name = _pick_dataset(con, dataset)
    artifact_id, backbone_name = _pick_artifact(con, dataset_id, name, backbone)
    runs = _runs(con, dataset_id, artifact_id)
    if not runs:
        raise ReportError(f"the runs of {name} ({backbone_name}) hold no metrics; rerun the sweep")
    best: dict[str, _Run] = {}
    for run in runs:
        if run.method not in best or run.score() > best[run.method].score():
            best[run.method] = run
    order = sorted(best, key=_method_order)
    by_id = {r.run_id: r for r in runs}

    base_run: _Run | None = None
    if baseline is None or baseline == "initial":
        description = "the initial ranking"
    elif isinstance(baseline, int) or str(baseline).isdigit():
        run_id = int(baseline)
        if run_id not in by_id:
            raise ReportError(f"run {run_id} is no finished run on {name} ({backbone_name}); "
                              f"runs there: {', '.join(str(r) for r in sorted(by_id))}")
        base_run = by_id[run_id]
        description = f"{_label(base_run.method)} (run {run_id})"
    elif baseline in best:
        base_run = best[str(baseline)]
        description = f"{_label(base_run.method)} (run {base_run.run_id})"
    else:
        known = "initial, " + ", ".join(order)
        raise ReportError(f"no runs of method {baseline!r} on {name} ({backbone_name}); "
                          f"baselines there: {known} or a run id")

    first = base_run if base_run is not None else best[order[0]]
    initial_values = first.initial
    planned: list[tuple[str, str | None, str, _Run, int]] = [(INITIAL, None, "initial", first, 0)]
    if base_run is not None and best[base_run.method] is not base_run:
        planned.append((_label(base_run.method), base_run.method, "baseline", base_run,
                        base_run.last))
    for key in order:
        run = best[key]
        planned.append((_label(key), key, "baseline" if run is base_run else "method", run,
                        run.last))

    columns = [registry_metric(m).column for m in chosen]
    base_q = (_query_values(con, base_run.run_id, base_run.last, columns)
              if base_run is not None else None)
    n_configs: dict[str, int] = {}
    for run in runs:
        n_configs[run.method] = n_configs.get(run.method, 0) + 1
    # per planned row: pairs, mean difference and raw p per metric (NaN: not tested)
    tested: list[tuple[int, list[float], list[float]]] = []
    for _label_, _key, role, run, it in planned:
        if role == "baseline" or (role == "initial" and base_q is None):
            tested.append((0, [math.nan] * len(chosen), [math.nan] * len(chosen)))
            continue
        a, b = _paired(_query_values(con, run.run_id, it, columns),
                       base_q if base_q is not None else _query_values(con, run.run_id, 0, columns))
        n, diffs, ps = 0, [], []
        for j in range(len(chosen)):
            x, y = stats.paired_arrays(a[:, j], b[:, j])
            n = max(n, int(x.size))
            diffs.append(float(np.mean(x - y)) if x.size else math.nan)
            ps.append(stats.paired_p(x, y, test) if x.size else math.nan)
        tested.append((n, diffs, ps))
    # Holm over the whole family: rows x metrics
    flat = stats.holm([p for _n, _d, ps in tested for p in ps])
    adjusted = [flat[i * len(chosen):(i + 1) * len(chosen)] for i in range(len(planned))]

    def reference(run: _Run) -> dict[str, float]:
        return base_run.values if base_run is not None else run.initial

    head = chosen.index(HEADLINE.key) if HEADLINE.key in chosen else None
    rows = []
    for (label, key, role, run, it), (n, diffs, ps), p_adj in zip(planned, tested, adjusted):
        values = initial_values if role == "initial" else run.values
        marks = {}
        for m, d, q in zip(chosen, diffs, p_adj):
            marks[m] = (BETTER if d > 0 else WORSE) if (not math.isnan(q) and q < alpha
                                                        and d != 0) else ""
        rows.append(ReportRow(
            label=label, method=key, role=role, run_id=run.run_id, iteration=it,
            params="" if role == "initial" else params_text(run.method, run.params),
            values={m: values[m] for m in chosen},
            deltas={m: values[m] - reference(run)[m] for m in chosen},
            n_pairs=n,
            ap_diff=math.nan if head is None else diffs[head],
            p_value=math.nan if head is None else ps[head],
            p_holm=math.nan if head is None else float(p_adj[head]),
            mark="" if head is None else marks[HEADLINE.key],
            n_configs=0 if role == "initial" else n_configs[run.method],
            diffs=dict(zip(chosen, diffs)), p_values=dict(zip(chosen, ps)),
            p_holms={m: float(q) for m, q in zip(chosen, p_adj)}, marks=marks))
    return Comparison(dataset=name, dataset_id=dataset_id, artifact_id=artifact_id,
                      backbone=backbone_name, metrics=chosen, test=test, alpha=alpha,
                      baseline=description, rows=tuple(rows))


# ----------------------------------------------------------------------- formats


def _best_rows(cmp: Comparison) -> dict[str, set[int]]:
    """Metric key -> indices of the rows holding its column maximum (ties: all)."""
    out: dict[str, set[int]] = {}
    for m in cmp.metrics:
        vals = [r.values[m] for r in cmp.rows]
        finite = [v for v in vals if not math.isnan(v)]
        top = max(finite) if finite else math.nan
        out[m] = {i for i, v in enumerate(vals) if v == top}
    return out


def _num(v: float, digits: int = 4, sign: bool = False) -> str:
    if math.isnan(v):
        return "n/a"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _p(v: float) -> str:
    return "" if math.isnan(v) else (f"{v:.3f}" if v >= 0.001 else f"{v:.1e}")


def _configs(r: ReportRow) -> str:
    return f"best of {r.n_configs}" if r.n_configs else "-"


def to_text(cmp: Comparison) -> str:
    """An aligned plain-text table with the test described under it.

    Columns: method, parameters, how many configurations the row is the best
    of, run, iteration, each metric (``*`` on the column maximum, then the
    value's significance mark), each metric's change from the baseline, and
    last the Holm-adjusted p-value of each metric (raw ones: ``--format csv``).
    """
    best = _best_rows(cmp)
    header = ["method", "params", "configs", "run", "it", *(LABELS[m] for m in cmp.metrics),
              *(f"Δ {LABELS[m]}" for m in cmp.metrics),
              *(f"p (Holm) {LABELS[m]}" for m in cmp.metrics)]
    table = [header]
    for i, r in enumerate(cmp.rows):
        label = r.label + (" (baseline)" if r.role == "baseline" else "")
        cells = [label, r.params or "-", _configs(r), str(r.run_id), str(r.iteration)]
        for m in cmp.metrics:
            cells.append(_num(r.values[m]) + ("*" if i in best[m] else "") + r.marks[m])
        cells += [_num(r.deltas[m], sign=True) for m in cmp.metrics]
        cells += [_p(r.p_holms[m]) or "-" for m in cmp.metrics]
        table.append(cells)
    widths = [max(len(row[c]) for row in table) for c in range(len(header))]
    left = {0, 1, 2}
    lines = ["  ".join(cell.ljust(w) if c in left else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([
        f"{cmp.dataset} · backbone {cmp.backbone} (artifact {cmp.artifact_id})",
        *lines,
        f"* best in its column; {cmp.delta_note()}; "
        f"each method's best run by {HEADLINE.label} at its last iteration, {TEST_LABEL}: "
        "--protocol holdout or cv chooses on other classes",
        cmp.note(),
    ])


def to_records(cmp: Comparison) -> list[dict[str, object]]:
    """The rows as flat dicts (numbers as floats, NaN where undefined), CSV column order.

    Keys: role, method, label, run_id, iteration, params, n_configs, then
    each metric key followed by ``<metric>_mark``, each ``<metric>_delta``,
    n_pairs, ap_diff, mark, test, baseline, selection (how the rows were
    chosen: on the reported queries), and last the p-values: p_value,
    p_holm (the headline metric's, as before), then ``<metric>_p`` and
    ``<metric>_p_holm`` for every metric. ``pandas.DataFrame(to_records(cmp))``
    gives the table as a frame.
    """
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
        out.append(rec)
    return out


def to_csv(cmp: Comparison) -> str:
    """CSV: one header row (see :func:`to_records`), then one line per row.

    Numbers are written in full precision (``repr``), undefined ones (NaN)
    as empty cells.
    """
    records = to_records(cmp)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = list(records[0]) if records else []
    writer.writerow(header)
    for rec in records:
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else
                         repr(v) if isinstance(v, float) else v for v in rec.values()])
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "α": r"$\alpha$", "β": r"$\beta$",
                  "λ": r"$\lambda$", "Δ": r"$\Delta$", "†": r"\dag{}", "‡": r"\ddag{}",
                  "·": r"$\cdot$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    """``text`` safe in LaTeX body text: specials escaped, Greek letters in math mode."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


#: Above this many columns a table no longer fits one column of a two-column paper.
LATEX_NARROW_COLUMNS = 8


def latex_columns(cmp: Comparison) -> int:
    """Columns of :func:`to_latex`'s tabular: method, parameters, configurations, metrics, Δs."""
    return 3 + 2 * len(cmp.metrics)


def to_latex(cmp: Comparison, *, label: str = "tab:rerank-comparison", wide: bool = False) -> str:
    """A booktabs ``table``: best value of each metric column in ``\\textbf``, marks as superscripts.

    Columns: method, parameters, configurations the row is the best of, each
    metric (its mark as a superscript), each metric's change from the
    baseline. The caption names the dataset, the baseline, the test and
    Holm's correction over rows x metrics. Needs ``\\usepackage{booktabs}``.

    Args:
        cmp: The comparison.
        label: The ``\\label``.
        wide: A ``table*`` (spanning both columns of a two-column layout).
            Without it, a table of more than :data:`LATEX_NARROW_COLUMNS`
            columns starts with a comment pointing to ``--latex-wide``.
    """
    best = _best_rows(cmp)

    def sup(mark: str) -> str:
        return rf"\textsuperscript{{{latex_escape(mark)}}}" if mark else ""

    env = "table*" if wide else "table"
    n_cols = latex_columns(cmp)
    head = ["Method", "Parameters", "Configs", *(latex_escape(LABELS[m]) for m in cmp.metrics),
            *(rf"$\Delta$ {latex_escape(LABELS[m])}" for m in cmp.metrics)]
    lines = []
    if not wide and n_cols > LATEX_NARROW_COLUMNS:
        lines.append(f"% {n_cols} columns: too wide for one column of a two-column paper; "
                     "python -m jobs.report --latex-wide writes a table* instead")
    lines += [rf"\begin{{{env}}}[t]", r"\centering",
              rf"\caption{{{latex_escape(_caption(cmp))}}}", rf"\label{{{label}}}",
              rf"\begin{{tabular}}{{llr{'r' * (2 * len(cmp.metrics))}}}", r"\toprule",
              " & ".join(head) + r" \\", r"\midrule"]
    for i, r in enumerate(cmp.rows):
        name = latex_escape(r.label + (" (baseline)" if r.role == "baseline" else ""))
        cells = [name, latex_escape(r.params), latex_escape(_configs(r))]
        for m in cmp.metrics:
            v = _num(r.values[m])
            cells.append((rf"\textbf{{{v}}}" if i in best[m] else v) + sup(r.marks[m]))
        cells += [_num(r.deltas[m], sign=True) for m in cmp.metrics]
        lines.append(" & ".join(cells) + r" \\")
        if r.role == "initial":
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"


def _caption(cmp: Comparison) -> str:
    return (f"Re-ranking methods on {cmp.dataset} (backbone {cmp.backbone}); each method's "
            f"best run by {HEADLINE.label} at its last iteration (best of the configurations "
            f"run; {TEST_LABEL}). {cmp.delta_note()}. Bold: best in its column. {cmp.note()}.")


__all__ = ["ALPHA", "BETTER", "INITIAL", "LATEX_NARROW_COLUMNS", "WORSE", "Comparison",
           "ReportError", "ReportRow", "comparison", "latex_columns", "latex_escape", "params_text",
           "to_csv", "to_latex", "to_records", "to_text"]
