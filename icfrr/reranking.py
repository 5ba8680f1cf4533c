"""ICFRR re-ranking (spec sections 2 and 3), batched over queries.

The engine keeps, per query, the current ranking and (reference variant) the
original descending scores ``v``. Each iteration takes the query's current top
``KQ`` items, sums their neighbour lists' votes (``icfrr._bonus``), adds
``beta`` times the mean vote to the score of each position and re-sorts stably.
Queries are processed in chunks, so memory is bounded by the chunk, the
rankings and the neighbour lists; there is no per-query Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from icfrr._update import update_cpu, update_torch
from icfrr._checks import as_matrix, check_positive_int, resolve_device
from icfrr._sorting import stable_argsort_rows
from icfrr.neighbors import NeighborGraph, as_graph

VARIANTS = ("reference", "paper")


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
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    return kg, kq, beta, int(n_iter)


def _query_chunk(n_gallery: int, kq: int, kg: int, device: torch.device) -> int:
    """Queries per chunk: keeps each chunk's working set near 128 MiB (1 GiB on a GPU)."""
    budget = (1 << 30) if device.type == "cuda" else (1 << 27)
    per_query = 8 * (4 * n_gallery + (kq * kg if device.type == "cuda" else 0))
    return max(1, min(4096, budget // max(per_query, 1)))


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
        variant: ``"reference"`` (position-based, spec section 2) or ``"paper"``
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
        order, dist = _sort_distances(qg[sl].to(dev))
        ranking[sl] = order
        base[sl] = dist.neg_()
    yield RerankStep(0, ranking.cpu(), base.cpu())

    item_scores = -qg.to(dev, torch.float64) if variant == "paper" else None
    update = update_cpu if dev.type == "cpu" else update_torch
    for t in range(1, n_iter + 1):
        new_ranking = torch.empty_like(ranking)
        scores = torch.empty_like(base)
        for sl in chunks:
            new_ranking[sl], scores[sl] = update(
                ranking[sl],
                base[sl] if item_scores is None else None,
                item_scores[sl] if item_scores is not None else None,
                nbr,
                weights,
                kq=kq,
                denom=denom,
                beta=beta,
            )
        ranking = new_ranking
        yield RerankStep(t, ranking.cpu(), scores.cpu())


def _sort_distances(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable ascending sort of each row: (order int64, sorted float32 distances)."""
    if dist.device.type == "cpu":
        order, values = stable_argsort_rows(dist.numpy())
        return torch.from_numpy(order), torch.from_numpy(values)
    values, order = torch.sort(dist, dim=1, stable=True)
    return order, values


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
    """
    steps = iter_rerank(qg_dists, gg, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant, device=device)
    return [step.ranking for step in steps]
