"""Parquet artifacts: the cache format of the distances a sweep re-ranks (persistence only).

For a dataset and a source of distances one cache folder
``<cache_root>/<dataset>/<per_class>/<label>-<key>/`` holds:

- ``items.parquet``: side, idx, path, label, class_name of every item;
- ``query_features.parquet`` / ``gallery_features.parquet``: ``idx``, ``feature``
  (float32 list [D]); absent for imported distances;
- ``qg_dists.parquet``: ``query_idx``, ``dists`` (float32 list [G]);
- ``neighbors.parquet``: ``gallery_idx``, ``neighbors`` (int32 list [K]),
  ``distances`` (float32 list [K]): the K nearest other gallery items;
- ``COMPLETE.json``: written last; a folder without it is never used;
- ``qq_dists.parquet``: ``query_idx``, ``dists`` (float32 list [Q]), added later
  (:func:`keep_qq`) when a method needs query-query distances.

The folder is built under a temporary name and renamed into place, so an
interrupted run leaves nothing a later run would take as valid. Every Parquet
file carries JSON metadata (see :mod:`store.parquet_rows`) and is readable by
DuckDB's ``read_parquet`` without this code.

This module only keeps and checks what others compute: :func:`save` writes a
folder, :func:`load_cached` returns a finished folder's artifacts (or None when
there is none, or it is damaged). Computing features, distances and graphs is
the job of :mod:`jobs.artifacts`; reading the files users bring is
:mod:`store.imports`.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from icfrr import FeatureDistances, NeighborGraph
from icfrr.owners import owner_tag, remove_stale
from icfrr.datasets import Dataset, DatasetError
from store.fs import PathError, check_writable_dir
from store.identity import FileId
from store.imports import SourceError
from store.parquet_rows import (atomic_write_bytes, check_rows, public_tempdir, read_meta, read_row, read_rows,
                                write_rows, write_table)

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
#: The ``backbone`` of artifacts imported as distance matrices (they have no features).
IMPORT_BACKBONE = "import"


class ArtifactError(ValueError):
    """The artifacts cannot be built or read as asked; the message says what to do."""


class CachePolicy(enum.Enum):
    """What to do with the cache folder of a request."""

    REUSE = "reuse"     #: use a finished folder of the same key, else compute and keep
    FORCE = "force"     #: compute again and replace the folder
    NONE = "none"       #: compute in memory, write nothing

    @classmethod
    def from_flags(cls, force: bool, no_cache: bool) -> CachePolicy:
        """The policy of ``--force-cache`` / ``--no-cache``.

        Raises:
            ArtifactError: Both given.
        """
        if force and no_cache:
            raise ArtifactError("--force-cache and --no-cache contradict each other; pass one")
        return cls.FORCE if force else cls.NONE if no_cache else cls.REUSE


@dataclass
class Artifacts:
    """What a sweep needs: distances, the gallery neighbour graph, labels and where they live.

    Attributes:
        dataset: The items (paths relative to ``dataset.root``; None for path-less imports).
        qg_dists: float32 [Q, G] query-gallery distances, smaller = closer; None
            when they are above the dense limit and come from features, computed
            per chunk of queries (:meth:`query_distances`; ``meta["qg"]`` says which).
        graph: The K nearest other gallery items of each gallery item.
        labels_q: int64 [Q] (-1 unknown).
        labels_g: int64 [G] (-1 unknown).
        backbone: ``"demo"``, ``"icfrr"``, ``"timm:<model>"``, ``"features"``
            (feature files) or ``"import"`` (distance matrices).
        checkpoint_sha256: sha256 of the weights file, None without one.
        per_class: The per_class the dataset was read with.
        cache_key: sha256 hex of everything the artifacts depend on.
        cache_dir: The cache folder, None when kept in memory only.
        paths: File kind (``items``, ``query_features``, ``gallery_features``,
            ``qg_dists``, ``neighbors``) -> Parquet path; empty in memory only.
        meta: The metadata record (also in each file and in ``COMPLETE.json``).
        reused: True when everything came from an existing cache folder.
        gg_source: The imported gallery-gallery file, as identified when the
            artifacts were made (None for features).
        qq_source: The imported query-query file, as identified, when one was
            given (the published cache's optional ``qq_dists.pth``, or ``--qq``).
    """

    dataset: Dataset
    qg_dists: torch.Tensor | None
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
    gg_source: FileId | None = None
    qq_source: FileId | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(Q, G)."""
        return len(self.labels_q), len(self.labels_g)

    def query_distances(self) -> torch.Tensor | FeatureDistances:
        """The query-gallery distances: the dense [Q, G] matrix, or a function of a
        chunk of queries computing theirs from the features (never the whole matrix)."""
        if self.qg_dists is not None:
            return self.qg_dists
        return FeatureDistances(torch.from_numpy(self.features("query")), torch.from_numpy(self.features("gallery")))

    @property
    def imported(self) -> bool:
        """True for distances imported as matrices (no features)."""
        return self.backbone == IMPORT_BACKBONE

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


#: Bytes the neighbour lists kept beyond ``kg_max`` may take (12 per entry: int64 index, float32 distance).
GRAPH_SPARE_BYTES = 1 << 30


def graph_k(n_gallery: int, kg_max: int = MIN_GRAPH_K) -> int:
    """Neighbours kept per gallery item: max(512, kg_max), capped at G - 1.

    Above G = 174,762 the 512 shrink (not below ``kg_max``) to what
    :data:`GRAPH_SPARE_BYTES` holds: at a million items 512 lists would take 6 GiB.
    """
    spare = min(MIN_GRAPH_K, GRAPH_SPARE_BYTES // (12 * max(n_gallery, 1)))
    return max(0, min(max(spare, kg_max), n_gallery - 1))


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the ``created_at`` of metadata)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def cache_key(identity: dict) -> str:
    """sha256 hex of everything some artifacts depend on (JSON-able; the format version is added)."""
    return hashlib.sha256(json.dumps({"v": FORMAT_VERSION, **identity}, sort_keys=True).encode()).hexdigest()


def cache_folder(cache_root: Path, dataset: str, per_class: int, label: str, key: str) -> Path:
    """``<cache_root>/<dataset>/<per_class>/<label>-<key[:16]>``, ``label`` made file-name safe."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "backbone"
    return Path(cache_root) / dataset / str(per_class) / f"{slug}-{key[:16]}"


def base_meta(ds: Dataset, backbone: str, sha: str | None, per_class: int, key: str) -> dict:
    """The metadata every file and the marker of a folder carry (callers add their own fields)."""
    return {"format_version": FORMAT_VERSION, "cache_key": key, "dataset": ds.name,
            "dataset_fingerprint": ds.fingerprint(), "root": str(Path(ds.root).resolve()) if ds.root else None,
            "n_query": len(ds.query), "n_gallery": len(ds.gallery), "backbone": backbone,
            "checkpoint_sha256": sha, "per_class": per_class, "metric": "euclidean", "created_at": now()}


def cache_refusal(cache_root: Path) -> ArtifactError | None:
    """None when artifacts can be written under ``cache_root``, else the error to raise before writing.

    A file where the folder should be (or on its way) is refused at once. An
    existing folder that cannot be written (a read-only shared cache) may
    still serve artifacts it already holds, so the error is returned for the
    caller to raise only when something would have to be computed.

    Raises:
        ArtifactError: ``cache_root`` is, or is inside, a regular file, or is
            missing and cannot be created.
    """
    try:
        check_writable_dir(cache_root, "--cache_root")
    except PathError as exc:
        error = ArtifactError(f"{exc}, or --no-cache to compute in memory")
        if not cache_root.is_dir():
            raise error from None
        return error
    return None


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


def _write_folder(final: Path, ds: Dataset, meta: dict, qg: np.ndarray | None, graph: NeighborGraph,
                  feats: dict[str, np.ndarray]) -> dict[str, Path]:
    """Write every file into a temporary sibling folder, the marker last, then rename it into place."""
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(final.parent, ".tmp-")          # left by killed runs (their process is gone)
    remove_stale(final.parent, ".old-")
    tmp = public_tempdir(final.parent, f".tmp-{final.name}-{owner_tag()}-")
    try:
        write_table(tmp / FILES["items"], _items_table(ds), meta | {"kind": "items"})
        for side, f in feats.items():
            write_rows(tmp / FILES[f"{side}_features"], "idx", {"feature": f}, meta | {"kind": f"{side}_features"})
        if qg is not None:
            write_rows(tmp / FILES["qg_dists"], "query_idx", {"dists": qg}, meta | {"kind": "qg_dists"})
        _write_graph(tmp / FILES["neighbors"], graph, meta)
        names = [name for kind, name in FILES.items() if (tmp / name).exists()]
        atomic_write_bytes(tmp / MARKER, json.dumps(meta | {"files": names}, indent=1).encode())
        if final.exists():
            old = final.with_name(f".old-{final.name}-{owner_tag()}-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {kind: final / name for kind, name in FILES.items() if (final / name).exists()}


def save(folder: Path | None, ds: Dataset, meta: dict, qg: np.ndarray | None, graph: NeighborGraph,
         features: dict[str, np.ndarray] | None = None) -> Artifacts:
    """Keep freshly computed artifacts in ``folder`` (atomically) and return them.

    Args:
        folder: The cache folder (:func:`cache_folder`); None keeps them in memory only.
        ds: The items, in matrix order.
        meta: :func:`base_meta` plus the source's own fields (``neighbors_k``,
            ``feature_dim`` when there are features).
        qg: float32 [Q, G] query-gallery distances; None when they are computed
            per chunk from ``features`` (above the dense limit).
        graph: The gallery neighbour graph.
        features: ``"query"`` / ``"gallery"`` -> float32 [N, D] features, when
            the distances come from features.

    Returns:
        The :class:`Artifacts` (``reused`` False).
    """
    feats = features or {}
    if qg is None and not feats:
        raise ValueError("artifacts without dense distances need the features to compute them from")
    qg = None if qg is None else np.ascontiguousarray(qg, dtype=np.float32)
    paths = {} if folder is None else _write_folder(folder, ds, meta, qg, graph, feats)
    return Artifacts(ds, None if qg is None else torch.from_numpy(qg), graph, ds.labels_q, ds.labels_g, meta["backbone"],
                     meta.get("checkpoint_sha256"), meta["per_class"], meta["cache_key"], folder, paths,
                     meta | {"files": [p.name for p in paths.values()]}, _features=feats)


def record_fields(arts: Artifacts, fields: dict, log: Callable[[str], None]) -> None:
    """Add ``fields`` to the artifacts' metadata, and to their folder's marker when they have one.

    For what is measured after the files were written (the recall of a
    rebuilt approximate graph), so the next run reads it instead of measuring
    it again. The marker is replaced atomically; a folder that cannot be
    written (a read-only shared cache) keeps its marker and is logged.
    """
    arts.meta.update(fields)
    if arts.cache_dir is None or not (arts.cache_dir / MARKER).is_file():
        return
    try:
        record = json.loads((arts.cache_dir / MARKER).read_text()) | fields
        atomic_write_bytes(arts.cache_dir / MARKER, json.dumps(record, indent=1).encode())
    except (OSError, ValueError) as exc:
        log(f"could not record {', '.join(fields)} in {arts.cache_dir} ({getattr(exc, 'strerror', None) or exc}); "
            "it is measured again next time")


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


def _check_folder(paths: dict[str, Path], record: dict, ds: Dataset) -> None:
    """Every file against the marker and the dataset: kind, key, rows, widths (footers only).

    Raises:
        ValueError: A file is truncated, foreign, of another key or of another shape.
    """
    n_q, n_g, key = record["n_query"], record["n_gallery"], record["cache_key"]
    if (n_q, n_g) != (len(ds.query), len(ds.gallery)):
        raise ValueError(f"the marker says {n_q} x {n_g} items, the dataset has "
                         f"{len(ds.query)} x {len(ds.gallery)}")
    needed = {"items", "neighbors"} | ({"query_features", "gallery_features"} if record.get("qg") == "features"
                                       else {"qg_dists"})
    missing = needed - set(paths)
    if missing:
        raise ValueError(f"the marker lists no {', '.join(sorted(missing))} file")
    expect = {"items": (n_q + n_g, None), "qg_dists": (n_q, {"dists": n_g}),
              "neighbors": (n_g, {"neighbors": record["neighbors_k"], "distances": record["neighbors_k"]}),
              "query_features": (n_q, {"feature": record.get("feature_dim")}),
              "gallery_features": (n_g, {"feature": record.get("feature_dim")})}
    for kind, path in paths.items():
        rows, widths = expect[kind]
        check_rows(path, kind, rows, widths, key)
    with pq.ParquetFile(paths["items"], page_checksum_verification=True) as fh:
        items = fh.read(columns=["side", "idx", "path", "label"]).to_pydict()
    if items != _items_table(ds).select(["side", "idx", "path", "label"]).to_pydict():
        raise ValueError(f"{paths['items']} lists other items than the dataset")


def _load_folder(folder: Path, record: dict, ds: Dataset, kg_max: int,
                 rebuild: Callable[[int], NeighborGraph], log: Callable[[str], None]) -> Artifacts:
    paths = {kind: folder / name for kind, name in FILES.items() if name in record["files"]}
    _check_folder(paths, record, ds)
    qg = read_rows(paths["qg_dists"], ["dists"])[0]["dists"] if "qg_dists" in paths else None
    graph = _read_graph(paths["neighbors"])
    need = graph_k(len(ds.gallery), kg_max)
    if graph.k < need:
        log(f"the cached neighbour graph keeps {graph.k} neighbours; rebuilding it with {need}")
        graph = rebuild(need)
        # the recall measured on the smaller graph does not describe this one (the caller measures it again)
        record = {k: v for k, v in record.items() if k != "graph_recall"} | {"neighbors_k": graph.k}
        try:
            _write_graph(paths["neighbors"], graph, {k: v for k, v in record.items() if k != "files"})
            atomic_write_bytes(folder / MARKER, json.dumps(record, indent=1).encode())
        except OSError as exc:               # a read-only shared cache: use the graph from memory
            log(f"could not store the larger neighbour graph in {folder} ({exc.strerror or exc}); "
                "it is used from memory")
    # read now, with the page checksums verified, so a damaged feature file is recomputed, not met later
    feats = {side: read_rows(paths[f"{side}_features"], ["feature"])[0]["feature"]
             for side in ("query", "gallery") if f"{side}_features" in paths}
    log(f"reusing artifacts in {folder}")
    return Artifacts(ds, None if qg is None else torch.from_numpy(qg), graph, ds.labels_q, ds.labels_g,
                     record["backbone"], record.get("checkpoint_sha256"), record["per_class"], record["cache_key"],
                     folder, paths, record, reused=True, _features=feats)


def load_cached(folder: Path, key: str, ds: Dataset, kg_max: int, rebuild: Callable[[int], NeighborGraph],
                log: Callable[[str], None]) -> Artifacts | None:
    """The finished artifacts of ``key`` in ``folder``, or None when there are none or they are damaged.

    Every file is checked against the marker and ``ds`` (kind, key, rows,
    widths, page checksums); a damaged folder is logged and None returned, so
    the caller computes it again. A graph smaller than ``kg_max`` asks for is
    rebuilt with ``rebuild(k)`` and stored back (from memory when the folder
    is read-only).

    Args:
        folder: The cache folder (:func:`cache_folder`).
        key: The request's :func:`cache_key`.
        ds: The items the artifacts must list, in order.
        kg_max: Largest KG the caller will use.
        rebuild: Makes the gallery graph with ``k`` neighbours.
        log: Receives one-line notes.

    Raises:
        ArtifactError, SourceError, DatasetError: From ``rebuild`` (bad input).
    """
    record = _complete(folder, key)
    if record is None:
        return None
    try:
        return _load_folder(folder, record, ds, kg_max, rebuild, log)
    except (OSError, ValueError, KeyError) as exc:
        if isinstance(exc, (ArtifactError, SourceError, DatasetError)):
            raise
        log(f"cached artifacts in {folder} are unreadable ({str(exc).splitlines()[0][:120]}); recomputing them")
        return None


# --------------------------------------------------------------------------- one query, read back


def _check_kind(path: Path, kind: str, key: str) -> dict:
    """The metadata of ``path`` when it is an artifact file of ``kind`` and ``key`` (footer only).

    Raises:
        ValueError: Another kind or key, no icfrr metadata, or an unreadable footer.
    """
    meta = read_meta(path)
    if meta.get("kind") != kind or meta.get("cache_key") != key:
        raise ValueError(f"{path} is not the {kind} file of these artifacts")
    return meta


def read_graph(path: str | Path, key: str) -> NeighborGraph:
    """The gallery neighbour graph kept in a ``neighbors.parquet`` of artifacts ``key``.

    Raises:
        OSError, ValueError: A missing, foreign (another key) or damaged file.
    """
    _check_kind(Path(path), "neighbors", key)
    return _read_graph(Path(path))


def read_query_distances(record: dict, query_idx: int) -> np.ndarray:
    """One query's distances to the gallery, float32 [G], from the files an ``artifacts`` row names.

    From ``qg_dists.parquet`` (one row group read) when the row names one, else
    computed from the query's and the gallery's features as the sweep did
    (:class:`icfrr.FeatureDistances`).

    Args:
        record: The artifacts row (``store.read.artifact_files``): ``cache_key``,
            ``qg_dists_path``, ``query_features_path``, ``gallery_features_path``.
        query_idx: The query.

    Raises:
        OSError, ValueError: The files are missing, foreign (another key), damaged,
            or the row names none that give distances.
    """
    key = record["cache_key"]
    if record.get("qg_dists_path"):
        path = Path(record["qg_dists_path"])
        _check_kind(path, "qg_dists", key)
        return read_row(path, "query_idx", int(query_idx), "dists").astype(np.float32, copy=False)
    if record.get("query_features_path") and record.get("gallery_features_path"):
        q_path, g_path = Path(record["query_features_path"]), Path(record["gallery_features_path"])
        meta = _check_kind(q_path, "query_features", key)
        _check_kind(g_path, "gallery_features", key)
        query = read_row(q_path, "idx", int(query_idx), "feature")[None, :]
        gallery = read_rows(g_path, ["feature"])[0]["feature"]
        return FeatureDistances(query, gallery, meta.get("metric", "euclidean"))(slice(0, 1))[0].numpy()
    raise ValueError("the artifacts row names neither query-gallery distances nor features")


# --------------------------------------------------------------------------- query-query distances


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
    if not arts.imported:
        return None
    if arts.qq_source is not None:
        return arts.qq_source.sha256
    kept = arts.cache_dir / QQ_FILE if arts.cache_dir is not None else None
    meta = _qq_meta(kept) if kept is not None and kept.is_file() else None
    if meta is not None and meta.get("cache_key") == arts.cache_key and meta.get("sha256"):
        return str(meta["sha256"])
    raise no_qq_error(Path(arts.meta.get("sources", {}).get("qg", {}).get("path", "qg_dists.pth")))


def no_qq_error(qg_source: Path) -> ArtifactError:
    """The one-line error for imported distances (from ``qg_source``) that have no query-query matrix."""
    return ArtifactError(f"the imported distances have no query-query matrix: {qg_source.parent / QQ_PUBLISHED} "
                         "is missing (save the [Q, Q] distances there, or import them with "
                         "python -m jobs.extract --qq FILE)")


def _qq_source(arts: Artifacts) -> FileId | None:
    """The imported query-query file the distances must come from (None for features)."""
    return arts.qq_source if arts.imported else None


def kept_qq(arts: Artifacts, log: Callable[[str], None]) -> np.ndarray | None:
    """float32 [Q, Q] from ``qq_dists.parquet`` when it belongs to these artifacts, else None.

    For imports given a query-query file, the kept distances must also have been
    made from a file of the same content (sha256): never from an older version
    of it, whatever its size and times.
    """
    n_q = arts.qg_dists.shape[0]
    kept = arts.cache_dir / QQ_FILE if arts.cache_dir is not None else None
    meta = _qq_meta(kept) if kept is not None and kept.is_file() else None
    source = _qq_source(arts)
    if meta is None or meta.get("cache_key") != arts.cache_key or (
            source is not None and meta.get("sha256") != source.sha256):
        return None
    try:
        qq = read_rows(kept, ["dists"])[0]["dists"]
        if qq.shape == (n_q, n_q):
            log(f"reusing query-query distances in {kept}")
            return qq
    except (OSError, ValueError, KeyError):
        pass
    log(f"{kept} is unreadable; making it again")
    return None


def keep_qq(arts: Artifacts, qq: np.ndarray, sha: str | None, log: Callable[[str], None]) -> None:
    """Write ``qq`` as ``qq_dists.parquet`` in the cache folder (nothing for in-memory artifacts).

    Args:
        arts: The artifacts the distances belong to.
        qq: float32 [Q, Q] query-query distances.
        sha: :func:`qq_identity` of ``arts``.
        log: Receives the note saying where they are kept.
    """
    if arts.cache_dir is None:
        return
    kept = arts.cache_dir / QQ_FILE
    write_rows(kept, "query_idx", {"dists": qq},
               {"kind": "qq_dists", "cache_key": arts.cache_key, "format_version": FORMAT_VERSION,
                "source": source.record() if (source := _qq_source(arts)) is not None else None,
                "sha256": sha, "created_at": now()})
    log(f"query-query distances kept in {kept}")
