"""The hot kernel: per-query neighbourhood vote sums, from sparse neighbour lists.

For a query whose current top items are ``top`` (KQ gallery indices), the vote
for gallery item j is ``sum over i in top, r < KG with nbr[i, r] == j of w[r]``
with ``w[r] = G - 1 - r``, an integer. Every partial sum is an integer below
2**53, so float64 accumulation is exact and independent of the order of
addition: the CPU and CUDA kernels give bit-identical votes.

Work is O(B * KQ * KG) per chunk of B queries; no [G, G] matrix exists.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def _vote_sums_numba(top: np.ndarray, nbr: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    for b in prange(top.shape[0]):
        row = out[b]
        for a in range(top.shape[1]):
            neighbours = nbr[top[b, a]]
            for r in range(neighbours.shape[0]):
                row[neighbours[r]] += weights[r]


def vote_sums_cpu(top: torch.Tensor, nbr: torch.Tensor, weights: torch.Tensor, n_gallery: int) -> torch.Tensor:
    """Vote sums on the CPU with a compiled, multi-threaded loop.

    Args:
        top: int64 [B, KQ] current top gallery items of each query.
        nbr: int64 [G, KG] contiguous neighbour lists.
        weights: float64 [KG] integer-valued weights ``G - 1 - r``.
        n_gallery: G.

    Returns:
        float64 [B, G] item-indexed vote sums.
    """
    out = torch.zeros(top.shape[0], n_gallery, dtype=torch.float64)
    _vote_sums_numba(top.numpy(), nbr.numpy(), weights.numpy(), out.numpy())
    return out


def vote_sums_torch(top: torch.Tensor, nbr: torch.Tensor, weights: torch.Tensor, n_gallery: int) -> torch.Tensor:
    """Vote sums with ``scatter_add_`` (the CUDA path; also runs on the CPU). Same contract."""
    b, kq = top.shape
    idx = nbr[top].reshape(b, -1)
    src = weights.repeat(kq).expand(b, -1)
    out = torch.zeros(b, n_gallery, dtype=torch.float64, device=top.device)
    return out.scatter_add_(1, idx, src)


def vote_sums(top: torch.Tensor, nbr: torch.Tensor, weights: torch.Tensor, n_gallery: int) -> torch.Tensor:
    """Dispatch to the kernel of ``top``'s device."""
    if top.device.type == "cpu":
        return vote_sums_cpu(top, nbr, weights, n_gallery)
    return vote_sums_torch(top, nbr, weights, n_gallery)
