"""An inverted-file graph searched a cell at a time: the gallery graph of large galleries (G above 100,000).

FAISS's IVF search probes cells for each item on its own and scans the cells'
items one distance at a time; at a million items, with every item a query,
that takes most of an hour. Here the items of one k-means cell are searched
together against the items of the ``nprobe`` cells whose centroids are nearest
their cell's centroid (the cell itself first), as one matrix product, so the
work runs at matrix-product speed. The k-means centroids are trained on a
seeded subsample of :data:`TRAIN_POINTS_PER_CELL` points a cell.

The result has the form of :func:`icfrr.ann.build_graph`'s: each item's
nearest other items by (distance, index), squared Euclidean distances from
the matrix product (``|a|^2 + |b|^2 - 2 a.b``, as FAISS's flat search
computes them for large batches; recomputing them item by item took longer
than the search); a row short of k (a cell whose probed cells hold too few items)
comes back with FAISS's filler ``-1`` for the caller to complete exactly.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

#: Points a cell that k-means trains on (a seeded subsample of the gallery when it holds more; FAISS asks for 39).
TRAIN_POINTS_PER_CELL = 40
#: k-means iterations (FAISS's for an IVF index).
TRAIN_ITERATIONS = 10
#: Seed of the k-means subsample and initial centroids.
TRAIN_SEED = 1234


def cell_centroids(faiss: ModuleType, f: np.ndarray, nlist: int) -> np.ndarray:
    """float32 [nlist, D] k-means centroids of float32 [G, D] ``f``, trained on a seeded subsample."""
    km = faiss.Kmeans(f.shape[1], nlist, niter=TRAIN_ITERATIONS, seed=TRAIN_SEED,
                      max_points_per_centroid=TRAIN_POINTS_PER_CELL, verbose=False)
    km.train(f)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def nearest_rows(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor, n: int, budget: int) -> torch.Tensor:
    """int64 [len(a), n]: the ``n`` rows of ``b`` nearest each row of ``a`` (squared Euclidean, through
    ``|b|^2 - 2 a.b``; ``b_sq`` = ``|b|^2``), nearest first, in chunks of ``budget`` bytes of distances."""
    out = torch.empty(a.shape[0], n, dtype=torch.int64)
    step = max(1, budget // (4 * max(b.shape[0], 1)))
    for s in range(0, a.shape[0], step):
        d = b_sq[None, :] - 2 * (a[s : s + step] @ b.T)
        out[s : s + step] = torch.topk(d, n, dim=1, largest=False, sorted=True).indices
    return out


def cell_graph(faiss: ModuleType, f: np.ndarray, k: int, nlist: int, nprobe: int, budget: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Each item's ``k + 1`` nearest items among the items of the ``nprobe`` cells nearest its cell.

    Args:
        faiss: The FAISS module (its k-means).
        f: float32 [G, D] contiguous features.
        k: neighbours wanted per item (one more is found: the item itself is usually among them).
        nlist: k-means cells.
        nprobe: cells searched per cell (at most nlist).
        budget: bytes of one block of distances.

    Returns:
        (indices int64 [G, k + 1], squared distances float32 [G, k + 1]) by ascending distance;
        ``-1`` and ``inf`` fill a row whose probed cells hold fewer than k + 1 items.
    """
    g = f.shape[0]
    ft = torch.from_numpy(f)
    sq = (ft * ft).sum(dim=1)
    cent = torch.from_numpy(cell_centroids(faiss, f, nlist))
    cent_sq = (cent * cent).sum(dim=1)
    cell = nearest_rows(ft, cent, cent_sq, 1, budget)[:, 0].numpy()
    probes = nearest_rows(cent, cent, cent_sq, min(nprobe, nlist), budget).numpy()
    order = np.argsort(cell, kind="stable")
    bounds = np.searchsorted(cell[order], np.arange(nlist + 1))
    idx = np.full((g, k + 1), -1, dtype=np.int64)
    dist = np.full((g, k + 1), np.inf, dtype=np.float32)
    for c in range(nlist):
        members = order[bounds[c] : bounds[c + 1]]
        if members.size == 0:
            continue
        cand = np.concatenate([order[bounds[p] : bounds[p + 1]] for p in probes[c]])
        ct = torch.from_numpy(cand)
        fc, fc_sq = ft[ct], sq[ct]
        width = min(k + 1, cand.size)
        step = max(1, budget // (4 * cand.size))
        for s in range(0, members.size, step):
            rows = members[s : s + step]
            rt = torch.from_numpy(rows)
            d = fc_sq[None, :] - 2 * (ft[rt] @ fc.T)
            near = torch.topk(d, width, dim=1, largest=False, sorted=True)
            idx[rows, :width] = cand[near.indices.numpy()]
            dist[rows, :width] = (near.values + sq[rt][:, None]).clamp_(min=0).numpy()
    return idx, dist
