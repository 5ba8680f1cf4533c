"""--executor ray on a local Ray writes the runs --executor local writes (the oracle): same
config keys, metrics to 1e-9, same kept rankings; and a worker killed mid-sweep loses or
duplicates nothing."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from jobs import ray_executor, sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RUN_COLUMNS = "config_key, method, variant, kg, kq, beta, n_iter, params, device, status"


@pytest.fixture(autouse=True)
def _no_dashboard(monkeypatch):
    monkeypatch.setattr(ray_executor, "INCLUDE_DASHBOARD", False)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray (2 CPUs, as CI has) for the tests that do not start their own."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _stored(db: Path) -> dict[str, object]:
    """Every run of the store, keyed by config key (run ids and timings left out)."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        runs = con.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY config_key").fetchall()
        tables = {
            name: con.execute(f"SELECT r.config_key, t.* EXCLUDE (run_id) FROM {name} t JOIN runs r USING (run_id) "
                              f"ORDER BY {order}").fetchdf()
            for name, order in (("run_metrics", "1, iteration"), ("query_metrics", "1, iteration, query_idx"),
                                ("rankings", "1, iteration, query_idx, rank"))}
        sweeps = con.execute("SELECT status FROM sweeps ORDER BY sweep_id").fetchall()
    finally:
        con.close()
    return {"runs": runs, "sweeps": sweeps, **tables}


def _assert_same_runs(got: Path, want: Path, n_runs: int, sweeps: tuple[str, ...] = ("done",)) -> None:
    a, b = _stored(got), _stored(want)
    keys = [r[0] for r in a["runs"]]
    assert len(keys) == n_runs and len(set(keys)) == n_runs   # none lost, none twice
    assert a["runs"] == b["runs"]
    assert b["sweeps"] == [("done",)] and a["sweeps"] == [(s,) for s in sweeps]
    for name in ("run_metrics", "query_metrics", "rankings"):
        x, y = a[name], b[name]
        assert len(x) == len(y) > 0 and list(x.columns) == list(y.columns), name
        for col in x.columns:
            if pd.api.types.is_float_dtype(y[col]):
                np.testing.assert_allclose(x[col].to_numpy(float), y[col].to_numpy(float), rtol=0, atol=1e-9,
                                           equal_nan=True, err_msg=f"{name}.{col}")
            else:
                assert x[col].tolist() == y[col].tolist(), f"{name}.{col}"


def _examples(tmp: Path) -> Path:
    """A copy of the published example cache (a sweep may keep its artifacts there)."""
    shutil.copytree(REPO / "examples" / "custom", tmp / "cache" / "custom")
    return tmp / "cache"


EXAMPLES_GRID = ["--n_times", "20", "--KG", "10", "4", "--KQ", "15", "--beta", "0.5", "1",
                 "--variant", "reference", "paper", "--method", "icfrr", "k_reciprocal", "--top-n", "12"]
EXAMPLES_RUNS = 2 * 2 * 2 + 1   # KG x beta x variant, and k-reciprocal (run on the driver)


@pytest.fixture(scope="module")
def examples_oracle(tmp_path_factory) -> tuple[Path, Path]:
    """The example cache and the store a local sweep wrote from it."""
    tmp = tmp_path_factory.mktemp("examples")
    cache = _examples(tmp)
    db = tmp / "local.duckdb"
    argv = ["--dataset", "custom", "--cache_root", str(cache), "--device", "cpu", *EXAMPLES_GRID, "--quiet"]
    assert sweep.main([*argv, "--db", str(db)]) == 0
    return cache, db


def test_demo_sweep_on_a_ray_it_starts_writes_the_local_runs(tmp_path, capsys) -> None:
    assert not ray.is_initialized()
    argv = ["--dataset", "demo", "--data-root", str(tmp_path / "data"), "--cache-root", str(tmp_path / "cache"),
            "--device", "cpu", "--kg", "8", "16", "--kq", "5", "10", "--beta", "0.5", "1", "--n-times", "3",
            "--quiet"]
    assert sweep.main([*argv, "--db", str(tmp_path / "local.duckdb")]) == 0
    assert sweep.main([*argv, "--db", str(tmp_path / "ray.duckdb"), "--executor", "ray"]) == 0
    err = capsys.readouterr().err
    assert "--executor ray: a local Ray" in err
    assert not ray.is_initialized()   # the Ray the sweep started is stopped again
    _assert_same_runs(tmp_path / "ray.duckdb", tmp_path / "local.duckdb", 8)


def test_example_cache_sweep_on_ray_writes_the_local_runs(local_ray, examples_oracle, tmp_path, capsys) -> None:
    cache, oracle = examples_oracle
    db = tmp_path / "ray.duckdb"
    argv = ["--dataset", "custom", "--cache_root", str(cache), "--device", "cpu", *EXAMPLES_GRID, "--quiet"]
    assert sweep.main([*argv, "--db", str(db), "--executor", "ray"]) == 0
    assert "1 configuration group(s) of other methods" in capsys.readouterr().err
    _assert_same_runs(db, oracle, EXAMPLES_RUNS)
    # run again: every configuration is found finished and skipped, nothing is written twice
    assert sweep.main([*argv, "--db", str(db), "--executor", "ray"]) == 0
    assert f"skipping {EXAMPLES_RUNS} configuration(s)" in capsys.readouterr().err
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (EXAMPLES_RUNS,)
    finally:
        con.close()


def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(local_ray, examples_oracle, tmp_path,
                                                                monkeypatch) -> None:
    cache, oracle = examples_oracle
    marker = tmp_path / "crashed"
    monkeypatch.setenv(ray_executor.CRASH_ONCE_ENV, str(marker))
    db = tmp_path / "ray.duckdb"
    argv = ["--dataset", "custom", "--cache_root", str(cache), "--device", "cpu", *EXAMPLES_GRID, "--quiet"]
    assert sweep.main([*argv, "--db", str(db), "--executor", "ray"]) == 0
    assert marker.exists()   # a task's worker did exit mid-task; Ray ran the task again
    _assert_same_runs(db, oracle, EXAMPLES_RUNS)


def test_distances_computed_per_chunk_from_features_on_ray_give_the_local_runs(local_ray, tmp_path,
                                                                             monkeypatch) -> None:
    from jobs import artifact_graph
    from tests.jobs.test_sweep_large import _features

    monkeypatch.setattr(artifact_graph, "DENSE_QG_MAX_BYTES", 0)   # the features go to the object store, not [Q, G]
    argv = [*_features(tmp_path), "--cache-root", str(tmp_path / "cache"), "--quiet"]
    assert sweep.main([*argv, "--db", str(tmp_path / "local.duckdb")]) == 0
    assert sweep.main([*argv, "--db", str(tmp_path / "ray.duckdb"), "--executor", "ray"]) == 0
    _assert_same_runs(tmp_path / "ray.duckdb", tmp_path / "local.duckdb", 4)
    assert '"qg_distances": "features per chunk"' in _stored(tmp_path / "ray.duckdb")["runs"][0][7]


@pytest.mark.slow
def test_a_killed_driver_keeps_its_committed_runs_and_the_same_command_resumes(local_ray, examples_oracle, tmp_path,
                                                                              capsys) -> None:
    from store.db import connect_reader
    from tests.jobs.test_faults import _KILLER

    cache, oracle = examples_oracle
    db = tmp_path / "ray.duckdb"
    argv = ["--dataset", "custom", "--cache_root", str(cache), "--device", "cpu", *EXAMPLES_GRID, "--quiet",
            "--db", str(db), "--executor", "ray"]
    # SIGKILL the driver (which starts its own Ray) right after it committed its first run
    script = _KILLER.format(module="store.writes", name="heartbeat", at=1, command="jobs.sweep")
    with open(tmp_path / "driver.log", "w") as log:   # a file: Ray's leftovers may hold it open
        proc = subprocess.Popen([sys.executable, "-c", script, *argv], cwd=REPO, stdout=log, stderr=log,
                                start_new_session=True)
        proc.wait(timeout=600)
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # what is left of the Ray the killed driver started
    except ProcessLookupError:
        pass
    assert proc.returncode == -9, (tmp_path / "driver.log").read_text()[-2000:]
    with connect_reader(db) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
        assert con.execute("SELECT status FROM sweeps").fetchall() == [("running",)]
    assert sweep.main(argv) == 0
    out, err = capsys.readouterr()
    assert out.count("(skipped)") == 1 and out.count("(new)") == EXAMPLES_RUNS - 1, err
    assert "marked 1 earlier sweep(s) whose process is gone 'interrupted'" in err
    _assert_same_runs(db, oracle, EXAMPLES_RUNS, sweeps=("interrupted", "done"))
    assert not Path(f"{db}.lock").exists()
