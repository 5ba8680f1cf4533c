"""python -m jobs.report --protocol: the choices on a demo sweep against plain SQL over
query_metrics and items, the older-store note, the three formats, and one-line
errors with exit status 2 for impossible splits."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import duckdb
import numpy as np
import pytest

from icfrr.protocols import TEST_LABEL
from jobs import report as cli
from jobs import sweep
from store import writes
from icfrr.run_config import RunConfig
from store.db import connect_writer
from tests.store.report_store import build

#: The demo sweep of the end-to-end tests: ICFRR (iterative) and two baselines, small grids.
SWEEP = ["--dataset", "demo", "--per_class", 4, "--device", "cpu", "--top-n", 5,
         "--method", "icfrr", "k_reciprocal", "dba", "--kg", 4, 8, "--kq", 5, 10,
         "--beta", 0.5, 1, "--n_times", 3, "--k1", 6, 10, "--k2", 3, "--dba-n", 3, 5]


def run(argv: list[object], capsys) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("protocols")
    db = tmp / "r.duckdb"
    argv = [*SWEEP, "--data_root", tmp / "demo", "--cache_root", tmp / "cache", "--db", db]
    assert sweep.main([str(a) for a in argv]) == 0
    return db


def _split(con: duckdb.DuckDBPyConnection, seed: int) -> list[int]:
    """The documented recipe: distinct query labels (-1 out), sorted, permuted by default_rng(seed)."""
    labels = [r[0] for r in con.execute(
        "SELECT DISTINCT label FROM items WHERE side = 'query' AND label <> -1 ORDER BY 1").fetchall()]
    return [int(c) for c in np.random.default_rng(seed).permutation(labels)]


#: The oracle: per method, the (run, iteration >= 1) with the highest mean AP over the
#: given classes' queries (12 decimals), ties to the lowest run id, then iteration.
CHOICE_SQL = """
WITH scored AS (
    SELECT r.method, qm.run_id, qm.iteration, round(avg(qm.ap), 12) AS score
    FROM query_metrics qm JOIN runs r ON r.run_id = qm.run_id
    JOIN items i ON i.side = 'query' AND i.idx = qm.query_idx
    WHERE r.status = 'done' AND qm.iteration >= 1 AND i.label IN (SELECT unnest(?::INTEGER[]))
    GROUP BY r.method, qm.run_id, qm.iteration)
SELECT method, run_id, iteration FROM (
    SELECT *, row_number() OVER (PARTITION BY method ORDER BY score DESC, run_id, iteration) AS rn
    FROM scored) WHERE rn = 1
"""

#: Mean of a per-query column of one (run, iteration) over the given classes' queries.
MEAN_SQL = """
SELECT avg(qm.{col}), count(*) FROM query_metrics qm
JOIN items i ON i.side = 'query' AND i.idx = qm.query_idx
WHERE qm.run_id = ? AND qm.iteration = ? AND i.label IN (SELECT unnest(?::INTEGER[]))
"""


def _csv(db: Path, capsys, *more: object) -> dict[str, dict[str, str]]:
    code, out, err = run(["--db", db, "--format", "csv", *more], capsys)
    assert code == 0, err
    return {r["method"] or "initial": r for r in csv.DictReader(io.StringIO(out))}


@pytest.mark.slow
def test_holdout_choices_are_the_sql_oracles_and_means_are_over_reported_classes(demo, capsys) -> None:
    rows = _csv(demo, capsys, "--protocol", "holdout", "--seed", 0)
    con = duckdb.connect(str(demo), read_only=True)
    try:
        order = _split(con, 0)
        n_tune = round(0.5 * len(order))
        tuning, reported = order[:n_tune], order[n_tune:]
        want = {m: (run_id, it) for m, run_id, it in con.execute(CHOICE_SQL, [tuning]).fetchall()}
        assert set(want) == {"icfrr", "k_reciprocal", "dba"} == set(rows) - {"initial"}
        for method, (run_id, it) in want.items():
            row = rows[method]
            assert (int(row["run_id"]), int(row["iteration"])) == (run_id, it), method
            for key, col in (("map_all", "ap"), ("map_200", "ap_200"), ("p_100", "p_100")):
                mean, n = con.execute(MEAN_SQL.format(col=col), [run_id, it, reported]).fetchone()
                assert float(row[key]) == pytest.approx(mean, abs=1e-12), (method, key)
                assert int(row["n_queries"]) == n
        if rows["icfrr"]["iteration"] != "3":
            assert f"T {rows['icfrr']['iteration']}" in rows["icfrr"]["params"]
        first = int(rows["initial"]["run_id"])
        mean, n = con.execute(MEAN_SQL.format(col="ap"), [first, 0, reported]).fetchone()
        assert float(rows["initial"]["map_all"]) == pytest.approx(mean, abs=1e-12)
    finally:
        con.close()
    for method, row in rows.items():
        assert row["protocol"] == "holdout" and row["seed"] == "0"
        lo, hi = float(row["map_all_ci_lo"]), float(row["map_all_ci_hi"])
        assert lo <= float(row["map_all"]) <= hi
        if method != "initial":
            assert float(row["map_all_delta"]) == pytest.approx(
                float(row["map_all"]) - float(rows["initial"]["map_all"]), abs=1e-12)
            assert float(row["delta_ci_lo"]) <= float(row["ap_diff"]) <= float(row["delta_ci_hi"])
            assert float(row["optimism"]) >= 0
            assert float(row["grid_min"]) <= float(row["map_all"]) <= float(row["grid_max"])


@pytest.mark.slow
def test_cv_each_fold_scored_by_the_sql_choice_on_the_other_folds(demo, capsys) -> None:
    rows = _csv(demo, capsys, "--protocol", "cv", "--folds", 3, "--seed", 2, "--ci", "none")
    con = duckdb.connect(str(demo), read_only=True)
    try:
        order = _split(con, 2)
        folds = [[c for p, c in enumerate(order) if p % 3 == f] for f in range(3)]
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for f in range(3):
            others = [c for c in order if c not in folds[f]]
            for method, run_id, it in con.execute(CHOICE_SQL, [others]).fetchall():
                mean, n = con.execute(MEAN_SQL.format(col="ap"), [run_id, it, folds[f]]).fetchone()
                sums[method] = sums.get(method, 0.0) + mean * n
                counts[method] = counts.get(method, 0) + n
        n_known = con.execute("SELECT count(*) FROM items WHERE side = 'query' AND label <> -1").fetchone()[0]
    finally:
        con.close()
    for method in sums:
        assert counts[method] == n_known == int(rows[method]["n_queries"])  # each query once
        assert float(rows[method]["map_all"]) == pytest.approx(sums[method] / counts[method], abs=1e-12)
        assert rows[method]["map_all_ci_lo"] == ""  # --ci none
        assert sum(int(part.rsplit("×", 1)[1]) for part in rows[method]["chosen"].split("; ")) == 3


@pytest.mark.slow
def test_test_protocol_is_labelled_optimistic_in_every_format(demo, capsys) -> None:
    rows = _csv(demo, capsys, "--protocol", "test", "--ci", "query", "--n-boot", 500)
    assert all(r["selection"] == TEST_LABEL and float(r["optimism"] or 0) == 0 for r in rows.values())
    for fmt in ("table", "latex"):
        code, out, err = run(["--db", demo, "--protocol", "test", "--format", fmt], capsys)
        assert code == 0 and err == ""
        assert TEST_LABEL in out
    code, text, _ = run(["--db", demo, "--protocol", "holdout"], capsys)
    assert code == 0 and TEST_LABEL not in text and "tuning classes:" in text
    assert "sensitivity" in text and "some iterations only" not in text  # a new store holds all


def test_older_store_chooses_among_stored_iterations_and_says_so(tmp_path: Path, capsys) -> None:
    db, runs = build(tmp_path, other=False)   # runs hold query_metrics for 0 and the last only
    code, out, err = run(["--db", db, "--protocol", "test", "--format", "csv"], capsys)
    assert code == 0, err
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO(out))}
    # B's iteration 1 is its best but not stored: A at its last iteration wins
    assert (int(rows["icfrr"]["run_id"]), int(rows["icfrr"]["iteration"])) == (runs["A"].run_id, 5)
    # sensitivity: run C has k-reciprocal's and run E DBA's registry defaults; ICFRR's are not run
    assert float(rows["k_reciprocal"]["default_map_all"]) == pytest.approx(np.nanmean(runs["C"].ap[1]))
    assert float(rows["dba"]["default_map_all"]) == pytest.approx(np.nanmean(runs["E"].ap[1]))
    assert rows["icfrr"]["default_map_all"] == ""
    grid = [np.nanmean(runs[k].ap[1]) for k in "CD"]
    assert [float(rows["k_reciprocal"][c]) for c in ("grid_min", "grid_median", "grid_max")] == \
        pytest.approx([min(grid), np.median(grid), max(grid)])
    code, text, _ = run(["--db", db, "--protocol", "test"], capsys)
    assert "some iterations only" in text and "selection chose among the stored iterations" in text


def _store(path: Path, labels_q: np.ndarray) -> Path:
    """A store with one ICFRR run (iterations 0-1) on queries of the given labels."""
    q = labels_q.size
    con = connect_writer(path)
    try:
        items = writes.items_table(labels_q, np.arange(12) % 3)
        dataset_id = writes.upsert_dataset(con, name="toy", root=None, items=items)
        artifact_id = writes.upsert_artifact(con, dataset_id, writes.ArtifactInfo(
            key="toy", backbone="bb", checkpoint_sha256=None, per_class=-1))
        sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id, command="t")
        ap = np.where(labels_q == -1, np.nan, np.linspace(0.1, 0.9, q))
        pq = {"ap": ap, "ap_200": ap, "p_25": ap, "p_100": ap, "p_200": ap,
              "first_relevant_rank": np.where(labels_q == -1, -1, 1)}
        top = np.zeros((q, 1), dtype=np.int64)
        kept = {it: writes.KeptIteration(pq, top, top.astype(float)) for it in (0, 1)}
        summary = {k: math.nan if np.all(np.isnan(ap)) else float(np.nanmean(ap))
                   for k in writes.METRICS}
        writes.write_run(con, sweep_id=sweep_id, artifact_id=artifact_id, artifact_key="toy",
                         config=RunConfig(kg=2, kq=2, beta=0.5, n_iter=1), device="cpu",
                         seconds=0.1, metrics=[summary, summary], kept=kept)
        writes.finish_sweep(con, sweep_id, "done")
    finally:
        con.close()
    return path


BAD = [
    (["--protocol", "holdout", "--tune-fraction", 0], "strictly between 0 and 1"),
    (["--protocol", "holdout", "--tune-fraction", 1], "strictly between 0 and 1"),
    (["--protocol", "holdout", "--tune_fraction", 1.5], "strictly between 0 and 1"),
    (["--protocol", "holdout", "--tune-fraction", -0.1], "strictly between 0 and 1"),
    (["--protocol", "cv", "--folds", 4], "--folds 4 is more than the 3 query classes"),
    (["--protocol", "cv", "--folds", 1], "--folds must be an integer >= 2"),
    (["--protocol", "cv", "--n-boot", 10], "--n-boot must be at least 100"),
    (["--protocol", "holdout", "--baseline", "ecn"], "no runs of method 'ecn'"),
    (["--protocol", "best"], "invalid choice: 'best'"),
    (["--protocol", "cv", "--ci", "fold"], "invalid choice: 'fold'"),
    (["--protocol", "cv", "--folds", "x"], "invalid int value"),
    (["--folds", 3], "--folds needs --protocol"),
    (["--ci=query"], "--ci needs --protocol"),
]


def _check_bad(argv: list[object], match: str, capsys, tmp_path: Path) -> None:
    out_file = tmp_path / "out.csv"
    code, out, err = run([*argv, "--format", "csv", "-o", out_file], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("report: error: ") and match in err, err
    assert not out_file.exists()


@pytest.mark.parametrize(("argv", "match"), BAD)
def test_bad_protocol_input_one_line_exit_2(tmp_path: Path, capsys, argv, match) -> None:
    db, _ = build(tmp_path, other=False)   # 3 query classes
    _check_bad(["--db", db, *argv], match, capsys, tmp_path)


def test_store_without_labels_and_a_single_class(tmp_path: Path, capsys) -> None:
    unlabelled = _store(tmp_path / "none.duckdb", np.full(6, -1))
    for protocol in ("test", "holdout", "cv"):
        _check_bad(["--db", unlabelled, "--protocol", protocol], "has no query labels", capsys, tmp_path)
    single = _store(tmp_path / "one.duckdb", np.array([4, 4, 4, -1, 4]))
    for protocol in ("holdout", "cv"):
        _check_bad(["--db", single, "--protocol", protocol],
                   "1 known class; splitting classes needs at least 2", capsys, tmp_path)
    code, out, err = run(["--db", single, "--protocol", "test", "--format", "csv"], capsys)
    assert code == 0, err   # one class: no split needed for the test protocol
