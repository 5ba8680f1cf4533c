"""Print how long the store takes to commit runs of a given size, and how big the file grows.

Synthetic numbers (random per-query metrics and rankings) in the shape of a real
sweep; only the store is timed: opening the writer, ``write_run`` (one
transaction via Arrow), closing (DuckDB checkpoints on close), and opening a
reader afterwards.

    python examples/bench_store_writes.py                 # TU-Berlin size: Q=2400, top 100
    python examples/bench_store_writes.py --queries 120 --runs 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from icfrr.run_config import RunConfig
from store import writes
from store.db import connect_reader, connect_writer


def _fake_run(rng: np.random.Generator, q: int, n: int, n_iter: int, g: int):
    metrics = [{m: float(rng.random()) for m in writes.METRICS} for _ in range(n_iter + 1)]
    kept = {}
    for it in {0, n_iter // 2, n_iter}:
        ap = rng.random(q)
        pq = {"query_idx": np.arange(q), "label": np.zeros(q, np.int64), "ap": ap, "ap_200": ap,
              "p_25": ap, "p_100": ap, "p_200": ap,
              "first_relevant_rank": rng.integers(1, 50, q)}
        kept[it] = writes.KeptIteration(pq, rng.integers(0, g, (q, n)),
                                        -np.sort(rng.random((q, n)), axis=1))
    return metrics, kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=2400)
    p.add_argument("--gallery", type=int, default=27989)
    p.add_argument("--top-n", type=int, default=100)
    p.add_argument("--n-iter", type=int, default=5)
    p.add_argument("--runs", type=int, default=5)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        with connect_writer(db) as con:
            items = writes.items_table(np.zeros(a.queries, np.int64), np.zeros(a.gallery, np.int64))
            dataset_id = writes.upsert_dataset(con, name="bench", root=None, items=items)
            info = writes.ArtifactInfo("bench", "none", None, -1)
            artifact_id = writes.upsert_artifact(con, dataset_id, info)
            sweep_id = writes.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id,
                                          command="bench")
        print(f"Q={a.queries} G={a.gallery} top-N={a.top_n} iterations={a.n_iter}, "
              f"3 kept iterations per run")
        print(f"{'run':>3} {'open ms':>8} {'write ms':>9} {'close ms':>9} {'reader ms':>10} "
              f"{'rows':>9} {'file MiB':>9}")
        for r in range(a.runs):
            metrics, kept = _fake_run(rng, a.queries, a.top_n, a.n_iter, a.gallery)
            cfg = RunConfig(kg=r + 1, kq=10, beta=0.5, n_iter=a.n_iter)
            t0 = time.perf_counter()
            con = connect_writer(db)
            t1 = time.perf_counter()
            writes.write_run(con, sweep_id=sweep_id, artifact_id=artifact_id, artifact_key="bench",
                             config=cfg, device="cpu", seconds=0.0, metrics=metrics, kept=kept)
            t2 = time.perf_counter()
            con.close()
            t3 = time.perf_counter()
            connect_reader(db).close()
            t4 = time.perf_counter()
            rows = len(metrics) + sum(a.queries * (1 + a.top_n) for _ in kept)
            print(f"{r + 1:>3} {1e3 * (t1 - t0):>8.0f} {1e3 * (t2 - t1):>9.0f} "
                  f"{1e3 * (t3 - t2):>9.0f} {1e3 * (t4 - t3):>10.0f} {rows:>9} "
                  f"{db.stat().st_size / 2**20:>9.1f}")


if __name__ == "__main__":
    main()
