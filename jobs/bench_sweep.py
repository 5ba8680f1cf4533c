"""Whole-sweep benchmark: ``python -m jobs.bench --sweep [--n-configs N] [--shape S] [--share-betas]``.

Synthetic clustered features (``jobs.bench_data.make_features``) are written to a
temporary folder; a child process loads them and runs a sweep end to end as
``jobs.sweep`` does: the gallery neighbour graph from features (once, at the
largest KG), then per configuration the streamed engine (every iteration,
metrics of every iteration, kept top-100) and one DuckDB transaction
(``store.writes.write_run``) into a temporary database. Shapes:

- ``tuberlin`` (Q=2400, G=27989) and ``quarter`` (Q=600, G=7000): dense
  query-gallery distances loaded as an input; grid KG {512,256,128,64} x KQ
  {512,250,100} x beta {0.5,0.25,1}, 5 iterations, first N configurations
  (the first three are KG=KQ=512).
- ``quickdraw`` (Q=92291, G=54151): each chunk's distances computed from the
  features and never materialised; KG=KQ=64, 2 iterations, beta {0.5,0.25,1}.

Printed: seconds per configuration (engine, store write), the graph's
seconds, peak resident memory (VmHWM) and the peak beyond what the
process held after loading its inputs, a cProfile summary of the first
configuration, and the published code's per-configuration cost for KG=KQ=512
and 5 iterations (gallery argsort plus 5 iterations, taken from the literal
benchmark rows in the README, not re-measured here).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jobs.bench_data import peak_gib

#: name -> (Q, G, dense qg input, KG values, KQ values, n_iter)
SHAPES = {
    "tuberlin": (2400, 27989, True, (512, 256, 128, 64), (512, 250, 100), 5),
    "quarter": (600, 7000, True, (512, 256, 128, 64), (512, 250, 100), 5),
    "quickdraw": (92291, 54151, False, (64,), (64,), 2),
}
BETAS = (0.5, 0.25, 1.0)
TOP_N = 100
#: The literal implementation's seconds (gallery argsort rank matrix, one iteration) at KG=KQ=512,
#: from the README's "jobs.bench" tables (2 cores, idle machine); the published code's shape.
LITERAL_ROWS = {"tuberlin": (131.37, 266.46), "quarter": (7.17, 16.85)}


def _rss_gib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**30


def grid(shape: str, n_configs: int) -> list[tuple[int, int, float, int]]:
    """The first ``n_configs`` (kg, kq, beta, n_iter) of the shape's grid, betas innermost."""
    _, _, _, kgs, kqs, n_iter = SHAPES[shape]
    full = [(kg, kq, beta, n_iter) for kg in kgs for kq in kqs for beta in BETAS]
    return full[:n_configs]


def child(folder: Path, shape: str, n_configs: int, share_betas: bool) -> dict:
    """Run the sweep on the saved inputs (in its own process) and return the measurements."""
    import torch

    import icfrr
    from jobs.engine_runner import run_configs
    from store import writes
    from icfrr.run_config import RunConfig
    from store.db import connect_writer

    # Load the compiled kernels once (numba's disk cache) before anything is measured.
    tiny = np.random.default_rng(0).random((4, 30), dtype=np.float32)
    list(icfrr.rerank_chunks(tiny, np.abs(tiny[:1].T - tiny[:1]), kg=3, kq=3, n_iter=2,
                             labels_q=np.zeros(4, np.int64), labels_g=np.zeros(30, np.int64)))
    base_gib = _rss_gib()
    fq, fg = np.load(folder / "fq.npy"), np.load(folder / "fg.npy")
    lq, lg = np.load(folder / "labels_q.npy"), np.load(folder / "labels_g.npy")
    n_query, n_gallery, dense, *_ = SHAPES[shape]
    qg = torch.from_numpy(np.load(folder / "qg.npy")) if dense else icfrr.FeatureDistances(fq, fg)
    inputs_gib = _rss_gib()
    inputs_peak_gib = peak_gib()
    configs = [RunConfig(kg=kg, kq=kq, beta=b, n_iter=t) for kg, kq, b, t in grid(shape, n_configs)]

    start = time.perf_counter()
    graph = icfrr.neighbor_graph_from_features(fg, max(c.kg for c in configs))
    graph_s = time.perf_counter() - start
    db = folder / "bench.duckdb"
    with connect_writer(db) as con:
        dataset_id = writes.upsert_dataset(con, name=f"bench-{shape}", root=None, items=writes.items_table(lq, lg))
        info = writes.ArtifactInfo(f"bench-{shape}", "synthetic", None, -1)
        artifact_id = writes.upsert_artifact(con, dataset_id, info)
        sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id, command="jobs.bench --sweep")
    groups: list[list[RunConfig]] = []
    for cfg in configs:
        if share_betas and groups and (groups[-1][0].kg, groups[-1][0].kq) == (cfg.kg, cfg.kq):
            groups[-1].append(cfg)
        else:
            groups.append([cfg])
    rows, profile_text = [], ""
    for gi, group in enumerate(groups):
        profiler = cProfile.Profile() if gi == 0 else None
        if profiler is not None:
            profiler.enable()
        t0, cpu0 = time.perf_counter(), time.process_time()
        outcomes = run_configs(qg, graph, lq, lg, group, top_n=TOP_N, device="cpu")
        t1, cpu1 = time.perf_counter(), time.process_time()
        with connect_writer(db) as con:
            for cfg, out in zip(group, outcomes):
                writes.write_run(con, sweep_id=sweep_id, artifact_id=artifact_id, artifact_key=info.key,
                                 config=cfg, device="cpu", seconds=out.seconds, metrics=out.metrics,
                                 kept=out.kept, per_query=out.per_query)
        t2 = time.perf_counter()
        if profiler is not None:
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
            profile_text = _trim_profile(text.getvalue())
        for cfg, out in zip(group, outcomes):
            rows.append(dict(kg=cfg.kg, kq=cfg.kq, beta=cfg.beta, n_iter=cfg.n_iter,
                             engine_s=(t1 - t0) / len(group), write_s=(t2 - t1) / len(group),
                             engine_cpu_s=(cpu1 - cpu0) / len(group), load=os.getloadavg()[0],
                             map0=out.metrics[0]["map_all"], map_last=out.metrics[-1]["map_all"], best=out.best))
    with connect_writer(db) as con:
        writes.finish_sweep(con, sweep_id, "done")
    total_s = time.perf_counter() - start
    return dict(shape=shape, n_query=n_query, n_gallery=n_gallery, dense=dense, graph_s=graph_s, total_s=total_s,
                rows=rows, base_gib=base_gib, inputs_gib=inputs_gib, inputs_peak_gib=inputs_peak_gib,
                peak_gib=peak_gib(), db_mib=db.stat().st_size / 2**20, profile=profile_text,
                share_betas=share_betas)


def _trim_profile(text: str) -> str:
    """The cProfile table without its blank lines and long paths."""
    lines = [ln.replace(str(Path(__file__).resolve().parents[1]) + "/", "") for ln in text.splitlines() if ln.strip()]
    return "\n".join(ln if len(ln) < 160 else ln[:157] + "..." for ln in lines)


def report(res: dict, machine: str) -> str:
    """The result tables as Markdown."""
    rows = res["rows"]
    out = [f"### Sweep, {res['shape']} shape: Q={res['n_query']}, G={res['n_gallery']}, D=768, "
           f"{len(rows)} configurations, top-{TOP_N} kept, "
           + ("dense query-gallery distances as input" if res["dense"]
              else "query-gallery distances computed per chunk from features (never materialised)")
           + (", configurations differing only in beta run together" if res["share_betas"] else ""),
           "", f"Machine: {machine}", "",
           "| KG | KQ | beta | T | engine s | engine CPU s | store write s | total s | mAP@all 0 -> T | best it "
           "| load avg |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        out.append(f"| {r['kg']} | {r['kq']} | {r['beta']:g} | {r['n_iter']} | {r['engine_s']:.2f} | "
                   f"{r['engine_cpu_s']:.2f} | {r['write_s']:.2f} | {r['engine_s'] + r['write_s']:.2f} | "
                   f"{r['map0']:.4f} -> {r['map_last']:.4f} | {r['best']} | {r['load']:.1f} |")
    per_config = [r["engine_s"] + r["write_s"] for r in rows]
    out += ["", "engine CPU s: CPU time of the process's threads (both cores); on an idle 2-core machine the "
            "wall time approaches half of it. load avg: the machine's 1-minute load after the configuration "
            "(2 cores; above 2 the machine was shared).",
            "", f"- gallery neighbour graph from features (once, KG={max(r['kg'] for r in rows)}): {res['graph_s']:.1f} s",
            f"- per configuration (engine + store write): mean {np.mean(per_config):.2f} s, "
            f"min {min(per_config):.2f} s, max {max(per_config):.2f} s; whole sweep incl. graph {res['total_s']:.1f} s",
            f"- memory: {res['base_gib']:.2f} GiB after imports and kernel load, {res['inputs_gib']:.2f} GiB with the "
            f"inputs loaded; peak (VmHWM) {res['peak_gib']:.2f} GiB, i.e. "
            f"{res['peak_gib'] - res['inputs_gib']:.2f} GiB beyond the inputs",
            f"- DuckDB file after the sweep: {res['db_mib']:.0f} MiB"]
    big = [r["engine_s"] + r["write_s"] for r in rows if r["kg"] == 512 and r["kq"] == 512 and r["n_iter"] == 5]
    if res["shape"] in LITERAL_ROWS and big:
        argsort_s, iter_s = LITERAL_ROWS[res["shape"]]
        published = argsort_s + 5 * iter_s
        out.append(f"- published code's cost of one KG=KQ=512, T=5 configuration: {argsort_s:.1f} s gallery argsort + "
                   f"5 x {iter_s:.1f} s per iteration = {published:.0f} s (taken from the literal benchmark rows "
                   f"of `python -m jobs.bench`, not re-measured), against {np.mean(big):.2f} s here: "
                   f"{published / np.mean(big):.0f}x")
    out += ["", "cProfile of the first " + ("group" if res["share_betas"] else "configuration")
            + " (engine and store write), by own time:", "", "```", res["profile"], "```", ""]
    return "\n".join(out)


def main(shape: str, n_configs: int, share_betas: bool, machine: str) -> int:
    """Write the inputs, run the sweep in a child process, print its tables."""
    from jobs.bench_data import make_features

    if shape not in SHAPES:
        print(f"bench: error: --sweep needs --shape tuberlin, quarter or quickdraw, not {shape!r}", file=sys.stderr)
        return 2
    if n_configs < 1:
        print(f"bench: error: --n-configs must be >= 1, got {n_configs}", file=sys.stderr)
        return 2
    n_query, n_gallery, dense, *_ = SHAPES[shape]
    with tempfile.TemporaryDirectory(prefix="icfrr-sweep-bench-") as tmp:
        folder = Path(tmp)
        fq, fg, lq, lg = make_features(n_query, n_gallery)
        for name, array in (("fq", fq), ("fg", fg), ("labels_q", lq), ("labels_g", lg)):
            np.save(folder / f"{name}.npy", array.numpy())
        if dense:
            from icfrr import pairwise_distances

            np.save(folder / "qg.npy", pairwise_distances(fq, fg).numpy())
        del fq, fg
        cmd = [sys.executable, "-m", "jobs.bench_sweep", "--folder", tmp, "--shape", shape,
               "--n-configs", str(n_configs)] + (["--share-betas"] if share_betas else [])
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        res = json.loads(done.stdout.strip().splitlines()[-1])
    print(report(res, machine), flush=True)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="child process of python -m jobs.bench --sweep")
    p.add_argument("--folder", type=Path, required=True)
    p.add_argument("--shape", choices=sorted(SHAPES), required=True)
    p.add_argument("--n-configs", type=int, required=True)
    p.add_argument("--share-betas", action="store_true")
    a = p.parse_args()
    print(json.dumps(child(a.folder, a.shape, a.n_configs, a.share_betas)))
