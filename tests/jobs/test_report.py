"""python -m jobs.report: the three formats parsed back against store.report, the
flag spellings, one-line errors with exit status 2, and a --help that loads no torch."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from icfrr import comparison
from jobs import report as cli
from jobs import report_format
from store import report
from store.db import connect_reader
from tests.store.report_store import StoredRun, build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, StoredRun]]:
    return build(tmp_path_factory.mktemp("cli-report"))


def run(argv: list[object], capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def expected(db: Path, **kwargs) -> comparison.Comparison:
    with connect_reader(db) as con:
        return report.comparison(con, **kwargs)


def test_csv_matches_the_library(store, capsys) -> None:
    db, _ = store
    code, out, err = run(["--db", db, "--dataset", "demo", "--format", "csv",
                          "--metric", "map_all", "p_100"], capsys)
    assert code == 0 and err == ""
    cmp = expected(db, dataset="demo", metrics=["map_all", "p_100"])
    recs = list(csv.DictReader(io.StringIO(out)))
    assert [r["label"] for r in recs] == [r.label for r in cmp.rows]
    assert [float(r["map_all"]) for r in recs] == [r.values["map_all"] for r in cmp.rows]
    assert [float(r["p_100_delta"]) for r in recs] == [r.deltas["p_100"] for r in cmp.rows]
    assert "map_200" not in recs[0]


@pytest.mark.parametrize("fmt", ["table", "latex"])
def test_table_and_latex_are_the_library_output(store, capsys, fmt) -> None:
    db, _ = store
    code, out, err = run(["--db", db, "--dataset", "demo", "--format", fmt,
                          "--baseline", "k_reciprocal", "--test", "t"], capsys)
    assert code == 0 and err == ""
    cmp = expected(db, dataset="demo", baseline="k_reciprocal", test="t")
    want = report_format.to_text(cmp) if fmt == "table" else report_format.to_latex(cmp)
    assert out.rstrip("\n") == want.rstrip("\n")
    for label in ("ICFRR", "k-reciprocal", "DBA", comparison.INITIAL):
        assert label in out


def test_baseline_run_id_and_underscore_spellings(store, capsys) -> None:
    db, runs = store
    code, out, _ = run(["--db", db, "--dataset", "demo", "--baseline", runs["D"].run_id,
                        "--metrics", "map_all", "--timeout_s", "2", "--format", "csv"], capsys)
    assert code == 0
    roles = [r["role"] for r in csv.DictReader(io.StringIO(out))]
    assert roles == ["initial", "baseline", "method", "method", "method"]


def test_output_file_holds_what_stdout_would(store, capsys, tmp_path) -> None:
    db, _ = store
    _, printed, _ = run(["--db", db, "--dataset", "other", "--backbone", "bb_a",
                         "--format", "latex"], capsys)
    target = tmp_path / "table.tex"
    code, out, err = run(["--db", db, "--dataset", "other", "--backbone", "bb_a",
                          "--format", "latex", "-o", target], capsys)
    assert code == 0 and out == "" and err == ""
    assert target.read_text(encoding="utf-8") == printed
    assert [p.name for p in tmp_path.iterdir()] == ["table.tex"]  # no temporary left


def _not_a_store(tmp_path: Path) -> Path:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE t (x INTEGER)")
    con.close()
    return path


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.duckdb"
    path.write_text("hello")
    return path


BAD = [
    (lambda db, tmp: ["--db", tmp / "missing.duckdb"], "no results database"),
    (lambda db, tmp: ["--db", _not_a_store(tmp)], "not an icfrr-lab results store"),
    (lambda db, tmp: ["--db", _text_file(tmp)], "not a DuckDB database"),
    (lambda db, tmp: ["--db", db], "several datasets"),
    (lambda db, tmp: ["--db", db, "--dataset", "nope"], "no finished runs on dataset 'nope'"),
    (lambda db, tmp: ["--db", db, "--dataset", "other"], "--backbone"),
    (lambda db, tmp: ["--db", db, "--dataset", "demo", "--metric", "map"], "unknown metric 'map'"),
    (lambda db, tmp: ["--db", db, "--dataset", "demo", "--baseline", "ecn"],
     "no runs of method 'ecn'"),
    (lambda db, tmp: ["--db", db, "--dataset", "demo", "--baseline", "99"], "run 99 is no"),
    (lambda db, tmp: ["--db", db, "--format", "html"], "invalid choice: 'html'"),
    (lambda db, tmp: ["--db", db, "--test", "z"], "invalid choice: 'z'"),
    (lambda db, tmp: ["--db", db, "--alpha", "x"], "invalid float value"),
    (lambda db, tmp: ["--db", db, "--dataset", "demo", "--alpha", "0"], "alpha must lie"),
    (lambda db, tmp: ["--db", db, "--bogus"], "unrecognized arguments: --bogus"),
    (lambda db, tmp: ["--db", db, "--dataset", "demo", "-o", tmp / "no" / "t.tex"],
     "does not exist"),
    (lambda db, tmp: ["--db", db, "--dataset", "demo", "-o", tmp], "is a directory"),
]


@pytest.mark.parametrize(("argv", "match"), BAD)
def test_bad_input_one_line_exit_2_nothing_written(store, capsys, tmp_path, argv, match) -> None:
    db, _ = store
    out_file = tmp_path / "out.txt"
    args = argv(db, tmp_path)
    code, out, err = run(args + ([] if "-o" in args else ["-o", out_file]), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("report: error: ") and match in err
    assert not out_file.exists()


def test_help_is_fast_and_loads_no_torch() -> None:
    probe = ("import sys\nfrom jobs import report\ntry:\n    report.main(['--help'])\n"
             "except SystemExit as e:\n    assert e.code == 0\n"
             "print(sorted(m for m in ('torch', 'duckdb', 'scipy', 'store.report') "
             "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert "python -m jobs.report" in res.stdout and "examples:" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_output_to_devices_and_fifos_writes_in_place(store, capsys, tmp_path) -> None:
    import os
    import stat
    import threading

    db, _ = store
    argv = ["--db", db, "--dataset", "demo", "--format", "csv"]
    _, printed, _ = run(argv, capsys)
    code, out, err = run(argv + ["-o", "/dev/null"], capsys)
    assert code == 0 and out == err == "" and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    if os.path.exists("/dev/full"):
        code, out, err = run(argv + ["-o", "/dev/full"], capsys)
        assert code == 2 and out == "" and err.count("\n") == 1
        assert "cannot write /dev/full" in err and stat.S_ISCHR(os.stat("/dev/full").st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text(encoding="utf-8")))
    reader.start()
    code, _, _ = run(argv + ["-o", fifo], capsys)
    reader.join(timeout=30)
    assert code == 0 and got == [printed] and stat.S_ISFIFO(os.stat(fifo).st_mode)


# ------------------------------------------------------------ --per-query export


def _per_query_oracle(run_: StoredRun, iteration: int) -> list[dict[str, object]]:
    """What the export must hold, from the arrays the store was written with."""
    import numpy as np

    from icfrr.registry import QUERY_COLUMNS
    from tests.store.report_store import CLASS_NAMES, FACTORS, Q

    out = []
    for q in range(Q):
        label = -1 if q == Q - 1 else q % 3
        ap = float(run_.ap[iteration][q])
        out.append({"query_idx": q, "label": label, "class_name": CLASS_NAMES.get(label),
                    "name": f"sketch/{q:02d}.png",
                    **{c: None if np.isnan(ap) else ap * FACTORS[c] for c in QUERY_COLUMNS},
                    "first_relevant_rank": None if np.isnan(ap) else 1})
    return out


def _check_export(frame, run_: StoredRun, iteration: int) -> None:
    import math

    want = _per_query_oracle(run_, iteration)
    assert len(frame) == len(want)
    assert set(frame["run_id"]) == {run_.run_id} and set(frame["iteration"]) == {iteration}
    for got, exp in zip(frame.to_dict("records"), want):
        for key, value in exp.items():
            cell = got[key]
            missing = cell is None or (isinstance(cell, float) and math.isnan(cell))
            if value is None:
                assert missing, (key, cell)
            elif isinstance(value, float):
                assert float(cell) == pytest.approx(value, abs=1e-12), key
            else:
                assert cell == value, (key, cell, value)


@pytest.mark.parametrize("iteration", [None, 0])
def test_per_query_csv_holds_every_query_with_class_name_and_first_rank(store, capsys,
                                                                        iteration) -> None:
    import pandas as pd

    db, runs = store
    a = runs["A"]
    argv = ["--db", db, "--per-query", "--run", a.run_id]
    code, out, err = run(argv + ([] if iteration is None else ["--iteration", iteration]), capsys)
    assert code == 0 and err == ""
    frame = pd.read_csv(io.StringIO(out))
    _check_export(frame, a, a.last if iteration is None else iteration)  # default: the last


def test_per_query_parquet_equals_the_csv(store, capsys, tmp_path) -> None:
    import pandas as pd

    db, runs = store
    c = runs["C"]
    target = tmp_path / "c.parquet"
    code, out, err = run(["--db", db, "--per-query", "--run", c.run_id, "--format", "parquet",
                          "-o", target], capsys)
    assert code == 0 and out == err == ""
    frame = pd.read_parquet(target)
    _check_export(frame, c, c.last)
    _, text, _ = run(["--db", db, "--per-query", "--run", c.run_id], capsys)
    pd.testing.assert_frame_equal(frame, pd.read_csv(io.StringIO(text)), check_dtype=False)


PER_QUERY_BAD = [
    (["--per-query", "--run", "999"], "no run 999 in"),
    (["--per-query", "--run", "1", "--iteration", "3"],
     "iteration 3 of run 1 is not stored; stored: 0, 5"),
    (["--per-query", "--run", "1", "--format", "latex"], "--per-query writes csv or parquet"),
    (["--per-query", "--run", "1", "--format", "pdf"], "invalid choice: 'pdf'"),
    (["--per-query"], "--per-query needs --run"),
    (["--run", "1"], "--run is for --per-query, --confusions or --signature"),
    (["--dataset", "demo", "--iteration", "0"], "--iteration is for --per-query, --confusions or --signature"),
    (["--dataset", "demo", "--format", "parquet"], "--format parquet is for --per-query"),
    (["--dataset", "demo", "--latex-wide"], "--latex-wide is for --format latex"),
    (["--per-query", "--run", "x"], "invalid int value: 'x'"),
    (["--per-query", "--run", "1", "--baseline", "dba"], "--baseline is for the comparison"),
    (["--per-query", "--run", "1", "--metric", "map_all"], "--metric is for the comparison"),
]


@pytest.mark.parametrize(("argv", "match"), PER_QUERY_BAD)
def test_per_query_bad_input_is_one_line_exit_2(store, capsys, tmp_path, argv, match) -> None:
    db, runs = store
    assert runs["A"].run_id == 1 and runs["A"].last == 5  # the premise of the messages
    out_file = tmp_path / "out.csv"
    code, out, err = run(["--db", db, *argv, "-o", out_file], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("report: error: ") and match in err, err
    assert not out_file.exists()


def test_latex_wide_flag_gives_the_table_star(store, capsys) -> None:
    db, _ = store
    code, out, err = run(["--db", db, "--dataset", "demo", "--format", "latex", "--latex-wide"],
                         capsys)
    assert code == 0 and err == ""
    assert out == report_format.to_latex(expected(db, dataset="demo"), wide=True)
    assert out.startswith(r"\begin{table*}")
