"""The sweep's command line: its flags, their checks and the grid of configurations they ask for.

Every method's grid flags come from :data:`icfrr.registry.METHODS` (one flag
per :class:`~icfrr.registry.Param`, shared parameters once). Each value is
checked once, here, by its ``Param`` (:func:`check_flags`); from then on the
grid holds typed values. :func:`expand_grid` makes every combination of each
requested method's grid, one way for every method.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Mapping
from pathlib import Path

from icfrr.registry import METHODS, Method, Param
from icfrr.registry import method as registry_method
from icfrr.run_config import RunConfig
from jobs import cli
from jobs.cli import OneLineParser, UsageError
from jobs.executors import add_executor_flags
from jobs.source_flags import add_graph_flags, add_source_flags
from store import DEFAULT_DB
from store.fs import PathError, check_folder_name

EXAMPLES = """examples:
  python -m jobs.sweep --dataset demo --kg 8 16 32 64 --kq 5 10 20 --beta 0.5 1
  python -m jobs.sweep --dataset demo --method icfrr k_reciprocal ecn alpha_qe dba dba+alpha_qe
  python -m jobs.sweep --dataset tuberlin --data-root /data --pretrained-root /ckpt --trust-checkpoint
  python -m jobs.sweep --dataset custom --cache-root examples --data-root examples/custom --n-times 20 --kg 10 --kq 15
  python -m jobs.sweep --dataset mine --query-features q.npy --gallery-features g.npy --labels labels.npz
  python -m jobs.sweep --dataset mine --qg qg.npy --gg gg.npy --labels labels.npz
"""


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
    keys = tuple(m.key for m in METHODS)
    p.add_argument("--method", "--methods", dest="method", nargs="+", choices=keys,
                   default=[keys[0]], metavar="METHOD",
                   help=f"re-ranking methods to sweep, each over its own grid: {', '.join(keys)} "
                        f"(default {keys[0]})")
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


def graph_k(args: argparse.Namespace) -> int:
    """The largest value of any method's graph parameter (:attr:`Method.graph_param`): the K the
    gallery neighbour graph is built for (1 when no method reads the graph)."""
    return max((v for m in METHODS if m.graph_param for p in m.params if p.name == m.graph_param
                for v in getattr(args, _dest(p))), default=1)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse values no run could use (before anything is read or written); the grid values become typed.

    Raises:
        UsageError: With a one-line message saying what to change.
    """
    methods = requested_methods(args)
    for m in methods:
        for param in m.params:   # the one check of each value: typed and within the registry's bounds
            try:
                setattr(args, _dest(param), [param.parse(v) for v in getattr(args, _dest(param))])
            except ValueError as exc:
                raise UsageError(str(exc)) from None
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


def expand_grid(
    args: argparse.Namespace, n_gallery: int, inputs_keys: Mapping[str, str | None] | None = None
) -> tuple[list[RunConfig], list[str]]:
    """Every combination of each requested method's grid flags, duplicates dropped.

    Methods come in ``--method`` order, each grid nested in its
    :attr:`Method.grid_order`. Parameters with a gallery cap (ICFRR's KG above
    G - 1 and KQ above G change nothing) are clamped, once, here, with a warning
    when an asked value exceeds the gallery size; the asked value is kept in
    the config's ``extra``. The values were checked by :func:`check_flags`.

    Args:
        args: Parsed and checked flags.
        n_gallery: Gallery size G.
        inputs_keys: Method key -> identity of its inputs beyond the artifacts
            (imported query-query distances), part of its config key.

    Returns:
        The configurations in flag order, and the warnings to print.
    """
    entries: dict[tuple, RunConfig] = {}
    warnings: list[str] = []
    for m in requested_methods(args):
        grid = method_grid(args, m)
        for p in m.params:
            over = sorted({v for v in grid[p.name] if v > n_gallery}) if p.gallery_cap is not None else []
            if over:
                warnings.append(f"{p.name.upper()} {', '.join(map(str, over))} above the gallery size "
                                f"{n_gallery}: clamped (every gallery item takes part)")
        order = m.grid_order or tuple(grid)
        for values in itertools.product(*(grid[name] for name in order)):
            cfg = RunConfig.parsed(m.key, dict(zip(order, values)), inputs_key=(inputs_keys or {}).get(m.key),
                                   skip_unanswerable=bool(args.skip_unanswerable)).clamped(n_gallery)
            entries.setdefault(tuple(cfg.key_params().items()), cfg)
    return list(entries.values()), warnings
