"""The comparison under a selection protocol (:mod:`icfrr.protocols`), from stored arrays.

``store.protocol_report`` reads every stored (run, iteration) of one
dataset's distances with its per-query values (:class:`Candidates`);
:func:`build_protocol_comparison` lets each method choose its configuration
and iteration under a protocol (``test``, ``holdout``, ``cv``: the entries of
:data:`icfrr.protocols.PROTOCOL_ENTRIES`) and reports every metric
over the reported queries only, with: a 95% bootstrap interval of mAP@all and
of its difference from the baseline (:func:`icfrr.stats.bootstrap_ci`), the
paired test against the baseline on the reported queries (Holm-corrected
across the methods), the method's optimism (its test-tuned score on the
reported queries minus its protocol score) and its sensitivity (min / median
/ max mAP@all over its grid, and the score of its registry-default
parameters). ``jobs.report_protocol_format`` prints it; the dashboard shows
:func:`to_records`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from icfrr import protocols, stats
from icfrr.comparison import (ALPHA, BETTER, INITIAL, WORSE, Distances, ReportError, RunSummary,
                              check_metrics, check_test, significance_mark)
from icfrr.labels import choice_params, is_iterative, method_label, method_order
from icfrr.registry import METRICS, method

#: --ci choices: resample classes (default), queries, or no interval.
CI_UNITS = ("class", "query", "none")
_COLUMN = {m.key: m.column for m in METRICS}


@dataclass(frozen=True)
class Candidates:
    """Every stored (run, iteration) of one method's finished runs, with per-query values.

    Attributes:
        method: ``runs.method``.
        run_ids: int64 [C] run of each candidate.
        iterations: int64 [C] its iteration (0 included: the initial ranking).
        values: ``query_metrics`` column -> float64 [C, Q] (NaN: unknown label or not stored).
    """

    method: str
    run_ids: np.ndarray
    iterations: np.ndarray
    values: dict[str, np.ndarray]


@dataclass(frozen=True)
class ProtocolRow:
    """One row of the protocol table (values over the reported queries only).

    Attributes:
        label: Method label, or ``INITIAL``.
        method: ``runs.method``; None for the initial ranking.
        role: ``initial``, ``method`` or ``baseline`` (the method tested against).
        run_id: The chosen run (several choices, cv: the one chosen most often).
        iteration: Its chosen iteration (0 for the initial ranking).
        params: Compact parameter text of the choice, T being the chosen iteration.
        chosen: ``(params text, run id, choices that picked it)``, most often
            first: one per fold for cv, the one choice for test and holdout.
        values: Metric key -> mean over the reported queries.
        deltas: Metric key -> value minus the initial ranking's on the same queries.
        ci: 95% interval of mAP@all (NaN, NaN without ``--ci``).
        delta_ci: Interval of the mAP@all difference from the baseline.
        n_pairs / ap_diff / p_value / p_holm / mark: the paired test against
            the baseline on the reported queries, as in :class:`icfrr.comparison.ReportRow`.
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
            baseline: as in :class:`icfrr.comparison.Comparison`.
        protocol: A key of :data:`icfrr.protocols.PROTOCOLS`.
        seed / tune_fraction / folds: The split's parameters.
        ci: ``class``, ``query`` or ``none``; n_boot: bootstrap resamples.
        n_queries: Queries reported on.
        tuning_classes / reported_classes: Class labels: those that only ever
            choose (holdout's tuning classes; none for cv and test) and those reported.
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
        return protocols.protocol(self.protocol).split_text.format(
            seed=self.seed, tune_fraction=self.tune_fraction, folds=self.folds,
            n_tuning=len(self.tuning_classes), n_reported=len(self.reported_classes))

    def note(self) -> str:
        """One sentence on the marks: baseline, test, correction and level."""
        n = sum(not math.isnan(r.p_value) for r in self.rows)
        return (f"{BETTER}/{WORSE}: significantly better/worse than {self.baseline} on the "
                f"{self.n_queries} reported queries ({stats.PAIRED_TESTS[self.test]} on per-query "
                f"AP, two-sided, Holm-corrected across {n} {'row' if n == 1 else 'rows'}, "
                f"α = {self.alpha:g})")


def selection_text(pc: ProtocolComparison) -> str:
    """What chose each configuration, in words."""
    return protocols.protocol(pc.protocol).selection


def intervals_text(pc: ProtocolComparison) -> str:
    """What the ``[lo, hi]`` intervals are, in words (or that there are none)."""
    if pc.ci == "none":
        return "no intervals (--ci none)"
    unit = "classes" if pc.ci == "class" else "queries"
    return (f"[lo, hi]: 95% bootstrap intervals (BCa, {pc.n_boot} resamples of the reported "
            f"{unit}, seed {pc.seed})")


def chosen_text(row: ProtocolRow) -> str:
    """cv's choices of a row, e.g. ``"KG 8, T 2 (run 3) ×2; KG 4, T 1 (run 1) ×1"``."""
    return "; ".join(f"{params} (run {run}) ×{n}" for params, run, n in row.chosen)


# ------------------------------------------------------------------------ checks


@dataclass(frozen=True)
class ProtocolOptions:
    """The protocol table's choices, checked when made (:class:`ReportError`, one line).

    Attributes:
        protocol: A key of :data:`icfrr.protocols.PROTOCOLS` (default: the honest holdout).
        metrics / test / alpha: As in :class:`icfrr.comparison.ComparisonOptions`.
        baseline: None or ``"initial"`` (the initial ranking) or a method key
            (that method under the same protocol).
        tune_fraction: Holdout's share of tuning classes, in (0, 1).
        folds: Cross-validation's folds, 2 .. number of classes.
        seed: Seed of the class split (and of the bootstrap).
        ci: ``class`` (resample classes), ``query`` or ``none``.
        n_boot: Bootstrap resamples, >= 100.
    """

    protocol: str = protocols.DEFAULT_PROTOCOL
    metrics: Sequence[str] | None = None
    baseline: str | None = None
    test: str = "randomisation"
    alpha: float = ALPHA
    tune_fraction: float = 0.5
    folds: int = 5
    seed: int = 0
    ci: str = "class"
    n_boot: int = 2000

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", check_metrics(self.metrics))
        try:
            entry = protocols.protocol(self.protocol)
        except protocols.ProtocolError as exc:
            raise ReportError(str(exc)) from None
        if self.ci not in CI_UNITS:
            raise ReportError(f"unknown --ci {self.ci!r}; use one of {', '.join(CI_UNITS)}")
        if self.n_boot < 100:
            raise ReportError(f"--n-boot must be at least 100, got {self.n_boot}")
        check_test(self.test, self.alpha)
        if "tune_fraction" in entry.options and not 0.0 < self.tune_fraction < 1.0:
            raise ReportError("--tune-fraction must lie strictly between 0 and 1, "
                              f"got {self.tune_fraction:g}")


def check_labels(labels: np.ndarray, dataset: str) -> np.ndarray:
    """int64 [Q] query labels, refused (:class:`ReportError`) when none is known: protocols split classes."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0 or np.all(labels == -1):
        raise ReportError(f"dataset {dataset} has no query labels (every label is -1): protocols split "
                          "the query classes; import labels (--labels) and rerun the sweep")
    return labels


# ------------------------------------------------------------------------ building


def _interval(values: np.ndarray, labels: np.ndarray, ci: str, n_boot: int, seed: int) -> tuple[float, float]:
    if ci == "none":
        return (math.nan, math.nan)
    return stats.bootstrap_ci(values, labels if ci == "class" else None, n_boot=n_boot, seed=seed)


def stored_note(partial_runs: Sequence[int]) -> str:
    """The sentence about runs whose per-query metrics were kept for some iterations only; "" when none."""
    if not partial_runs:
        return ""
    shown = ", ".join(map(str, partial_runs[:8])) + (", ..." if len(partial_runs) > 8 else "")
    return (f"{len(partial_runs)} run(s) (ids {shown}) hold per-query metrics for some "
            "iterations only (iteration 0, the best and the last: a store written "
            "before every iteration was kept); selection chose among the stored "
            "iterations")


def build_protocol_comparison(
    candidates: Mapping[str, Candidates],
    labels: np.ndarray,
    runs: Mapping[int, RunSummary],
    where: Distances,
    options: ProtocolOptions | None = None,
    partial_runs: Sequence[int] = (),
) -> ProtocolComparison:
    """Each method's configuration and iteration chosen under a protocol, reported on the other queries.

    Args:
        candidates: Method -> its stored (run, iteration) candidates over the Q queries.
        labels: int [Q] the label of each query (-1: unknown).
        runs: Run id -> the finished run (its parameters name the choices).
        where: What the runs are on.
        options: Protocol, split, test and intervals (default: holdout, see
            :class:`ProtocolOptions`).
        partial_runs: Runs holding per-query metrics of some iterations only.

    Raises:
        ReportError: One line: no labels, no per-query metrics, an impossible
            split, an unknown baseline.
    """
    o = options or ProtocolOptions()
    protocol, baseline, test, alpha = o.protocol, o.baseline, o.test, o.alpha
    tune_fraction, folds, seed, ci, n_boot = o.tune_fraction, o.folds, o.seed, o.ci, o.n_boot
    chosen_metrics = tuple(o.metrics or ())
    labels = check_labels(labels, where.dataset)
    cands = {k: c for k, c in candidates.items() if np.any(c.iterations >= 1)}
    if not cands:
        raise ReportError(f"the runs of {where} hold no per-query metrics; rerun the sweep")
    order = sorted(cands, key=method_order)
    if baseline not in (None, "initial") and baseline not in cands:
        raise ReportError(f"no runs of method {baseline!r} on {where}; "
                          f"baselines there with --protocol: initial, {', '.join(order)}")
    try:
        sels = {k: protocols.choose(protocol, c.values["ap"], c.run_ids, c.iterations, labels,
                                    tune_fraction=tune_fraction, folds=folds, seed=seed)
                for k, c in cands.items()}
        tuning_cls, reported_cls = protocols.split_classes(protocol, labels, tune_fraction=tune_fraction,
                                                           folds=folds, seed=seed)
    except protocols.ProtocolError as exc:
        raise ReportError(str(exc)) from None
    reported = next(iter(sels.values())).reported

    first = cands[order[0]]
    init_rows = np.flatnonzero(first.iterations == 0)
    if not init_rows.size:
        raise ReportError(f"the runs of {where} hold no iteration 0; rerun the sweep")
    init_row = int(init_rows[0])
    initial = {m: np.where(reported, first.values[_COLUMN[m]][init_row], np.nan) for m in _COLUMN}

    def mean(v: np.ndarray) -> float:
        return float(protocols.mean_ap(v[None, :], reported)[0])

    def interval(v: np.ndarray) -> tuple[float, float]:  # groups: the class of each query
        return _interval(v[reported], labels[reported], ci, n_boot, seed)

    scores = {k: {m: sels[k].scores(cands[k].values[_COLUMN[m]]) for m in _COLUMN} for k in order}
    on_initial = baseline in (None, "initial")
    base_ap = initial["map_all"] if on_initial else scores[str(baseline)]["map_all"]
    planned: list[tuple[str | None, dict[str, np.ndarray]]] = [(None, initial)]
    planned += [(k, scores[k]) for k in order]
    tested = []
    for key, sc in planned:
        if (key is None and on_initial) or key == baseline:
            tested.append((0, math.nan, math.nan))
            continue
        a, b = stats.paired_arrays(sc["map_all"][reported], base_ap[reported])
        p = stats.paired_p(a, b, test) if a.size else math.nan
        tested.append((int(a.size), float(np.mean(a - b)) if a.size else math.nan, p))
    adjusted = stats.holm([t[2] for t in tested])

    rows = []
    for (key, sc), (n, diff, p), p_adj in zip(planned, tested, adjusted):
        mark = significance_mark(diff, float(p_adj), alpha)
        values = {m: mean(sc[m]) for m in chosen_metrics}
        deltas = {m: values[m] - mean(initial[m]) for m in chosen_metrics}
        ci_ = interval(sc["map_all"])
        delta_ci = (math.nan, math.nan) if n == 0 else interval(sc["map_all"] - base_ap)
        if key is None:
            rows.append(ProtocolRow(
                INITIAL, None, "initial", int(first.run_ids[init_row]), 0, "", (), values, deltas,
                ci_, delta_ci, n, diff, p, float(p_adj), mark, math.nan, math.nan,
                (math.nan, math.nan, math.nan), 0, math.nan))
            continue
        c, sel = cands[key], sels[key]
        params = {int(r): runs[int(r)].params for r in np.unique(c.run_ids) if int(r) in runs}
        chosen = tuple((choice_params(key, params.get(int(c.run_ids[i]), {}), int(c.iterations[i])),
                        int(c.run_ids[i]), t) for i, t in sel.times_chosen())
        top = sel.times_chosen()[0][0]
        tuned, opt = protocols.optimism(c.values["ap"], c.run_ids, c.iterations, sel)
        d = protocols.default_candidate(key, c.run_ids, c.iterations, params)
        rows.append(ProtocolRow(
            method_label(key), key, "baseline" if key == baseline else "method", int(c.run_ids[top]),
            int(c.iterations[top]), chosen[0][0], chosen, values, deltas, ci_, delta_ci,
            n, diff, p, float(p_adj), mark, tuned, opt,
            protocols.spread(c.values["ap"], c.iterations, reported), int(np.sum(c.iterations >= 1)),
            math.nan if d is None else float(protocols.mean_ap(c.values["ap"][[d]], reported)[0])))
    return ProtocolComparison(
        dataset=where.dataset, dataset_id=where.dataset_id, artifact_id=where.artifact_id,
        backbone=where.backbone,
        metrics=chosen_metrics, protocol=protocol, seed=seed, tune_fraction=tune_fraction,
        folds=folds, ci=ci, n_boot=n_boot, test=test, alpha=alpha,
        baseline="the initial ranking" if on_initial else f"{method_label(str(baseline))} (same protocol)",
        n_queries=int(reported.sum()), tuning_classes=tuple(sorted(map(int, tuning_cls))),
        reported_classes=tuple(sorted(map(int, reported_cls))), stored_note=stored_note(partial_runs),
        rows=tuple(rows))


def grid_rows(cands: Candidates | None, labels: np.ndarray, reported_classes: Sequence[int],
              params: Mapping[int, Mapping[str, object]], method_key: str) -> tuple[list[str], list[dict[str, object]]]:
    """Every configuration (run, iteration >= 1) of one method scored on the reported queries.

    Args:
        cands: The method's candidates (None: no runs).
        labels: int [Q] query labels (-1: unknown).
        reported_classes: The classes whose queries are averaged over.
        params: Run id -> its ``runs.params``.
        method_key: The method.

    Returns:
        ``(columns, rows)``: columns ``run_id``, ``iteration``, one per registry
        parameter of the method (an iterative method's ``n_iter`` is the
        iteration; a parameter the run does not record is None) and
        ``map_all``; one dict per candidate, by run and iteration.
    """
    try:
        names = [p.name for p in method(method_key).params]
    except KeyError:
        names = []
    iterative = is_iterative(method_key)
    columns = ["run_id", "iteration", *names, "map_all"]
    if cands is None:
        return columns, []
    labels = np.asarray(labels, dtype=np.int64)
    reported = np.isin(labels, np.asarray(list(reported_classes), dtype=np.int64)) & (labels != -1)
    keep = cands.iterations >= 1
    means = protocols.mean_ap(cands.values["ap"][keep], reported)
    rows = []
    for run_id, iteration, score in zip(cands.run_ids[keep], cands.iterations[keep], means):
        p = params.get(int(run_id), {})
        row: dict[str, object] = {"run_id": int(run_id), "iteration": int(iteration)}
        for name in names:
            row[name] = int(iteration) if (name == "n_iter" and iterative) else p.get(name)
        rows.append(row | {"map_all": float(score)})
    return columns, rows


def to_records(pc: ProtocolComparison) -> list[dict[str, object]]:
    """The rows as flat dicts in CSV column order: the plain report's columns, then the protocol's.

    Keys: role, method, label, run_id, iteration, params, each metric key and
    ``<metric>_delta``, n_pairs, ap_diff, p_value, p_holm, mark, test,
    baseline (as the plain report), then protocol, selection, split, seed,
    n_queries, map_all_ci_lo, map_all_ci_hi, delta_ci_lo, delta_ci_hi,
    test_tuned, optimism, grid_min, grid_median, grid_max, default_map_all,
    chosen (cv: every choice and how many folds made it).
    """
    out = []
    for r in pc.rows:
        rec: dict[str, object] = {"role": r.role, "method": r.method or "", "label": r.label,
                                  "run_id": r.run_id, "iteration": r.iteration, "params": r.params}
        for m in pc.metrics:
            rec[m] = r.values[m]
        for m in pc.metrics:
            rec[f"{m}_delta"] = r.deltas[m]
        rec.update(n_pairs=r.n_pairs, ap_diff=r.ap_diff, p_value=r.p_value, p_holm=r.p_holm,
                   mark=r.mark, test=pc.test, baseline=pc.baseline, protocol=pc.protocol,
                   selection=selection_text(pc), split=pc.split, seed=pc.seed, n_queries=pc.n_queries,
                   map_all_ci_lo=r.ci[0], map_all_ci_hi=r.ci[1], delta_ci_lo=r.delta_ci[0],
                   delta_ci_hi=r.delta_ci[1], test_tuned=r.tuned, optimism=r.optimism,
                   grid_min=r.grid[0], grid_median=r.grid[1], grid_max=r.grid[2],
                   default_map_all=r.default, chosen=chosen_text(r))
        out.append(rec)
    return out


__all__ = ["CI_UNITS", "Candidates", "ProtocolComparison", "ProtocolRow", "build_protocol_comparison",
           "ProtocolOptions", "check_labels", "chosen_text", "grid_rows", "intervals_text", "selection_text",
           "stored_note", "to_records"]
