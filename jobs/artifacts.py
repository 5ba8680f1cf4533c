"""Make the artifacts a sweep needs: the one place that extracts features and computes distances.

``python -m jobs.sweep`` and ``python -m jobs.extract`` both describe what they
want as an :class:`ArtifactRequest` and call :func:`ensure_artifacts`. Where the
distances come from is the request's ``source``:

- :class:`Images`: features extracted from the dataset's images with a backbone
  (``icfrr``, ``timm:<model>``, ``demo``); with no backbone named, the published
  distance cache under ``cache_root`` is imported when present.
- :class:`PublishedCache`: the published code's ``{qg,gg}_dists.pth`` cache, demanded.
- :class:`DistanceFiles`: ``.npy``/``.pth`` distance matrices the user brings.
- :class:`FeatureFiles`: ``.npy``/Parquet feature matrices the user brings.

Every input file is identified by the sha256 of its bytes when the request
starts (:mod:`store.identity`, cached by stat fingerprint); the cache key of
the artifacts covers those identities, and every later read of an input checks
that the file still has the fingerprint it was identified with
(:class:`store.identity.InputChanged` otherwise).

Distances are Euclidean everywhere (of L2-normalised features unless a
:class:`FeatureFiles` says otherwise). Keeping and reusing the results is
:mod:`store.artifacts`' job; reading user files is :mod:`store.imports`'.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

import numpy as np
import torch

from icfrr import NeighborGraph, neighbor_graph, pairwise_distances
from icfrr.ann import (GRAPH_KINDS, RECALL_SEED, FaissMissing, GraphSpec, build_graph, default_spec, graph_recall,
                       recall_sample, require_faiss)
from icfrr.datasets import DATASET_NAMES, DEMO_ROOT, Dataset, DatasetError, Item, load_dataset
from icfrr.datasets.demo import is_generated
from icfrr.features.errors import BackboneError, ImageReadError
from jobs.source_flags import EXACT_GRAPH_MAX_ITEMS, add_source_flags  # noqa: F401  (re-exported: the flags' one home)
from store import artifacts as cache
from store.artifacts import (DEFAULT_CACHE_ROOT, IMPORT_BACKBONE, MIN_GRAPH_K, QQ_PUBLISHED, ArtifactError,
                             Artifacts, CachePolicy)
from store.fs import PathError, check_folder_name
from store.identity import FileId, HashCache, InputChanged, digest
from store.imports import (CLASS_NAMES_FILE, SourceError, has_published_cache, published_cache_dir,
                           read_class_names, read_features, read_labels, read_labels_and_names, read_matrix)

#: Every error caused by user input that ensure_artifacts can raise: CLIs print these in one line, exit 2.
USER_ERRORS = (ArtifactError, DatasetError, BackboneError, ImageReadError, SourceError, InputChanged)
#: The ``backbone`` of artifacts made from feature files the user brings.
FEATURES_BACKBONE = "features"
#: Largest float32 [Q, G] distance matrix kept dense (2 GiB, e.g. Q=2400 x G=27989 is 0.25 GiB);
#: above it, distances that come from features are computed per chunk of queries, never held whole.
DENSE_QG_MAX_BYTES = 2 * 2**30


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- the request


@dataclass(frozen=True)
class Images:
    """Extract features from the dataset's images.

    Attributes:
        backbone: ``"icfrr"``, ``"timm:<model>"`` or ``"demo"``; None: import the
            published cache when there is one, else ``demo`` for the demo dataset
            and ``icfrr`` for the others.
        weights: Local weights for ``timm:<model>`` (or ``"random"``), or a
            checkpoint for ``icfrr`` overriding ``pretrained_root``.
        pretrained_root: Folder of the published checkpoints.
        trust_checkpoint: Allow unpickling Python objects in the checkpoint.
    """

    backbone: str | None = None
    weights: str | Path | None = None
    pretrained_root: str | Path | None = None
    trust_checkpoint: bool = False


@dataclass(frozen=True)
class PublishedCache:
    """Import ``<cache_root>/<dataset>/<per_class>/{qg,gg}_dists.pth`` (+ optional ``labels.pth``,
    ``qq_dists.pth``), refusing when it is missing."""


@dataclass(frozen=True)
class DistanceFiles:
    """Import distance matrices (``.npy`` or ``.pth``).

    Attributes:
        qg: Query-gallery distances [Q, G].
        gg: Gallery-gallery distances [G, G].
        labels: ``.pth``/``.npz``/``.json`` with int ``query`` [Q] and ``gallery`` [G].
        qq: Query-query distances [Q, Q], for the methods that need them.
        class_names: ``class_names.json`` (the published cache's optional names; a
            ``class_names`` array in ``labels`` serves too).
    """

    qg: Path
    gg: Path
    labels: Path | None = None
    qq: Path | None = None
    class_names: Path | None = None


@dataclass(frozen=True)
class FeatureFiles:
    """Features the user brings: float [N, D] ``.npy`` or Parquet (see :func:`store.imports.read_features`).

    Attributes:
        query: Query features [Q, D].
        gallery: Gallery features [G, D].
        labels: ``.npz``/``.json``/``.pth`` with int ``query`` and ``gallery``
            and optional string ``query_names`` / ``gallery_names`` (file paths
            under the request's ``data_root``, shown by the dashboard).
        normalise: L2-normalise every vector before the distances.
    """

    query: Path
    gallery: Path
    labels: Path | None = None
    normalise: bool = True


Source = Union[Images, PublishedCache, DistanceFiles, FeatureFiles]


@dataclass(frozen=True)
class Compute:
    """How features are extracted and distances computed.

    Attributes:
        batch_size: Images per forward pass.
        num_workers: DataLoader workers (None: automatic).
        device: Torch device (None: CUDA when available).
        progress: Show progress bars.
    """

    batch_size: int = 64
    num_workers: int | None = None
    device: str | None = None
    progress: bool = True


@dataclass(frozen=True)
class ArtifactRequest:
    """Which artifacts to reuse, compute or import.

    Attributes:
        dataset: Dataset name (:data:`icfrr.datasets.DATASET_NAMES` for images;
            any name for imported distances or feature files).
        data_root: Folder of the dataset's images (imports: optional, gives items
            their paths when the counts match; feature files: the folder the
            names are relative to).
        per_class: First N items per label (-1: all); part of the cache key and path.
        source: Where the distances come from.
        cache_root: Cache folder.
        cache: Reuse, recompute, or keep nothing.
        kg_max: Largest KG a sweep will ask for; the graph keeps
            ``min(max(512, kg_max), G - 1)`` neighbours.
        compute: Extraction and device options.
        needs_qq: A method will need query-query distances: imported distances
            without a query-query file (nor one kept in their cache folder)
            are then refused before anything is written.
        graph: How the gallery graph is built from features: ``"exact"``, ``"ivf"`` or
            ``"hnsw"`` (:mod:`icfrr.ann`); None: exact up to :data:`EXACT_GRAPH_MAX_ITEMS`
            gallery items, ivf above. Refused for imported distances.
        recall_sample: Items on which an approximate graph's recall is measured
            (None: 1,000, or all when fewer).

    Raises:
        ArtifactError: per_class, kg_max, graph or recall_sample out of range, or a
            dataset name that is no plain folder name (see :func:`store.fs.check_folder_name`).
    """

    dataset: str
    data_root: str | Path | None = None
    per_class: int = -1
    source: Source = field(default_factory=Images)
    cache_root: str | Path = DEFAULT_CACHE_ROOT
    cache: CachePolicy = CachePolicy.REUSE
    kg_max: int = MIN_GRAPH_K
    compute: Compute = field(default_factory=Compute)
    needs_qq: bool = False
    graph: str | None = None
    recall_sample: int | None = None

    def __post_init__(self) -> None:
        try:
            check_folder_name(self.dataset, "--dataset")
        except PathError as exc:
            raise ArtifactError(str(exc)) from None
        if self.graph is not None and self.graph not in GRAPH_KINDS:
            raise ArtifactError(f"unknown graph kind {self.graph!r}; use one of {', '.join(GRAPH_KINDS)}")
        rs = self.recall_sample
        if rs is not None and (isinstance(rs, bool) or not isinstance(rs, int) or rs < 1):
            raise ArtifactError(f"the recall sample must be a positive number of items, got {rs!r}")
        pc, kg = self.per_class, self.kg_max
        if isinstance(pc, bool) or not isinstance(pc, int) or (pc < 1 and pc != -1):
            raise ArtifactError(f"per_class must be -1 (all) or a positive integer, got {pc!r}")
        if isinstance(kg, bool) or not isinstance(kg, int) or kg < 1:
            raise ArtifactError(f"kg_max must be a positive integer, got {kg!r}")


# --------------------------------------------------------------------------- entry point


def ensure_artifacts(request: ArtifactRequest, log: Callable[[str], None] = _stderr) -> Artifacts:
    """Distances and neighbour graph for a request: reused from the cache, computed, or imported.

    Args:
        request: What to make (see :class:`ArtifactRequest`).
        log: Receives one-line notes (reuse, key reports, warnings); stderr by default.

    Returns:
        :class:`store.artifacts.Artifacts`.

    Raises:
        One of :data:`USER_ERRORS` for bad input, with a one-line message;
        nothing is written then.
    """
    cache_root = Path(request.cache_root)
    hashes = HashCache(cache_root)
    arts = _ensure(request, hashes, log)
    spec = arts.meta.get("graph")
    if spec and spec["kind"] != "exact" and arts.meta.get("graph_recall", {}).get("k") != arts.graph.k:
        # the cached graph was rebuilt larger: measure the new one (kept in memory with it)
        arts.meta.update(graph_record(GraphSpec(spec["kind"], spec["params"]), arts.graph,
                                      arts.features("gallery"), request.recall_sample))
    if not arts.imported:
        log(_graph_choice(request, arts))
    if request.cache is not CachePolicy.NONE:
        hashes.save()             # after success only: a refusal leaves the cache folder as it was
    return arts


def _ensure(request: ArtifactRequest, hashes: HashCache, log: Callable[[str], None]) -> Artifacts:
    cache_root = Path(request.cache_root)
    read_only = None if request.cache is CachePolicy.NONE else cache.cache_refusal(cache_root)
    source = request.source
    if isinstance(source, (Images, PublishedCache)) and getattr(source, "backbone", None) is None:
        published = published_cache_dir(cache_root, request.dataset, request.per_class)
        if has_published_cache(published):
            log(f"importing the published distance cache in {published}")
            source = DistanceFiles(
                published / "qg_dists.pth", published / "gg_dists.pth",
                published / "labels.pth" if (published / "labels.pth").is_file() else None,
                published / QQ_PUBLISHED if (published / QQ_PUBLISHED).is_file() else None,
                published / CLASS_NAMES_FILE if (published / CLASS_NAMES_FILE).is_file() else None)
        elif isinstance(source, PublishedCache):
            raise ArtifactError(f"no published distance cache in {published} (expected qg_dists.pth and "
                                "gg_dists.pth); give the matrices' paths or another --backbone")
    if isinstance(source, DistanceFiles):
        if request.graph is not None or request.recall_sample is not None:
            flag = "--graph" if request.graph is not None else "--graph-recall-sample"
            raise ArtifactError(f"{flag} applies to graphs built from features; imported distances bring their "
                                "gallery-gallery matrix, whose graph is exact: drop it")
        return _from_distances(request, source, hashes, log, read_only, selects_items=source is request.source)
    if isinstance(source, FeatureFiles):
        return _from_feature_files(request, source, hashes, log, read_only)
    spec = source.backbone or ("demo" if request.dataset == "demo" else "icfrr")
    root = Path(request.data_root) if request.data_root else DEMO_ROOT
    if read_only is not None and request.dataset == "demo" and not is_generated(root):
        raise read_only                                 # generating the demo would write before the refusal
    return _from_images(request, source, spec, hashes, log, read_only)


def _finish(request: ArtifactRequest, folder: Path, key: str, ds: Dataset,
            rebuild: Callable[[int], NeighborGraph], log: Callable[[str], None],
            read_only: ArtifactError | None) -> Artifacts | None:
    """The cached artifacts when the policy allows and they are there; raises ``read_only`` otherwise."""
    if request.cache is CachePolicy.REUSE:
        cached = cache.load_cached(folder, key, ds, request.kg_max, rebuild, log)
        if cached is not None:
            return cached
    if read_only is not None:
        raise read_only
    return None


def _keep(request: ArtifactRequest, folder: Path) -> Path | None:
    return None if request.cache is CachePolicy.NONE else folder


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


def _from_images(request: ArtifactRequest, source: Images, spec: str, hashes: HashCache,
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
                           "timm": None if spec == "demo" else _timm_version(), **_graph_key(graph)})
    folder = cache.cache_folder(Path(request.cache_root), dataset, per_class, spec, key)
    device = request.compute.device or default_device()

    def rebuild(k: int) -> NeighborGraph:
        fg = cache.read_rows(folder / cache.FILES["gallery_features"], ["feature"])[0]["feature"]
        return build_graph(torch.from_numpy(fg).to(device), k, graph)

    if (cached := _finish(request, folder, key, ds, rebuild, log, read_only)) is not None:
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
    qg, nbrs, choice = _distances_and_graph(feats, request.kg_max, device, graph, request.recall_sample)
    meta = cache.base_meta(ds, spec, sha, per_class, key) | choice | {
        "images_sha256": digest(images), "preprocess_version": PREPROCESS_VERSION,
        "feature_dim": int(feats["query"].shape[1]), "neighbors_k": nbrs.k,
        "weights_path": str(wpath) if wpath else None,
        "load_report": bb.report.summary() if bb.report else None}
    return cache.save(_keep(request, folder), ds, meta, qg, nbrs, feats)


def dense_qg_fits(n_query: int, n_gallery: int) -> bool:
    """Whether the float32 [Q, G] distances stay within :data:`DENSE_QG_MAX_BYTES` (then kept dense)."""
    return 4 * n_query * n_gallery <= DENSE_QG_MAX_BYTES


def _distances_and_graph(feats: dict[str, np.ndarray], kg_max: int, device: str, spec: GraphSpec,
                         sample: int | None) -> tuple[np.ndarray | None, NeighborGraph, dict[str, object]]:
    """float32 [Q, G] Euclidean distances (None above the dense limit) and the gallery graph, from
    float32 [N, D] features, plus the record of those choices (and the graph's recall) for the metadata."""
    fq, fg = (torch.from_numpy(feats[s]).to(device) for s in ("query", "gallery"))
    dense = dense_qg_fits(fq.shape[0], fg.shape[0])
    qg = pairwise_distances(fq, fg).cpu().numpy() if dense else None
    choice = {"qg": "dense" if dense else "features", "dense_qg_max_bytes": DENSE_QG_MAX_BYTES}
    graph = build_graph(fg, cache.graph_k(fg.shape[0], kg_max), spec)
    return qg, graph, choice | graph_record(spec, graph, feats["gallery"], sample)


def graph_spec(request: ArtifactRequest, n_gallery: int) -> GraphSpec:
    """How the gallery graph of ``n_gallery`` items is built: ``request.graph``, or the default
    (exact up to :data:`EXACT_GRAPH_MAX_ITEMS`, ivf above; exact when FAISS is missing).

    Raises:
        ArtifactError: FAISS missing for an approximate graph asked for, or a recall sample above G.
    """
    kind = request.graph
    if kind is None:
        kind = "exact" if n_gallery <= EXACT_GRAPH_MAX_ITEMS else "ivf"
        if kind != "exact":
            try:
                require_faiss(kind)
            except FaissMissing:
                kind = "exact"
    elif kind != "exact":
        try:
            require_faiss(kind)
        except FaissMissing as exc:
            raise ArtifactError(str(exc)) from None
    if request.recall_sample is not None and request.recall_sample > n_gallery:
        raise ArtifactError(f"--graph-recall-sample {request.recall_sample} is larger than the gallery "
                            f"({n_gallery} items); use at most {n_gallery}")
    return default_spec(kind, n_gallery)


def _graph_choice(request: ArtifactRequest, arts: Artifacts) -> str:
    """The one line that says which graph was used and why."""
    kind = arts.meta.get("graph", {}).get("kind", "exact")
    n_gallery = arts.shape[1]
    if request.graph is not None:
        return f"gallery graph: {kind} (--graph {request.graph})"
    why = f"exact up to {EXACT_GRAPH_MAX_ITEMS:,} items, ivf above"
    if n_gallery > EXACT_GRAPH_MAX_ITEMS and kind == "exact":
        why += "; FAISS is not installed, so exact"
    return f"gallery graph: {kind} for {n_gallery:,} items ({why}; --graph chooses)"


def _graph_key(spec: GraphSpec) -> dict[str, object]:
    """The graph's part of a cache key: none for the exact graph (keys made before it stay valid)."""
    return {} if spec.kind == "exact" else {"graph": spec.record()}


def graph_record(spec: GraphSpec, graph: NeighborGraph, gallery: np.ndarray, sample: int | None
                 ) -> dict[str, object]:
    """The metadata of a graph: its kind and parameters, and for an approximate one its recall
    against exact neighbours on a seeded sample (``graph_recall.curve[c - 1]`` = recall@c)."""
    out: dict[str, object] = {"graph": spec.record()}
    if spec.kind != "exact":
        items = recall_sample(graph.n_items, sample)
        out["graph_recall"] = {"k": graph.k, "sample": int(items.size), "seed": RECALL_SEED,
                               "curve": graph_recall(graph, gallery, items)}
    return out


def recall_at(meta: dict, kg: int) -> float | None:
    """An approximate graph's recall@kg from the artifacts' metadata (None for an exact graph)."""
    rec = meta.get("graph_recall")
    if not rec or not rec["curve"]:
        return None
    curve = rec["curve"]
    return float(curve[min(kg, len(curve)) - 1])


# --------------------------------------------------------------------------- imported distances


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


def _from_distances(request: ArtifactRequest, source: DistanceFiles, hashes: HashCache,
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
        _read_qq(ids["qq"].path, n_q)
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
    arts = _finish(request, folder, key, ds, rebuild, log, read_only)
    if arts is None:
        graph = rebuild(cache.graph_k(n_g, request.kg_max))
        qg = np.array(qg)
        meta = cache.base_meta(ds, IMPORT_BACKBONE, None, per_class, key) | {
            "neighbors_k": graph.k, "metric": "as imported",
            "sources": {name: fid.record() for name, fid in ids.items() if name != "qq"}}
        for name in ("qg", "labels"):               # read as they were identified
            if name in ids:
                ids[name].check()
        arts = cache.save(_keep(request, folder), ds, meta, qg, graph)
    arts.gg_source = ids["gg"]
    arts.qq_source = ids.get("qq")
    return arts


def _class_names(labels: Path | None, names_file: Path | None) -> dict[int, str] | None:
    """Label -> class name from a ``class_names.json`` and the labels file's ``class_names``
    (the labels file wins where both name a label); None when neither has names."""
    found = [read_class_names(p) for p in (names_file, labels) if p is not None]
    found = [f for f in found if f is not None]
    return {k: v for f in found for k, v in f.items()} if found else None


def _read_qq(path: Path, n_q: int) -> np.ndarray:
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


def _from_feature_files(request: ArtifactRequest, source: FeatureFiles, hashes: HashCache,
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
                           **_graph_key(graph)})
    folder = cache.cache_folder(Path(request.cache_root), request.dataset, request.per_class,
                                FEATURES_BACKBONE, key)
    device = request.compute.device or "cpu"

    def rebuild(k: int) -> NeighborGraph:
        return build_graph(torch.from_numpy(feats["gallery"]).to(device), k, graph)

    if (cached := _finish(request, folder, key, ds, rebuild, log, read_only)) is not None:
        return cached
    qg, nbrs, choice = _distances_and_graph(feats, request.kg_max, device, graph, request.recall_sample)
    meta = cache.base_meta(ds, FEATURES_BACKBONE, None, request.per_class, key) | choice | {
        "feature_dim": int(feats["query"].shape[1]), "neighbors_k": nbrs.k, "normalise": source.normalise,
        "sources": {k: fid.record() for k, fid in ids.items()}}
    return cache.save(_keep(request, folder), ds, meta, qg, nbrs, feats)


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
        ArtifactError: Imported artifacts that do not name their gallery-gallery file.
        InputChanged: The file is gone or changed since the artifacts identified it (its bytes
            may no longer be those the neighbour graph was built from).
    """
    if not arts.imported:
        f = arts.features("gallery")
        return _distances_by_rows(f, f, rows, same=True)
    source = arts.gg_source
    if source is None:
        raise ArtifactError("these imported artifacts do not name their gallery-gallery file; import them again")
    source.check()
    gg = read_matrix(source.path)
    n_g = arts.shape[1]
    if gg.shape != (n_g, n_g):
        raise ArtifactError(f"{source.path} is {list(gg.shape)}, expected [{n_g}, {n_g}]")
    gg = np.array(gg)  # a writable copy, not the read-only memmap
    source.check()     # what was read is what the graph was built from
    return gg


def qq_dists(arts: Artifacts, log: Callable[[str], None] = _stderr, rows: int = 1024) -> np.ndarray:
    """float32 [Q, Q] query-query distances, kept as ``qq_dists.parquet`` in the cache folder.

    Reused from that file when it belongs to these artifacts (and, for imports,
    to the same source file); else computed from the query features ``rows``
    rows at a time, or read from the imported file, and kept there (unless
    the artifacts live in memory only).

    Raises:
        ArtifactError: Imported artifacts without query-query distances, or a
            file of the wrong shape.
        InputChanged: The imported file changed since the artifacts identified it.
    """
    kept = cache.kept_qq(arts, log)
    if kept is not None:
        return kept
    sha = cache.qq_identity(arts)  # raises when an import has none
    n_q = arts.shape[0]
    if arts.imported:
        source = arts.qq_source
        source.check()
        qq = np.array(_read_qq(source.path, n_q))   # read whole now, then checked: the bytes read are the identified ones
        source.check()
    else:
        f = arts.features("query")
        qq = _distances_by_rows(f, f, rows, same=True)
    cache.keep_qq(arts, qq, sha, log)
    return qq


# --------------------------------------------------------------------------- command-line flags


def _path(value: object) -> Path | None:
    return Path(value) if value is not None else None


def source_from_args(args: argparse.Namespace) -> Source:
    """The :data:`Source` of the flags of :func:`add_source_flags` plus ``--backbone``/``--weights``/...

    Raises:
        ArtifactError: Flags that do not go together, with a one-line message.
    """
    backbone = args.backbone
    features = (args.query_features, args.gallery_features)
    if any(f is not None for f in features):
        if None in features:
            raise ArtifactError("--query-features and --gallery-features go together; pass both")
        if args.qg is not None or args.gg is not None or args.qq is not None:
            raise ArtifactError("feature files and imported distances (--qg/--gg/--qq) exclude each other; "
                                "pass one kind")
        if backbone is not None:
            raise ArtifactError(f"feature files come with no backbone; drop --backbone {backbone}")
        return FeatureFiles(Path(features[0]), Path(features[1]), _path(args.labels), not args.no_normalise)
    if args.no_normalise:
        raise ArtifactError("--no-normalise applies to --query-features/--gallery-features only")
    graph_flag = ("--graph" if getattr(args, "graph", None) is not None else "--graph-recall-sample"
                  if getattr(args, "graph_recall_sample", None) is not None else None)
    if graph_flag is not None and (args.qg is not None or backbone == IMPORT_BACKBONE):
        raise ArtifactError(f"{graph_flag} applies to graphs built from features; imported distances bring "
                            "their gallery-gallery matrix, whose graph is exact: drop it")
    if (args.qg is None) != (args.gg is None):
        raise ArtifactError("importing distances needs both a query-gallery and a gallery-gallery matrix "
                            "(--qg and --gg)")
    if args.qg is not None:
        if backbone not in (None, IMPORT_BACKBONE):
            raise ArtifactError(f"imported distances come with no backbone; drop --backbone {backbone}")
        return DistanceFiles(Path(args.qg), Path(args.gg), _path(args.labels), _path(args.qq))
    if args.labels is not None:
        raise ArtifactError("a labels file is only read together with imported distance matrices "
                            "(--qg/--gg) or feature files (--query-features/--gallery-features)")
    if args.qq is not None:
        raise ArtifactError("a query-query file is only read together with imported distance matrices "
                            "(--qg/--gg)")
    if backbone == IMPORT_BACKBONE:
        return PublishedCache()
    return Images(backbone, args.weights, args.pretrained_root, args.trust_checkpoint)


def request_from_args(args: argparse.Namespace, kg_max: int, compute: Compute,
                      needs_qq: bool = False) -> ArtifactRequest:
    """The request of a command line with ``--dataset --data_root --per_class --cache_root
    --force-cache --no-cache``, the backbone flags and :func:`add_source_flags`; ``needs_qq``:
    see :class:`ArtifactRequest`.

    Raises:
        ArtifactError: Flags that do not go together, with a one-line message.
    """
    return ArtifactRequest(args.dataset, args.data_root, args.per_class, source_from_args(args),
                           args.cache_root if args.cache_root is not None else DEFAULT_CACHE_ROOT,
                           CachePolicy.from_flags(args.force_cache, args.no_cache), kg_max, compute, needs_qq,
                           graph=args.graph, recall_sample=args.graph_recall_sample)
