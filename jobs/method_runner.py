"""One baseline configuration of a sweep: re-rank once, evaluate the initial and the new ranking.

A single-shot method (k-reciprocal, ECN, alpha-QE, DBA, DBA + alpha-QE) is
stored like an ICFRR run of one iteration: iteration 0 is the initial ranking
(the query-gallery distances sorted, exactly as ICFRR's iteration 0), iteration
1 the ranking by the method's distances. Both are kept in full (per-query
metrics and top-N); the stored score of a ranked item is minus its distance
(descending, like the engine's scores).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

import icfrr
from icfrr.chunks import CHUNK_BYTES, rows_per_chunk
from icfrr.ann import item_neighbours
from icfrr.methods import (MethodInputs, apply_method, method_chunks, ranking_from_distances, reads_item_neighbours,
                           streams)
from jobs.engine_runner import RunOutcome
from jobs.artifacts import dense_gg, qq_dists
from store.artifacts import Artifacts
from icfrr.run_config import RunConfig
from store.writes import KeptIteration, best_iteration


def method_inputs(arts: Artifacts, log: Callable[[str], None], qq: np.ndarray | None = None) -> MethodInputs:
    """The inputs of every baseline run on ``arts``: gg and qq load on first use, once.

    gg is computed from the gallery features (or read from the imported file) in
    memory; qq is ``qq`` when given, else it comes from ``qq_dists.parquet`` in
    the cache folder, computed and kept there the first time (see
    :func:`jobs.artifacts.qq_dists`).
    """
    features = not arts.imported
    return MethodInputs(
        qg=arts.qg_dists.numpy() if arts.qg_dists is not None else None, gg=lambda: dense_gg(arts),
        qq=(lambda: qq) if qq is not None else (lambda: qq_dists(arts, log)),
        fq=arts.features("query") if features else None, fg=arts.features("gallery") if features else None,
        neighbours=item_neighbours(arts.meta.get("graph", {}).get("kind")) if features else None)


def run_method(
    inputs: MethodInputs,
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    config: RunConfig,
    *,
    top_n: int = 100,
    on_step: Callable[[icfrr.RerankStep, dict[str, float]], None] | None = None,
    max_dense_bytes: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> RunOutcome:
    """Re-rank with ``config.method`` and evaluate iterations 0 (initial) and 1 (the method's).

    Args:
        inputs: Distances (and features) of the dataset.
        labels_q: int [Q] query labels, -1 unknown.
        labels_g: int [G] gallery labels.
        config: A :meth:`RunConfig.for_method` configuration.
        top_n: How many of each query's best items to keep.
        on_step: Called after each of the two rankings with the step and its
            metrics (progress bars, published per-iteration files); needs the
            whole rankings, so not on the streamed path.
        max_dense_bytes: Above this many bytes of float32 [Q, G] distances a method
            with a streamed form runs by query chunks from the features
            (:func:`icfrr.methods.streams`; None: only when there are no whole distances).
        chunk_bytes: Bytes of temporaries one chunk of queries may use on the streamed path.

    Returns:
        The :class:`RunOutcome` (both iterations kept).

    Raises:
        ValueError: An ICFRR configuration, or bad parameters or inputs.
    """
    if config.entry.iterative:
        raise ValueError("run_method runs single-shot methods; iterative ones run through jobs.engine_runner")
    if streams(config.method, inputs, max_dense_bytes):
        if on_step is not None:
            raise ValueError("per-iteration callbacks need whole rankings; the streamed path has chunks only")
        return _run_streamed(inputs, labels_q, labels_g, config, top_n, chunk_bytes)
    start = time.perf_counter()
    metrics: list[dict[str, float]] = []
    kept: dict[int, KeptIteration] = {}
    for iteration in (0, 1):
        dists = inputs.qg if iteration == 0 else apply_method(config.method, inputs, config.params)
        ranking, ordered = ranking_from_distances(dists)
        del dists
        per_query = icfrr.per_query(ranking, labels_q, labels_g)
        summary = {k: float(v) for k, v in icfrr.summarize(per_query).items()}
        metrics.append(summary)
        scores = -ordered[:, :top_n].astype(np.float64)
        kept[iteration] = KeptIteration(per_query, ranking[:, :top_n].copy(), scores)
        if on_step is not None:
            on_step(icfrr.RerankStep(iteration, torch.from_numpy(ranking),
                                     torch.from_numpy(-ordered.astype(np.float32))), summary)
        del ranking, ordered
    return RunOutcome(metrics, kept, [kept[0].per_query, kept[1].per_query], best_iteration(metrics),
                      time.perf_counter() - start)


def _run_streamed(inputs: MethodInputs, labels_q: np.ndarray, labels_g: np.ndarray, config: RunConfig,
                  top_n: int, chunk_bytes: int) -> RunOutcome:
    """:func:`run_method` by query chunks: the initial and the method's distances never held whole."""
    start = time.perf_counter()
    n_query, n_gallery = inputs.shape
    labels_q = np.asarray(labels_q)
    step = rows_per_chunk(n_query, 24 * n_gallery, chunk_bytes)   # distances, ranking and sorted values
    initial = ((rows, inputs.query_rows(rows))
               for rows in (slice(s, min(s + step, n_query)) for s in range(0, n_query, step)))
    sources = (initial, method_chunks(config.method, inputs, config.params, chunk_bytes=chunk_bytes))
    metrics: list[dict[str, float]] = []
    kept: dict[int, KeptIteration] = {}
    for iteration, chunks in enumerate(sources):
        parts, tops, scores = [], [], []
        for rows, dists in chunks:
            ranking, ordered = ranking_from_distances(dists)
            part = icfrr.per_query(ranking, labels_q[rows], labels_g)
            part["query_idx"] = part["query_idx"] + rows.start
            parts.append(part)
            tops.append(ranking[:, :top_n].copy())
            scores.append(-ordered[:, :top_n].astype(np.float64))
            del ranking, ordered, dists
        per_query = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        metrics.append({k: float(v) for k, v in icfrr.summarize(per_query).items()})
        kept[iteration] = KeptIteration(per_query, np.concatenate(tops), np.concatenate(scores))
    index = inputs.neighbours if reads_item_neighbours(config.method) else None
    return RunOutcome(metrics, kept, [kept[0].per_query, kept[1].per_query], best_iteration(metrics),
                      time.perf_counter() - start, dict(getattr(index, "recall", None) or {}))
