"""Artifacts from a dataset's images: features extracted with a backbone, then distances and the graph."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Callable

import torch

from icfrr import NeighborGraph
from icfrr.ann import build_graph
from icfrr.datasets import Dataset, DatasetError, load_dataset
from jobs.artifact_graph import distances_and_graph, graph_key, graph_spec
from jobs.artifact_request import ArtifactRequest, Images, kept_folder, reuse_or_refuse
from store import artifacts as cache
from store.artifacts import ArtifactError, Artifacts
from store.identity import FileId, HashCache, digest

def _timm_version() -> str | None:
    """timm's version: its models and poolings decide the features of timm-based backbones."""
    try:
        return importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        return None


def _image_ids(ds: Dataset, hashes: HashCache) -> list[FileId]:
    """The content identity of every image, query side then gallery side.

    Raises:
        DatasetError: An image is missing.
    """
    ids = []
    for side in ("query", "gallery"):
        for p in ds.absolute_paths(side):
            try:
                ids.append(hashes.identify(p))
            except FileNotFoundError:
                raise DatasetError(f"image not found: {p} (check --data_root)") from None
    return ids


def from_images(request: ArtifactRequest, source: Images, spec: str, hashes: HashCache,
                 log: Callable[[str], None], read_only: ArtifactError | None) -> Artifacts:
    from icfrr.features import default_device, extract_features, load_backbone, preprocess_config, weights_file
    from icfrr.features.edges import DESCRIPTOR_VERSION
    from icfrr.features.extract import PREPROCESS_VERSION

    dataset, per_class = request.dataset, request.per_class
    ds = load_dataset(dataset, request.data_root, per_class)
    graph = graph_spec(request, len(ds.gallery))
    backbone_args = {"pretrained_root": source.pretrained_root, "weights": source.weights}
    wpath = weights_file(spec, dataset=dataset, **backbone_args)
    wid = hashes.identify(wpath) if wpath is not None and wpath.is_file() else None
    sha = wid.sha256 if wid is not None else None
    images = _image_ids(ds, hashes)
    # the pictures by content; the root too, as the items (and the dashboard's thumbnails) point there
    key = cache.cache_key({"kind": "features", "dataset": dataset, "items": ds.fingerprint(),
                           "root": str(Path(ds.root).resolve()), "images_sha256": digest(images),
                           "backbone": spec, "weights_sha256": sha, "per_class": per_class,
                           "metric": "euclidean",
                           "preprocess": {"version": PREPROCESS_VERSION, **preprocess_config(spec)},
                           "descriptor": DESCRIPTOR_VERSION if spec == "demo" else None,
                           "timm": None if spec == "demo" else _timm_version(), **graph_key(graph)})
    folder = cache.cache_folder(Path(request.cache_root), dataset, per_class, spec, key)
    device = request.compute.device or default_device()

    def rebuild(k: int) -> NeighborGraph:
        fg = cache.read_rows(folder / cache.FILES["gallery_features"], ["feature"])[0]["feature"]
        return build_graph(torch.from_numpy(fg).to(device), k, graph)

    if (cached := reuse_or_refuse(request, folder, key, ds, rebuild, log, read_only)) is not None:
        return cached
    bb = load_backbone(spec, dataset=dataset, **backbone_args, trust_checkpoint=source.trust_checkpoint)
    if bb.report is not None:
        log(f"weights {bb.weights_path}: {bb.report.summary()}")
    c = request.compute
    feats = {side: extract_features(bb, ds.absolute_paths(side), desc=f"{side} features", batch_size=c.batch_size,
                                    num_workers=c.num_workers, device=c.device, progress=c.progress)
             for side in ("query", "gallery")}
    for fid in (*images, *([wid] if wid is not None else [])):    # read as they were identified
        fid.check()
    qg, nbrs, choice = distances_and_graph(feats, request.kg_max, device, graph, request.recall_sample)
    meta = cache.base_meta(ds, spec, sha, per_class, key) | choice | {
        "images_sha256": digest(images), "preprocess_version": PREPROCESS_VERSION,
        "feature_dim": int(feats["query"].shape[1]), "neighbors_k": nbrs.k,
        "weights_path": str(wpath) if wpath else None,
        "load_report": bb.report.summary() if bb.report else None}
    return cache.save(kept_folder(request, folder), ds, meta, qg, nbrs, feats)
