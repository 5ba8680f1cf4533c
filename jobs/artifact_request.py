"""What ``python -m jobs.sweep`` and ``python -m jobs.extract`` ask :func:`jobs.artifacts.ensure_artifacts` for.

An :class:`ArtifactRequest` names the dataset, the cache and where the distances
come from (its ``source``: :class:`Images`, :class:`PublishedCache`,
:class:`DistanceFiles` or :class:`FeatureFiles`); :func:`request_from_args`
makes one from the command-line flags of :mod:`jobs.source_flags`. The cache
policy's two helpers that every source uses live here too.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Union

from icfrr.ann import GRAPH_KINDS
from icfrr.datasets import Dataset, DatasetError
from icfrr.features.errors import BackboneError, ImageReadError
from icfrr.neighbors import NeighborGraph
from store import artifacts as cache
from store.artifacts import DEFAULT_CACHE_ROOT, IMPORT_BACKBONE, MIN_GRAPH_K, ArtifactError, Artifacts, CachePolicy
from store.fs import PathError, check_folder_name
from store.identity import InputChanged
from store.imports import SourceError

#: Every error caused by user input that ensure_artifacts can raise: CLIs print these in one line, exit 2.
USER_ERRORS = (ArtifactError, DatasetError, BackboneError, ImageReadError, SourceError, InputChanged)
#: The ``backbone`` of artifacts made from feature files the user brings.
FEATURES_BACKBONE = "features"


def log_to_stderr(msg: str) -> None:
    """The default ``log``: one line on stderr."""
    print(msg, file=sys.stderr)


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


def reuse_or_refuse(request: ArtifactRequest, folder: Path, key: str, ds: Dataset,
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


def kept_folder(request: ArtifactRequest, folder: Path) -> Path | None:
    """Where to keep new artifacts: ``folder``, or None when the policy keeps nothing."""
    return None if request.cache is CachePolicy.NONE else folder


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
