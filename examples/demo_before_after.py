"""mAP@all on the generated demo before and after ICFRR, for a small grid of settings.

    python examples/demo_before_after.py            # generates data/demo and cache/ on first use

Uses the demo's default backbone (the weight-free edge descriptor) through the
same artifact cache as the jobs, then re-ranks with the engine and prints one
row per setting: the initial mAP@all and the mAP@all after each iteration.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # runs from a checkout without installing

import icfrr  # noqa: E402
from store.artifacts import ensure_artifacts  # noqa: E402

KG = (5, 10, 20, 50)
KQ = (5, 10, 20)
BETA = (0.5, 1.0)
N_ITER = 3


def main() -> None:
    """Print the table."""
    art = ensure_artifacts("demo", progress=False)
    q, g = art.qg_dists.shape
    print(f"demo: {q} queries, {g} gallery, {art.dataset.n_classes} classes, backbone {art.backbone}")
    print(f"{'KG':>4} {'KQ':>4} {'beta':>5}  " + "  ".join(f"{'t=' + str(t):>6}" for t in range(N_ITER + 1)))
    for kg, kq, beta in itertools.product(KG, KQ, BETA):
        rankings = icfrr.rerank(art.qg_dists, art.graph, kg=kg, kq=kq, beta=beta, n_iter=N_ITER)
        maps = [icfrr.evaluate(r, art.labels_q, art.labels_g)["map_all"] for r in rankings]
        print(f"{kg:>4} {kq:>4} {beta:>5}  " + "  ".join(f"{m:6.4f}" for m in maps))


if __name__ == "__main__":
    main()
