"""The generated demo: deterministic, in the folder layout, and retrievable by the demo backbone."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

import icfrr
from icfrr.datasets import DatasetError, ensure_demo, load_dataset
from icfrr.datasets.demo import CLASSES, demo_version, generate_demo
from icfrr.features import extract_features, load_backbone


def _digest(root) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    generate_demo(tmp_path / "a", seed=3, n_query=1, n_gallery=2)
    generate_demo(tmp_path / "b", seed=3, n_query=1, n_gallery=2)
    generate_demo(tmp_path / "c", seed=4, n_query=1, n_gallery=2)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert len(a) == len(CLASSES) * 3
    assert a == b
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a)


def test_ensure_demo_generates_once_in_folder_layout(tmp_path):
    root = tmp_path / "demo"
    assert ensure_demo(root, n_query=2, n_gallery=3) == root
    stamp = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    ensure_demo(root, n_query=2, n_gallery=3)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == stamp
    ds = load_dataset("folder", root)
    assert len(CLASSES) >= 10 and ds.n_classes == len(CLASSES)
    assert len(ds.query) == 2 * len(CLASSES) and len(ds.gallery) == 3 * len(CLASSES)
    assert set(ds.class_names.values()) == set(CLASSES)
    assert not list(tmp_path.glob(".demo.tmp-*"))


def test_sketches_are_dark_lines_on_white_and_photos_are_coloured(tmp_path):
    from PIL import Image
    root = ensure_demo(tmp_path / "demo", n_query=1, n_gallery=1)
    sketch = np.asarray(Image.open(next((root / "query" / "house").iterdir())).convert("RGB"), float)
    photo = np.asarray(Image.open(next((root / "gallery" / "house").iterdir())).convert("RGB"), float)
    assert (sketch.min(-1) > 240).mean() > 0.8          # mostly white paper
    assert sketch.min() < 80                            # with dark strokes
    assert np.ptp(sketch, axis=-1).max() < 10           # and no colour
    assert (photo.min(-1) > 240).mean() < 0.05          # no white background
    assert np.ptp(photo, axis=-1).mean() > 15           # coloured


def test_another_seed_is_another_dataset_version(tmp_path):
    import dataclasses
    a = ensure_demo(tmp_path / "a", seed=1, n_query=1, n_gallery=1)
    b = ensure_demo(tmp_path / "b", seed=2, n_query=1, n_gallery=1)
    da, db = load_dataset("folder", a), load_dataset("folder", b)
    assert da.fingerprint() == db.fingerprint()            # same paths and labels...
    va = dataclasses.replace(da, version=demo_version(a))
    vb = dataclasses.replace(db, version=demo_version(b))
    assert va.fingerprint() != vb.fingerprint()            # ...but other images
    ensure_demo(tmp_path / "a", seed=2, n_query=1, n_gallery=1)   # regenerated in place
    assert demo_version(tmp_path / "a") == demo_version(b)


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(DatasetError, match="not a generated demo"):
        ensure_demo(tmp_path, n_query=1, n_gallery=1)
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_demo_backbone_retrieves_well_above_chance(tmp_path):
    ds = load_dataset("folder", ensure_demo(tmp_path / "demo", n_query=3, n_gallery=8))
    bb = load_backbone("demo")
    fq = extract_features(bb, ds.absolute_paths("query"), num_workers=0, progress=False)
    fg = extract_features(bb, ds.absolute_paths("gallery"), num_workers=0, progress=False)
    ranking = torch.argsort(icfrr.pairwise_distances(fq, fg), dim=1, stable=True)
    chance = 1 / len(CLASSES)
    assert icfrr.evaluate(ranking, ds.labels_q, ds.labels_g)["map_all"] > 2.5 * chance
