"""python -m jobs.report --confusions / --signature against plain SQL over the store's tables.

The store is written by the real writer (``dashboard.synthetic`` and the
dashboard's fixture, both through ``store.writes``): datasets ``demo``
(3 classes, baseline runs, an unfinished run) and ``wide`` (5 classes,
40 queries of which 2 have unknown label, top-20 stored).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest

from dashboard.synthetic import SyntheticSpec, generate
from jobs import report as cli
from tests.dashboard.fixture_store import build_fixture

WIDE = SyntheticSpec(name="wide", n_query=40, n_gallery=80, n_classes=5, n_unknown=2, top_n=20, pool=50,
                     images=False, configs=(("reference", 6, 8, 0.5),), n_iter=3, seed=5)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = build_fixture(tmp_path_factory.mktemp("explain-report"))
    generate(path, WIDE)
    return path


def run_id(db: Path, dataset: str, method: str = "icfrr") -> int:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("""
            SELECT min(r.run_id) FROM runs r JOIN sweeps s USING (sweep_id) JOIN datasets d USING (dataset_id)
            WHERE d.name = ? AND r.method = ? AND r.status = 'done'""", [dataset, method]).fetchone()[0]


def run(argv: list[object], capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


ORACLE_SQL = """
WITH ds AS (SELECT s.dataset_id FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id WHERE r.run_id = $run),
q AS (SELECT i.idx, i.label, i.class_name FROM items i JOIN ds USING (dataset_id)
      WHERE i.side = 'query' AND i.label <> -1),
g AS (SELECT i.idx, i.label, i.class_name FROM items i JOIN ds USING (dataset_id) WHERE i.side = 'gallery'),
n_q AS (SELECT label, count(*) AS n FROM q GROUP BY label),
held AS (
    SELECT rk.iteration, q.label AS ql, g.label AS gl, count(*) AS slots
    FROM rankings rk JOIN q ON q.idx = rk.query_idx JOIN g ON g.idx = rk.gallery_idx
    WHERE rk.run_id = $run AND rk.iteration IN (0, $after) AND rk.rank <= $k
      AND g.label <> -1 AND g.label <> q.label
    GROUP BY ALL),
pairs AS (SELECT DISTINCT ql, gl FROM held),
names AS (SELECT label, any_value(class_name) AS name
          FROM (SELECT label, class_name FROM q UNION ALL SELECT label, class_name FROM g) GROUP BY label)
SELECT qn.name AS query_class, gn.name AS other_class,
       coalesce(b.slots, 0)::DOUBLE / (n_q.n * $k) AS share_before,
       coalesce(a.slots, 0)::DOUBLE / (n_q.n * $k) AS share_after
FROM pairs p JOIN n_q ON n_q.label = p.ql
LEFT JOIN held b ON b.iteration = 0 AND b.ql = p.ql AND b.gl = p.gl
LEFT JOIN held a ON a.iteration = $after AND a.ql = p.ql AND a.gl = p.gl
JOIN names qn ON qn.label = p.ql JOIN names gn ON gn.label = p.gl
"""


def oracle_confusions(db: Path, run: int, after: int, k: int) -> dict[tuple[str, str], tuple[float, float]]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(ORACLE_SQL, {"run": run, "after": after, "k": k}).fetchall()
    return {(q, o): (b, a) for q, o, b, a in rows}


@pytest.mark.parametrize("dataset,iteration,k", [("wide", None, 10), ("wide", 3, 20), ("wide", 0, 1),
                                                 ("demo", 3, 10)])
def test_confusions_csv_equals_sql_over_rankings_and_items(db, capsys, dataset, iteration, k):
    rid = run_id(db, dataset)
    argv = ["--db", db, "--confusions", "--run", rid, "--k", k, "--format", "csv"]
    if iteration is not None:
        argv += ["--iteration", iteration]
    code, out, err = run(argv, capsys)
    assert code == 0 and err == ""
    records = list(csv.DictReader(io.StringIO(out)))
    assert list(records[0]) == ["query_class", "other_class", "share_before", "share_after", "change"]
    with duckdb.connect(str(db), read_only=True) as con:
        last = con.execute("SELECT max(iteration) FROM rankings WHERE run_id = ?", [rid]).fetchone()[0]
    after = last if iteration is None else iteration
    want = oracle_confusions(db, rid, after, k)
    got = {(r["query_class"], r["other_class"]): r for r in records}
    assert len(got) == len(records) == len(want) > 0
    for pair, (b, a) in want.items():
        r = got[pair]
        assert float(r["share_before"]) == pytest.approx(b, abs=1e-12)
        assert float(r["share_after"]) == pytest.approx(a, abs=1e-12)
        assert float(r["change"]) == pytest.approx(a - b, abs=1e-12)
    if iteration == 0:
        assert all(float(r["change"]) == 0 for r in records)


def test_confusions_table_shows_the_csv_numbers(db, capsys):
    rid = run_id(db, "wide")
    _, out_csv, _ = run(["--db", db, "--confusions", "--run", rid, "--format", "csv"], capsys)
    code, out, err = run(["--db", db, "--confusions", "--run", rid], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"run {rid} (icfrr, reference, KG 6, KQ 8, beta 0.5): top-10 confusions, iteration 0 -> 3")
    records = list(csv.DictReader(io.StringIO(out_csv)))
    body = lines[3:3 + len(records)]
    for r, line in zip(records, body):
        assert line.startswith(r["query_class"])
        assert line.split()[-3:] == [f"{float(r['share_before']):.4f}", f"{float(r['share_after']):.4f}",
                                     f"{float(r['change']):+.4f}"]


def signature_oracle(db: Path, run: int, after: int, n_bins: int = 10):
    """Per query (SQL): hits in the initial top-m and the AP change; m = min(KQ, stored N)."""
    with duckdb.connect(str(db), read_only=True) as con:
        kq, n = con.execute("""
            SELECT r.kq, (SELECT max(rank) FROM rankings WHERE run_id = r.run_id AND iteration = 0)
            FROM runs r WHERE r.run_id = ?""", [run]).fetchone()
        m = min(kq, n)
        rows = con.execute("""
            WITH ds AS (SELECT s.dataset_id FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id WHERE r.run_id = $run),
            q AS (SELECT i.idx, i.label FROM items i JOIN ds USING (dataset_id) WHERE side = 'query' AND label <> -1),
            g AS (SELECT i.idx, i.label FROM items i JOIN ds USING (dataset_id) WHERE side = 'gallery'),
            hits AS (SELECT rk.query_idx, sum((g.label = q.label)::INT) AS hits
                     FROM rankings rk JOIN q ON q.idx = rk.query_idx JOIN g ON g.idx = rk.gallery_idx
                     WHERE rk.run_id = $run AND rk.iteration = 0 AND rk.rank <= $m GROUP BY rk.query_idx)
            SELECT h.hits, a.ap - b.ap FROM hits h
            JOIN query_metrics b ON b.run_id = $run AND b.iteration = 0 AND b.query_idx = h.query_idx
            JOIN query_metrics a ON a.run_id = $run AND a.iteration = $after AND a.query_idx = h.query_idx
            WHERE a.ap IS NOT NULL AND b.ap IS NOT NULL ORDER BY h.query_idx""",
                           {"run": run, "m": m, "after": after}).fetchall()
    bins = []
    for b in range(n_bins):
        inside = [c for h, c in rows if b * m <= h * n_bins < (b + 1) * m or (b == n_bins - 1 and h == m)]
        bins.append((len(inside), float(np.mean(inside)) if inside else None, sum(c < 0 for c in inside)))
    return m, rows, bins


@pytest.mark.parametrize("dataset", ["wide", "demo"])
def test_signature_csv_equals_a_brute_force_over_the_tables(db, capsys, dataset):
    rid = run_id(db, dataset)
    code, out, err = run(["--db", db, "--signature", "--run", rid, "--format", "csv"], capsys)
    assert code == 0 and err == ""
    with duckdb.connect(str(db), read_only=True) as con:
        last = con.execute("SELECT max(iteration) FROM rankings WHERE run_id = ?", [rid]).fetchone()[0]
    _, _, bins = signature_oracle(db, rid, last)
    records = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["n_queries"]) for r in records] == [n for n, _, _ in bins]
    assert [int(r["n_losing"]) for r in records] == [x for _, _, x in bins]
    for r, (_, mean, _) in zip(records, bins):
        if mean is None:
            assert r["mean_ap_change"] == "nan"
        else:
            assert float(r["mean_ap_change"]) == pytest.approx(mean, abs=1e-12)
    assert [float(r["precision_from"]) for r in records] == pytest.approx(np.arange(10) / 10)


def test_signature_sentence_states_the_threshold_the_data_gives(db, capsys, tmp_path):
    # A copy of the store where the low-precision queries of run "wide" lose AP at the last iteration.
    copy = tmp_path / "lossy.duckdb"
    shutil.copy(db, copy)
    rid = run_id(db, "wide")
    m, rows, _ = signature_oracle(db, rid, 3)
    with duckdb.connect(str(copy)) as con:
        con.execute("""
            UPDATE query_metrics SET ap = ap - 0.4
            WHERE run_id = $run AND iteration = 3 AND query_idx IN (
                SELECT rk.query_idx FROM rankings rk
                JOIN runs r ON r.run_id = rk.run_id JOIN sweeps s ON s.sweep_id = r.sweep_id
                JOIN items q ON q.dataset_id = s.dataset_id AND q.side = 'query' AND q.idx = rk.query_idx
                JOIN items g ON g.dataset_id = s.dataset_id AND g.side = 'gallery' AND g.idx = rk.gallery_idx
                WHERE rk.run_id = $run AND rk.iteration = 0 AND rk.rank <= $m
                GROUP BY rk.query_idx HAVING sum((g.label = q.label)::INT) * 10 < 3 * $m)
        """, {"run": rid, "m": m})
    _, rows, _ = signature_oracle(copy, rid, 3)
    threshold = brute_threshold(rows)
    assert threshold is not None
    below = [c for h, c in rows if h < threshold]
    above = [c for h, c in rows if h >= threshold]
    code, out, err = run(["--db", copy, "--signature", "--run", rid], capsys)
    assert code == 0 and err == ""
    sentence = out.splitlines()[-1]
    assert sentence == (
        f"queries whose initial top-{m} precision is below {threshold / m:.3f} ({threshold} of {m} relevant) "
        f"lose AP on average: {len(below)} queries, mean change {np.mean(below):+.4f}; "
        f"the {len(above)} at or above it change by {np.mean(above):+.4f} on average")


def brute_threshold(rows: list[tuple[int, float]]) -> int | None:
    """The hit count h (among those occurring) below which the summed AP change is the most negative."""
    totals = [(h, math.fsum(c for hh, c in rows if hh < h)) for h in sorted({h for h, _ in rows})[1:]]
    lowest = min((t for _, t in totals), default=0.0)
    if lowest >= -1e-12:
        return None
    return next(h for h, t in totals if t <= lowest + 1e-12)


def test_signature_without_a_threshold_says_so(db, capsys):
    # On the synthetic store every low-precision group gains on average.
    rid = run_id(db, "wide")
    _, rows, _ = signature_oracle(db, rid, 3)
    assert brute_threshold(rows) is None
    code, out, _ = run(["--db", db, "--signature", "--run", rid], capsys)
    assert code == 0
    assert out.splitlines()[-1] == (
        f"no initial top-8 precision X was found below which queries lose AP on average "
        f"(mean AP change of all {len(rows)} queries: {np.mean([c for _, c in rows]):+.4f})")


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("args,message", [
    (["--confusions", "--run", 999], "there is no run 999 in "),
    (["--signature", "--run", 999], "there is no run 999 in "),
    (["--confusions", "--run", "{wide}", "--k", 21], "--k 21 exceeds the stored top-20 of run {wide}; pick --k 20 or less"),
    (["--confusions", "--run", "{demo}", "--k", 11], "--k 11 exceeds the stored top-10 of run {demo}"),
    (["--confusions", "--run", "{wide}", "--iteration", 2], "run {wide} has no stored rankings for iteration 2; stored: 0, 3"),
    (["--signature", "--run", "{wide}", "--iteration", 7], "run {wide} has no stored rankings for iteration 7"),
    (["--signature", "--run", "{kr}"], "run {kr} is a k_reciprocal run; the failure signature"),
    (["--confusions", "--run", "{running}"], "run {running} is not finished (status 'running')"),
    (["--signature", "--run", "{wide}", "--k", 5], "--k is the --confusions cut-off"),
    (["--confusions"], "--confusions needs --run ID"),
    (["--run", 1], "--run is for --per-query, --confusions or --signature"),
    (["--confusions", "--run", 1, "--format", "latex"], "--confusions prints --format table or csv, not latex"),
    (["--confusions", "--run", 1, "--baseline", "k_reciprocal"], "--baseline is for the comparison"),
    (["--confusions", "--signature", "--run", 1], "not allowed with argument"),
    (["--confusions", "--run", 1, "--k", 0], "--k must be at least 1"),
])
def test_bad_input_is_one_line_and_exit_2(db, capsys, args, message):
    with duckdb.connect(str(db), read_only=True) as con:
        ids = {"wide": run_id(db, "wide"), "demo": run_id(db, "demo"), "kr": run_id(db, "demo", "k_reciprocal"),
               "running": con.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchone()[0]}
    argv = [str(a).format(**ids) for a in args]
    before = file_digest(db)
    code, out, err = run(["--db", db, *argv], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("report: error: ")
    assert message.format(**ids) in err
    assert file_digest(db) == before


def test_a_run_without_stored_rankings_is_refused(db, capsys, tmp_path):
    copy = tmp_path / "no-rankings.duckdb"
    shutil.copy(db, copy)
    rid = run_id(db, "wide")
    with duckdb.connect(str(copy)) as con:
        con.execute("DELETE FROM rankings WHERE run_id = ?", [rid])
    for mode in ("--confusions", "--signature"):
        code, out, err = run(["--db", copy, mode, "--run", rid], capsys)
        assert code == 2 and out == ""
        assert err == (f"report: error: run {rid} has no stored initial ranking (iteration 0); "
                       "it was written without rankings\n")


def test_rankings_naming_items_the_store_lacks_are_refused(db, capsys, tmp_path):
    copy = tmp_path / "dangling.duckdb"
    shutil.copy(db, copy)
    rid = run_id(db, "wide")
    with duckdb.connect(str(copy)) as con:
        con.execute("UPDATE rankings SET gallery_idx = 999 WHERE run_id = ? AND iteration = 0 AND rank = 1", [rid])
    for mode in ("--confusions", "--signature"):
        code, out, err = run(["--db", copy, mode, "--run", rid], capsys)
        assert code == 2 and out == ""
        assert err.startswith(f"report: error: run {rid}'s stored rankings do not fit its dataset: ")
        assert err.count("\n") == 1
