"""Bring your own features or distances: ``--query-features/--gallery-features`` and ``--qg/--gg`` swept end to end.

Oracles: the same vectors extracted from images in memory (the sweep over the
images must store the same runs), numpy's float64 Euclidean distances of the
normalised vectors, and the engine called directly on imported matrices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import extract, sweep
from jobs.artifacts import ArtifactRequest, Compute, Images, ensure_artifacts, request_from_args
from store import read
from store.artifacts import CachePolicy
from store.db import connect_reader
from tests.jobs.test_sweep import check_run_equals_engine, make_folder_dataset, run
from tests.jobs.toy import toy_distances

GRID = ["--kg", 4, "--kq", 3, 6, "--n_times", 2, "--top-n", 5, "--device", "cpu"]


def _quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A class-folder image dataset and its demo features, extracted in memory (nothing cached)."""
    root = make_folder_dataset(tmp_path_factory.mktemp("own") / "data")
    arts = ensure_artifacts(ArtifactRequest("folder", root, source=Images("demo"), cache=CachePolicy.NONE,
                                            compute=Compute(num_workers=0, progress=False)), _quiet)
    return root, arts


def _write_inputs(folder: Path, arts, names: bool = True) -> dict[str, Path]:
    """The in-memory features as .npy, Parquet (list column; one column per dimension) and labels .npz."""
    folder.mkdir(parents=True, exist_ok=True)
    fq, fg = arts.features("query"), arts.features("gallery")
    np.save(folder / "q.npy", fq)
    np.save(folder / "g.npy", fg)
    pq.write_table(pa.table({"idx": np.arange(len(fq)), "feature": pa.array(list(fq), pa.list_(pa.float32()))}),
                   folder / "q.parquet")
    pq.write_table(pa.table({f"d{j}": fg[:, j] for j in range(fg.shape[1])}), folder / "g.parquet")
    extra = {}
    if names:
        extra = {"query_names": np.array([it.path for it in arts.dataset.query]),
                 "gallery_names": np.array([it.path for it in arts.dataset.gallery])}
    np.savez(folder / "labels.npz", query=arts.labels_q, gallery=arts.labels_g, **extra)
    return {"q.npy": folder / "q.npy", "g.npy": folder / "g.npy", "q.parquet": folder / "q.parquet",
            "g.parquet": folder / "g.parquet", "labels": folder / "labels.npz"}


def _metrics(db: Path) -> list[tuple]:
    with connect_reader(db) as con:
        return con.execute("""
            SELECT r.kg, r.kq, m.iteration, m.map_all, m.map_200, m.p_25, m.p_100, m.p_200
            FROM runs r JOIN run_metrics m USING (run_id) ORDER BY r.kg, r.kq, m.iteration""").fetchall()


def _rankings(db: Path) -> list[tuple]:
    with connect_reader(db) as con:
        return con.execute("""
            SELECT r.kq, k.iteration, k.query_idx, k.rank, k.gallery_idx
            FROM runs r JOIN rankings k USING (run_id) ORDER BY 1, 2, 3, 4""").fetchall()


def test_features_npy_and_parquet_store_the_same_runs_as_the_images(tmp_path, images, capsys):
    root, arts = images
    files = _write_inputs(tmp_path / "in", arts)
    code, _, err = run(["--dataset", "folder", "--data_root", root, "--backbone", "demo", "--cache_root",
                        tmp_path / "cache", "--db", tmp_path / "images.duckdb", *GRID], capsys)
    assert code == 0, err
    want_metrics, want_rankings = _metrics(tmp_path / "images.duckdb"), _rankings(tmp_path / "images.duckdb")
    assert len(want_metrics) == 2 * 3
    for q, g in (("q.npy", "g.npy"), ("q.parquet", "g.parquet"), ("q.npy", "g.parquet")):
        db = tmp_path / f"{q}-{g}.duckdb"
        code, _, err = run(["--dataset", "custom", "--query-features", files[q], "--gallery_features", files[g],
                            "--labels", files["labels"], "--no-normalise", "--cache_root", tmp_path / "cache",
                            "--db", db, *GRID], capsys)
        assert code == 0, err
        assert _metrics(db) == want_metrics, (q, g)
        assert _rankings(db) == want_rankings, (q, g)


def test_normalising_is_the_default_and_no_normalise_changes_the_key(tmp_path, capsys):
    rng = np.random.default_rng(4)
    fq, fg = rng.normal(size=(5, 3)) * 7, rng.normal(size=(9, 3)) * 3
    np.save(tmp_path / "q.npy", fq)                       # float64 in, like most numpy code writes
    np.save(tmp_path / "g.npy", fg.astype(np.float32))
    np.savez(tmp_path / "l.npz", query=rng.integers(0, 2, 5), gallery=rng.integers(0, 2, 9))
    base = ["--dataset", "mine", "--query-features", tmp_path / "q.npy", "--gallery-features", tmp_path / "g.npy",
            "--labels", tmp_path / "l.npz", "--cache_root", tmp_path / "cache", "--quiet"]
    found = {}
    for flags in ([], ["--no-normalise"]):
        args = extract.build_parser().parse_args([str(a) for a in base + flags])
        assert extract.main([str(a) for a in base + flags]) == 0
        found[bool(flags)] = ensure_artifacts(request_from_args(args, 512, Compute(progress=False)), _quiet)
    capsys.readouterr()
    normed, raw = found[False], found[True]
    assert normed.reused and raw.reused and normed.cache_key != raw.cache_key
    assert normed.cache_dir != raw.cache_dir and normed.backbone == raw.backbone == "features"
    assert normed.meta["normalise"] is True and raw.meta["normalise"] is False
    for arts, (q, g) in ((normed, (fq / np.linalg.norm(fq, axis=1, keepdims=True),
                                   fg / np.linalg.norm(fg, axis=1, keepdims=True))),
                         (raw, (fq.astype(np.float32).astype(np.float64), fg.astype(np.float32)))):
        want = np.sqrt(((q[:, None, :] - g[None]) ** 2).sum(-1))
        np.testing.assert_allclose(arts.qg_dists.numpy(), want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(arts.features("query"), q, rtol=1e-6, atol=1e-6)
        gg = np.sqrt(((g[:, None, :] - g[None]) ** 2).sum(-1))
        np.fill_diagonal(gg, np.inf)
        np.testing.assert_allclose(arts.graph.distances.numpy(), np.sort(gg, axis=1)[:, :8], rtol=1e-5, atol=1e-5)
    assert arts.dataset.root is None and all(it.path is None for it in arts.dataset.gallery)


def _bad_case(tmp: Path, case: str) -> list:
    rng = np.random.default_rng(0)
    fq, fg = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(6, 3)).astype(np.float32)
    lq, lg = np.array([0, 1, 0, 1]), np.array([0, 1, 0, 1, 0, 1])
    labels = {"query": lq, "gallery": lg}
    q, g, lab = tmp / "q.npy", tmp / "g.npy", tmp / "l.npz"
    flags = ["--query-features", q, "--gallery-features", g, "--labels", lab]
    if case == "missing file":
        q = tmp / "nope.npy"
        flags[1] = q
    elif case == "not 2-D":
        fq = fq[:, 0]
    elif case == "D mismatch":
        fg = fg[:, :2]
    elif case == "NaN":
        fg[2, 1] = np.nan
    elif case == "inf":
        fq[0, 0] = np.inf
    elif case == "zero row":
        fq[3] = 0
    elif case == "no rows":
        fq = fq[:0]
    elif case == "labels length":
        labels["gallery"] = lg[:-1]
    elif case == "names length":
        labels["query_names"] = np.array(["a.png", "b.png"])
    elif case == "names not strings":
        labels["gallery_names"] = np.arange(6)
    elif case == "float labels":
        labels["query"] = lq + 0.5
    elif case == "ragged parquet":
        q = tmp / "q.parquet"
        pq.write_table(pa.table({"f": pa.array([[1.0, 2.0], [1.0]], pa.list_(pa.float32()))}), q)
        flags[1] = q
    elif case == "one side only":
        flags = flags[:2]
    elif case == "features and distances":
        flags += ["--qg", q, "--gg", g]
    elif case == "features and backbone":
        flags += ["--backbone", "demo"]
    elif case == "no-normalise alone":
        flags = ["--no-normalise"]
    elif case == "per_class":
        flags += ["--per_class", 2]
    if q.suffix == ".npy" and case != "missing file":
        np.save(q, fq)
    np.save(g, fg)
    np.savez(lab, **labels)
    return flags


BAD = {   # case: what the one line must say
    "missing file": "file not found", "not 2-D": "2-D float array", "D mismatch": "3 dimensions but",
    "NaN": "NaN or infinite", "inf": "NaN or infinite", "zero row": "all zeros", "no rows": "0 vectors",
    "labels length": "gallery labels must be 6 integers", "names length": "query_names must be 4 strings",
    "names not strings": "gallery_names must be 6 strings", "float labels": "query labels must be 4 integers",
    "ragged parquet": "different lengths", "one side only": "go together",
    "features and distances": "exclude each other", "features and backbone": "drop --backbone",
    "no-normalise alone": "--no-normalise applies", "per_class": "--per_class",
}


@pytest.mark.parametrize("command", ["sweep", "extract"])
@pytest.mark.parametrize("case", BAD)
def test_bad_features_one_line_exit_2_nothing_written(tmp_path, capsys, case, command):
    inputs = tmp_path / "in"
    inputs.mkdir()
    flags = _bad_case(inputs, case)
    out = tmp_path / "out"
    argv = ["--dataset", "mine", "--cache_root", out / "cache", *flags]
    if command == "sweep":
        code = sweep.main([str(a) for a in argv + ["--db", out / "r.duckdb", "--device", "cpu"]])
    else:
        code = extract.main([str(a) for a in argv + ["--quiet"]])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1 and "error" in err and BAD[case] in err, err
    assert not out.exists(), list(out.rglob("*"))


def test_features_sweep_is_browsable_with_paths_only_under_data_root(tmp_path, images, capsys):
    root, arts = images
    files = _write_inputs(tmp_path / "in", arts)
    runs = {}
    for name, data_root in (("under", root), ("elsewhere", tmp_path / "in"), ("none", None)):
        db = tmp_path / f"{name}.duckdb"
        code, _, err = run(["--dataset", "custom", "--query-features", files["q.npy"], "--gallery-features",
                            files["g.npy"], "--labels", files["labels"], "--cache_root", tmp_path / "cache",
                            "--db", db, *(["--data_root", data_root] if data_root else []), *GRID], capsys)
        assert code == 0, err
        with connect_reader(db) as con:
            table = read.runs(con)
            assert len(table) == 2 and set(table["backbone"]) == {"features"}
            run_id = int(table["run_id"].iloc[0])
            assert read.n_queries(con, run_id) == len(arts.dataset.query)
            assert len(read.metrics_by_iteration(con, [run_id])) > 0
            top = read.query_topn(con, run_id, 1, 2)
            item = read.query_item(con, run_id, 1)
            runs[name] = (read.dataset_root(con, run_id), item["path"], list(top["path"]), top)
    got_root, q_path, g_paths, top = runs["under"]
    assert Path(got_root) == root.resolve() and q_path == arts.dataset.query[1].path
    assert all((root / p).is_file() for p in g_paths) and g_paths
    want = [arts.dataset.gallery[int(i)].path for i in top["gallery_idx"]]
    assert g_paths == want
    _, q_path, g_paths, _ = runs["elsewhere"]             # the names do not resolve there: no paths
    assert q_path is None and all(p is None for p in g_paths)
    got_root, q_path, g_paths, top = runs["none"]        # no root: the names are kept, as names
    assert got_root is None and q_path == arts.dataset.query[1].path
    assert g_paths == [arts.dataset.gallery[int(i)].path for i in top["gallery_idx"]]


def test_npy_distance_import_is_swept_end_to_end(tmp_path, capsys):
    qg, gg, labels_q, labels_g = toy_distances(q=12, g=40)
    np.save(tmp_path / "qg.npy", qg.numpy())
    np.save(tmp_path / "gg.npy", gg.numpy())
    np.savez(tmp_path / "labels.npz", query=labels_q, gallery=labels_g)
    src = ["--qg", tmp_path / "qg.npy", "--gg", tmp_path / "gg.npy", "--labels", tmp_path / "labels.npz",
           "--cache_root", tmp_path / "cache"]
    assert extract.main([str(a) for a in ["--dataset", "mine", *src, "--quiet"]]) == 0
    capsys.readouterr()
    db = tmp_path / "r.duckdb"
    code, out, err = run(["--dataset", "mine", *src, "--db", db, "--kg", 4, "--kq", 3, 6, "--n_times", 2,
                          "--top-n", 5, "--device", "cpu"], capsys)
    assert code == 0, err
    assert "reusing artifacts" in err and out.count("(new)") == 2
    with connect_reader(db) as con:
        assert con.execute("SELECT name, root FROM datasets").fetchall() == [("mine", None)]
        assert con.execute("SELECT backbone FROM artifacts").fetchall() == [("import",)]
        for (run_id,) in con.execute("SELECT run_id FROM runs ORDER BY 1").fetchall():
            check_run_equals_engine(con, run_id, qg, gg, labels_q, labels_g, 5)


def test_unlabelled_input_is_told_plainly_that_no_metrics_will_be_computed() -> None:
    labels, note = sweep.unanswerable(np.full(4, -1), np.full(6, -1), skip=False)
    assert (labels == -1).all()
    assert "no metrics will be computed" in note and "--labels" in note and "class_names" in note
    _, note = sweep.unanswerable(np.array([0, -1, 1]), np.array([0, 1]), skip=False)
    assert note == "1 queries of unknown label (-1) are left out of the metrics"
