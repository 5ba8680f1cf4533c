"""jobs.report_format (the comparison's text, CSV and LaTeX) on the report store
(tests/store/report_store.py): each format parsed back (csv module, LaTeX split into rows
and cells) against the Comparison it prints; and an approximate gallery graph's recall
named in every format.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re

import duckdb
import pytest

from icfrr import comparison
from icfrr.registry import LABELS
from jobs import report_cells, report_format
from store import report
from store.db import connect_reader
from tests.store.report_store import con, runs, store  # noqa: F401 (fixtures)


# ------------------------------------------------------------------------ formats


def test_csv_parses_back_to_the_numbers(con) -> None:
    cmp = report.comparison(con, dataset="demo", baseline="k_reciprocal")
    text = report_format.to_csv(cmp)
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    assert len(body) == len(cmp.rows) and all(len(r) == len(header) for r in body)
    assert header[:6] == ["role", "method", "label", "run_id", "iteration", "params"]
    for rec, row in zip(csv.DictReader(io.StringIO(text)), cmp.rows):
        assert int(rec["run_id"]) == row.run_id and rec["label"] == row.label
        assert rec["params"] == row.params
        for m in cmp.metrics:
            assert float(rec[m]) == row.values[m]  # full precision
            assert float(rec[f"{m}_delta"]) == row.deltas[m]
        for col, value in (("p_value", row.p_value), ("p_holm", row.p_holm),
                           ("ap_diff", row.ap_diff)):
            assert (rec[col] == "") if math.isnan(value) else (float(rec[col]) == value)
        assert rec["mark"] == row.mark and rec["test"] == "randomisation"
        for m in cmp.metrics:
            assert rec[f"{m}_mark"] == row.marks[m]
            assert (rec[f"{m}_p_holm"] == "") if math.isnan(row.p_holms[m]) else \
                float(rec[f"{m}_p_holm"]) == row.p_holms[m]
    # each value is followed by its mark, and the p-values come last
    assert header.index("map_all_mark") == header.index("map_all") + 1
    first_p = header.index("p_value")
    assert all(h in ("p_value", "p_holm") or h.endswith(("_p", "_p_holm"))
               for h in header[first_p:])
    assert first_p == len(header) - 2 - 2 * len(cmp.metrics)


def _latex_rows(tex: str) -> tuple[list[str], list[list[str]]]:
    """Header cells and body rows (cells) between \\toprule and \\bottomrule."""
    body = tex.split(r"\toprule", 1)[1].split(r"\bottomrule", 1)[0]
    lines = [ln.strip() for ln in body.splitlines()
             if ln.strip() and ln.strip() != r"\midrule"]
    cells = [ln.removesuffix(r"\\").strip().split(" & ") for ln in lines]
    return cells[0], cells[1:]


def test_latex_parses_back(con) -> None:
    cmp = report.comparison(con, dataset="demo")
    tex = report_format.to_latex(cmp)
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}", r"\end{table}"):
        assert rule in tex
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    header, body = _latex_rows(tex)
    n_cols = 3 + 2 * len(cmp.metrics)
    assert len(spec) == len(header) == n_cols
    assert len(body) == len(cmp.rows) and all(len(r) == n_cols for r in body)
    for j, m in enumerate(cmp.metrics):
        assert header[3 + j] == LABELS[m]
        vals = [row.values[m] for row in cmp.rows]
        bold = {i for i, r in enumerate(body) if r[3 + j].startswith(r"\textbf{")}
        assert bold == {i for i, v in enumerate(vals) if v == max(vals)}
        for cell, v in zip(body, vals):
            assert float(re.search(r"-?\d+\.\d+", cell[3 + j]).group()) == pytest.approx(v, abs=5e-5)
        # every metric carries its own mark
        assert body[1][3 + j].endswith(r"\textsuperscript{\dag{}}")
        assert body[3][3 + j].endswith(r"\textsuperscript{\ddag{}}")
        assert "textsuperscript" not in body[2][3 + j]
    assert [r[2] for r in body] == ["-", "best of 2", "best of 2", "best of 1"]
    assert r"$\lambda$ 0.3" in body[2][1] and r"$\beta$ 1" in body[1][1]
    assert not re.search("[αβλΔ†‡×]", tex)
    caption = re.search(r"\\caption\{(.*)\}", tex).group(1)
    assert "Fisher randomisation test" in caption and "Holm" in caption
    assert r"3 rows $\times$ 5 metrics" in caption


def test_latex_wide_is_a_table_star_and_narrow_tables_need_no_hint(con) -> None:
    cmp = report.comparison(con, dataset="demo")
    assert report_format.latex_columns(cmp) == 13 > report_format.LATEX_NARROW_COLUMNS
    tex = report_format.to_latex(cmp)
    assert tex.startswith("% 13 columns") and "--latex-wide" in tex.splitlines()[0]
    assert r"\begin{table}[t]" in tex and r"\begin{table*}" not in tex
    wide = report_format.to_latex(cmp, wide=True)
    assert wide.startswith(r"\begin{table*}[t]") and wide.rstrip().endswith(r"\end{table*}")
    assert _latex_rows(wide) == _latex_rows(tex)
    narrow = report_format.to_latex(report.comparison(con, dataset="demo", metrics=["map_all", "p_100"]))
    assert report_format.latex_columns(report.comparison(con, dataset="demo", metrics=["map_all"])) == 5
    assert narrow.startswith(r"\begin{table}[t]")  # 7 columns: no hint


def test_latex_escape() -> None:
    assert report_cells.latex_escape("a_b & 50% #1 {x} $ ~ ^ \\") == \
        r"a\_b \& 50\% \#1 \{x\} \$ \textasciitilde{} \textasciicircum{} \textbackslash{}"
    assert report_cells.latex_escape("DBA + αQE") == r"DBA + $\alpha$QE"


def test_text_table_lists_every_row_aligned(con, runs) -> None:
    cmp = report.comparison(con, dataset="demo")
    lines = report_format.to_text(cmp).splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("method"))
    table = lines[header + 2: header + 2 + len(cmp.rows)]
    for ln, row in zip(table, cmp.rows):
        assert ln.startswith(row.label) and row.params in ln
    # aligned: every column ends at the same place in every line (right-justified numbers)
    for name in ("mAP@all", "P@200", "Δ P@25", "p (Holm) P@200"):
        end = lines[header].index(name) + len(name)
        for ln in table:
            assert ln[end - 1] != " " and ln[end:end + 1] in ("", " "), (name, ln)
    assert "0.5" in table[1] and comparison.BETTER in table[1] and comparison.WORSE in table[3]
    assert "Holm-corrected across 3 rows × 5 metrics" in lines[-1]
    # the p-value columns come last, after every value and change
    assert lines[header].index("p (Holm)") > lines[header].index("Δ P@200")


def test_every_format_says_the_rows_were_chosen_on_the_reported_queries(con) -> None:
    # the plain report picks each method's best run on the queries it reports on: it must say so
    from icfrr.protocols import TEST_LABEL

    cmp = report.comparison(con, dataset="demo")
    assert TEST_LABEL in report_format.to_text(cmp)
    assert TEST_LABEL in " ".join(report_format.to_latex(cmp).split())
    rows = list(csv.DictReader(io.StringIO(report_format.to_csv(cmp))))
    assert rows and all(r["selection"] == TEST_LABEL for r in rows)


def test_csv_is_the_records_as_pandas_writes_them(con) -> None:
    # the dashboard writes its CSV download with pandas from the same records
    import pandas as pd

    for cmp in (report.comparison(con, dataset="demo"),
                report.comparison(con, dataset="demo", baseline="k_reciprocal", metrics=["p_25"])):
        frame = pd.DataFrame(comparison.to_records(cmp))
        assert frame.to_csv(index=False, lineterminator="\n") == report_format.to_csv(cmp)


def test_rows_on_an_approximate_graph_say_so_with_its_recall(store, tmp_path) -> None:
    # what jobs.sweep --graph ivf stores in an ICFRR run's params (tests/jobs/test_graph_flag.py)
    import shutil

    db = tmp_path / "graph.duckdb"
    shutil.copy(store[0], db)
    with connect_reader(store[0]) as c:
        exact = report.comparison(c, dataset="demo")
    icfrr_row = next(r for r in exact.rows if r.method == "icfrr")
    assert all(r.graph == "" for r in exact.rows) and "graph" not in report_format.to_csv(exact)
    assert "approximate" not in report_format.to_text(exact)
    with duckdb.connect(str(db)) as w:
        (params,) = w.execute("SELECT params FROM runs WHERE run_id = ?",
                              [icfrr_row.run_id]).fetchone()
        p = json.loads(params) | {"graph": {"kind": "ivf", "params": {"nlist": 8}},
                                  "graph_recall_at_kg": 0.93, "graph_recall_sample": 60}
        w.execute("UPDATE runs SET params = ? WHERE run_id = ?", [json.dumps(p), icfrr_row.run_id])
    with connect_reader(db) as c:
        cmp = report.comparison(c, dataset="demo")
    want = "graph ivf, recall@KG 0.9300"
    assert [r.graph for r in cmp.rows] == [want if r.run_id == icfrr_row.run_id and r.method
                                           else "" for r in cmp.rows]
    assert cmp.rows[1:] and [r.values for r in cmp.rows] == [r.values for r in exact.rows]
    text = report_format.to_text(cmp)
    assert text.splitlines()[-1] == f"approximate neighbours: ICFRR (run {icfrr_row.run_id}): {want}"
    recs = list(csv.DictReader(io.StringIO(report_format.to_csv(cmp))))
    assert [r["graph"] for r in recs] == [r.graph for r in cmp.rows]
    caption = re.search(r"\\caption\{(.*)\}", report_format.to_latex(cmp)).group(1)
    assert "Approximate neighbours: ICFRR (run" in caption and "recall@KG 0.9300" in caption
