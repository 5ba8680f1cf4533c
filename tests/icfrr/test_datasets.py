"""Dataset layouts of docs/SPEC.md section 5: file lists, custom, folder; per_class; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icfrr.datasets import DatasetError, load_dataset
from tests.icfrr.image_data import shape_image

TUBERLIN_QUERIES = [("png_ready/alarm clock/1.png", 3), ("png_ready/alarm clock/2 copy.png", 3),
                    ("png_ready/apple/7.png", 0), ("png_ready/alarm clock/3.png", 3), ("png_ready/apple/8.png", 0)]
TUBERLIN_GALLERY = [("ImageResized_ready/apple/a b.jpg", 0), ("ImageResized_ready/alarm clock/x.jpg", 3)]


def _write_list(path: Path, entries: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p} {lab}\n" for p, lab in entries))


def test_tuberlin_file_lists_with_spaces_in_paths_and_class_names(tmp_path):
    _write_list(tmp_path / "TUBerlin/zeroshot/png_ready_filelist_zero.txt", TUBERLIN_QUERIES)
    _write_list(tmp_path / "TUBerlin/zeroshot/ImageResized_ready_filelist_zero.txt", TUBERLIN_GALLERY)
    ds = load_dataset("tuberlin", tmp_path)
    assert ds.root == tmp_path / "TUBerlin"
    assert [it.path for it in ds.query] == [p for p, _ in TUBERLIN_QUERIES]
    assert ds.labels_q.tolist() == [3, 3, 0, 3, 0]
    assert [it.class_name for it in ds.query] == ["alarm clock", "alarm clock", "apple", "alarm clock", "apple"]
    assert [it.idx for it in ds.gallery] == [0, 1]
    assert ds.gallery[0].path == "ImageResized_ready/apple/a b.jpg"
    assert ds.class_names == {3: "alarm clock", 0: "apple"}
    assert ds.absolute_paths("query")[1] == tmp_path / "TUBerlin/png_ready/alarm clock/2 copy.png"


def test_per_class_keeps_the_first_n_of_each_label_in_list_order(tmp_path):
    _write_list(tmp_path / "TUBerlin/zeroshot/png_ready_filelist_zero.txt", TUBERLIN_QUERIES)
    _write_list(tmp_path / "TUBerlin/zeroshot/ImageResized_ready_filelist_zero.txt", TUBERLIN_GALLERY)
    ds = load_dataset("tuberlin", tmp_path, per_class=2)
    assert [it.path for it in ds.query] == [p for p, _ in TUBERLIN_QUERIES[:3]] + [TUBERLIN_QUERIES[4][0]]
    assert [it.idx for it in ds.query] == [0, 1, 2, 3]
    with pytest.raises(DatasetError, match="per_class"):
        load_dataset("tuberlin", tmp_path, per_class=0)


@pytest.mark.parametrize("name,folder", [("sketchy_zs1", "zeroshot1"), ("sketchy_zs2", "zeroshot2")])
def test_sketchy_file_lists(tmp_path, name, folder):
    q = [("sketch/tx_000000000000_ready/hot air balloon/n1-1.png", 5)]
    g = [("photo/hot air balloon/n1.jpg", 5), ("photo/pear/n2.jpg", 2)]
    _write_list(tmp_path / f"Sketchy/{folder}/sketch_tx_000000000000_ready_filelist_zero.txt", q)
    _write_list(tmp_path / f"Sketchy/{folder}/all_photo_filelist_zero.txt", g)
    ds = load_dataset(name, tmp_path)
    assert ds.root == tmp_path / "Sketchy"
    assert ds.query[0].class_name == "hot air balloon"
    assert ds.labels_g.tolist() == [5, 2]


@pytest.mark.parametrize("line", ["no_label_here.png", "a.png x", "a.png -3", " 4"])
def test_malformed_file_list_line_names_file_and_line(tmp_path, line):
    path = tmp_path / "TUBerlin/zeroshot/png_ready_filelist_zero.txt"
    path.parent.mkdir(parents=True)
    path.write_text(f"ok/a/1.png 1\n{line}\n")
    _write_list(tmp_path / "TUBerlin/zeroshot/ImageResized_ready_filelist_zero.txt", TUBERLIN_GALLERY)
    with pytest.raises(DatasetError, match=r"png_ready_filelist_zero.txt:2"):
        load_dataset("tuberlin", tmp_path)


def test_missing_file_list_and_data_root(tmp_path):
    with pytest.raises(DatasetError, match="file list not found"):
        load_dataset("sketchy_zs1", tmp_path)
    with pytest.raises(DatasetError, match="needs --data_root"):
        load_dataset("tuberlin", None)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet", tmp_path)


def _custom(root: Path) -> Path:
    for name in ("b.png", "a.png", "c.png"):
        shape_image(root / "query" / name, "circle", False)
    for name in ("z.jpg", "y.png"):
        shape_image(root / "gallery" / name, "square", True)
    (root / "query" / "notes.txt").write_text("not an image")
    return root


def test_custom_layout_without_labels_is_sorted_and_unlabelled(tmp_path):
    ds = load_dataset("custom", _custom(tmp_path))
    assert [it.path for it in ds.query] == ["query/a.png", "query/b.png", "query/c.png"]
    assert [it.path for it in ds.gallery] == ["gallery/y.png", "gallery/z.jpg"]
    assert (ds.labels_q == -1).all() and (ds.labels_g == -1).all()
    assert ds.n_classes == 0


def test_custom_layout_with_labels(tmp_path):
    root = _custom(tmp_path)
    (root / "labels.json").write_text(json.dumps({"query": {"a.png": 1, "b.png": 0, "c.png": 1},
                                                  "gallery": {"y.png": 0, "z.jpg": 1}}))
    ds = load_dataset("custom", root)
    assert ds.labels_q.tolist() == [1, 0, 1]
    assert ds.labels_g.tolist() == [0, 1]
    assert load_dataset("custom", root, per_class=1).labels_q.tolist() == [1, 0]


@pytest.mark.parametrize("labels,match", [
    ({"query": {"a.png": 1, "b.png": 0}, "gallery": {"y.png": 0, "z.jpg": 1}}, "no query label for c.png"),
    ({"query": {"a.png": 1, "b.png": 0, "c.png": "x"}, "gallery": {}}, "must be an integer"),
    ({"gallery": {}}, "must hold"),
])
def test_custom_layout_bad_labels(tmp_path, labels, match):
    root = _custom(tmp_path)
    (root / "labels.json").write_text(json.dumps(labels))
    with pytest.raises(DatasetError, match=match):
        load_dataset("custom", root)


def test_custom_layout_missing_folder_and_unreadable_json(tmp_path):
    with pytest.raises(DatasetError, match="query folder not found"):
        load_dataset("custom", tmp_path)
    root = _custom(tmp_path)
    (root / "labels.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset("custom", root)


def test_folder_layout_shares_labels_across_sides(tmp_path):
    for side, classes in (("query", ["cat", "dog"]), ("gallery", ["bird", "cat", "dog"])):
        for c in classes:
            for i in range(3):
                shape_image(tmp_path / side / c / f"{i}.png", "circle", side == "gallery")
    ds = load_dataset("folder", tmp_path, per_class=2)
    assert ds.class_names == {0: "bird", 1: "cat", 2: "dog"}
    assert ds.labels_q.tolist() == [1, 1, 2, 2]
    assert ds.labels_g.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.query[0].path == "query/cat/0.png"
    assert all((tmp_path / it.path).is_file() for it in (*ds.query, *ds.gallery))


def test_folder_layout_without_images(tmp_path):
    (tmp_path / "query" / "cat").mkdir(parents=True)
    (tmp_path / "gallery").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_dataset("folder", tmp_path)


def test_fingerprint_follows_paths_and_labels(tmp_path):
    root = _custom(tmp_path)
    before = load_dataset("custom", root).fingerprint()
    assert load_dataset("custom", root).fingerprint() == before
    (root / "labels.json").write_text(json.dumps({"query": {"a.png": 1, "b.png": 0, "c.png": 1},
                                                  "gallery": {"y.png": 0, "z.jpg": 1}}))
    assert load_dataset("custom", root).fingerprint() != before
    assert np.array_equal(load_dataset("custom", root).labels_g, [0, 1])
