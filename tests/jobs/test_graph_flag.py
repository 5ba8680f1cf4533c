"""``--graph exact|ivf|hnsw``: approximate gallery graphs from features, their recall stored and printed,
and the bad input they can meet (one line, exit 2, nothing written)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

from icfrr.ann import GraphSpec, graph_recall, recall_sample
from icfrr.neighbors import NeighborGraph
from jobs import sweep
from store.artifacts import read_rows
from tests.jobs.test_sweep_large import _features

pytest.importorskip("faiss")


def _params(db: Path) -> list[dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return [json.loads(p) for (p,) in con.execute("SELECT params FROM runs ORDER BY run_id").fetchall()]
    finally:
        con.close()


def _one_line_exit_2(capsys, argv: list[str], db: Path, *words: str) -> None:
    code = sweep.main([*argv, "--db", str(db)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]
    assert not db.exists()


def test_ivf_graph_recall_stored_with_the_artifact_and_the_runs_and_printed(tmp_path: Path, capsys) -> None:
    argv = [*_features(tmp_path), "--cache_root", str(tmp_path / "c")]
    assert sweep.main([*argv, "--db", str(tmp_path / "exact.duckdb")]) == 0
    out, err = capsys.readouterr()
    assert "gallery graph: exact for 90 items" in err and "APPROXIMATE" not in out
    assert {p["graph"]["kind"] for p in _params(tmp_path / "exact.duckdb")} == {"exact"}

    assert sweep.main([*argv, "--db", str(tmp_path / "ivf.duckdb"), "--graph", "ivf",
                       "--graph-recall-sample", "60"]) == 0
    out = capsys.readouterr().out
    params = _params(tmp_path / "ivf.duckdb")
    assert {p["graph"]["kind"] for p in params} == {"ivf"} and {p["graph_recall_sample"] for p in params} == {60}
    # the artifact of the ivf graph is another folder (its key holds the kind and parameters), and keeps the recall
    folders = sorted(p.parent for p in (tmp_path / "c").rglob("COMPLETE.json"))
    assert len(folders) == 2
    meta = [json.loads((f / "COMPLETE.json").read_text()) for f in folders]
    ivf = next(m for m in meta if m.get("graph", {}).get("kind") == "ivf")
    assert ivf["graph"]["params"] == params[0]["graph"]["params"] and ivf["graph_recall"]["sample"] == 60
    # the stored recall is the graph's, measured again here against brute force on the same seeded sample
    folder = folders[[m is ivf for m in meta].index(True)]
    nbrs = read_rows(folder / "neighbors.parquet", ["neighbors", "distances"])[0]
    graph = NeighborGraph(torch.from_numpy(nbrs["neighbors"].astype(np.int64)), torch.from_numpy(nbrs["distances"]))
    fg = read_rows(folder / "gallery_features.parquet", ["feature"])[0]["feature"]
    curve = graph_recall(graph, fg, recall_sample(90, 60))
    assert ivf["graph_recall"]["curve"] == pytest.approx(curve, abs=1e-12)
    for p in params:
        assert p["graph_recall_at_kg"] == pytest.approx(curve[p["kg"] - 1], abs=1e-12)
        assert 0 < p["graph_recall_at_kg"] <= 1
    assert "APPROXIMATE ivf gallery graph" in out and f"KG 6: {curve[5]:.4f}" in out and "on 60 sampled" in out


def test_graph_flag_for_imported_distances_is_refused(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "qg.npy", rng.random((5, 12)).astype(np.float32))
    gg = rng.random((12, 12)).astype(np.float32)
    np.save(tmp_path / "gg.npy", (gg + gg.T) / 2)
    argv = ["--dataset", "mine", "--qg", str(tmp_path / "qg.npy"), "--gg", str(tmp_path / "gg.npy"),
            "--cache_root", str(tmp_path / "c"), "--device", "cpu"]
    _one_line_exit_2(capsys, [*argv, "--graph", "ivf"], tmp_path / "a.duckdb", "--graph", "imported distances")
    _one_line_exit_2(capsys, [*argv, "--graph-recall-sample", "5"], tmp_path / "b.duckdb", "--graph-recall-sample")


def test_unknown_graph_kind_is_refused(tmp_path: Path, capsys) -> None:
    _one_line_exit_2(capsys, [*_features(tmp_path), "--cache_root", str(tmp_path / "c"), "--graph", "lsh"],
                     tmp_path / "r.duckdb", "--graph", "lsh")


def test_missing_faiss_is_refused_when_ivf_is_asked_for(tmp_path: Path, capsys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)     # import faiss raises ImportError, as when not installed
    _one_line_exit_2(capsys, [*_features(tmp_path), "--cache_root", str(tmp_path / "c"), "--graph", "ivf"],
                     tmp_path / "r.duckdb", "FAISS", "pip install faiss-cpu")
    assert not (tmp_path / "c").exists()


def test_recall_sample_larger_than_the_gallery_is_refused(tmp_path: Path, capsys) -> None:
    _one_line_exit_2(capsys, [*_features(tmp_path), "--cache_root", str(tmp_path / "c"), "--graph", "hnsw",
                              "--graph-recall-sample", "91"], tmp_path / "r.duckdb", "91", "90")
    assert not list((tmp_path / "c").rglob("COMPLETE.json"))


def test_extract_prints_an_approximate_graphs_recall(tmp_path: Path, capsys) -> None:
    from jobs import extract

    argv = _features(tmp_path)[:8]          # --dataset custom and the feature files
    assert extract.main([*argv, "--cache_root", str(tmp_path / "c"), "--graph", "ivf"]) == 0
    out = capsys.readouterr().out
    meta = json.loads(next((tmp_path / "c").rglob("COMPLETE.json")).read_text())
    curve = meta["graph_recall"]["curve"]
    assert f"APPROXIMATE ivf graph: recall against exact neighbours on 90 sampled items @10: {curve[9]:.4f}" in out
    assert extract.main([*argv, "--cache_root", str(tmp_path / "c2")]) == 0
    assert "APPROXIMATE" not in capsys.readouterr().out


def test_streamed_k_reciprocal_and_ecn_take_their_neighbours_from_the_index_and_say_so(
        tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import icfrr.ann
    import jobs.artifact_graph

    monkeypatch.setattr(jobs.artifact_graph, "dense_qg_fits", lambda n_query, n_gallery: False)  # the streamed path
    built: list[tuple[int, str]] = []
    rank_lists = icfrr.ann.rank_lists
    made: list[tuple[np.ndarray, np.ndarray]] = []

    def counted(f, w, spec):
        built.append((int(f.shape[0]), spec.kind))
        made.append((np.asarray(f, dtype=np.float64), rank_lists(f, w, spec)))
        return made[-1][1]

    monkeypatch.setattr(icfrr.ann, "rank_lists", counted)
    argv = [*_features(tmp_path), "--cache_root", str(tmp_path / "c"), "--method", "icfrr", "k_reciprocal",
            "ecn", "--k1", "6", "--k2", "3", "--ecn-k", "10"]
    assert sweep.main([*argv, "--db", str(tmp_path / "exact.duckdb")]) == 0
    assert built == [] and not any("knn_index" in p for p in _params(tmp_path / "exact.duckdb"))
    assert sweep.main([*argv, "--db", str(tmp_path / "hnsw.duckdb"), "--graph", "hnsw"]) == 0
    capsys.readouterr()
    assert built == [(120, "hnsw"), (120, "hnsw")]        # one index over the Q + G items per method
    with_index = [p for p in _params(tmp_path / "hnsw.duckdb") if "knn_index" in p]
    assert len(with_index) == 2 and {p["knn_index"]["kind"] for p in with_index} == {"hnsw"}
    # each records the recall@k of its lists against exact neighbours (all 120 items sampled), by brute force
    for p, (f, ranks) in zip(with_index, made):
        k = ranks.shape[1] - 1
        d = np.sqrt(((f[:, None, :] - f[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(d, np.inf)
        exact = np.argsort(d, axis=1, kind="stable")[:, :k]
        want = np.mean([len(set(exact[i]) & set(ranks[i, 1:])) / k for i in range(len(f))])
        assert (p["knn_recall_k"], p["knn_recall_sample"]) == (k, 120)
        assert p["knn_recall_at_k"] == pytest.approx(want)


def test_a_rebuilt_approximate_graph_keeps_its_own_recall_with_the_artifact(tmp_path: Path, monkeypatch) -> None:
    """A larger KG rebuilds the cached ivf graph: its recall is measured on the new graph, stored in the marker
    (the old graph's is dropped) and read from there by the next run instead of being measured again."""
    from jobs import artifact_graph
    from store import artifacts

    monkeypatch.setattr(artifacts, "MIN_GRAPH_K", 2)   # keep only kg_max neighbours, so a larger KG rebuilds
    # one cell of two searched: a recall below 1, so the old graph's and the new graph's curves differ
    monkeypatch.setattr(artifact_graph, "default_spec", lambda kind, n: GraphSpec("ivf", {"nlist": 2, "nprobe": 1}))
    argv = [*_features(tmp_path), "--cache_root", str(tmp_path / "c"), "--graph", "ivf",
            "--graph-recall-sample", "50"]
    kg = argv.index("--kg")
    small = [*argv[:kg], "--kg", "6", *argv[kg + 3:]]
    big = [*argv[:kg], "--kg", "20", *argv[kg + 3:]]
    assert sweep.main([*small, "--db", str(tmp_path / "a.duckdb")]) == 0
    (marker,) = (tmp_path / "c").rglob("COMPLETE.json")
    old = json.loads(marker.read_text())["graph_recall"]
    assert old["k"] == 6

    assert sweep.main([*big, "--db", str(tmp_path / "b.duckdb")]) == 0
    meta = json.loads(marker.read_text())
    assert meta["neighbors_k"] == 20 and meta["graph_recall"]["k"] == 20 and meta["graph_recall"]["sample"] == 50
    nbrs = read_rows(marker.parent / "neighbors.parquet", ["neighbors", "distances"])[0]
    graph = NeighborGraph(torch.from_numpy(nbrs["neighbors"].astype(np.int64)), torch.from_numpy(nbrs["distances"]))
    fg = read_rows(marker.parent / "gallery_features.parquet", ["feature"])[0]["feature"]
    curve = graph_recall(graph, fg, recall_sample(90, 50))
    assert meta["graph_recall"]["curve"] == pytest.approx(curve, abs=1e-12) and min(curve) < 1
    assert (len(old["curve"]), len(meta["graph_recall"]["curve"])) == (6, 20)  # the rebuilt graph's, not carried over
    assert [p["graph_recall_at_kg"] for p in _params(tmp_path / "b.duckdb")] == pytest.approx(
        [curve[19]] * len(_params(tmp_path / "b.duckdb")), abs=1e-12)

    def measured_again(*_a, **_k):
        raise AssertionError("the stored recall of the rebuilt graph was measured again")

    monkeypatch.setattr(artifact_graph, "graph_recall", measured_again)
    assert sweep.main([*big, "--db", str(tmp_path / "c.duckdb")]) == 0
    assert [p["graph_recall_at_kg"] for p in _params(tmp_path / "c.duckdb")] == pytest.approx([curve[19]] * 2)
