"""Wall time of one sweep with ``--executor local`` and with ``--executor ray`` on a local Ray.

``PYTHONPATH=. python examples/bench_ray.py [--shape quarter|tuberlin] [--n-configs 6]``

Synthetic clustered features (``jobs.bench.make_features``) are saved as
``.npy`` files in a temporary folder; ``python -m jobs.extract`` makes the
artifacts once (untimed); then the same ``python -m jobs.sweep`` command runs
with each executor, each in its own process, into its own store. Printed:
each command's wall time (Python start, Ray start, the sweep and its store
writes), the Ray executor's own line (tasks, task seconds, wall seconds of its
tasks), whether the two stores hold the same runs, and the ratio. The grid is
KG {512, 256} x KQ 250 x beta {0.5, 0.25, 1}, T=5 (6 configurations in two
beta groups, as ``jobs.bench --sweep`` uses).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPES = {"quarter": (600, 7000), "tuberlin": (2400, 27989), "small": (300, 2000)}
GRID = ["--kg", "512", "256", "--kq", "250", "--beta", "0.5", "0.25", "1", "--n-times", "5"]


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench_ray: {' '.join(argv[:3])} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return seconds, done.stderr


def main() -> int:
    """Run the two sweeps and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="quarter")
    parser.add_argument("--n-configs", type=int, choices=(3, 6), default=6)
    args = parser.parse_args()
    from jobs.bench import make_features
    from tests.jobs.test_sweep_ray import _assert_same_runs

    n_query, n_gallery = SHAPES[args.shape]
    grid = GRID if args.n_configs == 6 else [*GRID[:2], *GRID[3:]]   # one KG: a single beta group
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path.cwd()), os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        folder = Path(tmp)
        fq, fg, lq, lg = make_features(n_query, n_gallery)
        np.save(folder / "fq.npy", fq.numpy())
        np.save(folder / "fg.npy", fg.numpy())
        np.savez(folder / "labels.npz", query=lq.numpy(), gallery=lg.numpy())
        source = ["--dataset", f"bench-{args.shape}", "--query-features", str(folder / "fq.npy"),
                  "--gallery-features", str(folder / "fg.npy"), "--labels", str(folder / "labels.npz"),
                  "--cache-root", str(folder / "cache"), "--device", "cpu"]
        _run(["-m", "jobs.extract", *source, "--kg-max", "512"], env)
        print(f"shape {args.shape}: Q={n_query}, G={n_gallery}; {args.n_configs} configurations "
              f"({' '.join(grid)}); {os.cpu_count()} CPU(s); load average {os.getloadavg()[0]:.1f}")
        walls = {}
        for executor in ("local", "ray"):
            argv = ["-m", "jobs.sweep", *source, *grid, "--db", str(folder / f"{executor}.duckdb"), "--quiet",
                    "--executor", executor]
            walls[executor], err = _run(argv, env)
            note = re.findall(r"sweep: --executor ray: \d+ task.*", err)
            print(f"--executor {executor}: {walls[executor]:.1f} s wall" + (f" ({note[0][7:]})" if note else ""))
        _assert_same_runs(folder / "ray.duckdb", folder / "local.duckdb", args.n_configs)
        print("same runs in both stores (config keys, metrics to 1e-9, kept rankings)")
        print(f"ray / local wall time: {walls['ray'] / walls['local']:.2f} "
              f"(+{walls['ray'] - walls['local']:.1f} s); load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
