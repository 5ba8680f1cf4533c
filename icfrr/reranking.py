"""ICFRR re-ranking (docs/SPEC.md sections 2 and 3), batched over queries.

The engine keeps, per query, the current ranking and (reference variant) the
original descending scores ``v``. Each iteration takes the query's current top
``KQ`` items, sums their neighbour lists' votes (``icfrr._bonus``), adds
``beta`` times the mean vote to the score of each position and re-sorts stably.
Each query's re-ranking depends only on that query and the gallery graph.
``rerank_chunks`` uses that: it takes a chunk of queries through every
iteration, evaluates each ranking as it is made and keeps only its top N, so
its memory is bounded by the graph and one chunk, whatever Q is; the
query-gallery distances may come from a function of the chunk (computed from
features, never materialised). ``rerank`` sits on it; ``iter_rerank`` yields
whole [Q, G] rankings one iteration after the other (same results).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from functools import partial

import numpy as np
import torch

from icfrr._checks import as_labels, as_matrix, check_positive_int, resolve_device
from icfrr._sparse import use_sparse
from icfrr.chunks import CHUNK_BYTES, rerank_chunk_size, rows_per_chunk
from icfrr._update import ChunkSpec, run_rows_cpu, run_rows_torch, sort_distances, update_cpu, update_torch
from icfrr.metrics import relevant_counts
from icfrr.neighbors import NeighborGraph, as_graph
from icfrr.variants import Variant

VARIANTS = tuple(v.value for v in Variant)


@dataclass(frozen=True)
class RerankStep:
    """One ranking of every query.

    Attributes:
        iteration: 0 for the initial ranking, t after t updates.
        ranking: int64 [Q, G] gallery indices, best first (CPU).
        scores: float32 [Q, G] score of the item at each position, descending (CPU).
    """

    iteration: int
    ranking: torch.Tensor
    scores: torch.Tensor


def _check_params(kg: int, kq: int, beta: float, n_iter: int, variant: str) -> tuple[int, int, float, int]:
    kg = check_positive_int(kg, "kg")
    kq = check_positive_int(kq, "kq")
    if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise ValueError(f"beta must be a number, got {beta!r}") from None
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    Variant.parse(variant)
    return kg, kq, beta, int(n_iter)


#: Distances of a chunk of queries to the gallery: ``queries -> float [B, G]``.
QueryDistances = Callable[[slice], "np.ndarray | torch.Tensor"]


def _query_chunk(n_gallery: int, kq: int, kg: int, device: torch.device) -> int:
    """Queries per chunk: keeps each chunk's working set near CHUNK_BYTES (8 times that on a GPU)."""
    budget = 8 * CHUNK_BYTES if device.type == "cuda" else CHUNK_BYTES
    per_query = 8 * (4 * n_gallery + (kq * kg if device.type == "cuda" else 0))
    return rows_per_chunk(4096, per_query, budget)


def iter_rerank(
    qg_dists: np.ndarray | torch.Tensor,
    gg: np.ndarray | torch.Tensor | NeighborGraph,
    *,
    kg: int,
    kq: int,
    beta: float = 0.5,
    n_iter: int = 1,
    variant: str = "reference",
    device: str | torch.device | None = None,
) -> Iterator[RerankStep]:
    """Yield the initial ranking, then the ranking after each of ``n_iter`` updates.

    Args:
        qg_dists: float [Q, G] query-gallery distances, smaller = closer.
        gg: dense float [G, G] gallery-gallery distances, or a NeighborGraph with
            at least ``min(kg, G-1)`` neighbours per item.
        kg: gallery neighbours that vote (KG); clamped to G - 1.
        kq: top items of the query's current ranking whose neighbours vote (KQ);
            clamped to G.
        beta: update strength.
        n_iter: number of updates T.
        variant: ``"reference"`` (position-based, docs/SPEC.md section 2) or ``"paper"``
            (accumulating item scores, section 3).
        device: ``None`` = CUDA when available, else CPU.

    Yields:
        RerankStep for iterations 0..n_iter (rankings and scores on the CPU).

    Raises:
        ValueError: on inconsistent shapes, NaN/inf distances, bad parameters or an
            empty gallery (raised by this call, before anything is yielded).
    """
    kg, kq, beta, n_iter = _check_params(kg, kq, beta, n_iter, variant)
    dev = resolve_device(device)
    qg = as_matrix(qg_dists, "qg_dists")
    n_query, n_gallery = qg.shape
    if n_gallery == 0:
        raise ValueError("the gallery is empty: qg_dists has no columns")
    graph = as_graph(gg, kg, n_gallery)
    nbr = graph.indices.to(dev).contiguous()
    weights = torch.arange(n_gallery - 1, n_gallery - 1 - nbr.shape[1], -1, dtype=torch.float64, device=dev)
    kq = min(kq, n_gallery)
    denom = float(max(n_gallery - 1, 1) * kq)
    chunk = _query_chunk(n_gallery, kq, nbr.shape[1], dev)
    chunks = [slice(s, min(s + chunk, n_query)) for s in range(0, n_query, chunk)]
    return _steps(qg, nbr, weights, kq=kq, denom=denom, beta=beta, n_iter=n_iter, variant=variant, chunks=chunks, dev=dev)


def _steps(qg, nbr, weights, *, kq, denom, beta, n_iter, variant, chunks, dev) -> Iterator[RerankStep]:
    n_query, n_gallery = qg.shape
    ranking = torch.empty(n_query, n_gallery, dtype=torch.int64, device=dev)
    base = torch.empty(n_query, n_gallery, dtype=torch.float32, device=dev)  # v: original scores by position
    for sl in chunks:
        order, dist = sort_distances(qg[sl].to(dev))
        ranking[sl] = order
        base[sl] = dist.neg_()
    yield RerankStep(0, ranking.cpu(), base.cpu())

    state = Variant.parse(variant).scores(base, qg.to(dev))
    update = update_cpu if dev.type == "cpu" else update_torch
    for t in range(1, n_iter + 1):
        new_ranking = torch.empty_like(ranking)
        scores = torch.empty_like(base)
        for sl in chunks:
            new_ranking[sl], scores[sl] = update(
                ranking[sl],
                state.rows(sl),
                nbr,
                weights,
                kq=kq,
                denom=denom,
                beta=beta,
            )
        ranking = new_ranking
        yield RerankStep(t, ranking.cpu(), scores.cpu())


@dataclass(frozen=True)
class ChunkResult:
    """Every iteration of one chunk of queries, for each beta.

    Attributes:
        queries: which queries (a slice of 0..Q-1).
        top_gallery: int64 [C, B, T+1, N] the best N gallery indices per beta,
            query and iteration, best first.
        top_scores: float64 [C, B, T+1, N] their scores.
        metrics: float64 [C, B, T+1, icfrr.metrics.n_row_metrics()]:
            per-query metrics (the registry's columns, then the first relevant rank),
            or None when no labels were given. Unknown query labels are not
            masked here (``icfrr.metrics.columns_from_rows`` does it).
    """

    queries: slice
    top_gallery: np.ndarray
    top_scores: np.ndarray
    metrics: np.ndarray | None


def rerank_chunks(
    qg_dists: np.ndarray | torch.Tensor | QueryDistances,
    gg: np.ndarray | torch.Tensor | NeighborGraph,
    *,
    kg: int,
    kq: int,
    betas: Sequence[float] = (0.5,),
    n_iter: int = 1,
    variant: str = "reference",
    labels_q: np.ndarray | torch.Tensor | None = None,
    labels_g: np.ndarray | torch.Tensor | None = None,
    top_n: int = 100,
    n_query: int | None = None,
    chunk_size: int | None = None,
    device: str | torch.device | None = None,
) -> Iterator[ChunkResult]:
    """Re-rank chunks of queries through all iterations, keeping the top N and metrics of each.

    Peak memory is the graph, the inputs and one chunk: no [Q, G] array is made.
    Rankings are exactly ``rerank``'s; several betas share the initial sort
    and the first update's votes.

    Args:
        qg_dists: float [Q, G] distances, or a function ``slice -> float [B, G]``
            giving the distances of those queries (then ``n_query`` is required).
        gg: dense float [G, G] gallery distances or a NeighborGraph (see ``iter_rerank``).
        kg, kq, n_iter, variant, device: as for ``iter_rerank``.
        betas: update strengths, one result set each.
        labels_q, labels_g: int [Q], [G] labels; metrics are computed when given.
        top_n: best items kept per query and iteration (clamped to G).
        n_query: Q, when ``qg_dists`` is a function without a ``shape``
            (``icfrr.neighbors.FeatureDistances`` has one).
        chunk_size: queries per chunk (default: ``icfrr.chunks.rerank_chunk_size``, about
            ``CHUNK_BYTES`` of work per chunk).

    Yields:
        ChunkResult per chunk, in query order.

    Raises:
        ValueError: bad parameters or shapes (before anything is yielded), or
            a chunk's distances of the wrong shape or not finite.

    Example:
        ``rerank``'s example, keeping the best two items and each query's
        metrics (labels: the pairs {0, 1} and {2, 3} are the two classes):

        >>> import numpy as np, icfrr
        >>> gg = np.array([[0, 1, 4, 5], [1, 0, 3, 4], [4, 3, 0, 1], [5, 4, 1, 0]], dtype=np.float32)
        >>> qg = np.array([[0.50, 0.52, 0.51, 0.90], [0.90, 0.70, 0.60, 0.80]], dtype=np.float32)
        >>> lq, lg = np.array([0, 1]), np.array([0, 0, 1, 1])
        >>> (chunk,) = icfrr.rerank_chunks(qg, gg, kg=1, kq=2, betas=[0.1], n_iter=1,
        ...                                labels_q=lq, labels_g=lg, top_n=2)
        >>> chunk.queries, chunk.top_gallery.shape   # [betas, queries, iterations 0..T, top N]
        (slice(0, 2, None), (1, 2, 2, 2))
        >>> chunk.top_gallery[0, :, 1].tolist()      # after the update
        [[1, 0], [2, 1]]
        >>> chunk.metrics[0, :, :, 0].round(4).tolist()   # AP before and after: (1/1 + 2/3) / 2, then 1
        [[0.8333, 1.0], [0.8333, 0.8333]]
    """
    if isinstance(betas, (int, float)) or len(betas) == 0:
        raise ValueError(f"betas must be a non-empty sequence of numbers, got {betas!r}")
    checked = [_check_params(kg, kq, b, n_iter, variant) for b in betas]
    kg, kq, _, n_iter = checked[0]
    beta_arr = np.array([c[2] for c in checked], dtype=np.float64)
    dev = resolve_device(device)
    if callable(qg_dists) and not isinstance(qg_dists, (np.ndarray, torch.Tensor)):
        if n_query is None:
            n_query = getattr(qg_dists, "shape", (None,))[0]
        if n_query is None:
            raise ValueError("n_query is required when qg_dists is a function of the query chunk")
        n_query = check_positive_int(n_query, "n_query")
        fetch = qg_dists
        n_gallery = gg.n_items if isinstance(gg, NeighborGraph) else int(torch.as_tensor(gg).shape[0])
    else:
        qg = as_matrix(qg_dists, "qg_dists")
        n_query, n_gallery = qg.shape
        fetch = qg.__getitem__
    if n_gallery == 0:
        raise ValueError("the gallery is empty: qg_dists has no columns")
    top_n = min(check_positive_int(top_n, "top_n"), n_gallery)
    with_metrics = labels_q is not None or labels_g is not None
    if with_metrics:
        if labels_q is None or labels_g is None:
            raise ValueError("give both labels_q and labels_g, or neither")
        lq = as_labels(labels_q, n_query, "labels_q")
        lg = as_labels(labels_g, n_gallery, "labels_g")
        n_rel = relevant_counts(lq, lg)
    else:
        lq, lg = np.zeros(n_query, dtype=np.int64), np.zeros(n_gallery, dtype=np.int64)
        n_rel = np.zeros(n_query, dtype=np.int64)  # the metric scan stops at once
    graph = as_graph(gg, kg, n_gallery)
    kq = min(kq, n_gallery)
    denom = float(max(n_gallery - 1, 1) * kq)
    if chunk_size is None:
        chunk_size = rerank_chunk_size(n_gallery, len(beta_arr), n_iter, top_n)
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    if dev.type == "cpu":
        # int32 indices halve the memory traffic of the vote loop (any G that fits in memory fits in int32)
        nbr = graph.indices.numpy().astype(np.int32 if n_gallery < 2**31 else np.int64)
        weights = np.arange(n_gallery - 1, n_gallery - 1 - nbr.shape[1], -1, dtype=np.int64)
        kernel = run_rows_cpu
    else:
        nbr = graph.indices.to(dev).contiguous()
        weights = torch.arange(n_gallery - 1, n_gallery - 1 - nbr.shape[1], -1, dtype=torch.float64, device=dev)
        kernel = run_rows_torch
    sparse = dev.type == "cpu" and use_sparse(n_gallery, kq, int(nbr.shape[1]), top_n)
    spec = ChunkSpec(nbr, weights, kq, denom, beta_arr, n_iter, Variant.parse(variant), lg, top_n, sparse)
    return _chunk_results(fetch, n_query, n_gallery, chunk_size, partial(kernel, spec), lq, n_rel, with_metrics)


def _chunk_results(fetch, n_query, n_gallery, chunk_size, kernel, lq, n_rel, with_metrics) -> Iterator[ChunkResult]:
    for start in range(0, n_query, chunk_size):
        sl = slice(start, min(start + chunk_size, n_query))
        dist = as_matrix(fetch(sl), "qg_dists chunk")
        if dist.shape != (sl.stop - sl.start, n_gallery):
            raise ValueError(
                f"the distances of queries {sl.start}..{sl.stop - 1} have shape {tuple(dist.shape)}, "
                f"expected {(sl.stop - sl.start, n_gallery)}"
            )
        top, scores, metrics = kernel(dist, lq[sl], n_rel[sl])
        yield ChunkResult(sl, top, scores, metrics if with_metrics else None)


def rerank(
    qg_dists: np.ndarray | torch.Tensor,
    gg: np.ndarray | torch.Tensor | NeighborGraph,
    *,
    kg: int,
    kq: int,
    beta: float = 0.5,
    n_iter: int = 1,
    variant: str = "reference",
    device: str | torch.device | None = None,
) -> list[torch.Tensor]:
    """ICFRR rankings ``pi_0 .. pi_T``: a list of ``n_iter + 1`` int64 [Q, G] CPU tensors.

    See ``iter_rerank`` for the arguments. Index 0 is the initial ranking.
    Computed by ``rerank_chunks`` keeping every position.

    Example:
        Two pairs of gallery items, {0, 1} and {2, 3}, each item the other's
        nearest neighbour. Query 0 starts with item 2 ahead of item 1; its top
        two (items 0 and 2) vote for their neighbours, and item 1, close behind
        the top, moves up to first (item 3 was last and stays last):

        >>> import numpy as np, icfrr
        >>> gg = np.array([[0, 1, 4, 5], [1, 0, 3, 4], [4, 3, 0, 1], [5, 4, 1, 0]], dtype=np.float32)
        >>> qg = np.array([[0.50, 0.52, 0.51, 0.90], [0.90, 0.70, 0.60, 0.80]], dtype=np.float32)
        >>> before, after = icfrr.rerank(qg, gg, kg=1, kq=2, beta=0.1, n_iter=1)
        >>> before.tolist()
        [[0, 2, 1, 3], [2, 1, 3, 0]]
        >>> after.tolist()
        [[1, 0, 2, 3], [2, 1, 3, 0]]
    """
    qg = as_matrix(qg_dists, "qg_dists")
    n_query, n_gallery = qg.shape
    n_iter = _check_params(kg, kq, beta, n_iter, variant)[3]
    out = [torch.empty(n_query, n_gallery, dtype=torch.int64) for _ in range(n_iter + 1)]
    chunk_size = rows_per_chunk(n_query, 16 * (n_iter + 1) * n_gallery)
    chunks = rerank_chunks(qg, gg, kg=kg, kq=kq, betas=[beta], n_iter=n_iter, variant=variant,
                           top_n=max(n_gallery, 1), chunk_size=chunk_size, device=device)
    for chunk in chunks:
        for t in range(n_iter + 1):
            out[t][chunk.queries] = torch.from_numpy(chunk.top_gallery[0, :, t])
    return out
