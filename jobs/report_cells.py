"""Cells and table scaffolding shared by the report's formats: numbers, p-values, aligned text,
CSV and the LaTeX (booktabs) table, so the comparison and the protocol tables print alike.

Pure string work, light imports (``--help`` of the report must answer without
loading duckdb or scipy).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence


def num(v: float, digits: int = 4, sign: bool = False, *, clean_zero: bool = False) -> str:
    """A number with ``digits`` decimals (``+`` sign when ``sign``), ``n/a`` for NaN.

    ``clean_zero`` prints a value that rounds to zero as ``0.0000`` (never ``-0.0000``).
    """
    if math.isnan(v):
        return "n/a"
    if clean_zero and round(v, digits) == 0:
        v = 0.0
    return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def p_text(v: float) -> str:
    """A p-value: 3 decimals, scientific below 0.001, "" for NaN."""
    return "" if math.isnan(v) else (f"{v:.3f}" if v >= 0.001 else f"{v:.1e}")


def align(table: Sequence[Sequence[str]], left: set[int]) -> list[str]:
    """Aligned text lines of a header row and body rows, a dashed rule under the header.

    Args:
        table: Rows of cells, the header first; all rows as long.
        left: Column indices aligned left (the others right).
    """
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(w) if c in left else cell.rjust(w)
                       for c, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def csv_text(records: Sequence[Mapping[str, object]]) -> str:
    """CSV of records: a header row (the first record's keys), then one line per record.

    Floats in full precision (``repr``), NaN as empty cells, ``\\n`` line ends.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(records[0]) if records else [])
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


def latex_sup(mark: str) -> str:
    """A significance mark as a superscript ("" for no mark)."""
    return rf"\textsuperscript{{{latex_escape(mark)}}}" if mark else ""


def latex_table(*, env: str, caption: str, label: str, columns: str, head: Sequence[str],
                rows: Sequence[tuple[Sequence[str], bool]], comment: str | None = None) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``), ending in a newline.

    Args:
        env: ``table`` or ``table*``.
        caption: Plain caption text (escaped here).
        label: The ``\\label``.
        columns: The tabular column spec, e.g. ``"llrrr"``.
        head: Header cells (LaTeX already).
        rows: ``(cells, rule_after)``: body cells (LaTeX already) and whether a
            ``\\midrule`` follows the row.
        comment: A ``%`` comment line put before the table.
    """
    lines = [f"% {comment}"] if comment else []
    lines += [rf"\begin{{{env}}}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
              rf"\label{{{label}}}", rf"\begin{{tabular}}{{{columns}}}", r"\toprule",
              " & ".join(head) + r" \\", r"\midrule"]
    for cells, rule_after in rows:
        lines.append(" & ".join(cells) + r" \\")
        if rule_after:
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"


__all__ = ["align", "csv_text", "latex_escape", "latex_sup", "latex_table", "num", "p_text"]
