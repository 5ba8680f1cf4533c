"""An iterative method's configurations through the ICFRR engine: re-rank, evaluate every iteration, keep what the store records.

One configuration, or several that differ only in beta (run together). The
single-shot methods' counterpart is :mod:`jobs.method_runner`.

Queries stream through the engine in chunks (``icfrr.reranking.rerank_chunks``):
each chunk goes through every iteration, each ranking is evaluated as it is
made, and only its top N is kept. Every iteration's per-query metrics are
returned (the store keeps them all, so the iteration count can be chosen like
any parameter); which iterations' top N rankings the store keeps (0, the best
by mAP@all and the last) is known only after the last chunk, so the top N of
every iteration are held until then: Q x (T+1)
x N indices and scores, small next to one [Q, G] ranking. Peak memory is the
graph, the inputs and one chunk, whatever Q is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

import icfrr
from icfrr.metrics import columns_from_rows
from icfrr.reranking import ChunkResult, QueryDistances, rerank_chunks
from icfrr.run_config import RunConfig
from store.writes import KeptIteration, best_iteration


@dataclass(frozen=True)
class RunOutcome:
    """What one configuration produced.

    Attributes:
        metrics: ``icfrr.summarize`` output for iterations 0..n_iter.
        kept: iteration -> per-query metrics and top-N, for 0, the best and the last.
        per_query: ``icfrr.per_query`` output of every iteration 0..n_iter.
        best: The iteration with the highest ``map_all`` (earliest on ties).
        seconds: Wall time of re-ranking plus evaluation (shared work split
            evenly between the configurations run together).
        notes: What the run measured about its inputs, for ``runs.params`` (the recall of
            the approximate index that gave a baseline its k-NN sets).
    """

    metrics: list[dict[str, float]]
    kept: dict[int, KeptIteration]
    per_query: list[dict[str, np.ndarray]]
    best: int
    seconds: float
    notes: dict[str, object] = field(default_factory=dict)


def run_config(
    qg_dists: torch.Tensor | np.ndarray | QueryDistances,
    graph: icfrr.NeighborGraph,
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    config: RunConfig,
    *,
    device: str | torch.device | None = None,
    top_n: int = 100,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int | None = None,
) -> RunOutcome:
    """Re-rank once over all iterations and evaluate each one, streaming the queries in chunks.

    (:func:`run_whole` is the same over whole rankings, for per-iteration callbacks.)

    Args:
        qg_dists: float [Q, G] query-gallery distances, or a function
            ``slice -> float [B, G]`` computing a chunk's (e.g. from features;
            ``icfrr.neighbors.FeatureDistances``).
        graph: Gallery neighbour graph with ``k >= config.kg`` (or ``G - 1``).
        labels_q: int [Q] query labels, -1 unknown.
        labels_g: int [G] gallery labels.
        config: KG, KQ, beta, iterations, variant (already clamped to G).
        device: Where the engine runs (None: its default).
        top_n: How many of each query's best items to keep.
        on_progress: Called with (queries done, Q) after each chunk.
        chunk_size: Queries per chunk (default: the engine's).

    Returns:
        The :class:`RunOutcome`.
    """
    return run_configs(qg_dists, graph, labels_q, labels_g, [config], device=device, top_n=top_n,
                       on_progress=on_progress, chunk_size=chunk_size)[0]


def run_configs(
    qg_dists: torch.Tensor | np.ndarray | QueryDistances,
    graph: icfrr.NeighborGraph,
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    configs: Sequence[RunConfig],
    *,
    device: str | torch.device | None = None,
    top_n: int = 100,
    on_progress: Callable[[int, int], None] | None = None,
    chunk_size: int | None = None,
) -> list[RunOutcome]:
    """Run configurations that differ only in beta together, streaming the queries.

    They share the initial ranking, its metrics and the first update's votes
    (exact: the results equal separate ``run_config`` calls).

    Args:
        configs: one or more configurations; kg, kq, n_iter, variant and method equal.
        Others: as for ``run_config``.

    Returns:
        One RunOutcome per configuration, in order.

    Raises:
        ValueError: when the configurations differ in more than beta.
    """
    if not configs:
        return []
    shared = {tuple((k, v) for k, v in c.key_params().items() if k != "beta") for c in configs}
    if len(shared) > 1:
        raise ValueError("run_configs runs configurations that differ only in beta; group them first")
    first = configs[0]
    start = time.perf_counter()
    lq = np.asarray(labels_q)
    collector = ChunkCollector(len(configs), lq.shape[0], first.n_iter)
    chunks = rerank_chunks(qg_dists, graph, kg=first.kg, kq=first.kq, betas=[c.beta for c in configs],
                           n_iter=first.n_iter, variant=first.variant, labels_q=lq, labels_g=labels_g,
                           top_n=top_n, n_query=lq.shape[0], chunk_size=chunk_size, device=device)
    for chunk in chunks:
        collector.add(chunk)
        if on_progress is not None:
            on_progress(chunk.queries.stop, lq.shape[0])
    return collector.outcomes(lq, (time.perf_counter() - start) / len(configs))


class ChunkCollector:
    """Gathers the chunks of one configuration group, in any order, into its RunOutcomes.

    Every iteration's top N and metrics are held until the last chunk is in,
    since which iterations the store keeps (0, the best, the last) is known
    only then. Shared by the local run (``run_configs``) and the Ray executor
    (``jobs.ray_executor``), whose chunks arrive out of order.

    Args:
        n_betas: C, the configurations of the group (one per beta).
        n_query: Q.
        n_iter: T, the updates of every configuration of the group.
    """

    def __init__(self, n_betas: int, n_query: int, n_iter: int) -> None:
        self.n_betas, self.n_query, self.n_iter = n_betas, n_query, n_iter
        self._filled = np.zeros(n_query, dtype=bool)
        self._top = self._scores = self._rows = None

    @property
    def complete(self) -> bool:
        """True once every query has arrived."""
        return bool(self._filled.all())

    def add(self, chunk: ChunkResult) -> None:
        """Store one chunk's top N, scores and metric rows.

        Raises:
            ValueError: When some of its queries already arrived (a chunk is added once).
        """
        if self._filled[chunk.queries].any():
            raise ValueError(f"queries {chunk.queries.start}..{chunk.queries.stop - 1} were already collected")
        if self._top is None:
            shape = (self.n_betas, self.n_query, self.n_iter + 1)
            self._top = np.empty((*shape, chunk.top_gallery.shape[3]), dtype=np.int32)
            self._scores = np.empty((*shape, chunk.top_gallery.shape[3]))
            self._rows = np.empty((*shape, chunk.metrics.shape[3]))
        self._top[:, chunk.queries] = chunk.top_gallery
        self._scores[:, chunk.queries] = chunk.top_scores
        self._rows[:, chunk.queries] = chunk.metrics
        self._filled[chunk.queries] = True

    def outcomes(self, labels_q: np.ndarray, seconds: float) -> list[RunOutcome]:
        """One RunOutcome per beta, in the group's order.

        Args:
            labels_q: int [Q] query labels the metrics were computed with (-1: left out).
            seconds: Each configuration's share of the work time.

        Raises:
            ValueError: When queries are missing.
        """
        if not self.complete:
            raise ValueError(f"{int((~self._filled).sum())} of {self.n_query} queries have not arrived")
        lq = np.asarray(labels_q)
        query_idx = np.arange(self.n_query, dtype=np.int64)
        outcomes = []
        for c in range(self.n_betas):
            per_query = [columns_from_rows(self._rows[c, :, t], lq, query_idx) for t in range(self.n_iter + 1)]
            metrics = [{k: float(v) for k, v in icfrr.summarize(pq).items()} for pq in per_query]
            best = best_iteration(metrics)
            kept = {t: KeptIteration(per_query[t], self._top[c, :, t].copy(), self._scores[c, :, t].copy())
                    for t in sorted({0, best, self.n_iter})}
            outcomes.append(RunOutcome(metrics, kept, per_query, best, seconds))
        return outcomes


def _keep(step: icfrr.RerankStep, per_query: dict[str, np.ndarray], top_n: int) -> KeptIteration:
    # clone/to copy, so the full [Q, G] ranking can be freed after this step
    return KeptIteration(per_query, step.ranking[:, :top_n].clone().numpy(),
                         step.scores[:, :top_n].to(torch.float64).numpy())


def run_whole(
    qg_dists: torch.Tensor | np.ndarray,
    graph: icfrr.NeighborGraph,
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    config: RunConfig,
    *,
    device: str | torch.device | None = None,
    top_n: int = 100,
    on_step: Callable[[icfrr.RerankStep, dict[str, float]], None],
) -> RunOutcome:
    """:func:`run_config` over whole [Q, G] rankings, one iteration after the other.

    ``on_step(step, metrics)`` is called after each iteration with its whole
    ranking (the published per-iteration files); memory grows with Q.

    Args:
        qg_dists: float [Q, G] dense query-gallery distances.
        Others: as for :func:`run_config`.

    Raises:
        ValueError: ``qg_dists`` is a function of a query chunk, not dense distances.
    """
    if callable(qg_dists) and not isinstance(qg_dists, (np.ndarray, torch.Tensor)):
        raise ValueError("on_step needs whole rankings: pass dense qg_dists, not a function of the chunk")
    start = time.perf_counter()
    metrics: list[dict[str, float]] = []
    every: list[dict[str, np.ndarray]] = []
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
        every.append(per_query)
        last = (step.iteration, _keep(step, per_query, top_n))
        if step.iteration == 0:
            kept[0] = last[1]
        if best_iteration(metrics) == step.iteration:
            best = last
        on_step(step, summary)
        del step
    if last is None or best is None or len(metrics) != config.n_iter + 1:
        raise RuntimeError(f"engine yielded {len(metrics)} iterations, expected {config.n_iter + 1}")
    kept[best[0]] = best[1]
    kept[last[0]] = last[1]
    return RunOutcome(metrics, kept, every, best[0], time.perf_counter() - start)
