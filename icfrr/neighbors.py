"""Gallery neighbour graphs: each item's k nearest OTHER gallery items, nearest first.

Only the KG nearest neighbours of a gallery item carry weight in ICFRR, so the
dense [G, G] rank matrix of the published code is never needed. Ties in
distance are broken by gallery index (the order a stable sort would give); the
item itself is identified by its index, so a duplicate image at distance 0 is
still a neighbour.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from icfrr._checks import as_matrix, check_positive_int
from icfrr._sorting import smallest_rows

#: Rows of a distance block handled at once (bounds the temporary memory).
_ROW_CHUNK = 1024


@dataclass(frozen=True)
class NeighborGraph:
    """The ``k`` nearest other gallery items of every gallery item.

    Attributes:
        indices: int64 [G, k], neighbour gallery indices, nearest first.
        distances: float32 [G, k], their distances.
    """

    indices: torch.Tensor
    distances: torch.Tensor

    def __post_init__(self) -> None:
        if self.indices.ndim != 2 or self.indices.shape != self.distances.shape:
            raise ValueError(
                f"neighbour indices {tuple(self.indices.shape)} and distances "
                f"{tuple(self.distances.shape)} must be matching [G, k] matrices"
            )

    @property
    def k(self) -> int:
        """Neighbours per item."""
        return int(self.indices.shape[1])

    @property
    def n_items(self) -> int:
        """Gallery size G."""
        return int(self.indices.shape[0])

    def truncate(self, k: int) -> "NeighborGraph":
        """The same graph keeping only the first ``k`` neighbours of each item."""
        return NeighborGraph(self.indices[:, :k], self.distances[:, :k])


def _nearest_in_block(block: torch.Tensor, row_offset: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest entries of each row of ``block`` [B, G], excluding the diagonal item.

    ``block`` is modified (its self entries set to +inf). Returns (indices int64
    [B, k], distances float32 [B, k]) sorted by (distance, index), as a stable
    sort of the row would give.
    """
    rows = torch.arange(block.shape[0], device=block.device)
    block[rows, rows + row_offset] = float("inf")
    if block.device.type == "cpu":
        idx, dist = smallest_rows(block.numpy(), k)
        return torch.from_numpy(idx), torch.from_numpy(dist)
    return _smallest_by_topk(block, k)


def _smallest_by_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``smallest_rows`` for any device, with ``torch.topk`` (the CUDA path)."""
    b, g = block.shape
    take = min(k + 1, g)  # one more than needed, to see ties across the cut
    dist, idx = torch.topk(block, take, dim=1, largest=False, sorted=True)
    # topk picks arbitrarily among items tied with the k-th distance; where such a
    # tie straddles the cut, take the tied items of lowest index instead.
    straddles = dist[:, k] == dist[:, k - 1] if take > k else torch.zeros(b, dtype=torch.bool)
    dist, idx = dist[:, :k].contiguous(), idx[:, :k].contiguous()
    for r in torch.nonzero(straddles).flatten().tolist():
        kth = dist[r, k - 1]
        below = torch.nonzero(block[r] < kth).flatten()
        tied = torch.nonzero(block[r] == kth).flatten()[: k - below.numel()]
        idx[r] = torch.cat([below, tied])
        dist[r] = block[r, idx[r]]
    # Order equal distances by index: re-sort only the rows that have such ties.
    has_ties = (dist[:, 1:] == dist[:, :-1]).any(dim=1) | straddles
    if has_ties.any():
        sub_idx, perm = torch.sort(idx[has_ties], dim=1)
        sub_dist, perm2 = torch.sort(dist[has_ties].gather(1, perm), dim=1, stable=True)
        idx[has_ties] = sub_idx.gather(1, perm2)
        dist[has_ties] = sub_dist
    return idx, dist


def _check_k(k: int, g: int) -> int:
    if g == 0:
        raise ValueError("the gallery is empty: nothing to build a neighbour graph from")
    return min(check_positive_int(k, "k"), g - 1)


def _graph_by_blocks(blocks, g: int, k: int) -> NeighborGraph:
    """Assemble a graph from ``(row_offset, distance block)`` pairs covering rows 0..G-1."""
    if k == 0:  # a one-item gallery has no other items
        return NeighborGraph(torch.zeros(g, 0, dtype=torch.int64), torch.zeros(g, 0))
    idx_parts, dist_parts = [], []
    for start, block in blocks:
        idx, dist = _nearest_in_block(block, start, k)
        idx_parts.append(idx.cpu())
        dist_parts.append(dist.cpu())
    return NeighborGraph(torch.cat(idx_parts), torch.cat(dist_parts))


def neighbor_graph(gg_dists: np.ndarray | torch.Tensor, k: int, *, check_symmetry: bool = True) -> NeighborGraph:
    """Top-``k`` neighbour graph from a dense gallery-gallery distance matrix.

    Args:
        gg_dists: float [G, G], smaller = closer; row i ranks the gallery for item i.
        k: neighbours per item; clamped to G - 1.
        check_symmetry: warn when ``gg_dists`` is not symmetric (rows are used).

    Returns:
        NeighborGraph with indices int64 [G, min(k, G-1)] (CPU tensors).

    Example:
        Two pairs, {0, 1} and {2, 3}: each item's nearest neighbour is its partner.

        >>> import numpy as np, icfrr
        >>> gg = np.array([[0, 1, 4, 5], [1, 0, 3, 4], [4, 3, 0, 1], [5, 4, 1, 0]], dtype=np.float32)
        >>> graph = icfrr.neighbor_graph(gg, 2)
        >>> graph.indices.tolist()
        [[1, 2], [0, 2], [3, 1], [2, 1]]
        >>> graph.distances.tolist()
        [[1.0, 4.0], [1.0, 3.0], [1.0, 3.0], [1.0, 4.0]]
    """
    d = as_matrix(gg_dists, "gg_dists")
    g = d.shape[0]
    if d.shape[1] != g:
        raise ValueError(f"gg_dists must be square [G, G], got shape {tuple(d.shape)}")
    k = _check_k(k, g)
    if check_symmetry and not _looks_symmetric(d):
        warnings.warn(
            "gg_dists is not symmetric; ranking gallery item i by row i of it", stacklevel=2
        )
    buffer = torch.empty(min(_ROW_CHUNK, g), g, dtype=d.dtype, device=d.device)  # reused: no fresh pages per block

    def blocks():
        for s in range(0, g, _ROW_CHUNK):
            rows = d[s : s + _ROW_CHUNK]
            yield s, buffer[: rows.shape[0]].copy_(rows)

    return _graph_by_blocks(blocks(), g, k)


def _looks_symmetric(d: torch.Tensor, n_samples: int = 200_000, atol: float = 1e-5) -> bool:
    """Compare a deterministic sample of (i, j) with (j, i); the whole matrix when small."""
    g = d.shape[0]
    if g * g <= n_samples:
        return bool(torch.allclose(d, d.T, atol=atol, rtol=1e-5))
    gen = torch.Generator().manual_seed(0)
    i = torch.randint(0, g, (n_samples,), generator=gen).to(d.device)
    j = torch.randint(0, g, (n_samples,), generator=gen).to(d.device)
    return bool(torch.allclose(d[i, j], d[j, i], atol=atol, rtol=1e-5))


def pairwise_distances(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Distances between the rows of ``a`` [A, D] and ``b`` [B, D].

    Args:
        metric: ``"euclidean"`` or ``"cosine"`` (1 - cosine similarity).

    Returns:
        float32 [A, B] on the device of ``a``.
    """
    a = as_matrix(a, "a")
    b = as_matrix(b, "b").to(a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: {a.shape[1]} vs {b.shape[1]}")
    if metric == "euclidean":
        return euclidean(a, b, (b * b).sum(1))
    if metric == "cosine":
        an = torch.nn.functional.normalize(a, dim=1)
        bn = torch.nn.functional.normalize(b, dim=1)
        return (1.0 - an @ bn.T).clamp_(min=0)
    raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")


def euclidean(a: torch.Tensor, b: torch.Tensor, b_sq_norms: torch.Tensor) -> torch.Tensor:
    """float32 [A, B] Euclidean distances between the rows of ``a`` and ``b``, given ``(b * b).sum(1)``.

    sqrt(max(0, (|a|^2 + |b|^2) - 2 a.b)), the terms in this order, so that it equals the
    one-expression form bit for bit; two [A, B] temporaries, not four, and the gallery's
    norms computed once by callers that stream many chunks against it.
    """
    ab = a @ b.T
    out = torch.add((a * a).sum(1, keepdim=True), b_sq_norms[None, :])
    return out.sub_(ab.mul_(2.0)).clamp_(min=0).sqrt_()


class FeatureDistances:
    """Query-gallery distances computed from features one chunk of queries at a time.

    A function ``slice -> float32 [B, G]`` for ``rerank_chunks`` and the sweep
    runner: the [Q, G] matrix is never held.

    Args:
        query: float [Q, D] query features.
        gallery: float [G, D] gallery features.
        metric: ``"euclidean"`` or ``"cosine"``.
    """

    def __init__(self, query: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor, metric: str = "euclidean") -> None:
        self.query = as_matrix(query, "query features")
        self.gallery = as_matrix(gallery, "gallery features")
        if self.query.shape[1] != self.gallery.shape[1]:
            raise ValueError(f"feature widths differ: {self.query.shape[1]} vs {self.gallery.shape[1]}")
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")
        self.metric = metric
        self._norms: torch.Tensor | None = None   # the gallery's squared norms, once

    @property
    def shape(self) -> tuple[int, int]:
        """(Q, G)."""
        return (int(self.query.shape[0]), int(self.gallery.shape[0]))

    def __call__(self, queries: slice) -> torch.Tensor:
        """float32 [B, G] distances of ``query[queries]`` to every gallery item."""
        if self.metric != "euclidean":
            return pairwise_distances(self.query[queries], self.gallery, self.metric)
        if self._norms is None:
            self._norms = (self.gallery * self.gallery).sum(1)
        return euclidean(self.query[queries].to(self.gallery.device), self.gallery, self._norms)


def neighbor_graph_from_features(
    feats: np.ndarray | torch.Tensor,
    k: int,
    metric: str = "euclidean",
    *,
    rows_per_chunk: int = _ROW_CHUNK,
) -> NeighborGraph:
    """Top-``k`` neighbour graph straight from gallery features, never holding [G, G].

    Args:
        feats: float [G, D] gallery features.
        k: neighbours per item; clamped to G - 1.
        metric: ``"euclidean"`` or ``"cosine"``.
        rows_per_chunk: rows of the distance matrix computed at once.

    Returns:
        NeighborGraph (CPU tensors).

    Example:
        Four points on a line, at 0, 1, 5 and 7:

        >>> import numpy as np, icfrr
        >>> graph = icfrr.neighbor_graph_from_features(np.array([[0.0], [1.0], [5.0], [7.0]]), 2)
        >>> graph.indices.tolist()
        [[1, 2], [0, 2], [3, 1], [2, 1]]
        >>> graph.distances.tolist()
        [[1.0, 5.0], [1.0, 4.0], [2.0, 4.0], [2.0, 6.0]]
    """
    f = as_matrix(feats, "feats")
    g = f.shape[0]
    k = _check_k(k, g)
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"unknown metric {metric!r}; use 'euclidean' or 'cosine'")
    if metric == "euclidean":
        norms = (f * f).sum(1)
        blocks = ((s, euclidean(f[s : s + rows_per_chunk], f, norms)) for s in range(0, g, rows_per_chunk))
    else:
        blocks = ((s, pairwise_distances(f[s : s + rows_per_chunk], f, metric)) for s in range(0, g, rows_per_chunk))
    return _graph_by_blocks(blocks, g, k)


def as_graph(gg: np.ndarray | torch.Tensor | NeighborGraph, kg: int, n_gallery: int) -> NeighborGraph:
    """A graph with exactly ``min(kg, G-1)`` neighbours per item, from a dense matrix or a graph."""
    if isinstance(gg, NeighborGraph):
        if gg.n_items != n_gallery:
            raise ValueError(f"the neighbour graph has {gg.n_items} items but qg_dists has {n_gallery} gallery columns")
        need = min(kg, n_gallery - 1)
        if gg.k < need:
            raise ValueError(
                f"the neighbour graph keeps {gg.k} neighbours per item but kg={kg} needs {need}; "
                "rebuild it with a larger k"
            )
        idx = gg.indices[:, :need]
        if idx.numel():
            lo, hi = torch.aminmax(idx)  # one pass over [G, kg]: half the time of min() then max()
            if int(lo) < 0 or int(hi) >= n_gallery:
                raise ValueError("the neighbour graph holds indices outside the gallery")
        return gg.truncate(need)
    d = torch.as_tensor(gg)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"gg must be a square [G, G] distance matrix or a NeighborGraph, got shape {tuple(d.shape)}")
    if d.shape[0] != n_gallery:
        raise ValueError(f"gg is [{d.shape[0]}, {d.shape[0]}] but qg_dists has {n_gallery} gallery columns")
    return neighbor_graph(d, kg)


