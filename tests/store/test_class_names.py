"""Class names from every route (issue 15): ``class_names`` in a labels file (``.npz``,
``.json``, ``.pth``), ``class_names.json`` beside the published cache; item names kept
without ``--data_root``. Oracle: the names written, indexed by each item's label."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from jobs.artifacts import (ArtifactRequest, Compute, DistanceFiles, FeatureFiles, PublishedCache,
                            ensure_artifacts)
from store.artifacts import CachePolicy
from store.imports import SourceError, read_class_names

REPO = Path(__file__).resolve().parents[2]
NAMES = ["ant", "bee", "cat"]


def _quiet(_msg: str) -> None:
    pass


@pytest.mark.parametrize("suffix", [".npz", ".json", ".pth"])
def test_labels_files_may_carry_class_names(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"labels{suffix}"
    record = {"query": [0, 1], "gallery": [2, 1, 0]}
    if suffix == ".npz":
        np.savez(path, **record, class_names=np.array(NAMES))
    elif suffix == ".json":
        path.write_text(json.dumps(record | {"class_names": NAMES}))
    else:
        torch.save(record | {"class_names": NAMES}, path)
    assert read_class_names(path) == dict(enumerate(NAMES))
    bare = tmp_path / f"bare{suffix}"
    (np.savez(bare, **record) if suffix == ".npz" else
     bare.write_text(json.dumps(record)) if suffix == ".json" else torch.save(record, bare))
    assert read_class_names(bare) is None


def test_class_names_json_is_a_list_or_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "class_names.json"
    path.write_text(json.dumps(NAMES))
    assert read_class_names(path) == {0: "ant", 1: "bee", 2: "cat"}
    path.write_text(json.dumps({"2": "cat", "0": "ant"}))
    assert read_class_names(path) == {2: "cat", 0: "ant"}


@pytest.mark.parametrize("bad", [[1, 2], {"x": "cat"}, {"-1": "cat"}, [["a"]], "cat"])
def test_names_that_are_not_strings_by_label_are_refused(tmp_path: Path, bad: object) -> None:
    path = tmp_path / "class_names.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(SourceError, match="class_names"):
        read_class_names(path)


def _request(dataset: str, source: object, tmp_path: Path) -> ArtifactRequest:
    return ArtifactRequest(dataset, source=source, cache_root=tmp_path / "cache",
                           cache=CachePolicy.NONE, compute=Compute(progress=False))


def test_feature_files_carry_class_names_and_item_names_without_data_root(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lq, lg = np.array([0, 2, 1, 2]), np.array([1, 0, 2, 2, 1, 0])
    np.save(tmp_path / "q.npy", rng.normal(size=(4, 5)).astype(np.float32))
    np.save(tmp_path / "g.npy", rng.normal(size=(6, 5)).astype(np.float32))
    gnames = [f"photos/{j}.jpg" for j in range(6)]
    np.savez(tmp_path / "labels.npz", query=lq, gallery=lg, class_names=np.array(NAMES),
             gallery_names=np.array(gnames))
    arts = ensure_artifacts(_request("mine", FeatureFiles(tmp_path / "q.npy", tmp_path / "g.npy",
                                                          tmp_path / "labels.npz"), tmp_path), _quiet)
    ds = arts.dataset
    assert [it.class_name for it in ds.query] == [NAMES[v] for v in lq]
    assert [it.class_name for it in ds.gallery] == [NAMES[v] for v in lg]
    assert ds.root is None and [it.path for it in ds.gallery] == gnames   # kept, as names
    assert all(it.path is None for it in ds.query)                         # none given


def test_published_cache_takes_class_names_json(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples" / "custom", tmp_path / "pub" / "custom")
    (tmp_path / "pub" / "custom" / "-1" / "class_names.json").write_text(json.dumps(NAMES))
    labels = torch.load(REPO / "examples" / "custom" / "-1" / "labels.pth", weights_only=True)
    request = ArtifactRequest("custom", source=PublishedCache(), cache_root=tmp_path / "pub",
                              cache=CachePolicy.NONE, compute=Compute(progress=False))
    ds = ensure_artifacts(request, _quiet).dataset
    want = [NAMES[v] if v < len(NAMES) else None for v in labels["query"].tolist()]
    assert [it.class_name for it in ds.query] == want and None in want   # label 3: no name
    # the same matrices imported as files, names from the labels file instead
    folder = tmp_path / "pub" / "custom" / "-1"
    np.savez(tmp_path / "l.npz", query=labels["query"].numpy(), gallery=labels["gallery"].numpy(),
             class_names=np.array(["w", "x", "y", "z"]))
    ds = ensure_artifacts(_request("mine", DistanceFiles(folder / "qg_dists.pth", folder / "gg_dists.pth",
                                                         tmp_path / "l.npz"), tmp_path), _quiet).dataset
    assert [it.class_name for it in ds.gallery] == ["wxyz"[v] for v in labels["gallery"].tolist()]
