"""Parquet artifacts: bit-identical round trips, DuckDB access, reuse by key, atomic
writes, and import of the published .pth cache and .npy matrices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import torch

import store.artifacts as artifacts
from jobs import extract
from jobs.artifacts import ArtifactRequest, Compute, DistanceFiles, Images, ensure_artifacts, request_from_args
from store.artifacts import ArtifactError, CachePolicy, graph_k
from store.imports import SourceError
from store.parquet_rows import read_meta, read_rows, write_rows
from tests.icfrr.image_data import brute_force_neighbors, folder_dataset


def _quiet(_msg: str) -> None:
    pass


QUIET = Compute(num_workers=0, progress=False)


def _demo(root, cache, cache_policy=CachePolicy.REUSE, log=_quiet, **kw):
    """Demo-descriptor features of the folder dataset under ``root``."""
    return ensure_artifacts(ArtifactRequest("folder", root, source=Images("demo"), cache_root=cache,
                                            cache=cache_policy, compute=QUIET, **kw), log)


def _imported(dataset, cache_root, data_root=None, log=_quiet, **kw):
    """No source named: the published cache under ``cache_root`` is imported when present."""
    return ensure_artifacts(ArtifactRequest(dataset, data_root, cache_root=cache_root, **kw), log)


def test_matrix_round_trip_is_bit_identical_and_duckdb_reads_it(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(37, 1001)).astype(np.float32)
    m[0, :4] = [-0.0, np.float32(1e-45), np.finfo(np.float32).max, np.float32(np.pi)]
    idx = rng.integers(0, 2**31 - 1, size=(37, 5)).astype(np.int32)
    path = tmp_path / "m.parquet"
    write_rows(path, "row_idx", {"values": m, "ids": idx}, {"kind": "test", "shape": [37, 1001]})
    back, meta = read_rows(path, ["values", "ids"])
    assert back["values"].tobytes() == m.tobytes() and back["values"].dtype == np.float32
    assert np.array_equal(back["ids"], idx) and back["ids"].dtype == np.int32
    assert meta["kind"] == "test" and meta["columns"]["values"] == [37, 1001, "float32"]
    con = duckdb.connect()
    got = con.execute(f"SELECT values[1 + 17] FROM read_parquet('{path}') WHERE row_idx = 5").fetchone()[0]
    assert np.float32(got) == m[5, 17]
    n = con.execute(f"SELECT count(*), sum(len(values)) FROM read_parquet('{path}')").fetchone()
    assert n == (37, 37 * 1001)
    kv = con.execute(f"SELECT value FROM parquet_kv_metadata('{path}') WHERE key = 'icfrr'").fetchone()[0]
    assert json.loads(kv)["shape"] == [37, 1001]
    assert not list(tmp_path.glob(".*.tmp"))


def test_graph_size_rule():
    assert graph_k(28000, 16) == 512
    assert graph_k(28000, 1000) == 1000
    assert graph_k(100, 16) == 99


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return folder_dataset(tmp_path_factory.mktemp("shapes"))


def test_features_artifacts_are_written_reused_and_match_brute_force(tmp_path, shapes_root):
    cache = tmp_path / "cache"
    art = _demo(shapes_root, cache)
    assert not art.reused and art.cache_dir.parent == cache / "folder" / "-1"
    fq, fg = art.features("query"), art.features("gallery")
    expected = np.sqrt(((fq[:, None, :].astype(np.float64) - fg[None]) ** 2).sum(-1))
    np.testing.assert_allclose(art.qg_dists.numpy(), expected, atol=1e-5)
    assert art.graph.k == len(fg) - 1
    nb_idx, nb_dist = brute_force_neighbors(fg, art.graph.k)
    np.testing.assert_allclose(art.graph.distances.numpy(), nb_dist, atol=1e-5)
    assert (art.graph.indices.numpy()[:, :3] == nb_idx[:, :3]).mean() > 0.9   # near-ties may swap
    assert art.labels_q.tolist() == [0, 0, 1, 1, 2, 2]
    # On disk: readable without our code, complete marker last, metadata naming its source.
    con = duckdb.connect()
    qg_file = art.paths["qg_dists"]
    row = con.execute(f"SELECT dists FROM read_parquet('{qg_file}') WHERE query_idx = 3").fetchone()[0]
    assert np.array_equal(np.array(row, np.float32), art.qg_dists[3].numpy())
    items = con.execute(f"SELECT side, count(*) FROM read_parquet('{art.paths['items']}') GROUP BY side "
                        "ORDER BY side").fetchall()
    assert items == [("gallery", 12), ("query", 6)]
    meta = read_meta(art.paths["neighbors"])
    assert meta["backbone"] == "demo" and meta["dataset"] == "folder" and meta["k"] == art.graph.k
    assert meta["dataset_fingerprint"] == art.dataset.fingerprint() and meta["created_at"]
    assert (art.cache_dir / "COMPLETE.json").is_file()
    stamps = {p: p.stat().st_mtime_ns for p in art.cache_dir.iterdir()}
    again = _demo(shapes_root, cache)
    assert again.reused and again.cache_key == art.cache_key
    assert again.qg_dists.numpy().tobytes() == art.qg_dists.numpy().tobytes()
    assert torch.equal(again.graph.indices, art.graph.indices)
    assert {p: p.stat().st_mtime_ns for p in art.cache_dir.iterdir()} == stamps
    assert np.array_equal(again.features("gallery"), fg)
    forced = _demo(shapes_root, cache, CachePolicy.FORCE)
    assert not forced.reused and forced.qg_dists.numpy().tobytes() == art.qg_dists.numpy().tobytes()
    assert (forced.cache_dir / "COMPLETE.json").stat().st_mtime_ns != stamps[art.cache_dir / "COMPLETE.json"]


def test_other_per_class_or_backbone_gets_another_key(tmp_path, shapes_root):
    a = _demo(shapes_root, tmp_path, CachePolicy.NONE)
    b = _demo(shapes_root, tmp_path, CachePolicy.NONE, per_class=1)
    assert a.cache_key != b.cache_key and b.qg_dists.shape == (3, 3)
    assert a.cache_dir is None and a.paths == {} and not any(tmp_path.iterdir())


def test_interrupted_write_leaves_nothing_that_looks_valid(tmp_path, shapes_root, monkeypatch):
    cache = tmp_path / "cache"
    real = artifacts._write_graph

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifacts, "_write_graph", crash)
    with pytest.raises(KeyboardInterrupt):
        _demo(shapes_root, cache)
    leftovers = [p for p in (cache / "folder" / "-1").rglob("*") if p.is_file()]
    assert leftovers == []
    monkeypatch.setattr(artifacts, "_write_graph", real)
    art = _demo(shapes_root, cache)
    assert not art.reused and art.paths["neighbors"].is_file()


def _published(folder, qg, gg, labels=None):
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(torch.from_numpy(qg), folder / "qg_dists.pth")
    torch.save(torch.from_numpy(gg), folder / "gg_dists.pth")
    if labels is not None:
        torch.save({"query": torch.tensor(labels[0]), "gallery": torch.tensor(labels[1])}, folder / "labels.pth")


def _case(n_q=5, n_g=9, seed=0):
    rng = np.random.default_rng(seed)
    fq, fg = rng.normal(size=(n_q, 4)), rng.normal(size=(n_g, 4))
    qg = np.sqrt(((fq[:, None] - fg[None]) ** 2).sum(-1)).astype(np.float32)
    gg = np.sqrt(((fg[:, None] - fg[None]) ** 2).sum(-1)).astype(np.float32)
    return qg, gg, (rng.integers(0, 3, n_q), rng.integers(0, 3, n_g))


def test_published_cache_is_imported_bit_for_bit(tmp_path):
    qg, gg, labels = _case()
    _published(tmp_path / "custom" / "-1", qg, gg, labels)
    notes = []
    art = _imported("custom", tmp_path, log=notes.append)
    assert art.backbone == "import" and any("published" in n for n in notes)
    assert art.qg_dists.numpy().tobytes() == qg.tobytes()
    assert art.labels_q.tolist() == labels[0].tolist() and art.labels_g.tolist() == labels[1].tolist()
    g = gg.astype(np.float64)
    np.fill_diagonal(g, np.inf)
    order = np.argsort(g, axis=1, kind="stable")[:, :8]
    assert np.array_equal(art.graph.indices.numpy(), order)
    assert art.dataset.root is None and all(it.path is None for it in art.dataset.query)
    stored = read_rows(art.paths["qg_dists"], ["dists"])[0]["dists"]
    assert stored.tobytes() == qg.tobytes()
    sources = read_meta(art.paths["qg_dists"])["sources"]
    assert set(sources) == {"qg", "gg", "labels"} and len(sources["gg"]["sha256"]) == 64
    assert _imported("custom", tmp_path).reused


def test_import_takes_item_paths_from_matching_images(tmp_path, shapes_root):
    qg, gg, _ = _case(6, 12)
    _published(tmp_path / "folder" / "-1", qg, gg)
    art = _imported("folder", tmp_path, shapes_root, cache=CachePolicy.NONE)
    assert art.dataset.root == shapes_root and art.dataset.query[0].path == "query/circle/q0.png"
    assert art.labels_g.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    qg2, gg2, _ = _case(5, 12)
    _published(tmp_path / "folder" / "-1", qg2, gg2)
    with pytest.raises(ArtifactError, match="--per_class"):
        _imported("folder", tmp_path, shapes_root, cache=CachePolicy.NONE)


def test_npy_matrices_with_npz_labels(tmp_path):
    qg, gg, labels = _case(4, 7, seed=1)
    np.save(tmp_path / "qg.npy", qg)
    np.save(tmp_path / "gg.npy", gg.astype(np.float64))
    np.savez(tmp_path / "labels.npz", query=labels[0], gallery=labels[1])
    art = ensure_artifacts(ArtifactRequest(
        "mine", source=DistanceFiles(tmp_path / "qg.npy", tmp_path / "gg.npy", tmp_path / "labels.npz"),
        cache_root=tmp_path / "c", kg_max=3), _quiet)
    assert art.qg_dists.numpy().tobytes() == qg.tobytes() and art.graph.k == 6
    assert art.cache_dir.parent == tmp_path / "c" / "mine" / "-1"
    assert art.labels_g.tolist() == labels[1].tolist()


def test_larger_kg_max_rebuilds_the_cached_graph(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "MIN_GRAPH_K", 2)
    qg, gg, _ = _case(3, 10, seed=2)
    _published(tmp_path / "custom" / "-1", qg, gg)
    small = _imported("custom", tmp_path, kg_max=2)
    assert small.graph.k == 2
    big = _imported("custom", tmp_path, kg_max=5)
    assert big.reused and big.graph.k == 5
    assert json.loads((big.cache_dir / "COMPLETE.json").read_text())["neighbors_k"] == 5
    assert read_meta(big.paths["neighbors"])["k"] == 5
    assert torch.equal(big.graph.indices[:, :2], small.graph.indices)
    assert _imported("custom", tmp_path, kg_max=4).graph.k == 5


@pytest.mark.parametrize("problem,error,match", [
    ("nan", SourceError, "NaN"),
    ("gg_shape", ArtifactError, "must be"),
    ("pickled", SourceError, "pickled Python objects"),
    ("labels_len", SourceError, "labels must be"),
    ("one_d", SourceError, "2-D float matrix"),
])
def test_bad_imports_fail_in_one_line_and_write_nothing(tmp_path, problem, error, match):
    qg, gg, labels = _case()
    folder = tmp_path / "custom" / "-1"
    if problem == "nan":
        qg[2, 3] = np.nan
    if problem == "gg_shape":
        gg = gg[:-1, :-1]
    if problem == "labels_len":
        labels = (labels[0][:-1], labels[1])
    _published(folder, qg, gg, labels)
    if problem == "pickled":
        torch.save({"d": torch.from_numpy(qg), "f": np.array}, folder / "qg_dists.pth")
    if problem == "one_d":
        torch.save(torch.zeros(5), folder / "qg_dists.pth")
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(error, match=match) as err:
        _imported("custom", tmp_path)
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in folder.iterdir()) == before


def _from_flags(tmp_path, *flags):
    """The artifacts of ``python -m jobs.extract`` flags (the request both commands build)."""
    args = extract.build_parser().parse_args(["--dataset", "custom", "--data_root", str(tmp_path),
                                              "--cache_root", str(tmp_path), *map(str, flags)])
    return ensure_artifacts(request_from_args(args, args.kg_max, QUIET), _quiet)


@pytest.mark.parametrize("flags,match", [
    (["--backbone", "import"], "no published distance cache"),
    (["--qg", "x.npy"], "needs both"),
    (["--labels", "l.npz"], "only read together"),
    (["--per_class", 0], "per_class"),
    (["--kg-max", 0], "kg_max"),
    (["--force-cache", "--no-cache"], "contradict"),
])
def test_bad_arguments(tmp_path, flags, match):
    with pytest.raises(ArtifactError, match=match):
        _from_flags(tmp_path, *flags)


def test_imported_distances_refuse_a_backbone(tmp_path):
    qg, gg, _ = _case()
    np.save(tmp_path / "qg.npy", qg)
    np.save(tmp_path / "gg.npy", gg)
    with pytest.raises(ArtifactError, match="drop --backbone"):
        _from_flags(tmp_path, "--qg", tmp_path / "qg.npy", "--gg", tmp_path / "gg.npy", "--backbone", "demo")


def test_a_damaged_cache_file_is_recomputed_not_trusted(tmp_path):
    qg, gg, _ = _case(4, 6, seed=3)
    _published(tmp_path / "custom" / "-1", qg, gg)
    art = _imported("custom", tmp_path)
    art.paths["qg_dists"].write_bytes(art.paths["qg_dists"].read_bytes()[:100])
    notes = []
    again = _imported("custom", tmp_path, log=notes.append)
    assert not again.reused and any("unreadable" in n for n in notes)
    assert again.qg_dists.numpy().tobytes() == qg.tobytes()
    assert _imported("custom", tmp_path).reused


def _swapped_root(root):
    """A folder dataset with the same file names as ``folder_dataset`` but other pictures in them."""
    from tests.icfrr.image_data import shape_image
    swap = {"circle": "square", "square": "triangle", "triangle": "circle"}
    for c, other in swap.items():
        for i in range(2):
            shape_image(root / "query" / c / f"q{i}.png", other, False, offset=i)
        for i in range(4):
            shape_image(root / "gallery" / c / f"g{i}.png", c if i < 2 else other, True, offset=i - 1)
    return root


def _demo_features(root, cache, **kw):
    return _demo(root, cache, **kw)


def test_same_file_names_in_another_root_get_their_own_features(tmp_path, shapes_root):
    """Issue 11: a second data root with the same names must not reuse the first root's features."""
    cache = tmp_path / "cache"
    first = _demo_features(shapes_root, cache)
    other = _swapped_root(tmp_path / "other")
    second = _demo_features(other, cache)
    truth = _demo_features(other, tmp_path / "fresh_cache")      # the oracle: a cache that never saw root 1
    assert not second.reused and second.cache_key != first.cache_key
    assert second.qg_dists.numpy().tobytes() == truth.qg_dists.numpy().tobytes()
    assert second.qg_dists.numpy().tobytes() != first.qg_dists.numpy().tobytes()
    assert _demo_features(shapes_root, cache).reused and _demo_features(other, cache).reused


def test_an_image_replaced_in_place_is_extracted_again(tmp_path):
    """Issue 14 W3: identity by content, so restoring the old mtime does not hide the new pixels."""
    import os
    from tests.icfrr.image_data import shape_image
    root = folder_dataset(tmp_path / "data")
    cache = tmp_path / "cache"
    first = _demo_features(root, cache)
    target = root / "gallery" / "circle" / "g0.png"
    st = target.stat()
    shape_image(target, "triangle", True)                        # other pixels, same name
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))         # its old mtime back, as touch -r does
    again = _demo_features(root, cache)
    assert not again.reused and again.cache_key != first.cache_key
    g0 = again.dataset.gallery[0]
    assert g0.path == "gallery/circle/g0.png"
    assert not np.array_equal(again.features("gallery")[0], first.features("gallery")[0])
    np.testing.assert_array_equal(again.features("gallery")[1:], first.features("gallery")[1:])
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 2))     # touched only: same content, same key
    touched = _demo_features(root, cache)
    assert touched.reused and touched.cache_key == again.cache_key


def test_the_store_persists_only_it_does_not_load_the_feature_code():
    """Layering: store -> icfrr's pure pieces only; extraction (icfrr.features, timm) and jobs stay out."""
    code = ("import sys, store.artifacts, store.imports, store.read, store.writes, store.report; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jobs', 'timm', 'dashboard') "
            "or m.startswith('icfrr.features')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
