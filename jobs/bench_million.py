"""Benchmark: ICFRR on a million-item gallery, through ``jobs.sweep`` end to end.

    python -m jobs.bench --shape million               # Q=10,000, G=1,000,000, D=256
    python -m jobs.bench --shape million --scale 0.05  # Q=500, G=50,000: the same pipeline, smaller

Synthetic clustered features (``jobs.bench_data.make_features``, D=256) are
written as ``.npy`` files with a labels ``.npz``; a child process runs
``jobs.sweep --query-features --gallery-features --labels --graph ivf`` on
them (KG = KQ = 64, 3 iterations, one configuration) with its Parquet
artifacts and DuckDB store write. The child wraps the pipeline's stages
with timers and reports seconds for: the graph build, the graph's recall
measurement, the query-gallery distance chunks, the initial ranking, the
iterations, the metrics, and the writes (Parquet artifacts, the run's
store transaction); its peak resident memory (VmHWM); and the graph's
recall@KG. Whatever the scale, the child takes the full size's path:
query-gallery distances computed per chunk from the features (never the
dense [Q, G] matrix a small shape would get), and the engine's kernels are
compiled before the timing. The initial ranking's share of the engine is measured on the
first chunk of queries by running it again with no iteration (that extra
run is left out of every figure) and scaled to all queries.

Targets of issue 19 at full size on a 2-core machine: peak <= 8 GiB and
<= 20 minutes end to end. Above 100,000 gallery items (scale above 0.1) the
ivf graph is the one searched a cell at a time (:mod:`icfrr.ann_cells`:
2 sqrt(G) k-means cells trained on a subsample, 32 probed); at and below, FAISS's
per-item IVF search (4 sqrt(G) cells, 32 probed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from jobs.bench_data import make_features, peak_gib

#: (Q, G, D, KG = KQ, iterations) at scale 1.
FULL = (10_000, 1_000_000, 256, 64, 3)


def shape_at(scale: float) -> tuple[int, int]:
    """(Q, G) at ``scale`` of the full shape (at least 2 queries and 200 gallery items)."""
    n_query, n_gallery, *_ = FULL
    return max(2, round(n_query * scale)), max(200, round(n_gallery * scale))


def _timed(table: dict[str, float], stage: str, fn):
    """``fn`` with its wall seconds added to ``table[stage]``."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            table[stage] += time.perf_counter() - t0

    return wrapper


def child(folder: Path) -> dict:
    """Run the sweep on the files in ``folder`` in this process, with every stage timed."""
    import icfrr.reranking as reranking
    import icfrr._update as update
    import jobs.artifact_graph as artifacts   # where the graph is built and the dense limit applied
    import store.artifacts as store_artifacts
    from icfrr.neighbors import FeatureDistances
    from jobs import sweep
    from store import writes

    times: dict[str, float] = defaultdict(float)
    recall: dict[str, float] = {}
    *_, k, n_iter = FULL
    build, measure = artifacts.build_graph, artifacts.graph_recall

    def graph_recall(graph, feats, sample):
        curve = measure(graph, feats, sample)
        recall.update(at_kg=curve[k - 1] if len(curve) >= k else float("nan"), sample=len(sample))
        return curve

    artifacts.build_graph = _timed(times, "graph build", build)
    artifacts.graph_recall = _timed(times, "graph recall measurement", graph_recall)
    store_artifacts.save = _timed(times, "Parquet artifacts write", store_artifacts.save)
    FeatureDistances.__call__ = _timed(times, "query-gallery distances (chunks)", FeatureDistances.__call__)
    update.rows_from_positions = _timed(times, "metrics", update.rows_from_positions)
    writes.write_run = _timed(times, "store write (run transaction)", writes.write_run)
    run_rows = reranking.run_rows_cpu
    initial = {"queries": 0}

    def engine(spec, dist, labels_q, n_relevant):
        if not initial["queries"]:      # the initial ranking alone, once, outside every figure
            t0 = time.perf_counter()
            run_rows(replace(spec, n_iter=0), dist, labels_q, n_relevant)
            initial.update(queries=dist.shape[0], seconds=time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = run_rows(spec, dist, labels_q, n_relevant)
        times["engine (initial ranking + iterations + metrics)"] += time.perf_counter() - t0
        return out

    reranking.run_rows_cpu = engine
    artifacts.dense_qg_fits = lambda n_query, n_gallery: False  # the full size's path at any scale
    _warm_kernels()
    argv = ["--dataset", "million", "--query-features", str(folder / "fq.npy"),
            "--gallery-features", str(folder / "fg.npy"), "--labels", str(folder / "labels.npz"),
            "--graph", "ivf", "--kg", str(k), "--kq", str(k), "--n-times", str(n_iter), "--beta", "0.5",
            "--cache-root", str(folder / "cache"), "--db", str(folder / "bench.duckdb"), "--device", "cpu",
            "--quiet"]
    t0 = time.perf_counter()
    out = subprocess_free_sweep(sweep, argv)
    total = time.perf_counter() - t0 - initial.get("seconds", 0.0)
    return dict(times=dict(times), total_s=total, peak_gib=peak_gib(), recall=recall, initial=initial,
                sweep_output=out)


def _warm_kernels() -> None:
    """Compile (or load) the dense and the sparse engine kernels outside the figures (``--cold-start`` times that)."""
    from jobs.bench_engine import _cpu_seconds, _inputs

    tiny = _inputs(4, 400, 8)
    for sparse in (False, True):
        _cpu_seconds(*tiny, 8, 1, sparse)


def subprocess_free_sweep(sweep, argv: list[str]) -> str:
    """``jobs.sweep.main(argv)`` in this process; its printed table (stdout) as text.

    Raises:
        RuntimeError: The sweep did not exit 0.
    """
    import contextlib
    import io

    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        status = sweep.main(argv)
    if status:
        raise RuntimeError(f"jobs.sweep exited {status}: {text.getvalue()[-2000:]}")
    return text.getvalue()


def report(res: dict, n_query: int, n_gallery: int, machine: str) -> str:
    """The child's figures as Markdown."""
    _, _, dim, k, n_iter = FULL
    t = dict(res["times"])
    engine = t.pop("engine (initial ranking + iterations + metrics)", 0.0)
    metrics = t.get("metrics", 0.0)
    init = res["initial"]
    initial = init["seconds"] / max(init["queries"], 1) * n_query if init.get("queries") else float("nan")
    rows = [("graph build (ivf)", t.pop("graph build", 0.0)),
            ("graph recall measurement", t.pop("graph recall measurement", 0.0)),
            ("query-gallery distances (chunks, inside the engine loop)", t.pop("query-gallery distances (chunks)", 0.0)),
            ("initial ranking (estimated from the first chunk)", initial),
            (f"{n_iter} iterations (engine - initial - metrics)", engine - initial - metrics),
            ("metrics", metrics),
            ("Parquet artifacts write", t.pop("Parquet artifacts write", 0.0)),
            ("store write (run transaction)", t.pop("store write (run transaction)", 0.0))]
    named = sum(v for _, v in rows if np.isfinite(v))
    rows.append(("everything else (reading, hashing, checks, imports)", res["total_s"] - named))
    rec = res["recall"]
    out = [f"### Million shape at scale {res['scale']:g}: Q={n_query:,}, G={n_gallery:,}, D={dim}, KG=KQ={k}, "
           f"{n_iter} iterations, jobs.sweep from .npy features, ivf graph", "", f"Machine: {machine}", "",
           "| stage | seconds |", "|---|---:|"]
    out += [f"| {label} | {v:.1f} |" for label, v in rows]
    out += [f"| **end to end (sweep)** | **{res['total_s']:.1f}** |", "",
            f"- peak resident memory (VmHWM) of the sweep process: {res['peak_gib']:.2f} GiB "
            f"(target at full size: <= 8 GiB)",
            f"- graph recall@{k} on {rec.get('sample', 0)} sampled items: {rec.get('at_kg', float('nan')):.4f}",
            "", "The sweep's own table:", "", "```", res["sweep_output"].strip(), "```", ""]
    return "\n".join(out)


def main(scale: float, machine: str) -> int:
    """Write the inputs at ``scale``, run the sweep in a child process, print its figures."""
    n_query, n_gallery = shape_at(scale)
    _, _, dim, _, _ = FULL
    with tempfile.TemporaryDirectory(prefix="icfrr-million-bench-") as tmp:
        folder = Path(tmp)
        fq, fg, lq, lg = make_features(n_query, n_gallery, dim=dim)
        np.save(folder / "fq.npy", fq.numpy())
        np.save(folder / "fg.npy", fg.numpy())
        np.savez(folder / "labels.npz", query=lq.numpy(), gallery=lg.numpy())
        del fq, fg, lq, lg
        cmd = [sys.executable, "-m", "jobs.bench_million", "--child", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"bench: error: the million-shape sweep failed: {done.stderr.strip()[-2000:]}", file=sys.stderr)
            return 1
        res = json.loads(done.stdout.strip().splitlines()[-1]) | {"scale": scale}
    print(report(res, n_query, n_gallery, machine), flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["--child"] or len(sys.argv) != 3:
        raise SystemExit("run it as python -m jobs.bench --shape million [--scale F]")
    print(json.dumps(child(Path(sys.argv[2]))))
