"""Artifacts from files the user brings: distance matrices (or the published cache) and feature matrices.

Reading the files is :mod:`store.imports`' job; this module checks they fit
together, names the items, and keys and keeps the artifacts.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from icfrr import NeighborGraph, neighbor_graph
from icfrr.ann import build_graph
from icfrr.datasets import DATASET_NAMES, Dataset, DatasetError, Item, load_dataset
from jobs.artifact_graph import distances_and_graph, graph_key, graph_spec
from jobs.artifact_request import (FEATURES_BACKBONE, ArtifactRequest, DistanceFiles, FeatureFiles, kept_folder,
                                   reuse_or_refuse)
from store import artifacts as cache
from store.artifacts import IMPORT_BACKBONE, ArtifactError, Artifacts
from store.identity import FileId, HashCache
from store.imports import (SourceError, read_class_names, read_features, read_labels, read_labels_and_names,
                           read_matrix)

def _import_dataset(dataset: str, data_root: str | Path | None, per_class: int, n_q: int, n_g: int,
                    labels: tuple[np.ndarray, np.ndarray] | None, log: Callable[[str], None],
                    class_names: dict[int, str] | None = None, selects_items: bool = False) -> Dataset:
    """Items for imported distances: from the images under data_root when they match, else path-less.

    ``class_names`` (label -> name, from the user's files) win over the dataset's own names.
    With ``selects_items`` (matrices the user names, not the published cache's
    ``<per_class>`` folder) a ``per_class`` other than -1 must select the items
    of the dataset's images; otherwise it would be recorded without being used.
    """
    ds = None
    used_whole = ArtifactError(
        f"--per_class {per_class} selects images of a dataset, but imported distance matrices are used "
        "whole: drop --per_class, or give --data_root with the images of a dataset it selects from")
    if selects_items and per_class != -1 and (data_root is None or dataset not in DATASET_NAMES):
        raise used_whole
    if data_root is not None and dataset in DATASET_NAMES:
        try:
            ds = load_dataset(dataset, data_root, per_class)
        except DatasetError as exc:
            if selects_items and per_class != -1:
                raise used_whole from None
            log(f"no {dataset} images read under {data_root} ({exc}); items get no paths")
    if ds is not None and (len(ds.query), len(ds.gallery)) != (n_q, n_g):
        raise ArtifactError(f"the distances are [{n_q}, {n_g}] but {dataset} under {data_root} has "
                            f"{len(ds.query)} queries and {len(ds.gallery)} gallery images; "
                            "use the --per_class the distances were computed with")
    if ds is None:
        lq, lg = labels if labels is not None else (np.full(n_q, -1), np.full(n_g, -1))
        given = class_names or {}
        return Dataset(dataset, None,
                       [Item("query", i, None, int(v), given.get(int(v))) for i, v in enumerate(lq)],
                       [Item("gallery", j, None, int(v), given.get(int(v))) for j, v in enumerate(lg)])
    if labels is None:
        return ds
    names = ds.class_names | (class_names or {})
    return Dataset(dataset, ds.root,
                   [Item("query", it.idx, it.path, int(v), names.get(int(v))) for it, v in zip(ds.query, labels[0])],
                   [Item("gallery", it.idx, it.path, int(v), names.get(int(v))) for it, v in zip(ds.gallery, labels[1])],
                   ds.version)


def _graph_from_dense(gg_id: FileId, n_g: int, k: int, log: Callable[[str], None]) -> NeighborGraph:
    gg_path = gg_id.path
    gg = read_matrix(gg_path)
    if gg.shape != (n_g, n_g):
        raise ArtifactError(f"{gg_path} is {list(gg.shape)} but the query-gallery matrix has {n_g} gallery "
                            f"columns: it must be [{n_g}, {n_g}]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # a read-only memmap: the graph never writes to it
        dense = torch.from_numpy(np.asarray(gg))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = neighbor_graph(dense, k)
    gg_id.check()                                # the memmap was read as it was identified
    for w in caught:
        log(f"warning: {gg_path}: {w.message}")
    return graph


def _missing(*paths: Path | None) -> None:
    for p in paths:
        if p is not None and not Path(p).is_file():
            raise ArtifactError(f"file not found: {p}")


def _identify(hashes: HashCache, files: dict[str, Path | None]) -> dict[str, FileId]:
    """Name -> content identity of each given input file (None entries left out).

    Raises:
        ArtifactError: A file is missing.
    """
    _missing(*files.values())
    try:
        return {name: hashes.identify(p) for name, p in files.items() if p is not None}
    except FileNotFoundError as exc:
        raise ArtifactError(f"file not found: {exc.filename}") from None


def from_distances(request: ArtifactRequest, source: DistanceFiles, hashes: HashCache,
                    log: Callable[[str], None], read_only: ArtifactError | None,
                    selects_items: bool = False) -> Artifacts:
    labels_path = Path(source.labels) if source.labels is not None else None
    ids = _identify(hashes, {"qg": Path(source.qg), "gg": Path(source.gg), "labels": labels_path,
                             "qq": Path(source.qq) if source.qq is not None else None,
                             "class_names": Path(source.class_names) if source.class_names else None})
    dataset, per_class = request.dataset, request.per_class
    qg = read_matrix(ids["qg"].path)
    n_q, n_g = qg.shape
    if "qq" in ids:             # checked before the cache folder is written, read again by qq_dists
        read_qq(ids["qq"].path, n_q)
    labels = read_labels(ids["labels"].path, n_q, n_g) if labels_path is not None else None
    names = _class_names(ids["labels"].path if labels_path is not None else None,
                         ids["class_names"].path if "class_names" in ids else None)
    ds = _import_dataset(dataset, request.data_root, per_class, n_q, n_g, labels, log, names, selects_items)
    key = cache.cache_key({"kind": "import", "dataset": dataset, "items": ds.fingerprint(),
                           "per_class": per_class,
                           "sha256": {name: ids[name].sha256 if name in ids else None
                                      for name in ("qg", "gg", "labels")}
                           # only when given: the keys of caches without names stay as they were
                           | ({"class_names": ids["class_names"].sha256} if "class_names" in ids else {})})
    folder = cache.cache_folder(Path(request.cache_root), dataset, per_class, IMPORT_BACKBONE, key)

    def rebuild(k: int) -> NeighborGraph:
        return _graph_from_dense(ids["gg"], n_g, k, log)

    if request.needs_qq and source.qq is None:
        # only a query-query file kept in this key's folder by an earlier import could serve: reuse or refuse
        read_only = cache.no_qq_error(ids["qg"].path)
    arts = reuse_or_refuse(request, folder, key, ds, rebuild, log, read_only)
    if arts is None:
        graph = rebuild(cache.graph_k(n_g, request.kg_max))
        qg = np.array(qg)
        meta = cache.base_meta(ds, IMPORT_BACKBONE, None, per_class, key) | {
            "neighbors_k": graph.k, "metric": "as imported",
            "sources": {name: fid.record() for name, fid in ids.items() if name != "qq"}}
        for name in ("qg", "labels"):               # read as they were identified
            if name in ids:
                ids[name].check()
        arts = cache.save(kept_folder(request, folder), ds, meta, qg, graph)
    arts.gg_source = ids["gg"]
    arts.qq_source = ids.get("qq")
    return arts


def _class_names(labels: Path | None, names_file: Path | None) -> dict[int, str] | None:
    """Label -> class name from a ``class_names.json`` and the labels file's ``class_names``
    (the labels file wins where both name a label); None when neither has names."""
    found = [read_class_names(p) for p in (names_file, labels) if p is not None]
    found = [f for f in found if f is not None]
    return {k: v for f in found for k, v in f.items()} if found else None


def read_qq(path: Path, n_q: int) -> np.ndarray:
    """A query-query file read and checked to be a finite float [n_q, n_q] matrix.

    Raises:
        ArtifactError, SourceError: The one line naming the file.
    """
    qq = read_matrix(path)
    if qq.shape != (n_q, n_q):
        raise ArtifactError(f"{path} is {list(qq.shape)} but there are {n_q} queries: it must be [{n_q}, {n_q}]")
    return qq


# --------------------------------------------------------------------------- feature files


def _features_dataset(dataset: str, data_root: str | Path | None, labels: tuple[np.ndarray, np.ndarray],
                      names: tuple[list[str] | None, list[str] | None],
                      class_names: dict[int, str] | None = None) -> Dataset:
    """Items of feature files: a name becomes the item's path when it is a file under ``data_root``.

    Without ``data_root`` the dataset has no root and each name is kept as the item's path
    (a name only: the dashboard shows it as the caption of a placeholder).
    """
    root = Path(data_root).resolve() if data_root is not None else None

    def path_of(name: str | None) -> str | None:
        if root is None or name is None:
            return name
        full = (root / name).resolve()
        if not full.is_relative_to(root) or not full.is_file():
            return None
        return full.relative_to(root).as_posix()

    sides = []
    for side, lab, nm in (("query", labels[0], names[0]), ("gallery", labels[1], names[1])):
        nm = nm if nm is not None else [None] * len(lab)
        sides.append([Item(side, i, path_of(n), int(v), (class_names or {}).get(int(v)))
                      for i, (v, n) in enumerate(zip(lab, nm))])
    return Dataset(dataset, root, *sides)


def _normalised(f: np.ndarray, path: Path) -> np.ndarray:
    """float32 [N, D] rows divided by their L2 norm (computed in float64).

    Raises:
        SourceError: A row of zeros, which has no direction.
    """
    f64 = f.astype(np.float64)
    norms = np.linalg.norm(f64, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if len(zero):
        raise SourceError(f"{path}: row {int(zero[0])} is all zeros ({len(zero)} such rows) and cannot be "
                          "L2-normalised; drop it or pass --no-normalise")
    return (f64 / norms).astype(np.float32)


def read_feature_files(source: FeatureFiles, dataset: str, data_root: str | Path | None
                       ) -> tuple[Dataset, dict[str, np.ndarray]]:
    """Read and check feature files and their labels, normalising as asked.

    Returns:
        The items, and ``"query"`` / ``"gallery"`` -> float32 [N, D] features.

    Raises:
        SourceError, ArtifactError: Bad input, with a one-line message.
    """
    paths = {"query": Path(source.query), "gallery": Path(source.gallery)}
    _missing(*paths.values(), source.labels)
    feats = {side: read_features(p) for side, p in paths.items()}
    dq, dg = feats["query"].shape[1], feats["gallery"].shape[1]
    if dq != dg:
        raise SourceError(f"the query features have {dq} dimensions but the gallery features {dg} "
                          f"({paths['query']}, {paths['gallery']}); they must come from the same model")
    n_q, n_g = len(feats["query"]), len(feats["gallery"])
    if source.labels is not None:
        lq, lg, nq, ng = read_labels_and_names(source.labels, n_q, n_g)
    else:
        lq, lg, nq, ng = np.full(n_q, -1), np.full(n_g, -1), None, None
    names = _class_names(source.labels, None)
    if source.normalise:
        feats = {side: _normalised(f, paths[side]) for side, f in feats.items()}
    return _features_dataset(dataset, data_root, (lq, lg), (nq, ng), names), feats


def from_feature_files(request: ArtifactRequest, source: FeatureFiles, hashes: HashCache,
                        log: Callable[[str], None], read_only: ArtifactError | None) -> Artifacts:
    if request.per_class != -1:
        raise ArtifactError("--per_class selects images of a dataset; feature files are used whole "
                            "(drop --per_class or pass the rows you want)")
    ids = _identify(hashes, {"query": Path(source.query), "gallery": Path(source.gallery),
                             "labels": Path(source.labels) if source.labels is not None else None})
    ds, feats = read_feature_files(source, request.dataset, request.data_root)
    for fid in ids.values():                        # read whole, as they were identified
        fid.check()
    shas = {k: ids[k].sha256 if k in ids else None for k in ("query", "gallery", "labels")}
    graph = graph_spec(request, len(ds.gallery))
    key = cache.cache_key({"kind": "feature_files", "dataset": request.dataset, "items": ds.fingerprint(),
                           "sha256": shas, "normalise": source.normalise, "metric": "euclidean",
                           **graph_key(graph)})
    folder = cache.cache_folder(Path(request.cache_root), request.dataset, request.per_class,
                                FEATURES_BACKBONE, key)
    device = request.compute.device or "cpu"

    def rebuild(k: int) -> NeighborGraph:
        return build_graph(torch.from_numpy(feats["gallery"]).to(device), k, graph)

    if (cached := reuse_or_refuse(request, folder, key, ds, rebuild, log, read_only)) is not None:
        return cached
    qg, nbrs, choice = distances_and_graph(feats, request.kg_max, device, graph, request.recall_sample)
    meta = cache.base_meta(ds, FEATURES_BACKBONE, None, request.per_class, key) | choice | {
        "feature_dim": int(feats["query"].shape[1]), "neighbors_k": nbrs.k, "normalise": source.normalise,
        "sources": {k: fid.record() for k, fid in ids.items()}}
    return cache.save(kept_folder(request, folder), ds, meta, qg, nbrs, feats)

