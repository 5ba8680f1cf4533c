"""The comparison report under a selection protocol (``icfrr.protocols``), with bootstrap intervals.

:func:`protocol_comparison` reads every finished run of one dataset's
distances (``runs``, ``query_metrics``, ``items``), lets each method choose
its configuration and iteration under ``test``, ``holdout`` or ``cv``, and
reports every metric over the reported queries only, with: a 95% bootstrap
interval of mAP@all and of its difference from the baseline
(:func:`icfrr.stats.bootstrap_ci`), the paired test against the baseline on
the reported queries (Holm-corrected across the methods), the method's
optimism (its test-tuned score on the reported queries minus its protocol
score) and its sensitivity (min / median / max mAP@all over its grid, and the
score of its registry-default parameters). The command that prints it is
``python -m jobs.report --protocol`` (``jobs/report_protocols.py``).

Stores written before every iteration's per-query metrics were kept hold
iterations 0, the best and the last per run: selection then uses the stored
iterations, and :attr:`ProtocolComparison.stored_note` says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pandas as pd

from icfrr import protocols, stats
from icfrr.registry import HEADLINE, METRICS, method
from store.report import (ALPHA, BETTER, INITIAL, WORSE, ReportError, _check_metrics, _label,
                          _method_order, _pick_artifact, _pick_dataset, _runs, params_text)

#: --ci choices: resample classes (default), queries, or no interval.
CI_UNITS = ("class", "query", "none")
_COLUMN = {m.key: m.column for m in METRICS}


# ------------------------------------------------------------------------ reading


def query_labels(con: duckdb.DuckDBPyConnection, dataset_id: int) -> np.ndarray:
    """int64 [Q]: the label of each query of a dataset, by ``items.idx`` (-1: unknown)."""
    rows = con.execute("SELECT idx, label FROM items WHERE dataset_id = ? AND side = 'query' "
                       "ORDER BY idx", [dataset_id]).fetchall()
    labels = np.full(max((int(r[0]) for r in rows), default=-1) + 1, -1, dtype=np.int64)
    for idx, label in rows:
        labels[int(idx)] = int(label)
    return labels


@dataclass(frozen=True)
class Candidates:
    """Every stored (run, iteration) of one method's finished runs, with per-query values.

    Attributes:
        method: ``runs.method``.
        run_ids: int64 [C] run of each candidate.
        iterations: int64 [C] its iteration (0 included: the initial ranking).
        values: ``query_metrics`` column -> float64 [C, Q] (NaN: unknown label).
    """

    method: str
    run_ids: np.ndarray
    iterations: np.ndarray
    values: dict[str, np.ndarray]


def stored_candidates(
    con: duckdb.DuckDBPyConnection, dataset_id: int, artifact_id: int, n_query: int,
    method_key: str | None = None,
) -> dict[str, Candidates]:
    """Method -> its :class:`Candidates`: every finished run's stored iterations on these
    distances (only ``method_key``'s when given)."""
    cols = ", ".join(f"qm.{_COLUMN[m.key]}" for m in METRICS)
    got = con.execute(f"""
        SELECT r.method, qm.run_id, qm.iteration, qm.query_idx, {cols}
        FROM query_metrics qm JOIN runs r ON r.run_id = qm.run_id
        JOIN sweeps s ON s.sweep_id = r.sweep_id
        WHERE r.status = 'done' AND s.dataset_id = ? AND coalesce(r.artifact_id, s.artifact_id) = ?
          AND (?::VARCHAR IS NULL OR r.method = ?)
        ORDER BY r.method, qm.run_id, qm.iteration, qm.query_idx
    """, [dataset_id, artifact_id, method_key, method_key]).fetchnumpy()
    meth = np.asarray(got["method"]).astype(str)
    out: dict[str, Candidates] = {}
    for key in dict.fromkeys(meth.tolist()):
        rows = np.flatnonzero(meth == key)
        pairs = np.stack([np.asarray(got["run_id"])[rows], np.asarray(got["iteration"])[rows]], 1)
        uniq, cand = np.unique(pairs.astype(np.int64), axis=0, return_inverse=True)
        qidx = np.asarray(got["query_idx"])[rows].astype(np.int64)
        values = {}
        for m in METRICS:
            v = np.full((uniq.shape[0], n_query), np.nan)
            col = np.ma.filled(np.ma.asarray(got[m.column])[rows].astype(np.float64), np.nan)
            v[cand.reshape(-1), qidx] = col
            values[m.column] = v
        out[key] = Candidates(key, uniq[:, 0], uniq[:, 1], values)
    return out


def partially_stored_runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[int]) -> list[int]:
    """The runs whose ``query_metrics`` lack some iteration 0..n_iter (older stores)."""
    rows = con.execute("""
        SELECT r.run_id FROM runs r LEFT JOIN query_metrics qm ON qm.run_id = r.run_id
        WHERE r.run_id IN (SELECT unnest(?::INTEGER[]))
        GROUP BY r.run_id, r.n_iter HAVING count(DISTINCT qm.iteration) < r.n_iter + 1
        ORDER BY 1
    """, [list(map(int, run_ids))]).fetchall()
    return [int(r[0]) for r in rows]


def grid_scores(
    con: duckdb.DuckDBPyConnection, *, dataset_id: int, artifact_id: int,
    reported_classes: Sequence[int], method_key: str,
) -> pd.DataFrame:
    """Every configuration of one method on these distances, scored on the reported queries.

    The sensitivity of a method: one row per stored (run, iteration >= 1)
    candidate of ``method_key``'s finished runs, with its parameters and its
    mAP@all over the queries of ``reported_classes`` (a
    :class:`ProtocolComparison`'s ``reported_classes``: the queries its table
    reports on). Older stores hold some iterations only; the rows are those
    stored.

    Returns:
        Columns ``run_id``, ``iteration``, one column per registry parameter
        of the method (an iterative method's ``n_iter`` is the iteration; a
        parameter the run does not record is None) and ``map_all``; sorted
        by run and iteration. Empty (same columns) without such runs.
    """
    try:
        spec = method(method_key)
        names = [p.name for p in spec.params]
        iterative = spec.iterative
    except KeyError:
        names, iterative = [], False
    columns = ["run_id", "iteration", *names, "map_all"]
    labels = query_labels(con, dataset_id)
    cands = stored_candidates(con, dataset_id, artifact_id, labels.size, method_key).get(method_key)
    if cands is None:
        return pd.DataFrame(columns=columns)
    reported = np.isin(labels, np.asarray(list(reported_classes), dtype=np.int64)) & (labels != -1)
    keep = cands.iterations >= 1
    means = protocols.mean_ap(cands.values["ap"][keep], reported)
    params = {r.run_id: r.params for r in _runs(con, dataset_id, artifact_id)}
    rows = []
    for run_id, iteration, score in zip(cands.run_ids[keep], cands.iterations[keep], means):
        p = params.get(int(run_id), {})
        row: dict[str, object] = {"run_id": int(run_id), "iteration": int(iteration)}
        for name in names:
            row[name] = int(iteration) if (name == "n_iter" and iterative) else p.get(name)
        rows.append(row | {"map_all": float(score)})
    return pd.DataFrame(rows, columns=columns)


# ------------------------------------------------------------------------ result


@dataclass(frozen=True)
class ProtocolRow:
    """One row of the protocol table (values over the reported queries only).

    Attributes:
        label: Method label, or ``INITIAL``.
        method: ``runs.method``; None for the initial ranking.
        role: ``initial``, ``method`` or ``baseline`` (the method tested against).
        run_id: The chosen run (cv: the one chosen most often).
        iteration: Its chosen iteration (0 for the initial ranking).
        params: Compact parameter text of the choice, T being the chosen iteration.
        chosen: cv: ``(params text, run id, folds that chose it)``, most often
            first; test/holdout: the one choice.
        values: Metric key -> mean over the reported queries.
        deltas: Metric key -> value minus the initial ranking's on the same queries.
        ci: 95% interval of mAP@all (NaN, NaN without ``--ci``).
        delta_ci: Interval of the mAP@all difference from the baseline.
        n_pairs / ap_diff / p_value / p_holm / mark: the paired test against
            the baseline on the reported queries, as in ``store.report``.
        tuned: mAP@all on the reported queries of the choice made on them.
        optimism: ``tuned`` minus the protocol's mAP@all.
        grid: Min, median, max mAP@all over the method's grid (every run and
            iteration >= 1) on the reported queries.
        n_grid: How many (run, iteration) candidates that grid holds.
        default: mAP@all of the registry-default parameters there (NaN: not run).
    """

    label: str
    method: str | None
    role: str
    run_id: int
    iteration: int
    params: str
    chosen: tuple[tuple[str, int, int], ...]
    values: dict[str, float]
    deltas: dict[str, float]
    ci: tuple[float, float]
    delta_ci: tuple[float, float]
    n_pairs: int
    ap_diff: float
    p_value: float
    p_holm: float
    mark: str
    tuned: float
    optimism: float
    grid: tuple[float, float, float]
    n_grid: int
    default: float


@dataclass(frozen=True)
class ProtocolComparison:
    """The protocol table of one dataset and artifact.

    Attributes:
        dataset / dataset_id / artifact_id / backbone / metrics / test / alpha /
            baseline: as in ``store.report.Comparison``.
        protocol: ``test``, ``holdout`` or ``cv``.
        seed / tune_fraction / folds: The split's parameters.
        ci: ``class``, ``query`` or ``none``; n_boot: bootstrap resamples.
        n_queries: Queries reported on.
        tuning_classes / reported_classes: Class labels (holdout; cv and test:
            every class reported, none held out).
        stored_note: A sentence when some runs hold only some iterations'
            per-query metrics (older stores), else "".
        rows: The initial ranking first, then one row per method.
    """

    dataset: str
    dataset_id: int
    artifact_id: int
    backbone: str
    metrics: tuple[str, ...]
    protocol: str
    seed: int
    tune_fraction: float
    folds: int
    ci: str
    n_boot: int
    test: str
    alpha: float
    baseline: str
    n_queries: int
    tuning_classes: tuple[int, ...]
    reported_classes: tuple[int, ...]
    stored_note: str
    rows: tuple[ProtocolRow, ...]

    @property
    def split(self) -> str:
        """The split in words, e.g. ``"holdout: 6 tuning / 6 reported classes, seed 0"``."""
        if self.protocol == "holdout":
            return (f"holdout: {len(self.tuning_classes)} tuning / {len(self.reported_classes)} "
                    f"reported classes (--tune-fraction {self.tune_fraction:g}), seed {self.seed}")
        if self.protocol == "cv":
            return (f"cv: {self.folds} folds of {len(self.reported_classes)} classes, seed "
                    f"{self.seed}; every query scored once, by a choice made on the other folds")
        return f"test: no split, every class reported; {protocols.TEST_LABEL}"

    def note(self) -> str:
        """One sentence on the marks: baseline, test, correction and level."""
        n = sum(not math.isnan(r.p_value) for r in self.rows)
        return (f"{BETTER}/{WORSE}: significantly better/worse than {self.baseline} on the "
                f"{self.n_queries} reported queries ({stats.PAIRED_TESTS[self.test]} on per-query "
                f"AP, two-sided, Holm-corrected across {n} {'row' if n == 1 else 'rows'}, "
                f"α = {self.alpha:g})")


# ------------------------------------------------------------------------ building


def _iterative(key: str) -> bool:
    try:
        return method(key).iterative
    except KeyError:
        return False


def _choice_params(key: str, params: dict[str, object], iteration: int) -> str:
    """Parameter text of a (run, iteration): an iterative method's T is the iteration."""
    return params_text(key, {**params, "n_iter": iteration} if _iterative(key) else params)


def _default_candidate(key: str, cands: Candidates, params: dict[int, dict[str, object]]) -> int | None:
    """Row of the candidate run with the registry's default parameters (lowest run id), or None."""
    try:
        grid = method(key).params
    except KeyError:
        return None
    want_it = 1
    for i in np.argsort(cands.run_ids, kind="stable"):
        p = params.get(int(cands.run_ids[i]), {})
        ok = True
        for prm in grid:
            if prm.name == "n_iter":
                want_it = int(prm.default[0])
                continue
            got = p.get(f"asked_{prm.name}", p.get(prm.name))
            ok &= got is not None and (got == prm.default[0] if prm.kind is str
                                       else math.isclose(float(got), float(prm.default[0])))
        if ok and int(cands.iterations[i]) == want_it:
            return int(i)
    return None


def _interval(values: np.ndarray, labels: np.ndarray, ci: str, n_boot: int, seed: int) -> tuple[float, float]:
    if ci == "none":
        return (math.nan, math.nan)
    return stats.bootstrap_ci(values, labels if ci == "class" else None, n_boot=n_boot, seed=seed)


def protocol_comparison(
    con: duckdb.DuckDBPyConnection,
    *,
    protocol: str = "holdout",
    dataset: str | int | None = None,
    backbone: str | int | None = None,
    metrics: Sequence[str] | None = None,
    baseline: str | None = None,
    test: str = "randomisation",
    alpha: float = ALPHA,
    tune_fraction: float = 0.5,
    folds: int = 5,
    seed: int = 0,
    ci: str = "class",
    n_boot: int = 2000,
) -> ProtocolComparison:
    """Each method's configuration and iteration chosen under ``protocol``, reported on the other queries.

    Args:
        con: A reader connection (``store.db.connect_reader``).
        protocol: ``test``, ``holdout`` or ``cv`` (:mod:`icfrr.protocols`).
        dataset / backbone / metrics / test / alpha: as for ``store.report.comparison``.
        baseline: None or ``"initial"`` (the initial ranking) or a method key
            (that method under the same protocol).
        tune_fraction: Holdout's share of tuning classes, in (0, 1).
        folds: Cross-validation's folds, 2 .. number of classes.
        seed: Seed of the class split (and of the bootstrap).
        ci: ``class`` (resample classes), ``query`` or ``none``.
        n_boot: Bootstrap resamples, >= 100.

    Returns:
        A :class:`ProtocolComparison`.

    Raises:
        ReportError: One line: bad arguments, no labels, fewer than 2 query
            classes, more folds than classes, an unknown dataset or baseline.
    """
    chosen_metrics = _check_metrics(metrics)
    if protocol not in protocols.PROTOCOLS:
        raise ReportError(f"unknown protocol {protocol!r}; use one of {', '.join(protocols.PROTOCOLS)}")
    if ci not in CI_UNITS:
        raise ReportError(f"unknown --ci {ci!r}; use one of {', '.join(CI_UNITS)}")
    if n_boot < 100:
        raise ReportError(f"--n-boot must be at least 100, got {n_boot}")
    if test not in stats.PAIRED_TESTS:
        raise ReportError(f"unknown test {test!r}; use one of {', '.join(stats.PAIRED_TESTS)}")
    if not 0.0 < alpha < 1.0:
        raise ReportError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    if protocol == "holdout" and not 0.0 < tune_fraction < 1.0:
        raise ReportError(f"--tune-fraction must lie strictly between 0 and 1, got {tune_fraction:g}")
    dataset_id, name = _pick_dataset(con, dataset)
    artifact_id, backbone_name = _pick_artifact(con, dataset_id, name, backbone)
    labels = query_labels(con, dataset_id)
    if labels.size == 0 or np.all(labels == -1):
        raise ReportError(f"dataset {name} has no query labels (every label is -1): protocols split "
                          "the query classes; import labels (--labels) and rerun the sweep")
    runs = {r.run_id: r for r in _runs(con, dataset_id, artifact_id)}
    cands = {k: c for k, c in stored_candidates(con, dataset_id, artifact_id, labels.size).items()
             if np.any(c.iterations >= 1)}
    if not cands:
        raise ReportError(f"the runs of {name} ({backbone_name}) hold no per-query metrics; rerun the sweep")
    order = sorted(cands, key=_method_order)
    if baseline not in (None, "initial") and baseline not in cands:
        raise ReportError(f"no runs of method {baseline!r} on {name} ({backbone_name}); "
                          f"baselines there with --protocol: initial, {', '.join(order)}")

    try:
        sels = {k: protocols.choose(protocol, c.values["ap"], c.run_ids, c.iterations, labels,
                                    tune_fraction=tune_fraction, folds=folds, seed=seed)
                for k, c in cands.items()}
    except protocols.ProtocolError as exc:
        raise ReportError(str(exc)) from None
    any_sel = next(iter(sels.values()))
    reported = any_sel.reported
    if protocol == "holdout":
        tuning_cls, reported_cls = protocols.holdout_classes(labels, tune_fraction, seed)
    else:
        tuning_cls, reported_cls = np.array([], np.int64), np.unique(labels[labels != -1])
    groups = labels  # the class of each query: the bootstrap's unit with --ci class

    first = cands[order[0]]
    init_row = int(np.flatnonzero(first.iterations == 0)[0]) if np.any(first.iterations == 0) else None
    if init_row is None:
        raise ReportError(f"the runs of {name} ({backbone_name}) hold no iteration 0; rerun the sweep")
    initial = {m: np.where(reported, first.values[_COLUMN[m]][init_row], np.nan) for m in _COLUMN}

    def mean(v: np.ndarray) -> float:
        return float(protocols.mean_ap(v[None, :], reported)[0])

    scores = {k: {m: sels[k].scores(cands[k].values[_COLUMN[m]]) for m in _COLUMN} for k in order}
    base_ap = initial["map_all"] if baseline in (None, "initial") else scores[str(baseline)]["map_all"]
    description = ("the initial ranking" if baseline in (None, "initial")
                   else f"{_label(str(baseline))} (same protocol)")

    planned: list[tuple[str | None, dict[str, np.ndarray]]] = [(None, initial)]
    planned += [(k, scores[k]) for k in order]
    tested = []
    for key, sc in planned:
        is_base = (key is None and baseline in (None, "initial")) or key == baseline
        if is_base:
            tested.append((0, math.nan, math.nan))
            continue
        a, b = stats.paired_arrays(sc["map_all"][reported], base_ap[reported])
        p = stats.paired_p(a, b, test) if a.size else math.nan
        tested.append((int(a.size), float(np.mean(a - b)) if a.size else math.nan, p))
    adjusted = stats.holm([t[2] for t in tested])

    partial = partially_stored_runs(con, [int(r) for c in cands.values() for r in np.unique(c.run_ids)])
    stored_note = ""
    if partial:
        shown = ", ".join(map(str, partial[:8])) + (", ..." if len(partial) > 8 else "")
        stored_note = (f"{len(partial)} run(s) (ids {shown}) hold per-query metrics for some "
                       "iterations only (iteration 0, the best and the last: a store written "
                       "before every iteration was kept); selection chose among the stored "
                       "iterations")

    rows = []
    for (key, sc), (n, diff, p), p_adj in zip(planned, tested, adjusted):
        mark = ""
        if not math.isnan(p_adj) and p_adj < alpha and diff != 0:
            mark = BETTER if diff > 0 else WORSE
        values = {m: mean(sc[m]) for m in chosen_metrics}
        deltas = {m: values[m] - mean(initial[m]) for m in chosen_metrics}
        ci_ = _interval(sc["map_all"][reported], groups[reported], ci, n_boot, seed)
        if key is None:
            rows.append(ProtocolRow(
                INITIAL, None, "initial", int(first.run_ids[init_row]), 0, "", (), values, deltas,
                ci_, (math.nan, math.nan) if n == 0 else _interval(
                    (sc["map_all"] - base_ap)[reported], groups[reported], ci, n_boot, seed),
                n, diff, p, float(p_adj), mark, math.nan, math.nan,
                (math.nan, math.nan, math.nan), 0, math.nan))
            continue
        c, sel = cands[key], sels[key]
        counts = sel.times_chosen()
        chosen = tuple((_choice_params(key, runs[int(c.run_ids[i])].params if int(c.run_ids[i]) in runs
                                       else {}, int(c.iterations[i])),
                        int(c.run_ids[i]), t) for i, t in counts)
        top = counts[0][0]
        run_params = {int(r): runs[int(r)].params for r in np.unique(c.run_ids) if int(r) in runs}
        tuned, opt = protocols.optimism(c.values["ap"], c.run_ids, c.iterations, sel)
        d = _default_candidate(key, c, run_params)
        rows.append(ProtocolRow(
            _label(key), key, "baseline" if key == baseline else "method", int(c.run_ids[top]),
            int(c.iterations[top]), chosen[0][0], chosen, values, deltas, ci_,
            (math.nan, math.nan) if n == 0 else _interval(
                (sc["map_all"] - base_ap)[reported], groups[reported], ci, n_boot, seed),
            n, diff, p, float(p_adj), mark, tuned, opt,
            protocols.spread(c.values["ap"], c.iterations, reported), int(np.sum(c.iterations >= 1)),
            math.nan if d is None else float(protocols.mean_ap(c.values["ap"][[d]], reported)[0])))
    return ProtocolComparison(
        dataset=name, dataset_id=dataset_id, artifact_id=artifact_id, backbone=backbone_name,
        metrics=chosen_metrics, protocol=protocol, seed=seed, tune_fraction=tune_fraction,
        folds=folds, ci=ci, n_boot=n_boot, test=test, alpha=alpha, baseline=description,
        n_queries=int(reported.sum()), tuning_classes=tuple(sorted(map(int, tuning_cls))),
        reported_classes=tuple(sorted(map(int, reported_cls))), stored_note=stored_note,
        rows=tuple(rows))


__all__ = ["CI_UNITS", "Candidates", "ProtocolComparison", "ProtocolRow", "grid_scores",
           "partially_stored_runs", "protocol_comparison", "query_labels", "stored_candidates"]
