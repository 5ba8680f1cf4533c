"""The protocol table's formats: aligned text, CSV records and LaTeX (pure: no database).

Formats ``store.protocol_report.ProtocolComparison`` for ``python -m jobs.report
--protocol`` (``jobs/report_protocols.py``) and for the dashboard's Methods
downloads, so both say the same thing. Every format names the protocol and its
split (with its seed); the ``test`` protocol is labelled "tuned on the
reported queries (optimistic)" in each. Light imports only (``--help`` of the
report must answer without loading duckdb or scipy).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from icfrr.protocols import TEST_LABEL
from icfrr.registry import HEADLINE, LABELS

if TYPE_CHECKING:
    from store.protocol_report import ProtocolComparison



def _num(v: float, digits: int = 4, sign: bool = False) -> str:
    if math.isnan(v):
        return "n/a"
    v = 0.0 if round(v, digits) == 0 else v  # no "-0.0000"
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def _p(v: float) -> str:
    return "-" if math.isnan(v) else (f"{v:.3f}" if v >= 0.001 else f"{v:.1e}")


def _ci(lo_hi: tuple[float, float], sign: bool = False) -> str:
    lo, hi = lo_hi
    return "" if math.isnan(lo) else f"[{_num(lo, sign=sign)}, {_num(hi, sign=sign)}]"


def selection_text(pc: ProtocolComparison) -> str:
    """What chose each configuration, in words."""
    if pc.protocol == "test":
        return TEST_LABEL
    if pc.protocol == "holdout":
        return "chosen on the tuning classes' queries, reported on the other classes' queries"
    return "each fold's queries scored by the choice made on the other folds"


def intervals_text(pc: ProtocolComparison) -> str:
    if pc.ci == "none":
        return "no intervals (--ci none)"
    unit = "classes" if pc.ci == "class" else "queries"
    return (f"[lo, hi]: 95% bootstrap intervals (BCa, {pc.n_boot} resamples of the reported "
            f"{unit}, seed {pc.seed})")


def _header(pc: ProtocolComparison) -> list[str]:
    lines = [f"{pc.dataset} · backbone {pc.backbone} (artifact {pc.artifact_id}) · protocol {pc.split}",
             f"{selection_text(pc)}; reported on {pc.n_queries} queries of "
             f"{len(pc.reported_classes)} classes; selection by {HEADLINE.label} over "
             "iterations 1..T, ties to the lowest run id, then the lowest iteration"]
    if pc.tuning_classes:
        lines.append("tuning classes: " + " ".join(map(str, pc.tuning_classes))
                     + "; reported classes: " + " ".join(map(str, pc.reported_classes)))
    if pc.stored_note:
        lines.append(f"note: {pc.stored_note}")
    return lines


def _align(table: list[list[str]], left: set[int]) -> list[str]:
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) if c in left else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _chosen_text(row) -> str:
    return "; ".join(f"{params} (run {run}) ×{n}" for params, run, n in row.chosen)


def to_text(pc: ProtocolComparison) -> str:
    """Aligned text: the table, the sensitivity table, cv's choices and the notes."""
    head = ["method", "params", "run", "it", *(LABELS[m] for m in pc.metrics),
            *(f"Δ {LABELS[m]}" for m in pc.metrics)]
    head += [f"{HEADLINE.label} [95% CI]", "vs baseline [95% CI]", "p", "p (Holm)",
             "test-tuned", "optimism"]
    table = [head]
    for r in pc.rows:
        label = r.label + (" (baseline)" if r.role == "baseline" else "")
        cells = [label, r.params or "-", str(r.run_id), str(r.iteration)]
        cells += [_num(r.values[m]) + (r.mark if m == HEADLINE.key else "") for m in pc.metrics]
        cells += [_num(r.deltas[m], sign=True) for m in pc.metrics]
        cells += [_ci(r.ci) or "-",
                  "-" if math.isnan(r.ap_diff) else f"{_num(r.ap_diff, sign=True)} {_ci(r.delta_ci, True)}".rstrip(),
                  _p(r.p_value), _p(r.p_holm),
                  "-" if math.isnan(r.tuned) else _num(r.tuned),
                  "-" if math.isnan(r.optimism) else _num(r.optimism, sign=True)]
        table.append(cells)
    sens = [["method", "grid", f"min {HEADLINE.label}", "median", "max", "default params"]]
    for r in pc.rows:
        if r.method is not None:
            sens.append([r.label, str(r.n_grid), *(_num(v) for v in r.grid),
                         "not run" if math.isnan(r.default) else _num(r.default)])
    lines = [*_header(pc), *_align(table, {0, 1}), "",
             f"sensitivity ({HEADLINE.label} over each method's grid, every run and iteration >= 1, "
             "on the reported queries; default params: the registry's defaults):",
             *_align(sens, {0})]
    if pc.protocol == "cv":
        lines += ["", f"chosen per fold (of {pc.folds}):"]
        lines += [f"  {r.label}: {_chosen_text(r)}" for r in pc.rows if r.method is not None]
    lines += ["", "Δ: change from the initial ranking on the same queries; vs baseline: mean "
              f"per-query AP difference from {pc.baseline}; test-tuned: {HEADLINE.label} on the "
              "reported queries of the choice made on them; optimism: test-tuned minus the "
              "protocol's score", intervals_text(pc), pc.note()]
    return "\n".join(lines)


def to_records(pc: ProtocolComparison) -> list[dict[str, object]]:
    """The rows as flat dicts in CSV column order: ``store.report.to_records``'s columns, then the protocol's.

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
                   default_map_all=r.default, chosen=_chosen_text(r))
        out.append(rec)
    return out


def to_csv(pc: ProtocolComparison) -> str:
    """CSV: a header row (:func:`to_records`), then one line per row; NaN as empty cells."""
    records = to_records(pc)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(records[0]) if records else [])
    for rec in records:
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else
                         repr(v) if isinstance(v, float) else v for v in rec.values()])
    return buf.getvalue()


def to_latex(pc: ProtocolComparison, *, label: str = "tab:rerank-protocol") -> str:
    """A booktabs ``table``: metrics, mAP@all's interval, the difference from the baseline and the optimism.

    The caption names the protocol, its split and what chose the configurations
    (for ``test``: "tuned on the reported queries (optimistic)"). Needs
    ``\\usepackage{booktabs}``.
    """
    from store.report import latex_escape

    def sup(mark: str) -> str:
        return rf"\textsuperscript{{{latex_escape(mark)}}}" if mark else ""

    head = ["Method", "Parameters", *(latex_escape(LABELS[m]) for m in pc.metrics),
            "95\\% CI", r"$\Delta$ baseline", "95\\% CI", "Optimism"]
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(_caption(pc))}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{ll{'r' * (len(pc.metrics) + 4)}}}", r"\toprule",
             " & ".join(head) + r" \\", r"\midrule"]
    for r in pc.rows:
        cells = [latex_escape(r.label + (" (baseline)" if r.role == "baseline" else "")),
                 latex_escape(r.params)]
        cells += [_num(r.values[m]) + (sup(r.mark) if m == HEADLINE.key else "") for m in pc.metrics]
        cells += [_ci(r.ci), "" if math.isnan(r.ap_diff) else _num(r.ap_diff, sign=True),
                  _ci(r.delta_ci, True), "" if math.isnan(r.optimism) else _num(r.optimism, sign=True)]
        lines.append(" & ".join(cells) + r" \\")
        if r.role == "initial":
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _caption(pc: ProtocolComparison) -> str:
    return (f"Re-ranking methods on {pc.dataset} (backbone {pc.backbone}), protocol {pc.split}: "
            f"{selection_text(pc)}; {pc.n_queries} reported queries. {intervals_text(pc)}. "
            f"Optimism: {HEADLINE.label} tuned on the reported queries minus the protocol's. "
            f"{pc.note()}.")


#: --format -> formatter of a ProtocolComparison.
FORMATTERS: dict[str, Callable[[ProtocolComparison], str]] = {
    "table": to_text, "csv": to_csv, "latex": to_latex}

__all__ = ["FORMATTERS", "intervals_text", "selection_text", "to_csv", "to_latex", "to_records", "to_text"]
