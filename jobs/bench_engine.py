"""Engine micro-benchmarks: the dense/sparse update crossover and the cold-start compile cost.

    python -m jobs.bench --crossover    # CPU seconds per iteration, dense vs sparse kernel, over (G, KQ*KG)
    python -m jobs.bench --cold-start   # numba compilation: first call with a fresh cache vs warm, per kernel group
    python -m jobs.bench --cold-start --repeat 5   # the first configuration's compile cost, 5 times: min, median

Times are CPU seconds (``time.process_time``, all threads): on a shared
machine they are steadier than wall time. Not timed tests: numbers to quote.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from numba.core import event

#: (Q, G, KQ = KG) rows of the crossover table; the last ones are the large-G shape of issue 19.
CROSSOVER_SHAPES = [
    (32, 27989, 16), (32, 27989, 64), (32, 27989, 512),
    (16, 50000, 64), (16, 100000, 64), (16, 100000, 128),
    (8, 200000, 64), (8, 200000, 128), (8, 200000, 512),
]
N_ITER = 3


def _inputs(n_query: int, n_gallery: int, k: int, seed: int = 0):
    """Synthetic class-structured distances and a random neighbour graph (the kernels read only indices)."""
    rng = np.random.default_rng(seed)
    lq, lg = rng.integers(0, 30, n_query), rng.integers(0, 30, n_gallery)
    qg = rng.random((n_query, n_gallery), dtype=np.float32) + np.float32(0.4) * (lq[:, None] != lg[None, :])
    nbr = rng.integers(0, n_gallery - 1, (n_gallery, k)).astype(np.int32)
    nbr += nbr >= np.arange(n_gallery, dtype=np.int32)[:, None]  # never the item itself
    return qg, nbr, lq.astype(np.int64), lg.astype(np.int64)


def _cpu_seconds(qg, nbr, lq, lg, k: int, n_iter: int, sparse: bool, variant: str = "reference") -> float:
    from icfrr._update import ChunkSpec, run_rows_cpu
    from icfrr.metrics import relevant_counts
    from icfrr.variants import Variant

    g = qg.shape[1]
    spec = ChunkSpec(nbr, np.arange(g - 1, g - 1 - k, -1, dtype=np.int64), k, float((g - 1) * k),
                     np.array([0.5]), n_iter, Variant.parse(variant), lg, 100, sparse)
    t0 = time.process_time()
    run_rows_cpu(spec, qg, lq, relevant_counts(lq, lg))
    return time.process_time() - t0


def copy_bandwidth() -> float:
    """Bytes per CPU second of a large numpy copy (read + write counted), for the dense kernel's floor."""
    src = np.ones(1 << 24)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t0 = time.process_time()
    for _ in range(5):
        np.copyto(dst, src)
    return 5 * 2 * src.nbytes / max(time.process_time() - t0, 1e-9)


def crossover_table(shapes=CROSSOVER_SHAPES) -> list[str]:
    """CPU seconds per query-iteration of each kernel (initial sort subtracted), and which is faster.

    The dense floor is the traffic the dense update cannot avoid: reading the
    ranking and writing the new ranking and scores, 24 bytes per position, at
    this machine's copy bandwidth. The sparse kernel has no G term but log G.
    """
    from icfrr._sparse import use_sparse

    warm = _inputs(4, 3000, 16)
    for sparse in (False, True):
        _cpu_seconds(*warm, 16, 1, sparse)  # compile / load outside the timing
    bandwidth = copy_bandwidth()
    lines = [f"Copy bandwidth {bandwidth / 1e9:.1f} GB per CPU second.", "",
             "| Q | G | KQ=KG | KQ*KG/G | dense floor ms | dense ms/query-iter | sparse ms/query-iter | sparse/dense "
             "| sparse us per voted item | dispatch |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for n_query, n_gallery, k in shapes:
        data = _inputs(n_query, n_gallery, k)
        per = {}
        for sparse in (False, True):
            base = _cpu_seconds(*data, k, 0, sparse)
            full = _cpu_seconds(*data, k, N_ITER, sparse)
            per[sparse] = max(full - base, 0.0) / (N_ITER * n_query) * 1e3
        pick = "sparse" if use_sparse(n_gallery, k, k, 100) else "dense"
        floor = 24 * n_gallery / bandwidth * 1e3
        lines.append(f"| {n_query} | {n_gallery} | {k} | {k * k / n_gallery:.2f} | {floor:.2f} | {per[False]:.2f} "
                     f"| {per[True]:.2f} | {per[True] / max(per[False], 1e-9):.2f} | {1e3 * per[True] / min(k * k, n_gallery):.2f} "
                     f"| {pick} |")
    return lines


#: Compiled kernel groups (name, code run in the child), each met first in this order.
_GROUPS = [
    ("dense engine, reference", "run(False, 'reference')"),
    ("dense engine, paper", "run(False, 'paper')"),
    ("sparse engine, reference", "run(True, 'reference')"),
    ("sparse engine, paper", "run(True, 'paper')"),
    ("row sort (baselines' rankings, iter_rerank)", "from icfrr._sorting import stable_argsort_rows; stable_argsort_rows(qg)"),
    ("metrics of whole rankings (evaluate)", "icfrr.evaluate(np.argsort(qg, 1), lq, lg)"),
    ("one-step update (iter_rerank)", "list(icfrr.iter_rerank(qg, gg, kg=8, kq=8, n_iter=1, device='cpu'))"),
    ("k-reciprocal (streamed from features)",
     "from icfrr.baselines.k_reciprocal_encoding import k_reciprocal_chunks; list(k_reciprocal_chunks(fq, fg))"),
    ("ECN (streamed from features)", "from icfrr.baselines.expanded_cross_neighbourhood import ecn_chunks; list(ecn_chunks(fq, fg))"),
]

def group_namespace() -> dict:
    """The names the code of :data:`_GROUPS` runs with: small inputs of every kernel group and
    ``run(sparse, variant)``, one engine chunk. The row thread pool is switched off, so compiles
    are not raced (the same work; the compile profile stays nested)."""
    import icfrr
    import icfrr._sorting

    icfrr._sorting._POOL = None
    qg, nbr, lq, lg = _inputs(6, 400, 8)
    gg = np.abs(np.subtract.outer(np.arange(400.0), np.arange(400.0))).astype(np.float32)
    fq, fg = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32), gg[:200, :8] / 400

    def run(sparse: bool, variant: str) -> None:
        _cpu_seconds(qg, nbr, lq, lg, 8, 2, sparse, variant)

    return {"np": np, "icfrr": icfrr, "qg": qg, "nbr": nbr, "lq": lq, "lg": lg, "gg": gg, "fq": fq, "fg": fg,
            "run": run}


_CHILD = """
import json, sys, time
t0 = time.process_time()
import numpy as np
import icfrr
import icfrr._update, icfrr.metrics  # torch and the engine modules load here, not inside a timed group
from jobs.bench_engine import CompileProfile, group_namespace
from numba.core import event
ns = group_namespace()
out = {"import": time.process_time() - t0}
profiles = {}
for name, code in json.loads(sys.argv[1]):
    profile = CompileProfile()
    with event.install_listener("numba:compile", profile):
        t = time.process_time()
        exec(code, ns)
        out[name] = time.process_time() - t
    profiles[name] = profile.own
print(json.dumps(out | {"profiles": profiles}))
"""


class CompileProfile(event.Listener):
    """A numba ``numba:compile`` event listener: CPU seconds of each compiled function's own compilation.

    ``own[name]`` is the time between the compile's start and end events less
    that of the compiles nested in it (its callees, numba's own overloads),
    summed over signatures. numba's overloads (``np.empty``, ``np.zeros``, ...)
    are counted together as ``numba overloads``.
    """

    def __init__(self) -> None:
        self.own: dict[str, float] = {}
        self._stack: list[list] = []

    def on_start(self, ev) -> None:
        self._stack.append([time.process_time(), 0.0])

    def on_end(self, ev) -> None:
        start, nested = self._stack.pop()
        spent = time.process_time() - start
        if self._stack:
            self._stack[-1][1] += spent
        func = ev.data["dispatcher"].py_func
        name = func.__qualname__ if "<locals>" not in func.__qualname__ else "numba overloads"
        if name != "numba overloads":
            name = f"{func.__module__}.{name}"
        self.own[name] = self.own.get(name, 0.0) + spent - nested


def _child_times(cache_dir: str, groups=_GROUPS) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(groups)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _first_configuration(group: str) -> tuple[float, float]:
    """(fresh, warm) CPU seconds of one engine group alone in a new process: a sweep's first configuration."""
    with tempfile.TemporaryDirectory(prefix="icfrr-numba-") as cache:
        chosen = [g for g in _GROUPS if g[0] == group]
        return _child_times(cache, chosen)[group], _child_times(cache, chosen)[group]


#: (label, kernel group) of a sweep's first ICFRR configuration on each CPU path.
FIRST_CONFIGURATIONS = [("dense path (TU-Berlin shape)", "dense engine, reference"),
                        ("sparse path (large G)", "sparse engine, reference")]


def first_configuration_rows(repeat: int) -> list[str]:
    """The first configuration's compile cost (fresh - warm CPU s) per path, ``repeat`` times each: min and median.

    One run varies by a few tenths of a second on this machine; the minimum of
    several is the steadier figure to compare changes by.
    """
    lines = [f"| first configuration alone | compile, min of {repeat} (CPU s) | median | every run |",
             "|---|---:|---:|---|"]
    for label, group in FIRST_CONFIGURATIONS:
        runs = [fresh - warm for fresh, warm in (_first_configuration(group) for _ in range(repeat))]
        lines.append(f"| {label} | {min(runs):.2f} | {statistics.median(runs):.2f} | "
                     f"{', '.join(f'{r:.2f}' for r in runs)} |")
    return lines


def cold_start_table() -> list[str]:
    """First call with an empty numba cache (NUMBA_CACHE_DIR a new temp dir) vs the same calls warm."""
    with tempfile.TemporaryDirectory(prefix="icfrr-numba-") as cache:
        fresh = _child_times(cache)
        warm = _child_times(cache)
    lines = ["| kernel group (first call) | fresh cache (CPU s) | warm cache (CPU s) | compile (fresh - warm) |",
             "|---|---:|---:|---:|"]
    for name, _ in [("import", None)] + _GROUPS:
        lines.append(f"| {name} | {fresh[name]:.2f} | {warm[name]:.2f} | {fresh[name] - warm[name]:.2f} |")
    f, w = sum(fresh[n] for n, _ in _GROUPS), sum(warm[n] for n, _ in _GROUPS)
    lines.append(f"| **every group** | {f:.2f} | {w:.2f} | {f - w:.2f} |")
    # A sweep's first ICFRR configuration compiles one engine group only, and pays numba's own start-up with it.
    for label, group in FIRST_CONFIGURATIONS:
        f, w = _first_configuration(group)
        lines.append(f"| **first configuration alone, {label}** | {f:.2f} | {w:.2f} | {f - w:.2f} |")
    return lines + ["", "Where the fresh cache's compile time goes (CPU s of each function's own compilation, "
                    "callees excluded; a function compiled in an earlier group is not compiled again):", ""] \
        + profile_table(fresh["profiles"])


def profile_table(profiles: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: kernel group, compiled function, own seconds (largest first), group total."""
    lines = ["| kernel group | compiled function | own compile s |", "|---|---|---:|"]
    for group, own in profiles.items():
        if not own:
            lines.append(f"| {group} | (nothing compiled) | 0.00 |")
            continue
        for name, seconds in sorted(own.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {group} | {name.removeprefix('icfrr.')} | {seconds:.2f} |")
        lines.append(f"| {group} | **total** | **{sum(own.values()):.2f}** |")
    return lines


def main(crossover: bool, cold_start: bool, repeat: int = 1) -> int:
    """Print the tables asked for (``repeat`` > 1: the first configuration's compile cost, that many times)."""
    if cold_start and repeat > 1:
        print("### First configuration, fresh cache: numba compilation, repeated\n", flush=True)
        print("\n".join(first_configuration_rows(repeat)) + "\n", flush=True)
    elif cold_start:
        print("### First call, fresh cache: numba compilation per kernel group\n", flush=True)
        print("\n".join(cold_start_table()) + "\n", flush=True)
    if crossover:
        print(f"### Dense vs sparse update, CPU ms per query and iteration ({N_ITER} iterations, top 100, "
              "initial sort subtracted)\n", flush=True)
        print("\n".join(crossover_table()) + "\n", flush=True)
    return 0
