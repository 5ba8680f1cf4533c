"""Benchmark: every re-ranking method of the registry at its default parameters.

    python -m jobs.bench --methods                   # quarter shape, then TU-Berlin shape
    python -m jobs.bench --methods --shape quarter   # Q=600, G=7000 only
    python -m jobs.bench --methods --quick           # a small shape, seconds
    python -m jobs.bench --methods --shape quickdraw [--scale F]   # Q=92,291, G=54,151 from features

The same synthetic clustered features as ``jobs.bench`` (D=768, 30 classes,
a domain shift between queries and gallery), L2-normalised, are written once
with their query-gallery, gallery-gallery and query-query distances. Each
method then runs in its own process, as the sweep runs it (features given to
the methods that work from features, ICFRR's neighbour graph built from
features), so each process's peak resident memory is that method's. Reported:
seconds from the loaded inputs to the re-ranked result and its metrics, the
peak memory, and the memory of the inputs that process loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jobs.bench_data import peak_gib

SHAPES = {"tuberlin": (2400, 27989), "quarter": (600, 7000), "quick": (300, 2000)}


def make_inputs(n_query: int, n_gallery: int, folder: Path, seed: int = 0) -> None:
    """Write fq/fg features, qg/gg/qq distances (float32) and labels to ``folder``."""
    import torch

    from icfrr import pairwise_distances
    from jobs.bench_data import make_features

    fq, fg, labels_q, labels_g = make_features(n_query, n_gallery, seed)
    np.save(folder / "fq.npy", fq.numpy())
    np.save(folder / "fg.npy", fg.numpy())
    np.save(folder / "qg.npy", pairwise_distances(fq, fg).numpy())
    np.save(folder / "qq.npy", pairwise_distances(fq, fq).numpy())
    gg = np.lib.format.open_memmap(folder / "gg.npy", mode="w+", dtype=np.float32, shape=(n_gallery, n_gallery))
    for start in range(0, n_gallery, 2048):
        gg[start : start + 2048] = pairwise_distances(fg[start : start + 2048], fg).numpy()
    gg.flush()
    del gg, torch
    np.save(folder / "labels_q.npy", labels_q.numpy())
    np.save(folder / "labels_g.npy", labels_g.numpy())


def _defaults(key: str) -> dict[str, object]:
    from icfrr.registry import method

    return {p.name: p.default[0] for p in method(key).params}


def run_one(key: str, folder: Path) -> dict:
    """Run method ``key`` at its defaults on the saved inputs (in this process)."""
    import icfrr
    from icfrr.methods import MethodInputs, apply_method, needs, ranking_from_distances
    from icfrr.registry import method

    params = _defaults(key)
    lq, lg = np.load(folder / "labels_q.npy"), np.load(folder / "labels_g.npy")
    qg = np.load(folder / "qg.npy")
    fq, fg = np.load(folder / "fq.npy"), np.load(folder / "fg.npy")
    entry = method(key)
    if entry.iterative:   # the engine: its parameters are icfrr.rerank's keywords
        # warm the compiled kernels outside the timing, as a sweep does once per process
        icfrr.rerank(qg[:8, :64], icfrr.neighbor_graph_from_features(fg[:64], 8), kg=8, kq=8)
        inputs_gib = peak_gib()
        t0 = time.perf_counter()
        graph = icfrr.neighbor_graph_from_features(fg, params[entry.graph_param])
        ranking = icfrr.rerank(qg, graph, **params)[-1]
    else:
        # warm the compiled kernels (numba) outside the timing, on a small slice
        small = {name: icfrr.pairwise_distances(a, b).numpy()
                 for name, a, b in (("qg", fq[:8], fg[:64]), ("gg", fg[:64], fg[:64]), ("qq", fq[:8], fq[:8]))}
        apply_method(key, MethodInputs(small["qg"], gg=lambda: small["gg"], qq=lambda: small["qq"],
                                       fq=fq[:8], fg=fg[:64]), params)
        inputs = MethodInputs(qg, gg=lambda: np.load(folder / "gg.npy"), qq=lambda: np.load(folder / "qq.npy"),
                              fq=fq, fg=fg)
        for name in needs(key, inputs):  # load what the method reads before timing it
            inputs.load(name)
        inputs_gib = peak_gib()
        t0 = time.perf_counter()
        ranking, _ = ranking_from_distances(apply_method(key, inputs, params))
    before = icfrr.evaluate(ranking_from_distances(qg)[0], lq, lg)["map_all"]
    after = icfrr.evaluate(ranking, lq, lg)["map_all"]
    seconds = time.perf_counter() - t0
    return {"method": key, "params": params, "seconds": seconds, "peak_gib": peak_gib(),
            "inputs_gib": inputs_gib, "before": before, "after": after}


def _child(key: str, folder: Path, streamed: bool = False) -> dict:
    cmd = [sys.executable, "-m", "jobs.bench_methods", "--child-streamed" if streamed else "--child", key, str(folder)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    print(f"bench: {key} done: {out.stdout.strip().splitlines()[-1]}", file=sys.stderr, flush=True)  # kept if stopped
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_shape(name: str) -> list[str]:
    """Every registry method on one shape: a Markdown table."""
    from icfrr.registry import METHODS

    n_query, n_gallery = SHAPES[name]
    with tempfile.TemporaryDirectory(prefix="icfrr-bench-methods-") as tmp:
        folder = Path(tmp)
        make_inputs(n_query, n_gallery, folder)
        results = [(m, _child(m.key, folder)) for m in METHODS]
    return _table(f"#### {name}: Q={n_query}, G={n_gallery}, D=768, each method at its defaults", results)


def _table(title: str, results: list) -> list[str]:
    """A Markdown table of (registry method, child result) pairs under ``title``."""
    from icfrr.labels import params_text

    lines = [title, "",
             "| method | parameters | time (s) | peak memory (GiB) | inputs loaded (GiB) | mAP@all before -> after |",
             "|---|---|---:|---:|---:|---|"]
    for m, r in results:
        lines.append(f"| {m.label} | {params_text(m.key, r['params'])} | {r['seconds']:.2f} | {r['peak_gib']:.2f} | "
                     f"{r['inputs_gib']:.2f} | {r['before']:.4f} -> {r['after']:.4f} |")
    return lines + [""]


#: Shapes run from features only (their [Q, G] distances would not fit): name -> (Q, G).
STREAMED_SHAPES = {"quickdraw": (92291, 54151)}


def run_one_streamed(key: str, folder: Path) -> dict:
    """Run method ``key`` at its defaults from the features in ``folder``, by query chunks, as a sweep
    does when the [Q, G] distances do not fit: ICFRR on the exact gallery graph with each chunk's
    distances computed from the features, the others through their streamed forms."""
    import icfrr
    from icfrr.methods import MethodInputs
    from icfrr.registry import method
    from icfrr.run_config import RunConfig
    from jobs.engine_runner import run_config
    from jobs.method_runner import run_method

    params = _defaults(key)
    entry = method(key)
    fq, fg = np.load(folder / "fq.npy"), np.load(folder / "fg.npy")
    lq, lg = np.load(folder / "labels_q.npy"), np.load(folder / "labels_g.npy")
    tiny = (fq[:4], fg[:40], lq[:4], lg[:40])      # compile / load the kernels outside the timing
    if entry.iterative:
        def run(fq_, fg_, lq_, lg_):
            cfg = RunConfig.for_method(key, params).clamped(len(fg_))
            graph = icfrr.neighbor_graph_from_features(fg_, cfg.params[entry.graph_param])
            return run_config(icfrr.FeatureDistances(fq_, fg_), graph, lq_, lg_, cfg, device="cpu")
    else:
        def run(fq_, fg_, lq_, lg_):
            return run_method(MethodInputs(None, fq=fq_, fg=fg_), lq_, lg_, RunConfig.for_method(key, params))
    run(*tiny)
    inputs_gib = peak_gib()
    t0 = time.perf_counter()
    outcome = run(fq, fg, lq, lg)
    seconds = time.perf_counter() - t0
    return {"method": key, "params": params, "seconds": seconds, "peak_gib": peak_gib(), "inputs_gib": inputs_gib,
            "before": outcome.metrics[0]["map_all"], "after": outcome.metrics[-1]["map_all"]}


def bench_streamed(name: str, scale: float = 1.0) -> list[str]:
    """Every registry method from features on a shape of :data:`STREAMED_SHAPES` (Q and G times ``scale``)."""
    from icfrr.registry import METHODS
    from jobs.bench_data import make_features

    n_query, n_gallery = (max(4, round(n * scale)) for n in STREAMED_SHAPES[name])
    with tempfile.TemporaryDirectory(prefix="icfrr-bench-methods-") as tmp:
        folder = Path(tmp)
        for label, array in zip(("fq", "fg", "labels_q", "labels_g"), make_features(n_query, n_gallery)):
            np.save(folder / f"{label}.npy", array.numpy())
        results = [(m, _child(m.key, folder, streamed=True)) for m in METHODS]
    return _table(f"#### {name}" + (f" at scale {scale:g}" if scale != 1 else "") + f": Q={n_query:,}, "
                  f"G={n_gallery:,}, D=768, each method at its defaults, from features by query chunks "
                  "(no [Q, G] matrix held)", results)


def main(argv: list[str]) -> int:
    """``--child KEY FOLDER`` (or ``--child-streamed``) runs one method and prints JSON; else ``run_shapes``."""
    if argv[:1] in (["--child"], ["--child-streamed"]):
        run = run_one if argv[0] == "--child" else run_one_streamed
        print(json.dumps(run(argv[1], Path(argv[2]))))
        return 0
    raise SystemExit("run it as python -m jobs.bench --methods")


def run_shapes(shapes: list[str], scale: float = 1.0) -> None:
    """Print one table per shape (``python -m jobs.bench --methods``); ``scale`` shrinks a streamed shape."""
    for name in shapes:
        print("\n".join(bench_streamed(name, scale) if name in STREAMED_SHAPES else bench_shape(name)), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
