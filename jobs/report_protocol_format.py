"""The protocol table's formats: aligned text, CSV and LaTeX, for ``python -m jobs.report --protocol``.

Formats an :class:`icfrr.protocol_comparison.ProtocolComparison`. Every
format names the protocol and its split (with its seed); the ``test``
protocol is labelled "tuned on the reported queries (optimistic)" in each.
The cells and the LaTeX scaffolding are ``jobs.report_cells``', shared with
the comparison table. Light imports only (``--help`` of the report must
answer without loading duckdb or scipy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from icfrr.protocols import protocol
from icfrr.registry import HEADLINE, LABELS
from jobs.report_cells import align, csv_text, latex_escape, latex_sup, latex_table, num, p_text

if TYPE_CHECKING:
    from icfrr.protocol_comparison import ProtocolComparison


def _num(v: float, sign: bool = False) -> str:
    return num(v, sign=sign, clean_zero=True)


def _ci(lo_hi: tuple[float, float], sign: bool = False) -> str:
    lo, hi = lo_hi
    return "" if math.isnan(lo) else f"[{_num(lo, sign=sign)}, {_num(hi, sign=sign)}]"


def _header(pc: ProtocolComparison) -> list[str]:
    from icfrr.protocol_comparison import selection_text

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


def to_text(pc: ProtocolComparison) -> str:
    """Aligned text: the table, the sensitivity table, cv's choices and the notes."""
    from icfrr.protocol_comparison import chosen_text, intervals_text

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
                  p_text(r.p_value) or "-", p_text(r.p_holm) or "-",
                  "-" if math.isnan(r.tuned) else _num(r.tuned),
                  "-" if math.isnan(r.optimism) else _num(r.optimism, sign=True)]
        table.append(cells)
    sens = [["method", "grid", f"min {HEADLINE.label}", "median", "max", "default params"]]
    for r in pc.rows:
        if r.method is not None:
            sens.append([r.label, str(r.n_grid), *(_num(v) for v in r.grid),
                         "not run" if math.isnan(r.default) else _num(r.default)])
    lines = [*_header(pc), *align(table, {0, 1}), "",
             f"sensitivity ({HEADLINE.label} over each method's grid, every run and iteration >= 1, "
             "on the reported queries; default params: the registry's defaults):",
             *align(sens, {0})]
    if protocol(pc.protocol).several_choices:
        methods = [r for r in pc.rows if r.method is not None]
        lines += ["", f"chosen per fold (of {sum(n for *_, n in methods[0].chosen)}):"]
        lines += [f"  {r.label}: {chosen_text(r)}" for r in methods]
    lines += ["", "Δ: change from the initial ranking on the same queries; vs baseline: mean "
              f"per-query AP difference from {pc.baseline}; test-tuned: {HEADLINE.label} on the "
              "reported queries of the choice made on them; optimism: test-tuned minus the "
              "protocol's score", intervals_text(pc), pc.note()]
    return "\n".join(lines)


def to_csv(pc: ProtocolComparison) -> str:
    """CSV: a header row (``icfrr.protocol_comparison.to_records``), then one line per row; NaN as empty cells."""
    from icfrr.protocol_comparison import to_records

    return csv_text(to_records(pc))


def to_latex(pc: ProtocolComparison, *, label: str = "tab:rerank-protocol") -> str:
    """A booktabs ``table``: metrics, mAP@all's interval, the difference from the baseline and the optimism.

    The caption names the protocol, its split and what chose the configurations
    (for ``test``: "tuned on the reported queries (optimistic)"). Needs
    ``\\usepackage{booktabs}``.
    """
    head = ["Method", "Parameters", *(latex_escape(LABELS[m]) for m in pc.metrics),
            "95\\% CI", r"$\Delta$ baseline", "95\\% CI", "Optimism"]
    rows = []
    for r in pc.rows:
        cells = [latex_escape(r.label + (" (baseline)" if r.role == "baseline" else "")),
                 latex_escape(r.params)]
        cells += [_num(r.values[m]) + (latex_sup(r.mark) if m == HEADLINE.key else "") for m in pc.metrics]
        cells += [_ci(r.ci), "" if math.isnan(r.ap_diff) else _num(r.ap_diff, sign=True),
                  _ci(r.delta_ci, True), "" if math.isnan(r.optimism) else _num(r.optimism, sign=True)]
        rows.append((cells, r.role == "initial"))
    return latex_table(env="table", caption=_caption(pc), label=label,
                       columns=f"ll{'r' * (len(pc.metrics) + 4)}", head=head, rows=rows)


def _caption(pc: ProtocolComparison) -> str:
    from icfrr.protocol_comparison import intervals_text, selection_text

    return (f"Re-ranking methods on {pc.dataset} (backbone {pc.backbone}), protocol {pc.split}: "
            f"{selection_text(pc)}; {pc.n_queries} reported queries. {intervals_text(pc)}. "
            f"Optimism: {HEADLINE.label} tuned on the reported queries minus the protocol's. "
            f"{pc.note()}.")


#: --format -> formatter of a ProtocolComparison.
FORMATTERS: dict[str, Callable[[ProtocolComparison], str]] = {
    "table": to_text, "csv": to_csv, "latex": to_latex}

__all__ = ["FORMATTERS", "to_csv", "to_latex", "to_text"]
