"""The hot step: one ICFRR update of a chunk of queries, from sparse neighbour lists.

For a query whose current top items are ``top`` (KQ gallery indices), the vote
for gallery item j is ``sum over i in top, r < KG with nbr[i, r] == j of w[r]``
with ``w[r] = G - 1 - r``, an integer. Every partial sum is an integer below
2**53, so float64 accumulation is exact and independent of the order of
addition: the CPU and CUDA paths compute bit-identical votes, and
``delta = votes / ((G - 1) * KQ)`` is the spec's mean of ``alpha``.

The position score is ``u[r] = base[r] + beta * delta[pi[r]]`` (``base`` = the
original scores ``v`` in the reference variant, the accumulated item scores in
the paper variant), and the new ranking is ``pi`` reordered by ``u``
descending, ties kept in the current order.

On the CPU one compiled loop per query does it all: votes, then a merge of the
items without votes (already in descending order, since the current ranking is
sorted by their unchanged scores) with the items that got votes, sorted. That
is O(KQ * KG + G + m log m) per query for m voted items, instead of a full
O(G log G) sort. The torch path (CUDA) scatters and sorts whole rows.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from icfrr._sorting import argsort_desc_stable


@njit(cache=True, nogil=True)
def _votes_row(top: np.ndarray, nbr: np.ndarray, weights: np.ndarray, n_gallery: int) -> np.ndarray:  # pragma: no cover
    votes = np.zeros(n_gallery)
    for a in range(top.shape[0]):
        neighbours = nbr[top[a]]
        for r in range(neighbours.shape[0]):
            votes[neighbours[r]] += weights[r]
    return votes


@njit(parallel=True, cache=True, nogil=True)
def _update_rows_numba(
    ranking, base, item_scores, nbr, weights, kq, denom, beta, out_ranking, out_scores
):  # pragma: no cover - compiled
    n_rows, n_gallery = ranking.shape
    paper = item_scores.shape[0] > 0
    for b in prange(n_rows):
        order = ranking[b]
        votes = _votes_row(order[:kq], nbr, weights, n_gallery)
        if paper:
            for j in range(n_gallery):
                if votes[j] > 0:
                    item_scores[b, j] += beta * (votes[j] / denom)
        # Split positions into items with votes (to sort) and without (already in order).
        n_voted = 0
        for r in range(n_gallery):
            if votes[order[r]] > 0:
                n_voted += 1
        voted_pos = np.empty(n_voted, dtype=np.int64)
        voted_u = np.empty(n_voted)
        k = 0
        for r in range(n_gallery):
            j = order[r]
            if votes[j] > 0:
                voted_pos[k] = r
                voted_u[k] = item_scores[b, j] if paper else base[b, r] + beta * (votes[j] / denom)
                k += 1
        by_u = argsort_desc_stable(voted_u)  # stable: ties stay in position order
        # Merge: take the higher score; on equal scores the earlier current position.
        r = 0
        v = 0
        for out in range(n_gallery):
            while r < n_gallery and votes[order[r]] > 0:
                r += 1
            take_plain = False
            if r < n_gallery:
                plain_u = item_scores[b, order[r]] if paper else base[b, r]
                if v >= n_voted:
                    take_plain = True
                else:
                    cand_u = voted_u[by_u[v]]
                    take_plain = plain_u > cand_u or (plain_u == cand_u and r < voted_pos[by_u[v]])
            if take_plain:
                out_ranking[b, out] = order[r]
                out_scores[b, out] = plain_u
                r += 1
            else:
                p = by_u[v]
                out_ranking[b, out] = order[voted_pos[p]]
                out_scores[b, out] = voted_u[p]
                v += 1


def update_cpu(
    ranking: torch.Tensor,
    base: torch.Tensor | None,
    item_scores: torch.Tensor | None,
    nbr: torch.Tensor,
    weights: torch.Tensor,
    *,
    kq: int,
    denom: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of a chunk of queries on the CPU.

    Args:
        ranking: int64 [B, G] current rankings.
        base: float32 [B, G] original scores by position (reference variant) or None.
        item_scores: float64 [B, G] accumulated item scores (paper variant; updated
            in place) or None.
        nbr: int64 [G, KG] contiguous neighbour lists.
        weights: float64 [KG] integer-valued ``G - 1 - r``.
        kq: top items that vote; denom: ``(G - 1) * KQ``; beta: update strength.

    Returns:
        (new ranking int64 [B, G], position scores float64 [B, G]).
    """
    b, g = ranking.shape
    out_ranking = np.empty((b, g), dtype=np.int64)
    out_scores = np.empty((b, g))
    base_np = base.numpy() if base is not None else np.empty((0, 0), dtype=np.float32)
    items_np = item_scores.numpy() if item_scores is not None else np.empty((0, 0))
    _update_rows_numba(
        np.ascontiguousarray(ranking.numpy()), base_np, items_np, nbr.numpy(), weights.numpy(),
        kq, float(denom), float(beta), out_ranking, out_scores,
    )
    return torch.from_numpy(out_ranking), torch.from_numpy(out_scores)


def vote_sums_torch(top: torch.Tensor, nbr: torch.Tensor, weights: torch.Tensor, n_gallery: int) -> torch.Tensor:
    """Vote sums float64 [B, G] (item-indexed) with ``scatter_add_``; ``top`` int64 [B, KQ]."""
    b, kq = top.shape
    idx = nbr[top].reshape(b, -1)
    src = weights.repeat(kq).expand(b, -1)
    out = torch.zeros(b, n_gallery, dtype=torch.float64, device=top.device)
    return out.scatter_add_(1, idx, src)


def update_torch(
    ranking: torch.Tensor,
    base: torch.Tensor | None,
    item_scores: torch.Tensor | None,
    nbr: torch.Tensor,
    weights: torch.Tensor,
    *,
    kq: int,
    denom: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``update_cpu`` for any device (the CUDA path): scatter, then a full stable sort."""
    delta = vote_sums_torch(ranking[:, :kq], nbr, weights, ranking.shape[1]).div_(denom).mul_(beta)
    if item_scores is None:
        by_position = base.to(torch.float64).add_(delta.gather(1, ranking))
    else:
        item_scores += delta
        by_position = item_scores.gather(1, ranking)
    scores, order = torch.sort(by_position, dim=1, descending=True, stable=True)
    return ranking.gather(1, order), scores
