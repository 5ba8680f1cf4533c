"""python -m jobs.runs list|show|delete against the report store (tests/store/report_store.py),
whose runs, metrics and layout are known: dataset demo (sweep 1, artifact 1, runs 1-5),
dataset other (sweeps 2 and 3 on artifacts 2 and 3, runs 6 and 7).

Oracles: the arrays the store was written with (StoredRun.metric), and for delete
every table's rows read before, with the rows that must go removed by hand-written
ids. A kill (SIGKILL) at each step of the deletion leaves the store as before; a
kill right after the commit leaves it fully deleted."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from icfrr.registry import METRIC_KEYS
from jobs import runs as cli
from store.db import connect_reader
from tests.jobs.test_faults import _KILLER
from tests.store.report_store import StoredRun, build

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"datasets": "dataset_id", "items": "dataset_id", "artifacts": "artifact_id",
          "sweeps": "sweep_id", "runs": "run_id", "run_metrics": "run_id",
          "query_metrics": "run_id", "rankings": "run_id"}


@pytest.fixture()
def store(tmp_path) -> tuple[Path, dict[str, StoredRun]]:
    return build(tmp_path)


def run(argv: list[object], capsys, stdin: str | None = None, monkeypatch=None
        ) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(db: Path) -> dict[str, list[tuple[int, str]]]:
    """Table -> sorted (id of its key column, repr of the row) for every row."""
    out = {}
    with connect_reader(db) as con:
        for table, key in TABLES.items():
            cols = [d[0] for d in con.execute(f"SELECT * FROM {table} LIMIT 0").description]
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            out[table] = sorted((int(r[cols.index(key)]), repr(r)) for r in rows)
    return out


def without(snap: dict, **gone: set[int]) -> dict:
    """``snap`` minus the rows whose key is in ``gone[table]``."""
    return {t: [r for r in rows if r[0] not in gone.get(t, set())] for t, rows in snap.items()}


def _run_tables(ids: set[int]) -> dict[str, set[int]]:
    return {t: ids for t in ("runs", "run_metrics", "query_metrics", "rankings")}


# --------------------------------------------------------------------- list / show


def test_list_shows_every_run_with_its_headline_before_and_after(store, capsys) -> None:
    db, stored = store
    code, out, err = run(["--db", db, "list"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["run", "sweep", "dataset", "backbone", "method"]
    assert len(lines) == 1 + len(stored)
    by_id = {r.run_id: r for r in stored.values()}
    for line in lines[1:]:
        cells = line.split()
        r = by_id[int(cells[0])]
        assert cells[4] == r.method
        before, after = (float(x) for x in line.split()[-4:-2])
        assert before == pytest.approx(r.metric("map_all", 0), abs=5e-5)
        assert after == pytest.approx(r.metric("map_all", r.last), abs=5e-5)
    assert "KG 8, KQ 10, β 1, T 5" in lines[1]


def test_show_lists_every_iterations_metrics(store, capsys) -> None:
    db, stored = store
    a = stored["A"]
    code, out, err = run(["--db", db, "show", a.run_id], capsys)
    assert code == 0 and err == ""
    assert "kept for iterations 0, 5" in out and "KG 8, KQ 10, β 1, T 5" in out
    table = out.split("\n\n", 1)[1].splitlines()
    assert len(table) == 1 + a.last + 1
    for line in table[1:]:
        it, *vals = line.split()
        for m, v in zip(METRIC_KEYS, vals):
            assert float(v) == pytest.approx(a.metric(m, int(it)), abs=5e-5)


# ------------------------------------------------------------------------- delete


@pytest.mark.parametrize(("ids", "gone"), [
    ({7}, {"sweeps": {3}, "artifacts": {3}}),                          # dataset other stays
    ({6, 7}, {"sweeps": {2, 3}, "artifacts": {2, 3}, "datasets": {2}, "items": {2}}),
    ({1, 2}, {}),                                                       # sweep 1 keeps runs 3-5
    ({1, 2, 3, 4, 5}, {"sweeps": {1}, "artifacts": {1}, "datasets": {1}, "items": {1}}),
])
def test_delete_removes_the_runs_and_what_only_they_used(store, capsys, ids, gone) -> None:
    db, _ = store
    before = snapshot(db)
    code, out, err = run(["--db", db, "delete", *sorted(ids), "--yes"], capsys)
    assert code == 0 and err == "", err
    assert out.startswith(f"deleted {len(ids)} run")
    assert snapshot(db) == without(before, **_run_tables(ids), **gone)


def test_delete_asks_first(store, capsys, monkeypatch) -> None:
    db, _ = store
    before = snapshot(db)
    for answer in ("n\n", "", "maybe\n"):
        code, out, err = run(["--db", db, "delete", 7], capsys, stdin=answer,
                             monkeypatch=monkeypatch)
        assert code == 1 and out == "" and "[y/N]" in err and "nothing deleted" in err
        assert "1 run (7)" in err and "1 emptied sweep" in err
        assert snapshot(db) == before
    code, out, _ = run(["--db", db, "delete", 7], capsys, stdin="y\n", monkeypatch=monkeypatch)
    assert code == 0 and snapshot(db) == without(before, **_run_tables({7}), sweeps={3},
                                                 artifacts={3})


@pytest.mark.parametrize(("argv", "match"), [
    (["delete", 7, 99, "--yes"], "no run 99 in the store"),
    (["show", 99], "no finished run 99"),
    (["show", "x"], "invalid int value: 'x'"),
    (["frob"], "invalid choice: 'frob'"),
    ([], "say what to do: list, show ID or delete ID"),
    (["delete", "--yes"], "the following arguments are required: ID"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(store, capsys, argv, match) -> None:
    db, _ = store
    before = snapshot(db)
    code, out, err = run(["--db", db, *argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("runs: error: ") and match in err, err
    assert snapshot(db) == before


def test_missing_store_is_one_line(tmp_path, capsys) -> None:
    for sub in (["list"], ["delete", 1, "--yes"]):
        code, _, err = run(["--db", tmp_path / "none.duckdb", *sub], capsys)
        assert code == 2 and err.count("\n") == 1 and "no results database" in err
    assert list(tmp_path.iterdir()) == []  # delete did not create the file


#: where: (module, function, on which call, whether the deletion is committed by then)
KILL_POINTS = {
    "before the first delete": ("store.manage", "_delete_from", 1, False),
    "after the run rows": ("store.manage", "_delete_from", 5, False),
    "before the last delete": ("store.manage", "_delete_from", 8, False),
    "after the commit": ("jobs.runs", "_describe", 1, True),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_kill_mid_delete_leaves_the_store_as_before_or_fully_deleted(store, point) -> None:
    db, _ = store
    module, name, at, committed = KILL_POINTS[point]
    before = snapshot(db)
    done = subprocess.run([sys.executable, "-c", _KILLER.format(module=module, name=name, at=at,
                                                                   command="jobs.runs"),
                           "--db", str(db), "delete", "6", "7", "--yes"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    want = without(before, **_run_tables({6, 7}), sweeps={2, 3}, artifacts={2, 3},
                   datasets={2}, items={2}) if committed else before
    assert snapshot(db) == want
    # and the store still works: the same deletion runs to its end
    code = cli.main(["--db", str(db), "delete", "6", "7", "--yes"]) if not committed else 0
    assert code == 0
    assert snapshot(db) == without(before, **_run_tables({6, 7}), sweeps={2, 3},
                                   artifacts={2, 3}, datasets={2}, items={2})
