"""The comparison table's formats: aligned text, CSV and LaTeX (booktabs), for ``python -m jobs.report``.

Formats an :class:`icfrr.comparison.Comparison` (built by
``store.report.comparison``). The cells and the LaTeX scaffolding are
``jobs.report_cells``', shared with the protocol table. Light imports only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from icfrr.protocols import TEST_LABEL
from icfrr.registry import HEADLINE, LABELS
from jobs.report_cells import align, csv_text, latex_escape, latex_sup, latex_table, num, p_text

if TYPE_CHECKING:
    from icfrr.comparison import Comparison, ReportRow

#: Above this many columns a table no longer fits one column of a two-column paper.
LATEX_NARROW_COLUMNS = 8


def _best_rows(cmp: Comparison) -> dict[str, set[int]]:
    """Metric key -> indices of the rows holding its column maximum (ties: all)."""
    out: dict[str, set[int]] = {}
    for m in cmp.metrics:
        vals = [r.values[m] for r in cmp.rows]
        finite = [v for v in vals if not math.isnan(v)]
        top = max(finite) if finite else math.nan
        out[m] = {i for i, v in enumerate(vals) if v == top}
    return out


def _configs(r: ReportRow) -> str:
    return f"best of {r.n_configs}" if r.n_configs else "-"


def _name(r: ReportRow) -> str:
    return r.label + (" (baseline)" if r.role == "baseline" else "")


def to_text(cmp: Comparison) -> str:
    """An aligned plain-text table with the test described under it.

    Columns: method, parameters, how many configurations the row is the best
    of, run, iteration, each metric (``*`` on the column maximum, then the
    value's significance mark), each metric's change from the baseline, and
    last the Holm-adjusted p-value of each metric (raw ones: ``--format csv``).
    A last line names the rows built on an approximate gallery graph or k-NN index, if any.
    """
    best = _best_rows(cmp)
    header = ["method", "params", "configs", "run", "it", *(LABELS[m] for m in cmp.metrics),
              *(f"Δ {LABELS[m]}" for m in cmp.metrics),
              *(f"p (Holm) {LABELS[m]}" for m in cmp.metrics)]
    table = [header]
    for i, r in enumerate(cmp.rows):
        cells = [_name(r), r.params or "-", _configs(r), str(r.run_id), str(r.iteration)]
        for m in cmp.metrics:
            cells.append(num(r.values[m]) + ("*" if i in best[m] else "") + r.marks[m])
        cells += [num(r.deltas[m], sign=True) for m in cmp.metrics]
        cells += [p_text(r.p_holms[m]) or "-" for m in cmp.metrics]
        table.append(cells)
    graph = cmp.graph_note()
    return "\n".join([
        f"{cmp.dataset} · backbone {cmp.backbone} (artifact {cmp.artifact_id})",
        *align(table, {0, 1, 2}),
        f"* best in its column; {cmp.delta_note()}; "
        f"each method's best run by {HEADLINE.label} at its last iteration, {TEST_LABEL}: "
        "--protocol holdout or cv chooses on other classes",
        cmp.note(),
        *([graph] if graph else []),
    ])


def to_csv(cmp: Comparison) -> str:
    """CSV: one header row (``icfrr.comparison.to_records``' keys), then one line per row.

    Numbers are written in full precision (``repr``), undefined ones (NaN)
    as empty cells.
    """
    from icfrr.comparison import to_records

    return csv_text(to_records(cmp))


def latex_columns(cmp: Comparison) -> int:
    """Columns of :func:`to_latex`'s tabular: method, parameters, configurations, metrics, Δs."""
    return 3 + 2 * len(cmp.metrics)


def to_latex(cmp: Comparison, *, label: str = "tab:rerank-comparison", wide: bool = False) -> str:
    """A booktabs ``table``: best value of each metric column in ``\\textbf``, marks as superscripts.

    Columns: method, parameters, configurations the row is the best of, each
    metric (its mark as a superscript), each metric's change from the
    baseline. The caption names the dataset, the baseline, the test and
    Holm's correction over rows x metrics (and an approximate gallery graph
    or k-NN index, if any row used one). Needs ``\\usepackage{booktabs}``.

    Args:
        cmp: The comparison.
        label: The ``\\label``.
        wide: A ``table*`` (spanning both columns of a two-column layout).
            Without it, a table of more than :data:`LATEX_NARROW_COLUMNS`
            columns starts with a comment pointing to ``--latex-wide``.
    """
    best = _best_rows(cmp)
    n_cols = latex_columns(cmp)
    head = ["Method", "Parameters", "Configs", *(latex_escape(LABELS[m]) for m in cmp.metrics),
            *(rf"$\Delta$ {latex_escape(LABELS[m])}" for m in cmp.metrics)]
    rows = []
    for i, r in enumerate(cmp.rows):
        cells = [latex_escape(_name(r)), latex_escape(r.params), latex_escape(_configs(r))]
        for m in cmp.metrics:
            v = num(r.values[m])
            cells.append((rf"\textbf{{{v}}}" if i in best[m] else v) + latex_sup(r.marks[m]))
        cells += [num(r.deltas[m], sign=True) for m in cmp.metrics]
        rows.append((cells, r.role == "initial"))
    comment = None
    if not wide and n_cols > LATEX_NARROW_COLUMNS:
        comment = (f"{n_cols} columns: too wide for one column of a two-column paper; "
                   "python -m jobs.report --latex-wide writes a table* instead")
    return latex_table(env="table*" if wide else "table", caption=_caption(cmp), label=label,
                       columns=f"llr{'r' * (2 * len(cmp.metrics))}", head=head, rows=rows,
                       comment=comment)


def _caption(cmp: Comparison) -> str:
    graph = cmp.graph_note()
    return (f"Re-ranking methods on {cmp.dataset} (backbone {cmp.backbone}); each method's "
            f"best run by {HEADLINE.label} at its last iteration (best of the configurations "
            f"run; {TEST_LABEL}). {cmp.delta_note()}. Bold: best in its column. {cmp.note()}."
            + (f" {graph[0].upper()}{graph[1:]}." if graph else ""))


__all__ = ["LATEX_NARROW_COLUMNS", "latex_columns", "to_csv", "to_latex", "to_text"]
