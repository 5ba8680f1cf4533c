"""Benchmark: the ICFRR engine against the literal spec implementation, and whole sweeps.

    python -m jobs.bench                   # TU-Berlin shape and a quarter of it
    python -m jobs.bench --shape quarter   # Q=600, G=7000 only
    python -m jobs.bench --quick           # a small shape, seconds
    python -m jobs.bench --sweep [--n-configs N] [--shape tuberlin|quarter|quickdraw] [--share-betas]

``--sweep`` runs N configurations end to end in a child process (see
``jobs.bench_sweep``): gallery graph from features, every iteration, metrics
and one DuckDB transaction per run, as ``jobs.sweep`` does.

Synthetic clustered features (D=768, 30 classes) are generated once, their
dense query-gallery and gallery-gallery distances saved to a temporary folder,
and each side runs in its own process (the literal one alone: it needs about
three times the inputs' memory), loading the same files. Reported per side:
seconds for the gallery neighbour step, the initial ranking, one iteration and
the metrics, and the peak resident memory. The rankings are then compared:
iteration 0 exactly, iteration 1 as a valid descending sort of the literal
implementation's float64 scores (docs/SPEC.md section 7).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jobs.bench_data import DIM, make_features, peak_gib

#: More examples for --help (the module docstring's second paragraph lists the first ones).
EXAMPLES = """
    python -m jobs.bench --sweep --shape tuberlin --n-configs 6 --share-betas   # whole sweeps
    python -m jobs.bench --sweep --shape quickdraw --n-configs 1                # 92,291 x 54,151 from features
    python -m jobs.bench --methods --shape quarter                              # every re-ranking method
    python -m jobs.bench --crossover --cold-start                               # sparse/dense crossover, compile cost
    python -m jobs.bench --cold-start --repeat 5                                # first configuration's compile, 5 runs
    python -m jobs.bench --shape million [--scale 0.05]                         # jobs.sweep, Q=10k x G=1M features
    python -m jobs.bench --methods --shape quickdraw [--scale 0.05]             # every method from features
"""
#: name -> (Q, G, KG = KQ)
SHAPES = {"tuberlin": (2400, 27989, 512), "quarter": (600, 7000, 512), "quick": (300, 2000, 64)}
BETA = 0.5


def make_inputs(n_query: int, n_gallery: int, folder: Path, seed: int = 0) -> None:
    """Write qg.npy [Q, G], gg.npy [G, G] (float32) and labels to ``folder``."""
    from icfrr import pairwise_distances

    fq, fg, labels_q, labels_g = make_features(n_query, n_gallery, seed)
    np.save(folder / "qg.npy", pairwise_distances(fq, fg).numpy())
    gg = np.lib.format.open_memmap(folder / "gg.npy", mode="w+", dtype=np.float32, shape=(n_gallery, n_gallery))
    for start in range(0, n_gallery, 2048):
        gg[start : start + 2048] = pairwise_distances(fg[start : start + 2048], fg).numpy()
    gg.flush()
    del gg
    np.save(folder / "labels_q.npy", labels_q.numpy())
    np.save(folder / "labels_g.npy", labels_g.numpy())


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_engine(folder: Path, device: str, k: int) -> dict:
    """Time the engine on the saved inputs; save its rankings for the comparison."""
    import torch

    import icfrr

    qg, gg = np.load(folder / "qg.npy"), np.load(folder / "gg.npy")
    lq, lg = np.load(folder / "labels_q.npy"), np.load(folder / "labels_g.npy")
    inputs_gib = peak_gib()
    times = {}
    # Load the compiled CPU kernel (or warm CUDA) once, timed on its own row.
    t0 = time.perf_counter()
    icfrr.rerank(qg[:8, :64], gg[:64, :64], kg=8, kq=8, device=device)
    list(icfrr.iter_rerank(qg[:8, :64], gg[:64, :64], kg=8, kq=8, device=device))  # the one-step kernels too
    times["startup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = icfrr.neighbor_graph(torch.from_numpy(gg).to(device), k)
    _sync(device)
    times["graph"] = time.perf_counter() - t0
    del gg  # like the literal side: only the graph is needed from here on
    t0 = time.perf_counter()
    steps = icfrr.iter_rerank(qg, graph, kg=k, kq=k, beta=BETA, n_iter=1, device=device)
    initial = next(steps)
    times["initial"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    first = next(steps)
    times["iteration"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    before, after = icfrr.evaluate(initial.ranking, lq, lg), icfrr.evaluate(first.ranking, lq, lg)
    times["metrics"] = (time.perf_counter() - t0) / 2
    np.save(folder / f"engine_{device}_r0.npy", initial.ranking.numpy().astype(np.int32))
    np.save(folder / f"engine_{device}_r1.npy", first.ranking.numpy().astype(np.int32))
    return dict(times=times, peak_gib=peak_gib(), inputs_gib=inputs_gib, before=before, after=after)


def run_literal(folder: Path, k: int) -> dict:
    """Time the literal implementation; save its rankings and float64 scores."""
    from icfrr import literal

    qg, gg = np.load(folder / "qg.npy"), np.load(folder / "gg.npy")
    lq, lg = np.load(folder / "labels_q.npy"), np.load(folder / "labels_g.npy")
    inputs_gib = peak_gib()
    times = {"startup": 0.0}
    t0 = time.perf_counter()
    ranks = literal.rank_matrix(gg)
    weights = literal.rank_weights(gg.shape[0], k)
    times["graph"] = time.perf_counter() - t0
    del gg
    t0 = time.perf_counter()
    ranking0, v = literal.literal_initial(qg)
    times["initial"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ranking1, scores1 = literal.literal_step(ranks, weights, ranking0, v, None, kq=k, beta=BETA, variant="reference")
    times["iteration"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    before, after = literal.literal_evaluate(ranking0, lq, lg), literal.literal_evaluate(ranking1, lq, lg)
    times["metrics"] = (time.perf_counter() - t0) / 2
    np.save(folder / "literal_r0.npy", ranking0.astype(np.int32))
    np.save(folder / "literal_r1.npy", ranking1.astype(np.int32))
    np.save(folder / "literal_s1.npy", scores1)
    return dict(times=times, peak_gib=peak_gib(), inputs_gib=inputs_gib, before=before, after=after)


def compare(folder: Path, device: str) -> dict:
    """Agreement of the engine's rankings with the literal ones (docs/SPEC.md section 7)."""
    from icfrr.literal import max_order_violation

    r0e, r0l = np.load(folder / f"engine_{device}_r0.npy"), np.load(folder / "literal_r0.npy")
    r1e, r1l = np.load(folder / f"engine_{device}_r1.npy"), np.load(folder / "literal_r1.npy")
    scores = np.load(folder / "literal_s1.npy")
    return dict(
        initial_equal=bool(np.array_equal(r0e, r0l)),
        iter1_positions_equal=float(np.mean(r1e == r1l)),
        iter1_max_violation=max_order_violation(r1e, scores),
    )


def _child(side: str, folder: Path, device: str, k: int) -> dict:
    cmd = [sys.executable, "-m", "jobs.bench", "--side", side, "--folder", str(folder), "--device", device, "--k", str(k)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_shape(name: str, devices: list[str]) -> list[str]:
    n_query, n_gallery, k = SHAPES[name]
    lines = []
    with tempfile.TemporaryDirectory(prefix="icfrr-bench-") as tmp:
        folder = Path(tmp)
        make_inputs(n_query, n_gallery, folder)
        literal_res = _child("literal", folder, "cpu", k)
        for device in devices:
            eng = _child("engine", folder, device, k)
            agree = compare(folder, device)
            lines += _table(name, n_query, n_gallery, k, device, eng, literal_res, agree)
    return lines


def _table(name, n_query, n_gallery, k, device, eng, lit, agree) -> list[str]:
    te, tl = eng["times"], lit["times"]
    total_e = te["graph"] + te["initial"] + te["iteration"]
    total_l = tl["graph"] + tl["initial"] + tl["iteration"]
    rows = [
        ("one-time kernel load / warm-up (s)", tl["startup"], te["startup"]),
        ("gallery neighbour step (s)", tl["graph"], te["graph"]),
        ("initial ranking (s)", tl["initial"], te["initial"]),
        ("one iteration (s)", tl["iteration"], te["iteration"]),
        ("**neighbours + initial + 1 iteration (s)**", total_l, total_e),
        ("metrics, one ranking (s)", tl["metrics"], te["metrics"]),
        ("peak memory (GiB)", lit["peak_gib"], eng["peak_gib"]),
    ]
    out = [
        f"### {name}: Q={n_query}, G={n_gallery}, D={DIM}, KG=KQ={k}, beta={BETA}; engine on {device}",
        "",
        "| step | literal | engine | literal / engine |",
        "|---|---:|---:|---:|",
    ]
    for label, lv, ev in rows:
            out.append(f"| {label} | {lv:.2f} | {ev:.2f} | {lv / ev:.1f}x |" if lv > 0 and ev > 0 else f"| {label} | {lv:.2f} | {ev:.2f} | - |")
    out += [
        "",
        f"Inputs loaded before timing: {eng['inputs_gib']:.2f} GiB. "
        f"mAP@all {eng['before']['map_all']:.4f} -> {eng['after']['map_all']:.4f} (engine), "
        f"{lit['before']['map_all']:.4f} -> {lit['after']['map_all']:.4f} (literal). "
        f"Initial rankings identical: {agree['initial_equal']}; iteration 1: "
        f"{100 * agree['iter1_positions_equal']:.4f}% of positions identical, largest order violation "
        f"against the literal float64 scores {agree['iter1_max_violation']:.2e}.",
        "",
    ]
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB{gpu}; torch {torch.__version__}, Python {platform.python_version()}"


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's flags."""
    from jobs.cli import OneLineParser

    parser = OneLineParser(prog="python -m jobs.bench", description=__doc__.split("\n\n")[0],
                           epilog="examples:\n" + __doc__.split("\n\n")[1] + EXAMPLES)
    parser.add_argument("--shape", choices=["tuberlin", "quarter", "both", "quickdraw", "million"], default=None,
                        help="default: both (quarter, then tuberlin); with --sweep: tuberlin; million: "
                             "jobs.sweep on Q=10,000 x G=1,000,000 features (jobs.bench_million)")
    parser.add_argument("--scale", type=float, default=None,
                        help="with --shape million or --methods --shape quickdraw: run that shape's Q and G "
                             "times this factor (default 1)")
    parser.add_argument("--sweep", action="store_true", help="time whole sweeps (see jobs.bench_sweep)")
    parser.add_argument("--n-configs", type=int, default=6, help="with --sweep: configurations (default 6)")
    parser.add_argument("--share-betas", action="store_true",
                        help="with --sweep: run configurations that differ only in beta together")
    parser.add_argument("--quick", action="store_true", help="a small shape (Q=300, G=2000) that runs in seconds")
    parser.add_argument("--methods", action="store_true",
                        help="every re-ranking method at its defaults: time and peak memory (jobs.bench_methods)")
    parser.add_argument("--crossover", action="store_true",
                        help="CPU time per iteration, dense vs sparse update, over (G, KQ*KG) (jobs.bench_engine)")
    parser.add_argument("--cold-start", action="store_true",
                        help="numba compile time per kernel group: first call, fresh cache vs warm (jobs.bench_engine)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="with --cold-start: measure the first configuration's compile cost this many times "
                             "and print the minimum and median (default 1: the per-group table)")
    parser.add_argument("--side", choices=["engine", "literal"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--k", type=int, help=argparse.SUPPRESS)
    return parser


#: The files a ``--side`` child reads from its ``--folder`` (written by :func:`make_inputs`).
SIDE_INPUTS = ("qg.npy", "gg.npy", "labels_q.npy", "labels_g.npy")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse values no benchmark could use, and the internal child flags out of place.

    ``--side --folder --device --k`` are how :func:`bench_shape` starts its
    child processes (hidden from ``--help``); given by hand they must be
    complete and name a folder of :func:`make_inputs`.

    Raises:
        UsageError: With a one-line message saying what to change.
    """
    from jobs.cli import UsageError

    if args.n_configs < 1:
        raise UsageError(f"--n-configs must be at least 1, got {args.n_configs}")
    if args.repeat < 1:
        raise UsageError(f"--repeat must be at least 1, got {args.repeat}")
    if args.repeat > 1 and not args.cold_start:
        raise UsageError("--repeat applies to --cold-start only")
    if args.scale is not None:
        if not (args.shape == "million" or (args.methods and args.shape == "quickdraw")):
            raise UsageError("--scale applies to --shape million and --methods --shape quickdraw only")
        if not 0 < args.scale <= 1:
            raise UsageError(f"--scale must be in (0, 1], got {args.scale}")
    internal = [flag for flag, value in (("--folder", args.folder), ("--device", args.device), ("--k", args.k))
                if value is not None]
    if args.side is None:
        if internal:
            raise UsageError(f"{internal[0]} is an internal flag of the benchmark's child processes (with --side); "
                             "drop it")
        return
    if args.folder is None or args.k is None:
        raise UsageError("--side is internal to the benchmark (its child processes): it needs --folder and --k; "
                         "run python -m jobs.bench without it")
    if args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    if args.device not in (None, "cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda, got {args.device!r}")
    missing = [name for name in SIDE_INPUTS if not (args.folder / name).is_file()]
    if missing:
        raise UsageError(f"--folder {args.folder} holds no {missing[0]}: --side reads the inputs the benchmark "
                         "writes; run python -m jobs.bench without it")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark asked for; returns the exit status (2: bad flags)."""
    from jobs.cli import UsageError

    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    try:
        check_flags(args)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    if args.side:
        device = args.device or "cpu"
        result = run_engine(args.folder, device, args.k) if args.side == "engine" else run_literal(args.folder, args.k)
        print(json.dumps(result))
        return 0
    if args.crossover or args.cold_start:
        from jobs import bench_engine

        print(f"Machine: {machine()}\n", flush=True)
        return bench_engine.main(args.crossover, args.cold_start, args.repeat)
    if args.shape == "million":
        from jobs import bench_million

        return bench_million.main(args.scale or 1.0, machine())
    if args.sweep:
        from jobs import bench_sweep

        return bench_sweep.main(args.shape or "tuberlin", args.n_configs, args.share_betas, machine())
    shape = args.shape or "both"
    if shape == "quickdraw" and args.methods:
        from jobs.bench_methods import run_shapes

        print(f"Machine: {machine()}\n", flush=True)
        run_shapes(["quickdraw"], args.scale or 1.0)
        return 0
    if shape == "quickdraw":
        print("bench: error: the quickdraw shape is a sweep or methods benchmark: add --sweep or --methods",
              file=sys.stderr)
        return 2
    shapes = ["quick"] if args.quick else (["quarter", "tuberlin"] if shape == "both" else [shape])
    if args.methods:
        from jobs.bench_methods import run_shapes

        print(f"Machine: {machine()}\n", flush=True)
        run_shapes(shapes)
        return 0
    import torch

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"Machine: {machine()}\n", flush=True)
    for name in shapes:
        print("\n".join(bench_shape(name, devices)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
