"""The sweep's plan: every input checked and loaded, the store locked, and how each configuration runs.

:func:`prepare` parses and checks the flags (:mod:`jobs.sweep_flags`), takes
the store's sweep lock, loads the artifacts and expands the grid into a
:class:`Plan`, writing nothing to the database. The plan names how rankings
are made (:data:`QUERY_CHUNKS` or, for the published per-iteration files of
``--rerank-results-dir``, :data:`WHOLE_RANKINGS`), where each configuration's
published files go, and what a run records about its inputs (:func:`recorded`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from icfrr.run_config import RunConfig
from jobs.cli import UsageError
from jobs.executors import Executor, LocalExecutor, check_executor_flags, open_executor
from jobs.progress import progress_mode
from jobs.sweep_flags import build_parser, check_flags, expand_grid, graph_k, requested_methods, resolve_device
from jobs.sweep_table import in_columns
from store import writes
from store.db import StoreError, check_database
from store.fs import check_writable_dir
from store.lock import SweepLock

if TYPE_CHECKING:  # torch and the engine load only once the flags are parsed: --help answers at once
    from icfrr.methods import MethodInputs
    from store.artifacts import Artifacts

#: Rankings made by query chunks through every iteration: memory bounded by one chunk.
QUERY_CHUNKS = "query chunks"
#: Whole [Q, G] rankings, one iteration after the other: what the published
#: per-iteration files of ``--rerank-results-dir`` need (memory grows with Q).
WHOLE_RANKINGS = "whole rankings"


def config_label(cfg: RunConfig) -> str:
    """A configuration's name in file names (its published files' folder)."""
    p = cfg.params
    if in_columns(cfg):
        return f"{p['variant']}_kg{p['kg']}_kq{p['kq']}_beta{p['beta']:g}_t{p['n_iter']}"
    return "_".join([cfg.method.replace("+", "_"), *(f"{k}-{v:g}" if isinstance(v, float) else f"{k}-{v}"
                                                     for k, v in p.items())])


@dataclass
class Plan:
    """Everything checked and loaded before the database is opened for writing.

    Attributes:
        rankings: How every configuration's rankings are made: :data:`QUERY_CHUNKS`,
            or :data:`WHOLE_RANKINGS` when ``--rerank-results-dir`` asks for the
            published per-iteration files.
    """

    args: argparse.Namespace
    device: str
    arts: Artifacts
    entries: list[RunConfig]
    warnings: list[str]
    images: tuple[list[Path], list[Path]] | None
    inputs: MethodInputs | None = None   # for the single-shot methods
    lock: SweepLock | None = None
    labels_eval: np.ndarray | None = None   # query labels for the metrics (-1: left out)
    executor: Executor = dataclasses.field(default_factory=LocalExecutor)   # where the groups run
    rankings: str = QUERY_CHUNKS

    @property
    def progress(self) -> str:
        """How progress is shown (``jobs.progress.progress_mode``): bar, lines or off (--quiet)."""
        return progress_mode(self.args.quiet)

    @property
    def labels_q(self) -> np.ndarray:
        """int [Q] query labels the metrics use."""
        return self.labels_eval if self.labels_eval is not None else self.arts.labels_q

    def out_dir(self, cfg: RunConfig) -> Path | None:
        """Where the published files of ``cfg`` go (None without --rerank_results_dir)."""
        a = self.args
        if a.rerank_results_dir is None:
            return None
        label = config_label(cfg) if len(self.entries) > 1 else None
        from jobs import published_outputs as pub

        return pub.results_dir(a.rerank_results_dir, a.dataset, a.per_class, label)


def load_artifacts(
    args: argparse.Namespace, kg_max: int, device: str, log: Callable[[str], None]
) -> Artifacts:
    """Reuse, compute or import the distances and neighbour graph (no database involved)."""
    from jobs.artifacts import Compute, ensure_artifacts, request_from_args

    compute = Compute(args.batchsize, device=device, progress=progress_mode(args.quiet) == "bar")
    needs_qq = any(m.needs_qq for m in requested_methods(args))
    return ensure_artifacts(request_from_args(args, kg_max, compute, needs_qq), log)


def artifact_info(arts: Artifacts) -> writes.ArtifactInfo:
    """The ``artifacts`` row of these distances."""
    path = {kind: str(p) for kind, p in arts.paths.items()}
    return writes.ArtifactInfo(
        key=arts.cache_key, backbone=arts.backbone, checkpoint_sha256=arts.checkpoint_sha256,
        per_class=arts.per_class, cache_dir=str(arts.cache_dir) if arts.cache_dir else None,
        query_features_path=path.get("query_features"),
        gallery_features_path=path.get("gallery_features"), qg_dists_path=path.get("qg_dists"),
        neighbors_path=path.get("neighbors"), neighbors_k=arts.graph.k)


def dataset_row(arts: Artifacts) -> dict[str, object]:
    """Keyword arguments of ``writes.upsert_dataset`` for the artifacts' dataset."""
    ds = arts.dataset
    return {"name": ds.name, "root": str(Path(ds.root).resolve()) if ds.root else None,
            "items": writes.items_table(
                arts.labels_q, arts.labels_g, paths_q=[it.path for it in ds.query],
                paths_g=[it.path for it in ds.gallery], class_names=ds.class_names)}


def image_paths(arts: Artifacts) -> tuple[list[Path], list[Path]] | None:
    """Absolute image files of both sides, or None when the items have no images."""
    ds = arts.dataset
    if ds.root is None or any(it.path is None for it in (*ds.query, *ds.gallery)):
        return None
    return ds.absolute_paths("query"), ds.absolute_paths("gallery")


def _take_lock(db: Path, command: str) -> tuple[SweepLock, list[Path]]:
    """The store's sweep lock, creating the database's folders; returns them too (to undo)."""
    created = []
    folder = Path(os.path.abspath(db)).parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of --db {db}: {exc.strerror or exc}") from None
    lock = SweepLock(db, command)
    try:
        lock.acquire()
    except BaseException:
        _remove_empty(created)
        raise
    return lock, created


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:            # deepest first
        try:
            folder.rmdir()
        except OSError:
            pass


def prepare(argv: Sequence[str], log: Callable[[str], None], command: str = "python -m jobs.sweep") -> Plan:
    """Parse and check every input, take the store's sweep lock and load the artifacts.

    Nothing is written to the database. On bad input the lock and any folder
    it needed are removed again.

    Raises:
        UsageError, StoreError, ValueError, OSError: Bad input, to report in one line.
    """
    args = build_parser().parse_args(argv)
    check_flags(args)
    check_executor_flags(args)
    device = resolve_device(args)
    check_database(args.db)
    if args.rerank_results_dir is not None:   # refused now, not after the first configuration's work
        check_writable_dir(args.rerank_results_dir, "--rerank_results_dir")
    executor = open_executor(args, device, log)   # Ray missing or unreachable: refused before the lock
    try:
        lock, created = _take_lock(args.db, command)
    except BaseException:
        executor.close()
        raise
    try:
        plan = _load(args, device, log)
    except BaseException:
        lock.release()
        _remove_empty(created)
        executor.close()
        raise
    plan.lock, plan.executor = lock, executor
    return plan


def _load(args: argparse.Namespace, device: str, log: Callable[[str], None]) -> Plan:
    """Load the artifacts and check the inputs that depend on them."""
    arts = load_artifacts(args, graph_k(args), device, log)
    n_query, n_gallery = arts.shape
    others = [m for m in requested_methods(args) if not m.iterative]   # the single-shot methods
    streamed = arts.qg_dists is None   # above the dense limit: computed per chunk of queries from the features
    if streamed:
        size = f"{4 * n_query * n_gallery / 2**30:.1f} GiB"
        whole = [m for m in others if not m.streamed]   # the single-shot methods without a streamed form
        if whole:
            raise UsageError(f"the [{n_query}, {n_gallery}] distances ({size}) are only computed per chunk; "
                             f"--method {whole[0].key} needs them whole: run it on a smaller split")
        if args.rerank_results_dir is not None:
            raise UsageError(f"--rerank_results_dir writes whole [{n_query}, {n_gallery}] rankings ({size} of "
                             "distances, computed per chunk here): drop it for this dataset")
    # read (or compute and keep) qq now: an import without it, or a bad file, is refused before any run
    from jobs.artifacts import qq_dists
    from jobs.method_runner import method_inputs
    from store.artifacts import qq_identity

    qq = qq_dists(arts, log) if any(m.needs_qq for m in others) and not streamed else None
    inputs_keys = {m.key: qq_identity(arts) for m in others if m.needs_qq}
    entries, warnings = expand_grid(args, n_gallery, inputs_keys)
    bad = [q for q in args.query_idxs_to_vis if not 0 <= q < n_query]
    if bad:
        raise UsageError(f"--query_idxs_to_vis {bad} outside 0..{n_query - 1}")
    images = image_paths(arts)
    if args.query_idxs_to_vis and images is None:
        where = (f"none were read under --data_root {args.data_root}" if args.data_root
                 else "give --data_root with the dataset's image files")
        raise UsageError(f"--query_idxs_to_vis needs the images: {where}")
    inputs = method_inputs(arts, log, qq) if others else None
    labels_eval, note = unanswerable(arts.labels_q, arts.labels_g, args.skip_unanswerable)
    return Plan(args, device, arts, entries, warnings + ([note] if note else []), images, inputs,
                labels_eval=labels_eval,
                rankings=QUERY_CHUNKS if args.rerank_results_dir is None else WHOLE_RANKINGS)


def unanswerable(labels_q: np.ndarray, labels_g: np.ndarray, skip: bool) -> tuple[np.ndarray, str | None]:
    """Query labels for the metrics, and the one warning about queries no ranking can answer.

    Queries of unknown label (-1) are left out of every metric (docs/SPEC.md section 4). A query
    whose label no gallery item has has nothing relevant: it gets AP 0 and
    counts in the means, unless ``skip``, which gives it -1 for the metrics
    (left out like an unknown label).

    Args:
        labels_q: int [Q] query labels.
        labels_g: int [G] gallery labels.
        skip: ``--skip-unanswerable``.

    Returns:
        (int64 [Q] labels to evaluate with, the warning or None).
    """
    labels_q = np.asarray(labels_q, dtype=np.int64)
    unknown = labels_q == -1
    missing = ~unknown & ~np.isin(labels_q, np.asarray(labels_g))
    parts = []
    if missing.any():
        how = ("left out of every mean (--skip-unanswerable)" if skip else
               "they get AP 0 and count in every mean; --skip-unanswerable leaves them out")
        parts.append(f"{int(missing.sum())} of {len(labels_q)} queries have a label no gallery item has: {how}")
    if len(labels_q) and unknown.all():
        parts.append("no query has a label, so no metrics will be computed: the runs store rankings only. "
                     "To get metrics, pass --labels FILE (.npz, .json or .pth with int 'query' [Q] and "
                     "'gallery' [G]; optional string 'class_names' indexed by label)")
    elif unknown.any():
        parts.append(f"{int(unknown.sum())} queries of unknown label (-1) are left out of the metrics")
    out = labels_q.copy()
    if skip:
        out[missing] = -1
    return out, "; ".join(parts) or None


def recorded(arts: Artifacts, cfg: RunConfig, measured: Mapping[str, object] | None = None) -> RunConfig:
    """``cfg`` with, in ``runs.params`` (not its key), how its query-gallery distances were held:
    ``qg_distances`` "dense" or "features per chunk", the limit that chose it, the gallery graph
    or k-NN index it read, and what the run ``measured`` (``RunOutcome.notes``)."""
    note: dict[str, object] = {"qg_distances": "dense" if arts.qg_dists is not None else "features per chunk"}
    if "dense_qg_max_bytes" in arts.meta:
        note["dense_qg_max_bytes"] = arts.meta["dense_qg_max_bytes"]
    graph_param = cfg.entry.graph_param
    if graph_param and "graph" in arts.meta:   # the gallery graph the method reads
        from jobs.artifacts import recall_at

        note["graph"] = arts.meta["graph"]
        recall = recall_at(arts.meta, cfg.params[graph_param])
        if recall is not None:
            note["graph_recall_at_kg"] = recall
            note["graph_recall_sample"] = arts.meta["graph_recall"]["sample"]
    kind = arts.meta.get("graph", {}).get("kind", "exact")
    if arts.qg_dists is None and kind != "exact" and not cfg.entry.iterative:
        from icfrr.ann import default_spec
        from icfrr.methods import reads_item_neighbours

        if reads_item_neighbours(cfg.method):   # its streamed k-NN sets come from an index of this kind, over Q + G
            note["knn_index"] = default_spec(kind, len(arts.labels_q) + len(arts.labels_g)).record()
    return cfg.with_params({}, note | dict(measured or {}))


def graph_note(arts: Artifacts, configs: Sequence[RunConfig]) -> str | None:
    """The line that says the numbers of the methods reading the gallery graph were built on an
    approximate graph, with its recall@KG; None when exact or when no configuration reads it."""
    from jobs.artifacts import recall_at

    readers = [c for c in configs if c.entry.graph_param]
    graph = arts.meta.get("graph")
    if not readers or not graph or graph["kind"] == "exact":
        return None
    kgs = [c.params[c.entry.graph_param] for c in readers]
    labels = " and ".join(dict.fromkeys(c.entry.label for c in readers))
    params = ", ".join(f"{k}={v}" for k, v in graph["params"].items())
    recalls = ", ".join(f"KG {kg}: {recall_at(arts.meta, kg):.4f}" for kg in sorted(set(kgs)))
    return (f"{labels} ran on an APPROXIMATE {graph['kind']} gallery graph ({params}); its recall@KG against exact "
            f"neighbours on {arts.meta['graph_recall']['sample']} sampled items: {recalls}")
