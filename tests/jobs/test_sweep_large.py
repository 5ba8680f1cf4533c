"""Above the dense limit, distances from features are computed per chunk of queries:
nothing [Q, G] is kept, the stored runs equal the dense path's, and the runs record it."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from jobs import artifacts, sweep


def _features(folder: Path, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 16))
    lq, lg = rng.integers(0, 4, 30), rng.integers(0, 4, 90)
    np.save(folder / "q.npy", (centres[lq] + rng.normal(scale=1.0, size=(30, 16))).astype(np.float32))
    np.save(folder / "g.npy", (centres[lg] + rng.normal(scale=1.0, size=(90, 16))).astype(np.float32))
    np.savez(folder / "labels.npz", query=lq, gallery=lg)
    return ["--dataset", "custom", "--query-features", str(folder / "q.npy"), "--gallery-features",
            str(folder / "g.npy"), "--labels", str(folder / "labels.npz"), "--device", "cpu",
            "--kg", "6", "12", "--kq", "8", "--beta", "0.5", "1", "--n-times", "3", "--top-n", "10"]


def _runs(db: Path) -> tuple[list[tuple], list[dict]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(
            "SELECT r.kg, r.beta, m.iteration, m.map_all, m.map_200, m.p_25 FROM runs r "
            "JOIN run_metrics m USING (run_id) ORDER BY r.kg, r.beta, m.iteration").fetchall()
        rows += con.execute(
            "SELECT r.kg, r.beta, k.iteration, k.query_idx, k.rank, k.gallery_idx FROM runs r "
            "JOIN rankings k USING (run_id) ORDER BY r.kg, r.beta, k.iteration, k.query_idx, k.rank").fetchall()
        params = [json.loads(p) for (p,) in con.execute("SELECT params FROM runs ORDER BY run_id").fetchall()]
        paths = con.execute("SELECT qg_dists_path FROM artifacts").fetchall()
    finally:
        con.close()
    return rows, params + [{"qg_dists_path": p} for (p,) in paths]


def test_per_chunk_distances_store_what_dense_ones_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys) -> None:
    argv = _features(tmp_path)
    assert sweep.main([*argv, "--db", str(tmp_path / "dense.duckdb"), "--cache_root", str(tmp_path / "c1")]) == 0
    monkeypatch.setattr(artifacts, "DENSE_QG_MAX_BYTES", 0)
    assert sweep.main([*argv, "--db", str(tmp_path / "chunks.duckdb"), "--cache_root", str(tmp_path / "c2")]) == 0
    dense, dense_params = _runs(tmp_path / "dense.duckdb")
    chunks, chunk_params = _runs(tmp_path / "chunks.duckdb")
    assert len(dense) > 4 * 4 and chunks == dense
    assert {p.get("qg_distances") for p in dense_params[:-1]} == {"dense"}
    assert {p.get("qg_distances") for p in chunk_params[:-1]} == {"features per chunk"}
    assert chunk_params[0]["dense_qg_max_bytes"] == 0
    assert chunk_params[-1]["qg_dists_path"] is None and dense_params[-1]["qg_dists_path"] is not None
    assert not list((tmp_path / "c2").rglob("qg_dists.parquet"))
    # reused from the cache folder without the dense file: the same runs again
    assert sweep.main([*argv, "--db", str(tmp_path / "again.duckdb"), "--cache_root", str(tmp_path / "c2")]) == 0
    assert _runs(tmp_path / "again.duckdb")[0] == dense


def test_methods_needing_whole_distances_are_refused_above_the_limit(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys) -> None:
    monkeypatch.setattr(artifacts, "DENSE_QG_MAX_BYTES", 0)
    db = tmp_path / "r.duckdb"
    code = sweep.main([*_features(tmp_path), "--db", str(db), "--cache_root", str(tmp_path / "c"),
                       "--method", "icfrr", "k_reciprocal"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "computed per chunk" in err[0] and "k_reciprocal" in err[0]
    assert not db.exists()
