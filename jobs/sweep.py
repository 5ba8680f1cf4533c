"""``python -m jobs.sweep --dataset NAME``: re-rank over a grid of configurations into DuckDB.

Pipeline: check every input (flags, data, checkpoint, database) -> reuse or
make the Parquet artifacts (features, distances, one gallery neighbour graph
with K >= the largest KG, shared by every configuration) -> for each
configuration not already in the database: re-rank once over all
iterations, evaluate every iteration, commit the run in one transaction ->
print a table and the command that opens the dashboard.

The published code's flags are accepted with the same meaning (``--KG --KQ
--n_times --per_class --data_root --cache_root --pretrained_root --batchsize
--gpu_id --no_cache --force_cache --limited_memory --cpu_as_metric_device
--rerank_results_dir --query_idxs_to_vis --num_gallery_ims_to_vis``).

Exit status: 0 done, 2 bad input (one line on stderr, nothing written to the
database), 1 an unexpected failure while running (finished runs stay committed;
running the same command again resumes).
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from jobs import published_outputs as pub
from jobs.sweep_runner import RunOutcome, run_config
from store import writes
from store.artifacts import DEFAULT_CACHE_ROOT, Artifacts, ensure_artifacts
from store.db import StoreError, check_database, connect_writer

DEFAULT_DB = Path("results/icfrr.duckdb")
VARIANTS = ("reference", "paper")
#: The table's metric columns: (run_metrics key, header).
TABLE_METRICS = (("map_all", "mAP@all"), ("map_200", "mAP@200"), ("p_100", "P@100"),
                 ("p_200", "P@200"))


class UsageError(ValueError):
    """Bad input: reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise UsageError(f"{message} (see python -m jobs.sweep --help)")


def build_parser() -> argparse.ArgumentParser:
    """The sweep's flags; published spellings are aliases of ours."""
    p = _Parser(prog="python -m jobs.sweep", allow_abbrev=False,
                description="Re-rank a dataset with ICFRR over a grid of configurations and "
                            "store every iteration's metrics in DuckDB.")
    p.add_argument("--dataset", required=True,
                   help="tuberlin, sketchy_zs1, sketchy_zs2, custom, folder or demo "
                        "(or any name with a published cache under --cache_root)")
    grid = p.add_argument_group("grid (each flag takes one or more values)")
    grid.add_argument("--kg", "--KG", dest="kg", nargs="+", type=int, default=[256],
                      help="gallery neighbours that vote (default 256)")
    grid.add_argument("--kq", "--KQ", dest="kq", nargs="+", type=int, default=[250],
                      help="top items of the query's ranking whose neighbours vote (default 250)")
    grid.add_argument("--beta", nargs="+", type=float, default=[0.5],
                      help="update strength, finite and >= 0 (default 0.5)")
    grid.add_argument("--n-times", "--n_times", dest="n_times", metavar="T", nargs="+", type=int, default=[5],
                      help="iterations (default 5); every iteration's metrics are stored")
    grid.add_argument("--variant", nargs="+", choices=VARIANTS, default=["reference"],
                      help="reference (position-based, default) or paper (accumulating)")
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
    run.add_argument("--cpu-as-metric-device", "--cpu_as_metric_device",
                     dest="cpu_as_metric_device", action="store_true",
                     help="accepted for compatibility: metrics are always computed on the CPU")
    out = p.add_argument_group("output")
    out.add_argument("--db", metavar="PATH", type=Path, default=DEFAULT_DB,
                     help=f"DuckDB results file (default {DEFAULT_DB})")
    out.add_argument("--top-n", dest="top_n", metavar="N", type=int, default=100,
                     help="how many of each query's top gallery items to store (default 100)")
    out.add_argument("--force", action="store_true",
                     help="redo configurations already in the database (replacing them)")
    out.add_argument("--rerank-results-dir", "--rerank_results_dir", dest="rerank_results_dir",
                     metavar="DIR",
                     type=Path, help="also write the published files: rankings per iteration, "
                                     "image strips, metrics plot")
    out.add_argument("--query-idxs-to-vis", "--query_idxs_to_vis", dest="query_idxs_to_vis", metavar="Q",
                     nargs="+", type=int, default=[],
                     help="queries whose top gallery images are drawn (needs --rerank_results_dir)")
    out.add_argument("--num-gallery-ims-to-vis", "--num_gallery_ims_to_vis",
                     dest="num_gallery_ims_to_vis", metavar="N", type=int, default=20,
                     help="gallery images per drawn query (default 20)")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Refuse values no run could use (before anything is read or written).

    Raises:
        UsageError: With a one-line message saying what to change.
    """
    for name, values in (("--kg", args.kg), ("--kq", args.kq)):
        if any(v < 1 for v in values):
            raise UsageError(f"{name} values must be >= 1, got {values}")
    if any(not math.isfinite(b) or b < 0 for b in args.beta):
        raise UsageError(f"--beta values must be finite and >= 0, got {args.beta}")
    if any(t < 1 for t in args.n_times):
        raise UsageError(f"--n-times values must be >= 1, got {args.n_times}")
    if args.per_class != -1 and args.per_class < 1:
        raise UsageError(f"--per_class must be -1 (all) or >= 1, got {args.per_class}")
    if args.top_n < 1:
        raise UsageError(f"--top-n must be >= 1, got {args.top_n}")
    if args.batchsize < 1:
        raise UsageError(f"--batchsize must be >= 1, got {args.batchsize}")
    if args.num_gallery_ims_to_vis < 1:
        raise UsageError(f"--num_gallery_ims_to_vis must be >= 1, got {args.num_gallery_ims_to_vis}")
    if args.query_idxs_to_vis and args.rerank_results_dir is None:
        raise UsageError("--query_idxs_to_vis needs --rerank_results_dir DIR to write the strips to")
    if args.no_cache and args.force_cache:
        raise UsageError("--no_cache and --force_cache contradict each other; pass one")


def resolve_device(args: argparse.Namespace) -> str:
    """``--device`` if given, else ``cuda:<gpu_id>`` when CUDA is available, else ``cpu``.

    Raises:
        UsageError: An unknown device, or CUDA asked for but missing.
    """
    if args.device is None:
        if not torch.cuda.is_available():
            return "cpu"
        name = f"cuda:{args.gpu_id}"
    else:
        name = args.device
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name} asked for CUDA but none is available; use --device cpu")
        index = dev.index if dev.index is not None else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"GPU {index} does not exist ({torch.cuda.device_count()} visible); "
                             "pass another --gpu_id")
    elif dev.type != "cpu":
        raise UsageError(f"--device {name!r} is not supported; use cpu, cuda or cuda:N")
    return str(dev)


@dataclass(frozen=True)
class GridEntry:
    """One configuration to run, with the values the user asked for."""

    config: writes.RunConfig
    asked_kg: int
    asked_kq: int


def expand_grid(args: argparse.Namespace, n_gallery: int) -> tuple[list[GridEntry], list[str]]:
    """Every combination of the grid flags, clamped to the gallery, duplicates dropped.

    KG above G - 1 and KQ above G change nothing (every other item already
    votes / is voted for), so they are clamped there, with a warning when the
    asked value exceeds the gallery size.

    Returns:
        The entries in flag order, and the warnings to print.
    """
    warnings = []
    for name, values, limit in (("KG", args.kg, n_gallery), ("KQ", args.kq, n_gallery)):
        over = sorted({v for v in values if v > limit})
        if over:
            warnings.append(f"{name} {', '.join(map(str, over))} above the gallery size "
                            f"{n_gallery}: clamped (every gallery item takes part)")
    entries: dict[tuple, GridEntry] = {}
    for variant in args.variant:
        for n_iter in args.n_times:
            for kg in args.kg:
                for kq in args.kq:
                    for beta in args.beta:
                        cfg = writes.RunConfig(
                            kg=min(kg, max(n_gallery - 1, 1)), kq=min(kq, n_gallery),
                            beta=float(beta), n_iter=n_iter, variant=variant,
                            extra={"asked_kg": kg, "asked_kq": kq})
                        key = tuple(cfg.key_params().items())
                        entries.setdefault(key, GridEntry(cfg, kg, kq))
    return list(entries.values()), warnings


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
    header = (f"  {'variant':<9} {'KG':>5} {'KQ':>5} {'beta':>6} {'T':>3}  "
              + "  ".join(f"{h:^{width}}" for _, h in TABLE_METRICS) + f"  {'best it':>7}  run")
    finals = [r.metrics[-1]["map_all"] for r in rows]
    ranked = [i for i, v in enumerate(finals) if not math.isnan(v)]
    star = max(ranked, key=lambda i: finals[i]) if ranked else None
    lines = [header]
    for i, r in enumerate(rows):
        c = r.entry.config
        cells = "  ".join(f"{fmt(r.metrics[0][k])} -> {fmt(r.metrics[-1][k])}"
                          for k, _ in TABLE_METRICS)
        lines.append(f"{'*' if i == star else ' '} {c.variant:<9} {c.kg:>5} {c.kq:>5} "
                     f"{c.beta:>6g} {c.n_iter:>3}  {cells}  {r.best:>7}  "
                     f"{r.run_id if r.run_id is not None else '-'} ({r.status})")
    lines.append("each metric: before re-ranking -> after the last iteration; best it: the "
                 "iteration with the highest mAP@all")
    if star is not None:
        lines.append("* best configuration (highest mAP@all after the last iteration)")
    return "\n".join(lines)


def load_artifacts(
    args: argparse.Namespace, kg_max: int, device: str, log: Callable[[str], None]
) -> Artifacts:
    """Reuse, compute or import the distances and neighbour graph (no database involved)."""
    return ensure_artifacts(
        args.dataset, args.data_root, backbone=args.backbone, per_class=args.per_class,
        cache_root=args.cache_root if args.cache_root is not None else DEFAULT_CACHE_ROOT,
        kg_max=kg_max, weights=args.weights, pretrained_root=args.pretrained_root,
        trust_checkpoint=args.trust_checkpoint, force=args.force_cache, no_cache=args.no_cache,
        batch_size=args.batchsize, device=device, log=log)


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
        pub.save_ranking(self.out_dir, step.iteration, step.ranking)
        if self.query_idxs and self.images is not None:
            image = pub.strips_image(step.ranking[:, : self.n_gallery].numpy(), self.query_idxs,
                                     self.n_gallery, *self.images, self.labels_q, self.labels_g)
            pub.save_strips(self.out_dir, step.iteration, image)


def _config_label(cfg: writes.RunConfig) -> str:
    return f"{cfg.variant}_kg{cfg.kg}_kq{cfg.kq}_beta{cfg.beta:g}_t{cfg.n_iter}"


@dataclass
class _Plan:
    """Everything checked and loaded before the database is opened for writing."""

    args: argparse.Namespace
    device: str
    arts: Artifacts
    entries: list[GridEntry]
    warnings: list[str]
    images: tuple[list[Path], list[Path]] | None

    def out_dir(self, cfg: writes.RunConfig) -> Path | None:
        """Where the published files of ``cfg`` go (None without --rerank_results_dir)."""
        a = self.args
        if a.rerank_results_dir is None:
            return None
        label = _config_label(cfg) if len(self.entries) > 1 else None
        return pub.results_dir(a.rerank_results_dir, a.dataset, a.per_class, label)


def prepare(argv: Sequence[str], log: Callable[[str], None]) -> _Plan:
    """Parse and check every input and load the artifacts; nothing touches the database.

    Raises:
        UsageError, StoreError, ValueError, OSError: Bad input, to report in one line.
    """
    args = build_parser().parse_args(argv)
    check_flags(args)
    device = resolve_device(args)
    check_database(args.db)
    arts = load_artifacts(args, max(args.kg), device, log)
    n_query, n_gallery = arts.qg_dists.shape
    entries, warnings = expand_grid(args, n_gallery)
    bad = [q for q in args.query_idxs_to_vis if not 0 <= q < n_query]
    if bad:
        raise UsageError(f"--query_idxs_to_vis {bad} outside 0..{n_query - 1}")
    images = image_paths(arts)
    if args.query_idxs_to_vis and images is None:
        where = (f"none were read under --data_root {args.data_root}" if args.data_root
                 else "give --data_root with the dataset's image files")
        raise UsageError(f"--query_idxs_to_vis needs the images: {where}")
    return _Plan(args, device, arts, entries, warnings, images)


def _run_one(plan: _Plan, cfg: writes.RunConfig) -> RunOutcome:
    """Re-rank and evaluate one configuration, writing its published files as it goes.

    Without published files the queries stream through the engine in chunks
    (memory bounded by one chunk); the published files need every whole
    ranking, so they take the iteration-by-iteration path.
    """
    out_dir = plan.out_dir(cfg)
    arts = plan.arts
    n_query = len(arts.labels_q)
    bar = tqdm(total=n_query if out_dir is None else cfg.n_iter + 1, desc="queries" if out_dir is None
               else "iterations", unit="q" if out_dir is None else "it", leave=False)
    on_step = None
    if out_dir is not None:
        published = _Published(out_dir, plan.args.query_idxs_to_vis, plan.args.num_gallery_ims_to_vis,
                               plan.images, arts.labels_q, arts.labels_g)
        on_step = lambda s, m: (bar.update(1), published(s, m))  # noqa: E731
    try:
        outcome = run_config(arts.qg_dists, arts.graph, arts.labels_q, arts.labels_g, cfg,
                             device=plan.device, top_n=plan.args.top_n, on_step=on_step,
                             on_progress=lambda done, total: bar.update(done - bar.n))
    finally:
        bar.close()
    if out_dir is not None:
        pub.save_metrics(out_dir, outcome.metrics)
    return outcome


def run_sweep(plan: _Plan, command: str) -> list[Row]:
    """Register the sweep, run every configuration not yet stored, one transaction each.

    Returns:
        One table row per grid entry, in grid order.
    """
    args, info = plan.args, artifact_info(plan.arts)
    keys = [e.config.config_key(info.key) for e in plan.entries]
    with connect_writer(args.db) as con:
        dataset_id = writes.upsert_dataset(con, **dataset_row(plan.arts))
        artifact_id = writes.upsert_artifact(con, dataset_id, info)
        done = {} if args.force else writes.finished_runs(con, keys)
        sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id,
                                      command=command)
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
    try:
        bar = tqdm(todo, desc="configurations", unit="cfg", disable=not todo)
        for i in bar:
            cfg = plan.entries[i].config
            bar.set_postfix_str(_config_label(cfg))
            outcome = _run_one(plan, cfg)
            with connect_writer(args.db) as con:
                run_id = writes.write_run(
                    con, sweep_id=sweep_id, artifact_id=artifact_id, artifact_key=info.key,
                    config=cfg, device=plan.device, seconds=outcome.seconds,
                    metrics=outcome.metrics, kept=outcome.kept, force=args.force)
            # None: already stored by an earlier sweep, only the published files were missing
            state = "new" if run_id is not None else "files only"
            rows[i] = Row(plan.entries[i], outcome.metrics, outcome.best, state,
                          run_id if run_id is not None else done.get(keys[i], (None,))[0])
        status = "done"
    finally:
        try:
            with connect_writer(args.db) as con:
                writes.finish_sweep(con, sweep_id, status)
        except StoreError as exc:  # do not hide the error that got us here
            _warn(f"could not mark sweep {sweep_id} {status}: {exc}")
    return [rows[i] for i in sorted(rows)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sweep; returns the exit status (0 ok, 2 bad input)."""
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    notes: list[str] = []
    try:
        plan = prepare(argv, notes.append)
    except (UsageError, StoreError, ValueError, OSError) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    for message in notes:  # held back so that bad input gets one line only
        tqdm.write(message, file=sys.stderr)
    for message in plan.warnings:
        _warn(message)
    try:
        rows = run_sweep(plan, "python -m jobs.sweep " + shlex.join(argv))
    except StoreError as exc:  # e.g. the database stayed locked
        return _fail(str(exc))
    print(format_table(rows))
    print(f"\nResults in {plan.args.db}. Open the dashboard on them with:\n"
          f"  streamlit run dashboard/app.py -- --db {shlex.quote(str(plan.args.db))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
