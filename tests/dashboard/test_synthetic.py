"""dashboard.synthetic writes what a real sweep writes: its metrics against the
literal evaluation of the full ranking it describes, its keys against store.writes."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from dashboard import synthetic
from dashboard.synthetic import SyntheticSpec, generate
from icfrr.literal import literal_evaluate
from icfrr.registry import METRIC_KEYS, best_iteration
from store import writes
from icfrr.run_config import RunConfig

#: A pool smaller than the gallery (the rest of the gallery follows it, in index order),
#: every pool item and every iteration stored, so the full rankings can be rebuilt.
SMALL = SyntheticSpec(name="small", n_query=9, n_gallery=240, n_classes=3, n_unknown=1,
                      configs=(("reference", 4, 3, 1.0), ("reference", 8, 6, 0.5)),
                      n_iter=3, top_n=30, pool=30, images=False, keep_iterations=(1, 2))


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("synthetic") / "s.duckdb"
    generate(db, SMALL)
    return db


def _full_ranking(top: np.ndarray, n_gallery: int) -> np.ndarray:
    """The stored pool order, then the rest of the gallery in index order (one query)."""
    rest = [g for g in range(n_gallery) if g not in set(top.tolist())]
    return np.concatenate([top, rest])


def test_metrics_are_the_literal_evaluation_of_the_full_ranking(small_db: Path) -> None:
    con = duckdb.connect(str(small_db), read_only=True)
    items = con.execute("SELECT side, idx, label FROM items ORDER BY side, idx").df()
    labels_q = items[items.side == "query"].label.to_numpy()
    labels_g = items[items.side == "gallery"].label.to_numpy()
    rk = con.execute("SELECT run_id, iteration, query_idx, rank, gallery_idx FROM rankings "
                     "ORDER BY run_id, iteration, query_idx, rank").df()
    rm = con.execute(f"SELECT run_id, iteration, {', '.join(METRIC_KEYS)} FROM run_metrics").df()
    qm = con.execute("SELECT run_id, iteration, query_idx, ap FROM query_metrics").df()
    con.close()
    # R counts the whole gallery: the pool holds only part of each class
    assert (np.bincount(labels_g) > SMALL.pool).all()
    checked = 0
    for (run_id, it), part in rk.groupby(["run_id", "iteration"]):
        top = part.gallery_idx.to_numpy().reshape(SMALL.n_query, SMALL.pool)
        ranking = np.stack([_full_ranking(row, SMALL.n_gallery) for row in top])
        want = literal_evaluate(ranking, labels_q, labels_g)
        got = rm[(rm.run_id == run_id) & (rm.iteration == it)].iloc[0]
        for key in METRIC_KEYS:
            assert got[key] == pytest.approx(want[key], abs=1e-12), (run_id, it, key)
        for q in np.flatnonzero(labels_q != -1):
            one = literal_evaluate(ranking[q:q + 1], labels_q[q:q + 1], labels_g)
            ap = qm[(qm.run_id == run_id) & (qm.iteration == it) & (qm.query_idx == q)].ap
            assert ap.item() == pytest.approx(one["map_all"], abs=1e-12)
        checked += 1
    assert checked == len(SMALL.configs) * (SMALL.n_iter + 1)


def test_rows_carry_the_real_writers_keys(small_db: Path) -> None:
    con = duckdb.connect(str(small_db), read_only=True)
    runs = con.execute("SELECT run_id, kg, kq, beta, variant, n_iter, params, config_key, status "
                       "FROM runs ORDER BY run_id").df()
    (art_key, backbone), = con.execute("SELECT cache_key, backbone FROM artifacts").fetchall()
    (status,), = con.execute("SELECT status FROM sweeps").fetchall()
    rm = con.execute(f"SELECT run_id, {', '.join(METRIC_KEYS)} FROM run_metrics "
                     "ORDER BY run_id, iteration").df()
    con.close()
    assert status == "done" and backbone == "synthetic"
    assert art_key == synthetic.artifact_key(SMALL)
    assert list(zip(runs.variant, runs.kg, runs.kq, runs.beta)) == list(SMALL.configs)
    for r in runs.itertuples():
        config = RunConfig(kg=r.kg, kq=r.kq, beta=r.beta, n_iter=r.n_iter,
                                  variant=r.variant)
        assert r.config_key == config.config_key(art_key)
        summaries = rm[rm.run_id == r.run_id][list(METRIC_KEYS)].to_dict("records")
        assert json.loads(r.params)["best_iteration"] == best_iteration(summaries)
        assert r.status == "done"


def test_a_second_generate_reuses_the_rows_and_skips_finished_runs(tmp_path: Path) -> None:
    db = tmp_path / "twice.duckdb"
    generate(db, SMALL)
    generate(db, SMALL)
    con = duckdb.connect(str(db), read_only=True)
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("datasets", "artifacts", "sweeps", "runs")}
    con.close()
    assert counts == {"datasets": 1, "artifacts": 1, "sweeps": 2, "runs": len(SMALL.configs)}


def test_a_failed_run_leaves_committed_runs_and_a_failed_sweep(tmp_path: Path,
                                                                monkeypatch) -> None:
    real = writes.write_run
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(writes, "write_run", fail_second)
    db = tmp_path / "failed.duckdb"
    with pytest.raises(OSError, match="disk full"):
        generate(db, SMALL)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM sweeps").fetchall() == [("failed",)]
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
    assert con.execute("SELECT count(DISTINCT run_id) FROM run_metrics").fetchone()[0] == 1
    con.close()
