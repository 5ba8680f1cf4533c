"""``python -m jobs.sweep --dataset NAME [--method icfrr k_reciprocal ...]``: re-rank over grids into DuckDB.

Pipeline: check every input (flags, data, checkpoint, database) -> reuse or
make the Parquet artifacts (features, distances, one gallery neighbour graph
with K >= the largest KG, shared by every configuration) -> for each
configuration not already in the database: re-rank once over all
iterations, evaluate every iteration, commit the run in one transaction ->
print a table and the command that opens the dashboard.

``--method`` picks the re-ranking methods of :data:`icfrr.registry.METHODS`
(default icfrr); each has its own grid flags, made from the registry. A
method other than ICFRR re-ranks once: its run has iteration 0 (the initial
ranking) and 1 (its own), ``kg``/``kq``/``beta``/``variant`` NULL and its
parameters in ``runs.params``. Those that need query-query distances
(k-reciprocal, ECN) compute them from the features and keep them as
``qq_dists.parquet`` in the cache folder; an imported cache must bring them as
``qq_dists.pth``.

Distances come from the images (``--backbone``), the published cache under
``--cache_root``, matrices (``--qg --gg [--labels --qq]``) or features
(``--query-features --gallery-features [--labels] [--no-normalise]``); see
:mod:`jobs.artifacts`, which ``jobs.extract`` shares.

The published code's flags are accepted with the same meaning (``--KG --KQ
--n_times --per_class --data_root --cache_root --pretrained_root --batchsize
--gpu_id --no_cache --force_cache --limited_memory --cpu_as_metric_device
--rerank_results_dir --query_idxs_to_vis --num_gallery_ims_to_vis``).

Every input file is identified by content (sha256) once, when the sweep
starts, and every method of the sweep uses artifacts of exactly those files;
one that changes while the sweep runs stops it when it is next read (one line,
exit status 2; the runs committed before are kept).

Exit status: 0 done, 2 bad input (one line on stderr, nothing written to the
database) or an input file changed during the sweep, 130 stopped by Ctrl-C
(one line; the sweep is marked interrupted), 1 an unexpected failure while
running (finished runs stay committed; running the same command again
resumes).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from icfrr.registry import HEADLINE, METHOD_KEYS, METHODS, METRICS, Method, Param
from icfrr.registry import method as registry_method
from jobs import cli
from jobs.cli import OneLineParser, UsageError
from jobs.executors import (
    Executor, Group, LocalExecutor, Work, add_executor_flags, check_executor_flags, open_executor,
)
from jobs.progress import Progress, progress_mode
from jobs.source_flags import add_graph_flags, add_source_flags
from store import writes
from store.db import StoreError, check_database, writer
from store.fs import PathError, check_folder_name, check_writable_dir
from store.identity import InputChanged
from store.lock import SweepLock

if TYPE_CHECKING:  # torch and the engine load only once the flags are parsed: --help answers at once
    from icfrr.methods import MethodInputs
    from jobs.sweep_runner import RunOutcome
    from store.artifacts import Artifacts

DEFAULT_DB = Path("results/icfrr.duckdb")
EXAMPLES = """examples:
  python -m jobs.sweep --dataset demo --kg 8 16 32 64 --kq 5 10 20 --beta 0.5 1
  python -m jobs.sweep --dataset demo --method icfrr k_reciprocal ecn alpha_qe dba dba+alpha_qe
  python -m jobs.sweep --dataset tuberlin --data-root /data --pretrained-root /ckpt --trust-checkpoint
  python -m jobs.sweep --dataset custom --cache-root examples --data-root examples/custom --n-times 20 --kg 10 --kq 15
  python -m jobs.sweep --dataset mine --query-features q.npy --gallery-features g.npy --labels labels.npz
  python -m jobs.sweep --dataset mine --qg qg.npy --gg gg.npy --labels labels.npz
"""
#: The table's metric columns: (run_metrics key, header), from the registry.
TABLE_METRICS = tuple((m.key, m.label) for m in METRICS)


def build_parser() -> argparse.ArgumentParser:
    """The sweep's flags; published spellings are aliases of ours."""
    p = OneLineParser(prog="python -m jobs.sweep", allow_abbrev=False, epilog=EXAMPLES,
                description="Re-rank a dataset with ICFRR (and other re-ranking methods) over a "
                            "grid of configurations and store every iteration's metrics in DuckDB. "
                            "Every flag also takes the underscore spelling (--data_root) and the "
                            "published code's (--KG, --KQ, --n_times).")
    p.add_argument("--dataset", required=True,
                   help="tuberlin, sketchy_zs1, sketchy_zs2, custom, folder or demo "
                        "(or any name with a published cache under --cache-root, --qg/--gg or "
                        "--query-features/--gallery-features)")
    add_method_flags(p)
    data = p.add_argument_group("data")
    data.add_argument("--data-root", "--data_root", dest="data_root", metavar="DIR", type=Path,
                      help="dataset folder (the parent of TUBerlin/ or Sketchy/; the custom or "
                           "folder layout's root; for demo where to generate it)")
    data.add_argument("--per-class", "--per_class", dest="per_class", metavar="N", type=int, default=-1,
                      help="keep the first N items of each class (-1: all)")
    data.add_argument("--cache-root", "--cache_root", dest="cache_root", metavar="DIR", type=Path,
                      help="cache folder (default cache); when it holds the published cache "
                           "<DIR>/<dataset>/<per_class>/{qg,gg}_dists.pth[, labels.pth] the "
                           "distances are imported from it: no images or checkpoint needed")
    data.add_argument("--pretrained-root", "--pretrained_root", dest="pretrained_root",
                      metavar="DIR", type=Path, default=Path("pretrained"),
                      help="folder of the published checkpoints (default pretrained)")
    data.add_argument("--backbone",
                      help="icfrr (the published checkpoint; default except for demo), demo "
                           "(weight-free descriptor; demo's default) or timm:<model> with --weights")
    data.add_argument("--weights", help="local weights for timm:<model> (or 'random' for a smoke "
                                        "test), or a checkpoint file for icfrr")
    data.add_argument("--trust-checkpoint", "--trust_checkpoint", dest="trust_checkpoint",
                      action="store_true",
                      help="allow the checkpoint's pickled Python objects to run (trusted files only)")
    add_source_flags(p.add_argument_group(
        "your own distances or features (no images needed; --dataset is then any name)"))
    add_graph_flags(p.add_argument_group("gallery neighbour graph"))
    data.add_argument("--batch-size", "--batchsize", dest="batchsize", metavar="N", type=int, default=32,
                      help="feature extraction batch size (default 32)")
    data.add_argument("--no-cache", "--no_cache", dest="no_cache", action="store_true",
                      help="do not keep the Parquet artifacts")
    data.add_argument("--force-cache", "--force_cache", dest="force_cache", action="store_true",
                      help="recompute the Parquet artifacts even if present")
    run = p.add_argument_group("running")
    run.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda:<gpu_id> when "
                                      "available, else cpu)")
    run.add_argument("--gpu-id", "--gpu_id", dest="gpu_id", metavar="N", type=int, default=0,
                     help="CUDA device index (default 0)")
    run.add_argument("--limited-memory", "--limited_memory", dest="limited_memory",
                     action="store_true",
                     help="accepted for compatibility: the engine always works in chunks")
    run.add_argument("--quiet", "-q", action="store_true",
                     help="no progress bars or progress lines (warnings, errors and the "
                          "results table still print)")
    add_executor_flags(run)
    run.add_argument("--cpu-as-metric-device", "--cpu_as_metric_device",
                     dest="cpu_as_metric_device", action="store_true",
                     help="accepted for compatibility: metrics are always computed on the CPU")
    out = p.add_argument_group("output")
    out.add_argument("--db", metavar="PATH", type=Path, default=DEFAULT_DB,
                     help=f"DuckDB results file (default {DEFAULT_DB})")
    out.add_argument("--top-n", dest="top_n", metavar="N", type=int, default=100,
                     help="how many of each query's top gallery items to store (default 100)")
    out.add_argument("--skip-unanswerable", "--skip_unanswerable", dest="skip_unanswerable",
                     action="store_true",
                     help="leave queries whose label no gallery item has out of every mean (by "
                          "default they count with AP 0); part of each run's parameters")
    out.add_argument("--force", action="store_true",
                     help="redo configurations already in the database (replacing them)")
    out.add_argument("--rerank-results-dir", "--rerank_results_dir", dest="rerank_results_dir",
                     metavar="DIR",
                     type=Path, help="also write the published files: rankings per iteration, "
                                     "image strips, metrics plot")
    out.add_argument("--query-idxs-to-vis", "--query_idxs_to_vis", dest="query_idxs_to_vis", metavar="Q",
                     nargs="+", type=int, default=[],
                     help="queries whose top gallery images are drawn (needs --rerank-results-dir)")
    out.add_argument("--num-gallery-ims-to-vis", "--num_gallery_ims_to_vis",
                     dest="num_gallery_ims_to_vis", metavar="N", type=int, default=20,
                     help="gallery images per drawn query (default 20)")
    return p


def _dest(param: Param) -> str:
    """The argparse destination of a grid flag: its first spelling (``--n-times`` -> ``n_times``)."""
    return param.flags[0].lstrip("-").replace("-", "_")


class _GridFlag(argparse.Action):
    """Stores the values and notes that the flag was given (to refuse flags of methods not run)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given_grids = namespace.given_grids | {self.dest}


def _param_users() -> dict[Param, list[Method]]:
    """Every grid parameter of the registry (shared ones once) -> the methods that take it."""
    users: dict[Param, list[Method]] = {}
    for m in METHODS:
        for param in m.params:
            users.setdefault(param, []).append(m)
    return users


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """``--method`` and every method's grid flags, from :data:`icfrr.registry.METHODS`.

    Each grid flag takes one or more values (both spellings of the registry),
    its default grid is the registry's default; the value checks are in
    :func:`check_flags`.
    """
    p.add_argument("--method", "--methods", dest="method", nargs="+", choices=METHOD_KEYS,
                   default=["icfrr"], metavar="METHOD",
                   help=f"re-ranking methods to sweep, each over its own grid: {', '.join(METHOD_KEYS)} "
                        "(default icfrr)")
    p.set_defaults(given_grids=frozenset())
    users_of = _param_users()
    groups = {m.key: p.add_argument_group(
        f"{m.label} grid, --method {m.key} ({m.citation}; each flag takes one or more values)",
        None if any(users_of[x][0] is m for x in m.params) else
        f"the flags of {', '.join(sorted({users_of[x][0].key for x in m.params}))}") for m in METHODS}
    for param, users in users_of.items():
        owner = users[0]
        also = [m.key for m in users[1:]]
        groups[owner.key].add_argument(
            *param.flags, dest=_dest(param), nargs="+", type=param.kind, action=_GridFlag,
            choices=param.choices or None, default=list(param.default),
            metavar="T" if param.name == "n_iter" else None,
            help=param.help + (f"; also for {', '.join(also)}" if also else ""))


def requested_methods(args: argparse.Namespace) -> list[Method]:
    """The ``--method`` entries in the order given, duplicates dropped."""
    return [registry_method(k) for k in dict.fromkeys(args.method)]


def method_grid(args: argparse.Namespace, m: Method) -> dict[str, list]:
    """Parameter name -> the values swept for method ``m``."""
    return {param.name: list(getattr(args, _dest(param))) for param in m.params}


def check_flags(args: argparse.Namespace) -> None:
    """Refuse values no run could use (before anything is read or written).

    Raises:
        UsageError: With a one-line message saying what to change.
    """
    methods = requested_methods(args)
    for m in methods:
        for param in m.params:
            for value in getattr(args, _dest(param)):
                problem = param.check(value)
                if problem is not None:
                    raise UsageError(problem)
    asked = {m.key for m in methods}
    for param, users in _param_users().items():
        if _dest(param) in args.given_grids and not asked & {m.key for m in users}:
            raise UsageError(f"{param.flags[0]} is a flag of --method {' or '.join(m.key for m in users)}, "
                             "which this sweep does not run; add the method or drop the flag")
    if args.per_class != -1 and args.per_class < 1:
        raise UsageError(f"--per_class must be -1 (all) or >= 1, got {args.per_class}")
    if args.top_n < 1:
        raise UsageError(f"--top-n must be >= 1, got {args.top_n}")
    if args.batchsize < 1:
        raise UsageError(f"--batchsize must be >= 1, got {args.batchsize}")
    if args.num_gallery_ims_to_vis < 1:
        raise UsageError(f"--num_gallery_ims_to_vis must be >= 1, got {args.num_gallery_ims_to_vis}")
    negative = [q for q in args.query_idxs_to_vis if q < 0]
    if negative:    # refused before the artifacts are made; the upper bound needs Q, known only then
        raise UsageError(f"--query_idxs_to_vis {negative}: query indices start at 0")
    if args.query_idxs_to_vis and args.rerank_results_dir is None:
        raise UsageError("--query_idxs_to_vis needs --rerank_results_dir DIR to write the strips to")
    if args.no_cache and args.force_cache:
        raise UsageError("--no_cache and --force_cache contradict each other; pass one")
    try:
        check_folder_name(args.dataset, "--dataset")
    except PathError as exc:
        raise UsageError(str(exc)) from None
    if args.graph_recall_sample is not None and args.graph_recall_sample < 1:
        raise UsageError(f"--graph-recall-sample must be >= 1, got {args.graph_recall_sample}")
    from jobs.artifacts import source_from_args

    source_from_args(args)   # flags of distances / features that do not go together: refused before the lock
    if args.graph in ("ivf", "hnsw"):
        from icfrr.ann import FaissMissing, require_faiss

        try:
            require_faiss(args.graph)
        except FaissMissing as exc:
            raise UsageError(str(exc)) from None


def resolve_device(args: argparse.Namespace) -> str:
    """``--device`` if given, else ``cuda:<gpu_id>`` when CUDA is available, else ``cpu``.

    Raises:
        UsageError: An unknown device, or CUDA asked for but missing.
    """
    return cli.resolve_device(args.device, args.gpu_id)


@dataclass(frozen=True)
class GridEntry:
    """One configuration to run, with the values the user asked for (ICFRR's KG and KQ)."""

    config: writes.RunConfig
    asked_kg: int | None = None
    asked_kq: int | None = None


def expand_grid(
    args: argparse.Namespace, n_gallery: int, inputs_keys: Mapping[str, str | None] | None = None
) -> tuple[list[GridEntry], list[str]]:
    """Every combination of each requested method's grid flags, duplicates dropped.

    Methods come in ``--method`` order. For ICFRR, KG above G - 1 and KQ above G
    change nothing (every other item already votes / is voted for), so they are
    clamped there, with a warning when the asked value exceeds the gallery size.
    Other methods take their values as given.

    Args:
        args: Parsed flags.
        n_gallery: Gallery size G.
        inputs_keys: Method key -> identity of its inputs beyond the artifacts
            (imported query-query distances), part of its config key.

    Returns:
        The entries in flag order, and the warnings to print.
    """
    entries: dict[tuple, GridEntry] = {}
    warnings: list[str] = []
    for m in requested_methods(args):
        if m.key == "icfrr":
            warnings += _icfrr_grid(args, n_gallery, entries)
            continue
        grid = method_grid(args, m)
        for values in itertools.product(*grid.values()):
            cfg = writes.RunConfig.for_method(m.key, dict(zip(grid, values)),
                                              inputs_key=(inputs_keys or {}).get(m.key),
                                              skip_unanswerable=bool(args.skip_unanswerable))
            entries.setdefault(tuple(cfg.key_params().items()), GridEntry(cfg))
    return list(entries.values()), warnings


def _icfrr_grid(args: argparse.Namespace, n_gallery: int, entries: dict[tuple, GridEntry]) -> list[str]:
    """Add ICFRR's entries to ``entries``; returns the clamping warnings."""
    warnings = []
    for name, values, limit in (("KG", args.kg, n_gallery), ("KQ", args.kq, n_gallery)):
        over = sorted({v for v in values if v > limit})
        if over:
            warnings.append(f"{name} {', '.join(map(str, over))} above the gallery size "
                            f"{n_gallery}: clamped (every gallery item takes part)")
    for variant in args.variant:
        for n_iter in args.n_times:
            for kg in args.kg:
                for kq in args.kq:
                    for beta in args.beta:
                        cfg = writes.RunConfig(
                            kg=min(kg, max(n_gallery - 1, 1)), kq=min(kq, n_gallery),
                            beta=float(beta), n_iter=n_iter, variant=variant,
                            extra={"asked_kg": kg, "asked_kq": kq},
                            skip_unanswerable=bool(getattr(args, "skip_unanswerable", False)))
                        key = tuple(cfg.key_params().items())
                        entries.setdefault(key, GridEntry(cfg, kg, kq))
    return warnings


@dataclass
class Row:
    """One line of the final table."""

    entry: GridEntry
    metrics: list[dict[str, float]]
    best: int
    status: str                      # 'new', 'skipped' or 'files only'
    run_id: int | None = None


def format_table(rows: Sequence[Row]) -> str:
    """The compact table: each metric before -> after the last iteration, best row starred."""
    def fmt(v: float) -> str:
        return "  n/a " if v is None or math.isnan(v) else f"{v:.4f}"

    width = 16  # "0.1234 -> 0.5678"
    configs = [_config_cell(r.entry.config) for r in rows]
    head = f"{'variant':<9} {'KG':>5} {'KQ':>5} {'beta':>6} {'T':>3}"
    cw = max([len(head), *map(len, configs)])
    header = (f"  {head:<{cw}}  "
              + "  ".join(f"{h:^{width}}" for _, h in TABLE_METRICS) + f"  {'best it':>7}  run")
    finals = [r.metrics[-1][HEADLINE.key] for r in rows]
    ranked = [i for i, v in enumerate(finals) if not math.isnan(v)]
    star = max(ranked, key=lambda i: finals[i]) if ranked else None
    lines = [header]
    for i, (r, config) in enumerate(zip(rows, configs)):
        cells = "  ".join(f"{fmt(r.metrics[0][k])} -> {fmt(r.metrics[-1][k])}"
                          for k, _ in TABLE_METRICS)
        lines.append(f"{'*' if i == star else ' '} {config:<{cw}}  {cells}  {r.best:>7}  "
                     f"{r.run_id if r.run_id is not None else '-'} ({r.status})")
    lines.append("each metric: before re-ranking -> after the last iteration; best it: the "
                 "iteration with the highest mAP@all")
    if any(r.entry.config.method != "icfrr" for r in rows):
        lines.append("other methods: the method and its parameters; one re-ranking, so the last "
                     "iteration is 1")
    if star is not None:
        lines.append("* best configuration (highest mAP@all after the last iteration)")
    return "\n".join(lines)


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


def _fail(message: str) -> int:
    print(f"sweep: error: {message}", file=sys.stderr)
    return 2


def _warn(message: str) -> None:
    tqdm.write(f"sweep: warning: {message}", file=sys.stderr)


@dataclass
class _Published:
    """Writes the published files of one configuration as its iterations arrive."""

    out_dir: Path
    query_idxs: list[int]
    n_gallery: int
    images: tuple | None          # (query paths, gallery paths) or None
    labels_q: object
    labels_g: object

    def __call__(self, step, _summary) -> None:
        from jobs import published_outputs as pub

        pub.save_ranking(self.out_dir, step.iteration, step.ranking)
        if self.query_idxs and self.images is not None:
            image = pub.strips_image(step.ranking[:, : self.n_gallery].numpy(), self.query_idxs,
                                     self.n_gallery, *self.images, self.labels_q, self.labels_g)
            pub.save_strips(self.out_dir, step.iteration, image)


def _config_cell(cfg: writes.RunConfig) -> str:
    """The table's configuration cell: ICFRR's columns, or the method and its parameters."""
    if cfg.method == "icfrr":
        return f"{cfg.variant:<9} {cfg.kg:>5} {cfg.kq:>5} {cfg.beta:>6g} {cfg.n_iter:>3}"
    return " ".join([cfg.method, *(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in cfg.params.items())])


def _config_label(cfg: writes.RunConfig) -> str:
    if cfg.method == "icfrr":
        return f"{cfg.variant}_kg{cfg.kg}_kq{cfg.kq}_beta{cfg.beta:g}_t{cfg.n_iter}"
    return "_".join([cfg.method.replace("+", "_"), *(f"{k}-{v:g}" if isinstance(v, float) else f"{k}-{v}"
                                                     for k, v in cfg.params.items())])


@dataclass
class _Plan:
    """Everything checked and loaded before the database is opened for writing."""

    args: argparse.Namespace
    device: str
    arts: Artifacts
    entries: list[GridEntry]
    warnings: list[str]
    images: tuple[list[Path], list[Path]] | None
    inputs: MethodInputs | None = None   # for the methods other than ICFRR
    lock: SweepLock | None = None
    labels_eval: np.ndarray | None = None   # query labels for the metrics (-1: left out)
    executor: Executor = dataclasses.field(default_factory=LocalExecutor)   # where the groups run

    @property
    def progress(self) -> str:
        """How progress is shown (``jobs.progress.progress_mode``): bar, lines or off (--quiet)."""
        return progress_mode(self.args.quiet)

    def out_dir(self, cfg: writes.RunConfig) -> Path | None:
        """Where the published files of ``cfg`` go (None without --rerank_results_dir)."""
        a = self.args
        if a.rerank_results_dir is None:
            return None
        label = _config_label(cfg) if len(self.entries) > 1 else None
        from jobs import published_outputs as pub

        return pub.results_dir(a.rerank_results_dir, a.dataset, a.per_class, label)


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


def prepare(argv: Sequence[str], log: Callable[[str], None], command: str = "python -m jobs.sweep") -> _Plan:
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


def _load(args: argparse.Namespace, device: str, log: Callable[[str], None]) -> _Plan:
    """Load the artifacts and check the inputs that depend on them."""
    arts = load_artifacts(args, max(args.kg), device, log)
    n_query, n_gallery = arts.shape
    others = [m for m in requested_methods(args) if m.key != "icfrr"]
    from icfrr.methods import ADAPTERS

    streamed = arts.qg_dists is None   # above the dense limit: computed per chunk of queries from the features
    if streamed:
        size = f"{4 * n_query * n_gallery / 2**30:.1f} GiB"
        whole = [m for m in others if ADAPTERS[m.key].streamed is None]   # the baselines without a streamed form
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
    return _Plan(args, device, arts, entries, warnings + ([note] if note else []), images, inputs,
                 labels_eval=labels_eval)


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


def _run_one(plan: _Plan, cfg: writes.RunConfig) -> RunOutcome:
    """Re-rank and evaluate one configuration, writing its published files as it goes.

    Without published files the queries stream through the engine in chunks
    (memory bounded by one chunk); the published files need every whole
    ranking, so they take the iteration-by-iteration path.
    """
    from jobs import published_outputs as pub
    from jobs.method_runner import run_method
    from jobs.sweep_runner import run_config

    out_dir = plan.out_dir(cfg)
    arts = plan.arts
    n_query = len(arts.labels_q)
    bar = Progress(n_query if out_dir is None else cfg.n_iter + 1,
                   "queries" if out_dir is None else "iterations",
                   "q" if out_dir is None else "it", mode=plan.progress, lines=False, leave=False)
    on_step = None
    if out_dir is not None:
        published = _Published(out_dir, plan.args.query_idxs_to_vis, plan.args.num_gallery_ims_to_vis,
                               plan.images, arts.labels_q, arts.labels_g)
        on_step = lambda s, m: (bar.update(1), published(s, m))  # noqa: E731
    try:
        labels_q = plan.labels_eval if plan.labels_eval is not None else arts.labels_q
        if cfg.method == "icfrr":
            outcome = run_config(arts.query_distances(), arts.graph, labels_q, arts.labels_g, cfg,
                                 device=plan.device, top_n=plan.args.top_n, on_step=on_step,
                                 on_progress=lambda done, total: bar.update_to(done))
        else:
            outcome = run_method(plan.inputs, labels_q, arts.labels_g, cfg,
                                 top_n=plan.args.top_n, on_step=on_step)
    finally:
        bar.close()
    if out_dir is not None:
        pub.save_metrics(out_dir, outcome.metrics)
    return outcome


def recorded(arts: Artifacts, cfg: writes.RunConfig) -> writes.RunConfig:
    """``cfg`` with, in ``runs.params`` (not its key), how its query-gallery distances were held:
    ``qg_distances`` "dense" or "features per chunk", and the limit that chose it."""
    note: dict[str, object] = {"qg_distances": "dense" if arts.qg_dists is not None else "features per chunk"}
    if "dense_qg_max_bytes" in arts.meta:
        note["dense_qg_max_bytes"] = arts.meta["dense_qg_max_bytes"]
    if cfg.method == "icfrr" and "graph" in arts.meta:   # the gallery graph ICFRR votes with
        from jobs.artifacts import recall_at

        note["graph"] = arts.meta["graph"]
        recall = recall_at(arts.meta, cfg.kg)
        if recall is not None:
            note["graph_recall_at_kg"] = recall
            note["graph_recall_sample"] = arts.meta["graph_recall"]["sample"]
    kind = arts.meta.get("graph", {}).get("kind", "exact")
    if cfg.method in ("k_reciprocal", "ecn") and arts.qg_dists is None and kind != "exact":
        from icfrr.ann import default_spec   # their streamed k-NN sets come from an index of this kind, over Q + G

        note["knn_index"] = default_spec(kind, len(arts.labels_q) + len(arts.labels_g)).record()
    return dataclasses.replace(cfg, extra={**cfg.extra, **note})


def graph_note(arts: Artifacts, kgs: Sequence[int]) -> str | None:
    """The line that says ICFRR's numbers were built on an approximate graph, with its recall@KG; None when exact."""
    from jobs.artifacts import recall_at

    graph = arts.meta.get("graph")
    if not graph or graph["kind"] == "exact":
        return None
    params = ", ".join(f"{k}={v}" for k, v in graph["params"].items())
    recalls = ", ".join(f"KG {kg}: {recall_at(arts.meta, kg):.4f}" for kg in sorted(set(kgs)))
    return (f"ICFRR ran on an APPROXIMATE {graph['kind']} gallery graph ({params}); its recall@KG against exact "
            f"neighbours on {arts.meta['graph_recall']['sample']} sampled items: {recalls}")


def beta_groups(plan: _Plan, todo: Sequence[int]) -> list[list[int]]:
    """The entries to run, grouped: ICFRR configurations that differ only in beta run together.

    They share the initial ranking and the first update's votes (exact; see
    ``jobs.sweep_runner.run_configs``). Entries that write the published
    per-iteration files, and other methods, run alone. Groups keep grid order
    by their first entry.
    """
    groups: dict[tuple, list[int]] = {}
    for i in todo:
        cfg = plan.entries[i].config
        if cfg.method == "icfrr" and plan.out_dir(cfg) is None:
            key: tuple = tuple((k, v) for k, v in cfg.key_params().items() if k != "beta")
        else:
            key = ("alone", i)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _run_group(plan: _Plan, configs: Sequence[writes.RunConfig]) -> list[RunOutcome]:
    """ICFRR configurations that differ only in beta, streamed through the engine together."""
    from jobs.sweep_runner import run_configs

    arts = plan.arts
    labels_q = plan.labels_eval if plan.labels_eval is not None else arts.labels_q
    bar = Progress(len(labels_q), "queries", "q", mode=plan.progress, lines=False, leave=False)
    try:
        return run_configs(arts.query_distances(), arts.graph, labels_q, arts.labels_g, configs, device=plan.device,
                           top_n=plan.args.top_n, on_progress=lambda done, total: bar.update_to(done))
    finally:
        bar.close()


def _groups(plan: _Plan, todo: Sequence[int]) -> list[Group]:
    """``beta_groups`` for an executor: ICFRR groups without published files can run as chunk tasks."""
    out = []
    for group in beta_groups(plan, todo):
        configs = tuple(plan.entries[i].config for i in group)
        out.append(Group(tuple(group), configs, configs[0].method == "icfrr" and plan.out_dir(configs[0]) is None))
    return out


def _work(plan: _Plan) -> Work:
    """The inputs every ICFRR group reads, for executors that ship them."""
    arts = plan.arts
    labels_q = plan.labels_eval if plan.labels_eval is not None else arts.labels_q
    return Work(arts.query_distances(), arts.graph, np.asarray(labels_q), np.asarray(arts.labels_g),
                plan.device, plan.args.top_n, plan.progress)


def run_sweep(plan: _Plan, command: str) -> list[Row]:
    """Register the sweep, run every configuration not yet stored, one transaction each.

    Returns:
        One table row per grid entry, in grid order.
    """
    args, info = plan.args, artifact_info(plan.arts)
    keys = [e.config.config_key(info.key) for e in plan.entries]
    with writer(args.db) as con:
        dead = writes.mark_interrupted(con, lock_held=plan.lock is not None)
        dataset_id = writes.upsert_dataset(con, **dataset_row(plan.arts))
        artifact_id = writes.upsert_artifact(con, dataset_id, info)
        done = {} if args.force else writes.finished_runs(con, keys)
        kept_n = writes.stored_top_n(con, [run_id for run_id, _ in done.values()])
        sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id,
                                      command=command)
    want = min(args.top_n, plan.arts.shape[1])     # a ranking keeps at most G items
    narrower = {key for key, (run_id, _) in done.items() if (kept_n.get(run_id) or 0) < want}
    if narrower:   # their stored rankings are shorter than asked: run again and replace, never skip
        tqdm.write(f"sweep: {len(narrower)} configuration(s) in {args.db} keep fewer than the top {want} "
                   f"per query (--top-n); running them again to store the top {want}", file=sys.stderr)
        done = {key: v for key, v in done.items() if key not in narrower}
    if dead:
        tqdm.write(f"sweep: marked {len(dead)} earlier sweep(s) whose process is gone 'interrupted' "
                   f"(ids {', '.join(map(str, dead))})", file=sys.stderr)
    rows: dict[int, Row] = {}
    todo = []
    for i, (e, key) in enumerate(zip(plan.entries, keys)):
        out_dir = plan.out_dir(e.config)
        files_missing = out_dir is not None and not (out_dir / "metrics.csv").is_file()
        if key in done and not files_missing:
            run_id, metrics = done[key]
            rows[i] = Row(e, metrics, writes.best_iteration(metrics), "skipped", run_id)
        else:
            todo.append(i)
    if rows:
        tqdm.write(f"sweep: skipping {len(rows)} configuration(s) already in {args.db} "
                   "(--force redoes them)", file=sys.stderr)
    status = "failed"
    bar = Progress(len(todo), "configurations", "cfg", mode=plan.progress if todo else "off")
    try:
        def run_here(group: Group) -> list[RunOutcome]:
            configs = list(group.configs)
            bar.set_note(_config_label(configs[0]) + (f" (+{len(configs) - 1} betas)" if len(configs) > 1 else ""))
            return _run_group(plan, configs) if len(configs) > 1 else [_run_one(plan, configs[0])]

        for group, outcomes in plan.executor.run(_groups(plan, todo), lambda: _work(plan), run_here):
            for i, cfg, outcome in zip(group.entries, group.configs, outcomes):
                with writer(args.db) as con:
                    run_id = writes.write_run(
                        con, sweep_id=sweep_id, artifact_id=artifact_id, artifact_key=info.key,
                        config=recorded(plan.arts, cfg), device=plan.device, seconds=outcome.seconds,
                        metrics=outcome.metrics, kept=outcome.kept,
                        per_query=outcome.per_query, force=args.force or keys[i] in narrower)
                    writes.heartbeat(con, sweep_id)
                # None: already stored by an earlier sweep, only the published files were missing
                state = "new" if run_id is not None else "files only"
                rows[i] = Row(plan.entries[i], outcome.metrics, outcome.best, state,
                              run_id if run_id is not None else done.get(keys[i], (None,))[0])
            bar.update(len(group.entries))  # once per group: its configurations finish together
        status = "done"
    except KeyboardInterrupt:
        status = "interrupted"      # stopped by the user, not failed: the same command resumes
        raise
    finally:
        bar.close()                 # before any message: a bar left open prints after it
        try:
            with writer(args.db) as con:
                writes.finish_sweep(con, sweep_id, status)
        except StoreError as exc:  # do not hide the error that got us here
            if status == "done":
                _warn(f"could not mark sweep {sweep_id} {status}: {exc}")
    return [rows[i] for i in sorted(rows)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 ok, 2 bad input, 130 Ctrl-C)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    notes: list[str] = []
    command = "python -m jobs.sweep " + shlex.join(argv)
    with warnings.catch_warnings(record=True) as caught:   # held back: a refusal is one line only
        try:
            plan = prepare(argv, notes.append, command)
        except (UsageError, StoreError, ValueError, OSError) as exc:
            return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            return _interrupted("stopped before any run; nothing was written to the database")
    notes += [f"sweep: warning: {w.category.__name__}: {w.message}" for w in caught]
    try:
        return _run(plan, notes, command)
    except KeyboardInterrupt:
        return _interrupted(f"runs committed before are kept in {plan.args.db} and the sweep is marked "
                            "interrupted; run the same command again to resume")
    finally:
        plan.executor.close()
        if plan.lock is not None:
            plan.lock.release()


#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def _interrupted(what: str) -> int:
    print(f"sweep: interrupted (Ctrl-C): {what}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _run(plan: _Plan, notes: list[str], command: str) -> int:
    """Print the held-back notes, run the sweep, print the table; returns the exit status."""
    for message in notes:  # held back so that bad input gets one line only
        tqdm.write(message, file=sys.stderr)
    for message in plan.warnings:
        _warn(message)
    try:
        rows = run_sweep(plan, command)
    except StoreError as exc:  # the database stayed locked, or a write failed (disk full)
        return _fail(str(exc))
    except InputChanged as exc:  # an input file changed after the sweep identified it at its start
        return _fail(f"{exc.path} {exc.what} since the sweep started, so its runs would mix inputs; the runs "
                     f"committed before are kept in {plan.args.db}: run the same command again")
    except OSError as exc:     # a published file could not be written (disk full)
        return _fail(f"could not write {exc.filename or 'a file'} ({exc.strerror or exc}); runs committed "
                     f"before are kept in {plan.args.db}: free some space and run the same command again")
    print(format_table(rows))
    kgs = [r.entry.config.kg for r in rows if r.entry.config.method == "icfrr"]
    note = graph_note(plan.arts, kgs) if kgs else None
    if note is not None:
        print(note)
    print(f"\nResults in {plan.args.db}. Open the dashboard on them with:\n"
          f"  streamlit run dashboard/app.py -- --db {shlex.quote(str(plan.args.db))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
