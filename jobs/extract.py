"""Extract features (or import distances) into the Parquet artifact cache.

    python -m jobs.extract --dataset demo                       # generated demo, weight-free backbone
    python -m jobs.extract --dataset tuberlin --data-root /data --backbone icfrr --pretrained-root /ckpt
    python -m jobs.extract --dataset folder --data-root my_images --backbone timm:resnet50 --weights r50.safetensors
    python -m jobs.extract --dataset custom --cache-root examples --data-root examples/custom   # published cache
    python -m jobs.extract --dataset mine --qg qg.npy --gg gg.npy --labels labels.npz          # own matrices
    python -m jobs.extract --dataset mine --qg qg.npy --gg gg.npy --qq qq.npy                  # + query-query
    python -m jobs.extract --dataset mine --query-features q.npy --gallery-features g.npy --labels labels.npz

Prints where the artifacts are and, when labels are known, the initial ranking's
mAP@all. Errors in the input: one line on stderr, exit status 2, nothing written
(Ctrl-C: one line, exit status 130).
"""

from __future__ import annotations

import argparse
import sys
import warnings

from jobs.cli import OneLineParser, UsageError, resolve_device
from jobs.progress import progress_mode
from jobs.source_flags import add_graph_flags, add_source_flags

#: The cache folder and the neighbour graph's smallest size (as store.artifacts has them; checked by a test).
DEFAULT_CACHE_ROOT = "cache"
MIN_GRAPH_K = 512


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m jobs.extract``."""
    p = OneLineParser(prog="python -m jobs.extract", description=__doc__.split("\n\n")[0],
                      epilog="examples:\n" + __doc__.split("\n\n")[1])
    p.add_argument("--dataset", required=True,
                   help="tuberlin, sketchy_zs1, sketchy_zs2, custom, folder, demo (any name with --qg/--gg or "
                        "--query-features/--gallery-features)")
    p.add_argument("--data_root", help="folder of the dataset's images (demo: where to generate it)")
    p.add_argument("--backbone", help="icfrr, demo or timm:<model> (default: demo for the demo, icfrr otherwise; "
                                      "a published cache under --cache-root is imported when no backbone is given)")
    p.add_argument("--weights", help="local .safetensors/.pth for timm:<model> ('random' for a smoke test), "
                                     "or the icfrr checkpoint file")
    p.add_argument("--pretrained-root", "--pretrained_root", dest="pretrained_root",
                   help="folder of the published checkpoints (<root>/tuberlin/checkpoint.pth ...)")
    p.add_argument("--trust-checkpoint", "--trust_checkpoint", dest="trust_checkpoint", action="store_true",
                   help="allow unpickling the Python objects in the checkpoint (runs code from the file)")
    p.add_argument("--cache_root", "--cache-root", dest="cache_root", default=DEFAULT_CACHE_ROOT,
                   help="cache folder (default: cache/); artifacts go to <cache_root>/<dataset>/<per_class>/")
    p.add_argument("--force-cache", "--force_cache", dest="force_cache", action="store_true",
                   help="recompute even when matching artifacts exist")
    p.add_argument("--no-cache", "--no_cache", dest="no_cache", action="store_true",
                   help="compute in memory only, write nothing")
    p.add_argument("--per_class", "--per-class", dest="per_class", type=int, default=-1,
                   help="keep the first N items of each class (default -1: all)")
    p.add_argument("--batchsize", "--batch-size", dest="batchsize", type=int, default=64,
                   help="images per forward pass")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default: automatic)")
    p.add_argument("--device", default=None, help="cuda, cpu ... (default: cuda when available)")
    p.add_argument("--kg-max", "--kg_max", dest="kg_max", type=int, default=MIN_GRAPH_K,
                   help="largest KG a sweep will use; the neighbour graph keeps max(512, this) neighbours")
    add_source_flags(p)
    add_graph_flags(p)
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (there are none either when stderr is not a terminal)")
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Refuse values no extraction could use, before anything is read or written.

    Raises:
        UsageError: With a one-line message saying what to change.
    """
    if args.batchsize < 1:
        raise UsageError(f"--batchsize must be at least 1, got {args.batchsize}")
    if args.workers is not None and args.workers < 0:
        raise UsageError(f"--workers must be 0 (load in this process) or more, got {args.workers}")
    if args.kg_max < 1:
        raise UsageError(f"--kg-max must be at least 1, got {args.kg_max}")
    args.device = resolve_device(args.device)


def main(argv: list[str] | None = None) -> int:
    """Run the job; returns the exit status (0 done, 2 bad input)."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import torch  # after the flags: --help and usage errors answer at once

    import icfrr
    from jobs.artifacts import USER_ERRORS, Compute, ensure_artifacts, qq_dists, request_from_args

    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:   # held back: a refusal is one line only
        try:
            check_flags(args)
            compute = Compute(args.batchsize, args.workers, args.device, progress=progress_mode(args.quiet) == "bar")
            art = ensure_artifacts(request_from_args(args, args.kg_max, compute), notes.append)
            if art.qq_source is not None:
                qq_dists(art, notes.append)  # checks its shape and keeps it beside the other artifacts
        except (UsageError, *USER_ERRORS) as exc:
            print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("error: interrupted (Ctrl-C); no cache folder was left half-written", file=sys.stderr)
            return 130
    for note in [*notes, *(f"warning: {w.category.__name__}: {w.message}" for w in caught)]:
        print(note, file=sys.stderr)
    q, g = art.shape
    where = art.cache_dir if art.cache_dir is not None else "memory only (--no-cache)"
    print(f"{art.dataset.name}: {q} queries x {g} gallery, backbone {art.backbone}, "
          f"{art.graph.k} neighbours per gallery item, {'reused' if art.reused else 'written'}: {where}")
    recall = art.meta.get("graph_recall")
    if recall:   # an approximate graph says how approximate
        curve = recall["curve"]
        at = ", ".join(f"@{c}: {curve[c - 1]:.4f}" for c in sorted({min(c, len(curve)) for c in (10, 64, len(curve))}))
        print(f"APPROXIMATE {art.meta['graph']['kind']} graph: recall against exact neighbours on "
              f"{recall['sample']} sampled items {at}")
    if (art.labels_q != -1).any() and art.qg_dists is not None:  # above the dense limit: the sweep evaluates it
        ranking = torch.argsort(art.qg_dists, dim=1, stable=True)   # the initial ranking, closest first
        m = icfrr.evaluate(ranking, art.labels_q, art.labels_g)
        print(f"initial ranking: mAP@all {m['map_all']:.4f}  mAP@200 {m['map_200']:.4f}  P@100 {m['p_100']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
