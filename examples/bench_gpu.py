"""GPU check and sweep timing: ``python examples/bench_gpu.py [--shape tuberlin] [--n-iter 10]``.

Store-free (no DuckDB), so it runs on a bare CUDA image. On synthetic
class-clustered features (``jobs.bench.make_features``) at the TU-Berlin shape
(Q=2400, G=27989):

1. CUDA against CPU: for a few configurations (both variants), the kept
   top-N rankings of every iteration must be identical and the per-query
   metrics equal to 1e-9. Printed as a table with the mismatch counts.
2. A whole ICFRR grid on the GPU: KG {512, 256, 128} x KQ {512, 250, 100} x
   beta {0.5, 0.25, 1} (27 configurations), ``--n-iter`` iterations each,
   betas sharing the initial ranking and first votes (as ``jobs.sweep``
   runs them), metrics of every iteration computed. Printed: seconds per
   (KG, KQ) group and in total, graph build included separately.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

import icfrr
from jobs.bench import make_features

SHAPES = {"tuberlin": (2400, 27989), "quarter": (600, 7000)}
KGS, KQS, BETAS = (512, 256, 128), (512, 250, 100), (0.5, 0.25, 1.0)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(qg, graph, lq, lg, *, kg, kq, betas, n_iter, variant, device):
    """(top_gallery [C, Q, T+1, N], metrics [C, Q, T+1, M]) over all chunks."""
    tops, mets = [], []
    for res in icfrr.rerank_chunks(qg, graph, kg=kg, kq=kq, betas=betas, n_iter=n_iter, variant=variant,
                                   labels_q=lq, labels_g=lg, top_n=100, device=device):
        tops.append(np.asarray(res.top_gallery))
        mets.append(np.asarray(res.metrics))
    return np.concatenate(tops, axis=1), np.concatenate(mets, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tuberlin")
    ap.add_argument("--n-iter", type=int, default=10)
    args = ap.parse_args()
    n_q, n_g = SHAPES[args.shape]
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA {cuda}: {torch.cuda.get_device_name(0) if cuda else '-'}; "
          f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    fq, fg, lq, lg = make_features(n_q, n_g)
    lq, lg = lq.numpy(), lg.numpy()
    t0 = time.perf_counter()
    qg = icfrr.pairwise_distances(fq, fg).numpy()
    graph = icfrr.neighbor_graph_from_features(fg, max(KGS))
    print(f"shape Q={n_q} G={n_g}: distances + graph (K={max(KGS)}) on the CPU in {time.perf_counter() - t0:.1f} s")
    # warm both paths (numba compile, CUDA context) outside the timings
    run(qg[:8], graph, lq[:8], lg, kg=16, kq=16, betas=(0.5,), n_iter=2, variant="reference", device="cpu")
    if cuda:
        run(qg[:8], graph, lq[:8], lg, kg=16, kq=16, betas=(0.5,), n_iter=2, variant="reference", device="cuda")

    print("\n## CUDA rankings against the CPU's (every kept top-100 of every iteration, metrics to 1e-9)")
    print("| variant | KG | KQ | betas | T | CPU s | CUDA s | top-N mismatching queries | max metric diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    checks = [("reference", 512, 512), ("paper", 512, 512), ("reference", 128, 100), ("paper", 256, 250)]
    for variant, kg, kq in checks if cuda else []:
        t = time.perf_counter()
        top_c, met_c = run(qg, graph, lq, lg, kg=kg, kq=kq, betas=BETAS, n_iter=3, variant=variant, device="cpu")
        cpu_s = time.perf_counter() - t
        t = time.perf_counter()
        top_g, met_g = run(qg, graph, lq, lg, kg=kg, kq=kq, betas=BETAS, n_iter=3, variant=variant, device="cuda")
        _sync()
        gpu_s = time.perf_counter() - t
        bad = int((top_c != top_g).reshape(top_c.shape[0], top_c.shape[1], -1).any(axis=(0, 2)).sum())
        diff = float(np.nanmax(np.abs(met_c - met_g)))
        print(f"| {variant} | {kg} | {kq} | 3 | 3 | {cpu_s:.2f} | {gpu_s:.2f} | {bad} of {n_q} | {diff:.1e} |")

    device = "cuda" if cuda else "cpu"
    print(f"\n## ICFRR grid on {device}: 27 configurations (KG x KQ x beta), {args.n_iter} iterations, "
          "betas sharing work, metrics of every iteration")
    print("| KG | KQ | seconds (3 betas) |")
    print("|---|---|---|")
    total = time.perf_counter()
    for kg in KGS:
        for kq in KQS:
            t = time.perf_counter()
            run(qg, graph, lq, lg, kg=kg, kq=kq, betas=BETAS, n_iter=args.n_iter, variant="reference", device=device)
            _sync()
            print(f"| {kg} | {kq} | {time.perf_counter() - t:.2f} |")
    print(f"| all | all | {time.perf_counter() - total:.2f} (27 configurations x {args.n_iter} iterations) |")


if __name__ == "__main__":
    main()
