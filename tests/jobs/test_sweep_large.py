"""Above the dense limit, distances from features are computed per chunk of queries:
nothing [Q, G] is kept, the stored runs equal the dense path's, and the runs record it."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

from jobs import artifact_graph, sweep


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
    monkeypatch.setattr(artifact_graph, "DENSE_QG_MAX_BYTES", 0)
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


STREAMED = ["k_reciprocal", "ecn", "alpha_qe", "dba", "dba+alpha_qe"]
PARAMS = {"k_reciprocal": {"k1": 8, "k2": 3, "lambda_value": 0.3}, "ecn": {"t": 2, "q": 4, "k": 10},
          "alpha_qe": {"qe_n": 4, "qe_alpha": 3.0},
          "dba": {"dba_n": 5, "dba_alpha": 1.0},
          "dba+alpha_qe": {"dba_n": 3, "dba_alpha": 3.0, "qe_n": 4, "qe_alpha": 0.0}}


@pytest.mark.parametrize("key", STREAMED)
def test_run_method_streamed_by_a_small_budget_equals_the_dense_path(tmp_path: Path, key: str) -> None:
    from icfrr import pairwise_distances
    from icfrr.methods import MethodInputs
    from jobs.method_runner import run_method
    from icfrr.run_config import RunConfig

    _features(tmp_path, seed=3)
    fq, fg = np.load(tmp_path / "q.npy"), np.load(tmp_path / "g.npy")
    fq /= np.linalg.norm(fq, axis=1, keepdims=True)
    fg /= np.linalg.norm(fg, axis=1, keepdims=True)
    labels = np.load(tmp_path / "labels.npz")
    lq, lg = labels["query"], labels["gallery"]

    def square(a, b):
        d = pairwise_distances(a, b).numpy()
        np.fill_diagonal(d, 0.0)
        return d

    cfg = RunConfig.for_method(key, PARAMS[key])
    dense_inputs = MethodInputs(qg=pairwise_distances(fq, fg).numpy(), gg=lambda: square(fg, fg),
                                qq=lambda: square(fq, fq), fq=fq, fg=fg)
    dense = run_method(dense_inputs, lq, lg, cfg, top_n=12)
    refused = MethodInputs(qg=dense_inputs.qg, gg=None, qq=None, fq=fq, fg=fg)   # never loads gg or qq
    streamed = run_method(refused, lq, lg, cfg, top_n=12, max_dense_bytes=0, chunk_bytes=4_000)
    without_qg = run_method(MethodInputs(qg=None, fq=fq, fg=fg), lq, lg, cfg, top_n=12, chunk_bytes=4_000)
    for got in (streamed, without_qg):
        for it in (0, 1):
            for name, column in dense.kept[it].per_query.items():
                np.testing.assert_allclose(got.kept[it].per_query[name], column, rtol=0, atol=1e-9, err_msg=name)
            np.testing.assert_array_equal(got.kept[it].top_gallery, dense.kept[it].top_gallery)
            np.testing.assert_allclose(got.kept[it].top_scores, dense.kept[it].top_scores, rtol=0, atol=1e-5)
        assert got.metrics == pytest.approx(dense.metrics, abs=1e-12) and got.best == dense.best
    assert dense.metrics[1]["map_all"] != dense.metrics[0]["map_all"]     # the method changed the ranking


def test_baselines_above_the_limit_stream_and_store_what_dense_ones_do(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    argv = [*_features(tmp_path), "--method", "icfrr", *STREAMED, "--k1", "8", "--k2", "3", "--qe-n", "4",
            "--dba-n", "3", "--ecn-k", "10"]
    assert sweep.main([*argv, "--db", str(tmp_path / "dense.duckdb"), "--cache_root", str(tmp_path / "c1")]) == 0
    monkeypatch.setattr(artifact_graph, "DENSE_QG_MAX_BYTES", 0)
    assert sweep.main([*argv, "--db", str(tmp_path / "chunks.duckdb"), "--cache_root", str(tmp_path / "c2")]) == 0
    queries = ("SELECT r.method, r.params, m.iteration, m.map_all, m.map_200, m.p_25 FROM runs r "
               "JOIN run_metrics m USING (run_id) WHERE r.method <> 'icfrr' ORDER BY r.run_id, m.iteration",
               "SELECT r.method, k.iteration, k.query_idx, k.rank, k.gallery_idx FROM runs r "
               "JOIN rankings k USING (run_id) WHERE r.method <> 'icfrr' "
               "ORDER BY r.run_id, k.iteration, k.query_idx, k.rank")
    got = {}
    for name in ("dense", "chunks"):
        con = duckdb.connect(str(tmp_path / f"{name}.duckdb"), read_only=True)
        try:
            got[name] = [con.execute(q).fetchall() for q in queries]
        finally:
            con.close()
    dense_metrics, chunk_metrics = got["dense"][0], got["chunks"][0]
    assert {r[0] for r in dense_metrics} == set(STREAMED) and len(chunk_metrics) == len(dense_metrics)
    for d, c in zip(dense_metrics, chunk_metrics):
        assert d[0] == c[0] and d[2] == c[2] and c[3:] == pytest.approx(d[3:], abs=1e-9)
        assert json.loads(d[1])["qg_distances"] == "dense"
        assert json.loads(c[1])["qg_distances"] == "features per chunk"
    assert got["chunks"][1] == got["dense"][1]
    assert not list((tmp_path / "c2").rglob("qq_dists.parquet"))    # the streamed path never makes [Q, Q]


def test_a_method_without_a_streamed_form_is_refused_above_the_limit(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys) -> None:
    import dataclasses

    from icfrr import registry

    monkeypatch.setattr(artifact_graph, "DENSE_QG_MAX_BYTES", 0)
    monkeypatch.setattr(registry, "METHODS", tuple(dataclasses.replace(m, streamed="") if m.key == "ecn" else m
                                                   for m in registry.METHODS))
    db = tmp_path / "r.duckdb"
    code = sweep.main([*_features(tmp_path), "--db", str(db), "--cache_root", str(tmp_path / "c"),
                       "--method", "icfrr", "k_reciprocal", "ecn"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "computed per chunk" in err[0] and "ecn" in err[0]
    assert not db.exists()
