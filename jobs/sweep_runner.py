"""One sweep configuration: re-rank with the engine, evaluate every iteration, keep what the store records.

The whole ranking of an iteration ([Q, G]) only lives while that iteration is
evaluated; what is kept afterwards is small: the summary metrics of every
iteration and, for iteration 0, the best so far and the last, the per-query
metrics and the top-N of each query.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

import icfrr
from store.writes import KeptIteration, RunConfig, best_iteration


@dataclass(frozen=True)
class RunOutcome:
    """What one configuration produced.

    Attributes:
        metrics: ``icfrr.summarize`` output for iterations 0..n_iter.
        kept: iteration -> per-query metrics and top-N, for 0, the best and the last.
        best: The iteration with the highest ``map_all`` (earliest on ties).
        seconds: Wall time of re-ranking plus evaluation.
    """

    metrics: list[dict[str, float]]
    kept: dict[int, KeptIteration]
    best: int
    seconds: float


def _keep(step: icfrr.RerankStep, per_query: dict[str, np.ndarray], top_n: int) -> KeptIteration:
    # clone/to copy, so the full [Q, G] ranking can be freed after this step
    return KeptIteration(per_query, step.ranking[:, :top_n].clone().numpy(),
                         step.scores[:, :top_n].to(torch.float64).numpy())


def run_config(
    qg_dists: torch.Tensor,
    graph: icfrr.NeighborGraph,
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    config: RunConfig,
    *,
    device: str | torch.device | None = None,
    top_n: int = 100,
    on_step: Callable[[icfrr.RerankStep, dict[str, float]], None] | None = None,
) -> RunOutcome:
    """Re-rank once over all iterations and evaluate each one.

    Args:
        qg_dists: float [Q, G] query-gallery distances.
        graph: Gallery neighbour graph with ``k >= config.kg`` (or ``G - 1``).
        labels_q: int [Q] query labels, -1 unknown.
        labels_g: int [G] gallery labels.
        config: KG, KQ, beta, iterations, variant (already clamped to G).
        device: Where the engine runs (None: its default).
        top_n: How many of each query's best items to keep.
        on_step: Called after each iteration with the step and its metrics
            (progress bars, published per-iteration files).

    Returns:
        The :class:`RunOutcome`.
    """
    start = time.perf_counter()
    metrics: list[dict[str, float]] = []
    kept: dict[int, KeptIteration] = {}
    best: tuple[int, KeptIteration] | None = None
    last: tuple[int, KeptIteration] | None = None
    steps = icfrr.iter_rerank(qg_dists, graph, kg=config.kg, kq=config.kq, beta=config.beta,
                              n_iter=config.n_iter, variant=config.variant, device=device)
    for step in steps:
        if step.iteration != len(metrics):
            raise RuntimeError(f"engine yielded iteration {step.iteration}, expected {len(metrics)}")
        per_query = icfrr.per_query(step.ranking, labels_q, labels_g)
        summary = {k: float(v) for k, v in icfrr.summarize(per_query).items()}
        metrics.append(summary)
        last = (step.iteration, _keep(step, per_query, top_n))
        if step.iteration == 0:
            kept[0] = last[1]
        if best_iteration(metrics) == step.iteration:
            best = last
        if on_step is not None:
            on_step(step, summary)
        del step
    if last is None or best is None or len(metrics) != config.n_iter + 1:
        raise RuntimeError(f"engine yielded {len(metrics)} iterations, expected {config.n_iter + 1}")
    kept[best[0]] = best[1]
    kept[last[0]] = last[1]
    return RunOutcome(metrics, kept, best[0], time.perf_counter() - start)
