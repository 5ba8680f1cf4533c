"""Parquet artifacts: the distances a sweep re-ranks, cached per dataset and backbone.

For a dataset + backbone (+ weights sha256, per_class) one cache folder
``<cache_root>/<dataset>/<per_class>/<backbone>-<key>/`` holds:

- ``items.parquet``: side, idx, path, label, class_name of every item;
- ``query_features.parquet`` / ``gallery_features.parquet``: ``idx``, ``feature``
  (float32 list [D], L2-normalised); absent for imported distances;
- ``qg_dists.parquet``: ``query_idx``, ``dists`` (float32 list [G]);
- ``neighbors.parquet``: ``gallery_idx``, ``neighbors`` (int32 list [K]),
  ``distances`` (float32 list [K]): the K nearest other gallery items;
- ``COMPLETE.json``: written last; a folder without it is never used;
- ``qq_dists.parquet``: ``query_idx``, ``dists`` (float32 list [Q]), added later
  by :func:`qq_dists` when a method needs query-query distances.

The folder is built under a temporary name and renamed into place, so an
interrupted run leaves nothing a later run would take as valid. Every Parquet
file carries JSON metadata (see :mod:`store.parquet_rows`) and is readable by
DuckDB's ``read_parquet`` without this code.

Distances can also be imported: the published code's cache
(``<cache_root>/<dataset>/<per_class>/{qg,gg}_dists.pth`` + optional
``labels.pth`` and ``qq_dists.pth``) or any ``.npy``/``.pth`` matrices, into the
same artifacts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import torch

from icfrr import NeighborGraph, neighbor_graph, neighbor_graph_from_features, pairwise_distances
from icfrr.datasets import DATASET_NAMES, Dataset, DatasetError, Item, load_dataset
from icfrr.features import (BackboneError, ImageReadError, default_device, extract_features, file_sha256,
                            load_backbone, weights_file)
from icfrr.features.edges import DESCRIPTOR_VERSION
from store.imports import (SourceError, has_published_cache, published_cache_dir, read_labels, read_matrix)
from store.parquet_rows import (atomic_write_bytes, public_tempdir, read_meta, read_rows, write_rows,
                                write_table)

#: Bumped when the files' layout changes; older cache folders are then recomputed.
FORMAT_VERSION = 1
DEFAULT_CACHE_ROOT = Path("cache")
#: The neighbour graph keeps at least this many neighbours (or G - 1), so most sweeps reuse it.
MIN_GRAPH_K = 512
MARKER = "COMPLETE.json"
#: Query-query distances, written beside the other files when a method needs them (not in the marker:
#: its own metadata says which artifacts, and for imports which source file, it belongs to).
QQ_FILE = "qq_dists.parquet"
#: The optional query-query file of the published cache layout.
QQ_PUBLISHED = "qq_dists.pth"
FILES = {"items": "items.parquet", "query_features": "query_features.parquet",
         "gallery_features": "gallery_features.parquet", "qg_dists": "qg_dists.parquet",
         "neighbors": "neighbors.parquet"}


class ArtifactError(ValueError):
    """The artifacts cannot be built or read as asked; the message says what to do."""


#: Every error caused by user input that ensure_artifacts can raise: CLIs print these in one line, exit 2.
USER_ERRORS = (ArtifactError, DatasetError, BackboneError, ImageReadError, SourceError)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class Artifacts:
    """What a sweep needs: distances, the gallery neighbour graph, labels and where they live.

    Attributes:
        dataset: The items (paths relative to ``dataset.root``; None for path-less imports).
        qg_dists: float32 [Q, G] query-gallery distances, smaller = closer.
        graph: The K nearest other gallery items of each gallery item.
        labels_q: int64 [Q] (-1 unknown).
        labels_g: int64 [G] (-1 unknown).
        backbone: ``"demo"``, ``"icfrr"``, ``"timm:<model>"`` or ``"import"``.
        checkpoint_sha256: sha256 of the weights file, None without one.
        per_class: The per_class the dataset was read with.
        cache_key: sha256 hex of everything the artifacts depend on.
        cache_dir: The cache folder, None with ``no_cache``.
        paths: File kind (``items``, ``query_features``, ``gallery_features``,
            ``qg_dists``, ``neighbors``) -> Parquet path; empty with ``no_cache``.
        meta: The metadata record (also in each file and in ``COMPLETE.json``).
        reused: True when everything came from an existing cache folder.
        gg_source: The imported gallery-gallery file (None for features).
        qq_source: The imported query-query file, when one was given (the
            published cache's optional ``qq_dists.pth``, or ``qq_path``).
    """

    dataset: Dataset
    qg_dists: torch.Tensor
    graph: NeighborGraph
    labels_q: np.ndarray
    labels_g: np.ndarray
    backbone: str
    checkpoint_sha256: str | None
    per_class: int
    cache_key: str
    cache_dir: Path | None
    paths: dict[str, Path] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    reused: bool = False
    _features: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    gg_source: Path | None = None
    qq_source: Path | None = None

    def features(self, side: str) -> np.ndarray:
        """float32 [N, D] features of ``"query"`` or ``"gallery"`` (from memory or the cache).

        Raises:
            ArtifactError: For imported distances, which come without features.
        """
        if side in self._features:
            return self._features[side]
        path = self.paths.get(f"{side}_features")
        if path is None:
            raise ArtifactError(f"artifacts of backbone {self.backbone!r} have no features (imported distances)")
        return read_rows(path, ["feature"])[0]["feature"]


def graph_k(n_gallery: int, kg_max: int = MIN_GRAPH_K) -> int:
    """Neighbours kept per gallery item: max(512, kg_max), capped at G - 1."""
    return max(0, min(max(MIN_GRAPH_K, kg_max), n_gallery - 1))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _hash_json(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _file_stamp(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _slug(backbone: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", backbone).strip("-") or "backbone"


# --------------------------------------------------------------------------- files


def _items_table(ds: Dataset) -> pa.Table:
    items = [*ds.query, *ds.gallery]
    return pa.table({"side": pa.array([it.side for it in items], pa.string()),
                     "idx": pa.array([it.idx for it in items], pa.int32()),
                     "path": pa.array([it.path for it in items], pa.string()),
                     "label": pa.array([it.label for it in items], pa.int64()),
                     "class_name": pa.array([it.class_name for it in items], pa.string())})


def _write_graph(path: Path, graph: NeighborGraph, meta: dict) -> None:
    write_rows(path, "gallery_idx", {"neighbors": graph.indices.numpy().astype(np.int32),
                                     "distances": graph.distances.numpy().astype(np.float32)},
               meta | {"kind": "neighbors", "k": graph.k})


def _read_graph(path: Path) -> NeighborGraph:
    cols, _ = read_rows(path, ["neighbors", "distances"])
    return NeighborGraph(torch.from_numpy(cols["neighbors"].astype(np.int64)), torch.from_numpy(cols["distances"]))


def _write_folder(final: Path, ds: Dataset, meta: dict, qg: np.ndarray, graph: NeighborGraph,
                  feats: dict[str, np.ndarray]) -> dict[str, Path]:
    """Write every file into a temporary sibling folder, the marker last, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = public_tempdir(final.parent, f".tmp-{final.name}-")
    try:
        write_table(tmp / FILES["items"], _items_table(ds), meta | {"kind": "items"})
        for side, f in feats.items():
            write_rows(tmp / FILES[f"{side}_features"], "idx", {"feature": f}, meta | {"kind": f"{side}_features"})
        write_rows(tmp / FILES["qg_dists"], "query_idx", {"dists": qg}, meta | {"kind": "qg_dists"})
        _write_graph(tmp / FILES["neighbors"], graph, meta)
        names = [name for kind, name in FILES.items() if (tmp / name).exists()]
        atomic_write_bytes(tmp / MARKER, json.dumps(meta | {"files": names}, indent=1).encode())
        if final.exists():
            old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {kind: final / name for kind, name in FILES.items() if (final / name).exists()}


def _complete(folder: Path, key: str) -> dict | None:
    """The marker's record when ``folder`` is a finished cache of ``key``, else None."""
    marker = folder / MARKER
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if record.get("cache_key") != key or record.get("format_version") != FORMAT_VERSION:
        return None
    if not all((folder / name).is_file() for name in record.get("files", [])):
        return None
    return record


def _load_folder(folder: Path, record: dict, ds: Dataset, kg_max: int,
                 rebuild: Callable[[int], NeighborGraph], log: Callable[[str], None]) -> Artifacts:
    paths = {kind: folder / name for kind, name in FILES.items() if name in record["files"]}
    qg = read_rows(paths["qg_dists"], ["dists"])[0]["dists"]
    graph = _read_graph(paths["neighbors"])
    need = graph_k(qg.shape[1], kg_max)
    if graph.k < need:
        log(f"the cached neighbour graph keeps {graph.k} neighbours; rebuilding it with {need}")
        graph = rebuild(need)
        record = record | {"neighbors_k": graph.k}
        _write_graph(paths["neighbors"], graph, {k: v for k, v in record.items() if k != "files"})
        atomic_write_bytes(folder / MARKER, json.dumps(record, indent=1).encode())
    log(f"reusing artifacts in {folder}")
    return Artifacts(ds, torch.from_numpy(qg), graph, ds.labels_q, ds.labels_g, record["backbone"],
                     record.get("checkpoint_sha256"), record["per_class"], record["cache_key"], folder, paths,
                     record, reused=True)


def _reuse(folder: Path, key: str, ds: Dataset, kg_max: int, rebuild: Callable[[int], NeighborGraph],
           log: Callable[[str], None]) -> Artifacts | None:
    """The cached artifacts of ``key``, or None when there are none or they cannot be read (then recomputed)."""
    record = _complete(folder, key)
    if record is None:
        return None
    try:
        return _load_folder(folder, record, ds, kg_max, rebuild, log)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, USER_ERRORS):
            raise
        log(f"cached artifacts in {folder} are unreadable ({str(exc).splitlines()[0][:120]}); recomputing them")
        return None


# --------------------------------------------------------------------------- sources


def _base_meta(dataset: str, ds: Dataset, backbone: str, sha: str | None, per_class: int, key: str) -> dict:
    return {"format_version": FORMAT_VERSION, "cache_key": key, "dataset": dataset,
            "dataset_fingerprint": ds.fingerprint(), "root": str(Path(ds.root).resolve()) if ds.root else None,
            "n_query": len(ds.query), "n_gallery": len(ds.gallery), "backbone": backbone,
            "checkpoint_sha256": sha, "per_class": per_class, "metric": "euclidean", "created_at": _now()}


def _from_features(dataset: str, data_root: str | Path | None, spec: str, per_class: int, cache_root: Path,
                   kg_max: int, force: bool, no_cache: bool, log: Callable[[str], None],
                   backbone_args: dict, trust: bool, extract_args: dict) -> Artifacts:
    ds = load_dataset(dataset, data_root, per_class)
    wpath = weights_file(spec, dataset=dataset, **backbone_args)
    sha = file_sha256(wpath) if wpath is not None and wpath.is_file() else None
    key = _hash_json({"v": FORMAT_VERSION, "kind": "features", "dataset": dataset, "items": ds.fingerprint(),
                      "backbone": spec, "weights_sha256": sha, "per_class": per_class, "metric": "euclidean",
                      "descriptor": DESCRIPTOR_VERSION if spec == "demo" else None})
    folder = cache_root / dataset / str(per_class) / f"{_slug(spec)}-{key[:16]}"
    device = extract_args.get("device") or default_device()

    def rebuild(k: int) -> NeighborGraph:
        fg = read_rows(folder / FILES["gallery_features"], ["feature"])[0]["feature"]
        return neighbor_graph_from_features(torch.from_numpy(fg).to(device), k)

    if not (force or no_cache) and (cached := _reuse(folder, key, ds, kg_max, rebuild, log)) is not None:
        return cached
    bb = load_backbone(spec, dataset=dataset, **backbone_args, trust_checkpoint=trust)
    if bb.report is not None:
        log(f"weights {bb.weights_path}: {bb.report.summary()}")
    feats = {side: extract_features(bb, ds.absolute_paths(side), desc=f"{side} features", **extract_args)
             for side in ("query", "gallery")}
    fq, fg = (torch.from_numpy(feats[s]).to(device) for s in ("query", "gallery"))
    qg = pairwise_distances(fq, fg).cpu().numpy()
    graph = neighbor_graph_from_features(fg, graph_k(len(ds.gallery), kg_max))
    meta = _base_meta(dataset, ds, spec, sha, per_class, key) | {
        "feature_dim": int(feats["query"].shape[1]), "neighbors_k": graph.k,
        "weights_path": str(wpath) if wpath else None,
        "load_report": bb.report.summary() if bb.report else None}
    paths = {} if no_cache else _write_folder(folder, ds, meta, qg, graph, feats)
    return Artifacts(ds, torch.from_numpy(qg), graph, ds.labels_q, ds.labels_g, spec, sha, per_class, key,
                     None if no_cache else folder, paths, meta | {"files": [p.name for p in paths.values()]},
                     _features=feats)


def _import_dataset(dataset: str, data_root: str | Path | None, per_class: int, n_q: int, n_g: int,
                    labels: tuple[np.ndarray, np.ndarray] | None, log: Callable[[str], None]) -> Dataset:
    """Items for imported distances: from the images under data_root when they match, else path-less."""
    ds = None
    if data_root is not None and dataset in DATASET_NAMES:
        try:
            ds = load_dataset(dataset, data_root, per_class)
        except DatasetError as exc:
            log(f"no {dataset} images read under {data_root} ({exc}); items get no paths")
    if ds is not None and (len(ds.query), len(ds.gallery)) != (n_q, n_g):
        raise ArtifactError(f"the distances are [{n_q}, {n_g}] but {dataset} under {data_root} has "
                            f"{len(ds.query)} queries and {len(ds.gallery)} gallery images; "
                            "use the --per_class the distances were computed with")
    if ds is None:
        lq, lg = labels if labels is not None else (np.full(n_q, -1), np.full(n_g, -1))
        return Dataset(dataset, None, [Item("query", i, None, int(v), None) for i, v in enumerate(lq)],
                       [Item("gallery", j, None, int(v), None) for j, v in enumerate(lg)])
    if labels is None:
        return ds
    names = ds.class_names
    return Dataset(dataset, ds.root,
                   [Item("query", it.idx, it.path, int(v), names.get(int(v))) for it, v in zip(ds.query, labels[0])],
                   [Item("gallery", it.idx, it.path, int(v), names.get(int(v))) for it, v in zip(ds.gallery, labels[1])],
                   ds.version)


def _graph_from_dense(gg_path: Path, n_g: int, k: int, log: Callable[[str], None]) -> NeighborGraph:
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
    for w in caught:
        log(f"warning: {gg_path}: {w.message}")
    return graph


def _from_import(dataset: str, data_root: str | Path | None, per_class: int, cache_root: Path, kg_max: int,
                 qg_path: Path, gg_path: Path, labels_path: Path | None, force: bool, no_cache: bool,
                 log: Callable[[str], None]) -> Artifacts:
    for p in (qg_path, gg_path, labels_path):
        if p is not None and not p.is_file():
            raise ArtifactError(f"file not found: {p}")
    qg = read_matrix(qg_path)
    n_q, n_g = qg.shape
    labels = read_labels(labels_path, n_q, n_g) if labels_path is not None else None
    ds = _import_dataset(dataset, data_root, per_class, n_q, n_g, labels, log)
    sources = {"qg": _file_stamp(qg_path), "gg": _file_stamp(gg_path),
               "labels": _file_stamp(labels_path) if labels_path else None}
    key = _hash_json({"v": FORMAT_VERSION, "kind": "import", "dataset": dataset, "items": ds.fingerprint(),
                      "per_class": per_class, "sources": sources})
    folder = cache_root / dataset / str(per_class) / f"import-{key[:16]}"

    def rebuild(k: int) -> NeighborGraph:
        return _graph_from_dense(gg_path, n_g, k, log)

    if not (force or no_cache) and (cached := _reuse(folder, key, ds, kg_max, rebuild, log)) is not None:
        return cached
    graph = rebuild(graph_k(n_g, kg_max))
    meta = _base_meta(dataset, ds, "import", None, per_class, key) | {
        "neighbors_k": graph.k, "metric": "as imported",
        "sources": {name: {"path": str(p), "sha256": file_sha256(p)}
                    for name, p in (("qg", qg_path), ("gg", gg_path), ("labels", labels_path)) if p is not None}}
    paths = {} if no_cache else _write_folder(folder, ds, meta, np.ascontiguousarray(qg), graph, {})
    return Artifacts(ds, torch.from_numpy(np.array(qg)), graph, ds.labels_q, ds.labels_g, "import", None,
                     per_class, key, None if no_cache else folder, paths,
                     meta | {"files": [p.name for p in paths.values()]})


# --------------------------------------------------------------------------- entry point


def ensure_artifacts(
    dataset: str,
    data_root: str | Path | None = None,
    *,
    backbone: str | None = None,
    per_class: int = -1,
    cache_root: str | Path = DEFAULT_CACHE_ROOT,
    kg_max: int = MIN_GRAPH_K,
    weights: str | Path | None = None,
    pretrained_root: str | Path | None = None,
    trust_checkpoint: bool = False,
    qg_path: str | Path | None = None,
    gg_path: str | Path | None = None,
    labels_path: str | Path | None = None,
    qq_path: str | Path | None = None,
    force: bool = False,
    no_cache: bool = False,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] = _stderr,
) -> Artifacts:
    """Distances and neighbour graph for a dataset: reused from the cache, computed, or imported.

    Where the distances come from:

    - ``qg_path`` and ``gg_path`` given (``.npy`` or ``.pth``, plus optional
      ``labels_path`` ``.pth``/``.npz``/``.json``): imported.
    - ``backbone`` None and the published cache
      ``<cache_root>/<dataset>/<per_class>/{qg_dists,gg_dists}.pth`` exists
      (optional ``labels.pth``): imported from it.
    - otherwise features are extracted with ``backbone`` (default ``"demo"`` for
      the demo dataset, ``"icfrr"`` for the others): ``"icfrr"``,
      ``"timm:<model>"`` or ``"demo"``; Euclidean distances of L2-normalised
      features.

    Args:
        dataset: Dataset name (see :data:`icfrr.datasets.DATASET_NAMES`); any name
            for imported matrices.
        data_root: Folder of the dataset's images (imports: optional, gives items
            their paths when the counts match).
        backbone: See above; ``"import"`` demands importable distances.
        per_class: First N items per label (-1: all); part of the cache key and path.
        cache_root: Cache folder (default ``cache``).
        kg_max: Largest KG a sweep will ask for; the graph keeps
            ``min(max(512, kg_max), G - 1)`` neighbours.
        weights: Local weights for ``timm:<model>`` (or ``"random"``), or a checkpoint
            for ``icfrr`` overriding ``pretrained_root``.
        pretrained_root: Folder of the published checkpoints.
        trust_checkpoint: Allow unpickling Python objects in the checkpoint.
        qg_path: Query-gallery distances [Q, G] to import.
        gg_path: Gallery-gallery distances [G, G] to import.
        labels_path: Labels of the imported distances.
        qq_path: Query-query distances [Q, Q] of the imported distances (optional;
            the methods that need them read them through :func:`qq_dists`, which
            keeps them as ``qq_dists.parquet`` in the cache folder).
        force: Recompute even when a finished cache folder matches.
        no_cache: Compute in memory, write nothing.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers (None: automatic).
        device: Torch device (None: CUDA when available).
        progress: Show progress bars.
        log: Receives one-line notes (reuse, key reports, warnings); stderr by default.

    Returns:
        :class:`Artifacts`.

    Raises:
        One of :data:`USER_ERRORS` for bad input, with a one-line message.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or (per_class < 1 and per_class != -1):
        raise ArtifactError(f"per_class must be -1 (all) or a positive integer, got {per_class!r}")
    if isinstance(kg_max, bool) or not isinstance(kg_max, int) or kg_max < 1:
        raise ArtifactError(f"kg_max must be a positive integer, got {kg_max!r}")
    if force and no_cache:
        raise ArtifactError("--force-cache and --no-cache contradict each other; pass one")
    cache_root = Path(cache_root)
    if (qg_path is None) != (gg_path is None):
        raise ArtifactError("importing distances needs both a query-gallery and a gallery-gallery matrix")
    if labels_path is not None and qg_path is None:
        raise ArtifactError("a labels file is only read together with imported distance matrices")
    if qq_path is not None and qg_path is None:
        raise ArtifactError("a query-query file is only read together with imported distance matrices")
    if qg_path is None and backbone in (None, "import"):
        published = published_cache_dir(cache_root, dataset, per_class)
        if has_published_cache(published):
            qg_path, gg_path = published / "qg_dists.pth", published / "gg_dists.pth"
            labels_path = published / "labels.pth" if (published / "labels.pth").is_file() else None
            qq_path = published / QQ_PUBLISHED if (published / QQ_PUBLISHED).is_file() else None
            log(f"importing the published distance cache in {published}")
        elif backbone == "import":
            raise ArtifactError(f"no published distance cache in {published} (expected qg_dists.pth and "
                                "gg_dists.pth); give the matrices' paths or another --backbone")
    if qg_path is not None:
        if backbone not in (None, "import"):
            raise ArtifactError(f"imported distances come with no backbone; drop --backbone {backbone}")
        if qq_path is not None and not Path(qq_path).is_file():
            raise ArtifactError(f"file not found: {qq_path}")
        arts = _from_import(dataset, data_root, per_class, cache_root, kg_max, Path(qg_path), Path(gg_path),
                            Path(labels_path) if labels_path is not None else None, force, no_cache, log)
        arts.gg_source = Path(gg_path)
        arts.qq_source = Path(qq_path) if qq_path is not None else None
        return arts
    spec = backbone or ("demo" if dataset == "demo" else "icfrr")
    return _from_features(dataset, data_root, spec, per_class, cache_root, kg_max, force, no_cache, log,
                          {"pretrained_root": pretrained_root, "weights": weights}, trust_checkpoint,
                          {"batch_size": batch_size, "num_workers": num_workers, "device": device,
                           "progress": progress})


# --------------------------------------------------------------------------- dense gg, qq for the baselines


def _distances_by_rows(a: np.ndarray, b: np.ndarray, rows: int, same: bool) -> np.ndarray:
    """float32 [A, B] Euclidean distances computed ``rows`` rows at a time (0 on the diagonal when ``same``)."""
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    fb = torch.from_numpy(np.ascontiguousarray(b))
    for start in range(0, a.shape[0], rows):
        out[start:start + rows] = pairwise_distances(torch.from_numpy(a[start:start + rows]), fb).numpy()
    if same:
        np.fill_diagonal(out, 0.0)  # an item's distance to itself, without rounding noise
    return out


def dense_gg(arts: Artifacts, rows: int = 1024) -> np.ndarray:
    """float32 [G, G] gallery-gallery distances, in memory (3.1 GB at the TU-Berlin size; never cached).

    From the gallery features, computed ``rows`` rows at a time, or read from the
    imported gallery-gallery file.

    Raises:
        ArtifactError: Imported artifacts whose gallery-gallery file is gone.
    """
    if arts.backbone != "import":
        f = arts.features("gallery")
        return _distances_by_rows(f, f, rows, same=True)
    source = arts.gg_source or Path(arts.meta.get("sources", {}).get("gg", {}).get("path", ""))
    if not source.is_file():
        raise ArtifactError(f"the gallery-gallery distances {source} are gone; import them again")
    gg = read_matrix(source)
    n_g = arts.qg_dists.shape[1]
    if gg.shape != (n_g, n_g):
        raise ArtifactError(f"{source} is {list(gg.shape)}, expected [{n_g}, {n_g}]")
    return np.array(gg)  # a writable copy, not the read-only memmap


def _qq_meta(path: Path) -> dict | None:
    try:
        return read_meta(path)
    except (OSError, ValueError):
        return None


def qq_identity(arts: Artifacts) -> str | None:
    """What the query-query distances depend on beyond ``arts.cache_key`` (checked, nothing loaded).

    Returns:
        None when they come from the features (the cache key covers them), else
        the sha256 of the imported query-query file.

    Raises:
        ArtifactError: Imported artifacts without query-query distances: the
            message names the missing file.
    """
    if arts.backbone != "import":
        return None
    if arts.qq_source is not None:
        return file_sha256(arts.qq_source)
    kept = arts.cache_dir / QQ_FILE if arts.cache_dir is not None else None
    meta = _qq_meta(kept) if kept is not None and kept.is_file() else None
    if meta is not None and meta.get("cache_key") == arts.cache_key and meta.get("sha256"):
        return str(meta["sha256"])
    published = Path(arts.meta.get("sources", {}).get("qg", {}).get("path", "qg_dists.pth")).parent
    raise ArtifactError(f"the imported distances have no query-query matrix: {published / QQ_PUBLISHED} "
                        "is missing (save the [Q, Q] distances there, or import them with "
                        "python -m jobs.extract --qq FILE)")


def qq_dists(arts: Artifacts, log: Callable[[str], None] = _stderr, rows: int = 1024) -> np.ndarray:
    """float32 [Q, Q] query-query distances, kept as ``qq_dists.parquet`` in the cache folder.

    Reused from that file when it belongs to these artifacts (and, for imports,
    to the same source file); else computed from the query features ``rows``
    rows at a time, or read from the imported file, and written there (unless
    the artifacts live in memory only).

    Raises:
        ArtifactError: Imported artifacts without query-query distances, or a
            file of the wrong shape.
    """
    n_q = arts.qg_dists.shape[0]
    source = arts.qq_source if arts.backbone == "import" else None
    stamp = _file_stamp(source) if source is not None else None
    kept = arts.cache_dir / QQ_FILE if arts.cache_dir is not None else None
    meta = _qq_meta(kept) if kept is not None and kept.is_file() else None
    if (meta is not None and meta.get("cache_key") == arts.cache_key
            and (stamp is None or meta.get("source") == stamp)):
        try:
            qq = read_rows(kept, ["dists"])[0]["dists"]
            if qq.shape == (n_q, n_q):
                log(f"reusing query-query distances in {kept}")
                return qq
        except (OSError, ValueError, KeyError):
            pass
        log(f"{kept} is unreadable; making it again")
    sha = qq_identity(arts)  # raises when an import has none
    if arts.backbone == "import":
        qq = read_matrix(source)
        if qq.shape != (n_q, n_q):
            raise ArtifactError(f"{source} is {list(qq.shape)} but there are {n_q} queries: it must be "
                                f"[{n_q}, {n_q}]")
        qq = np.ascontiguousarray(qq)
    else:
        f = arts.features("query")
        qq = _distances_by_rows(f, f, rows, same=True)
    if kept is not None:
        write_rows(kept, "query_idx", {"dists": qq},
                   {"kind": "qq_dists", "cache_key": arts.cache_key, "format_version": FORMAT_VERSION,
                    "source": stamp, "sha256": sha, "created_at": _now()})
        log(f"query-query distances kept in {kept}")
    return qq
