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

The work is split by job: the request and its flags (:mod:`jobs.artifact_request`),
the gallery graph (:mod:`jobs.artifact_graph`), images (:mod:`jobs.artifact_images`),
files the user brings (:mod:`jobs.artifact_imports`) and the dense gallery-gallery
and query-query distances of the baselines (:mod:`jobs.artifact_dense`); this module
chooses among them and re-exports what the commands import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from icfrr.ann import GraphSpec
from icfrr.datasets import DEMO_ROOT
from icfrr.datasets.demo import is_generated
from jobs.artifact_dense import dense_gg, qq_dists
from jobs.artifact_graph import dense_qg_fits, graph_choice, graph_record, graph_spec, recall_at
from jobs.artifact_images import from_images
from jobs.artifact_imports import from_distances, from_feature_files, read_feature_files
from jobs.artifact_request import (FEATURES_BACKBONE, USER_ERRORS, ArtifactRequest, Compute, DistanceFiles,
                                   FeatureFiles, Images, PublishedCache, Source, log_to_stderr, request_from_args,
                                   source_from_args)
from jobs.source_flags import EXACT_GRAPH_MAX_ITEMS, add_source_flags
from store import artifacts as cache
from store.artifacts import QQ_PUBLISHED, ArtifactError, Artifacts, CachePolicy
from store.identity import HashCache
from store.imports import CLASS_NAMES_FILE, has_published_cache, published_cache_dir

__all__ = ["EXACT_GRAPH_MAX_ITEMS", "FEATURES_BACKBONE", "USER_ERRORS", "ArtifactRequest",
           "Compute", "DistanceFiles", "FeatureFiles", "Images", "PublishedCache", "Source", "add_source_flags",
           "dense_gg", "dense_qg_fits", "ensure_artifacts", "graph_record", "graph_spec", "qq_dists",
           "read_feature_files", "recall_at", "request_from_args", "source_from_args"]


def ensure_artifacts(request: ArtifactRequest, log: Callable[[str], None] = log_to_stderr) -> Artifacts:
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
        # the cached graph was rebuilt larger: measure the new one, and keep its recall with the artifacts
        cache.record_fields(arts, graph_record(GraphSpec(spec["kind"], spec["params"]), arts.graph,
                                               arts.features("gallery"), request.recall_sample), log)
    if not arts.imported:
        log(graph_choice(request, arts))
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
        return from_distances(request, source, hashes, log, read_only, selects_items=source is request.source)
    if isinstance(source, FeatureFiles):
        return from_feature_files(request, source, hashes, log, read_only)
    spec = source.backbone or ("demo" if request.dataset == "demo" else "icfrr")
    root = Path(request.data_root) if request.data_root else DEMO_ROOT
    if read_only is not None and request.dataset == "demo" and not is_generated(root):
        raise read_only                                 # generating the demo would write before the refusal
    return from_images(request, source, spec, hashes, log, read_only)
