"""Gallery neighbour graphs from features by an approximate index (FAISS), and their measured recall.

The exact graph (:func:`icfrr.neighbor_graph_from_features`) is a brute-force
G x G pass; at a million items that takes hours. An inverted-file index
(``ivf``: k-means cells, ``nprobe`` of them searched) or a graph index
(``hnsw``) finds most of the k nearest neighbours much faster. How many is
measured, never assumed: :func:`graph_recall` compares the graph with exact
neighbours on a seeded sample of items.

Distances are Euclidean. As in the exact graph, an item is excluded by its
index (a duplicate at distance 0 is a neighbour), and each item's neighbours
are ordered by (distance, index). FAISS is imported only when an approximate
graph is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
import torch

from icfrr._checks import as_matrix, check_positive_int
from icfrr.ann_cells import cell_graph
from icfrr.chunks import CHUNK_BYTES, rows_per_chunk
from icfrr._sorting import smallest_rows
from icfrr.neighbors import NeighborGraph, neighbor_graph_from_features, pairwise_distances

#: ``(features [N, D], width) -> int64 [N, width]``: each item's rank list (itself first), for the baselines.
RankListFinder = Callable[[torch.Tensor, int], np.ndarray]
#: The graph kinds ``--graph`` accepts.
GRAPH_KINDS = ("exact", "ivf", "hnsw")
#: Items in the recall sample by default (all of them when the gallery is smaller).
RECALL_SAMPLE = 1000
#: Seed of the recall sample.
RECALL_SEED = 0
#: Galleries above this many items get the ivf graph searched a cell at a time (:mod:`icfrr.ann_cells`).
PER_CELL_MIN_ITEMS = 100_000
#: Bytes of one block of searched or exact rows: twice the common budget, the size these blocks always
#: had (a float32 product may round a row differently in blocks of another size).
_BLOCK_BYTES = 2 * CHUNK_BYTES


class FaissMissing(ImportError):
    """An approximate graph was asked for but FAISS is not installed; the message says what to do."""


def require_faiss(kind: str) -> ModuleType:
    """The ``faiss`` module.

    Raises:
        FaissMissing: It cannot be imported (one line: install faiss-cpu or use the exact graph).
    """
    try:
        import faiss
    except ImportError:
        raise FaissMissing(f"the {kind} graph needs FAISS, which is not installed: pip install faiss-cpu "
                           "(or use --graph exact)") from None
    return faiss


@dataclass(frozen=True)
class GraphSpec:
    """How a gallery graph is built.

    Attributes:
        kind: ``"exact"``, ``"ivf"`` or ``"hnsw"``.
        params: The index's parameters: ``nlist``/``nprobe`` (ivf), ``m``/``ef_construction``/
            ``ef_search`` (hnsw); empty for exact.
    """

    kind: str
    params: dict[str, int] = field(default_factory=dict)

    def record(self) -> dict[str, object]:
        """``{"kind": ..., "params": {...}}``, for cache keys and ``runs.params``."""
        return {"kind": self.kind, "params": dict(sorted(self.params.items()))}


def default_spec(kind: str, n_gallery: int) -> GraphSpec:
    """The parameters used for ``kind`` on a gallery of ``n_gallery`` items.

    ivf: ``nlist`` = 4 sqrt(G) cells (at most G / 39, so that k-means has 39 points a
    cell), ``nprobe`` = 32 searched (at most nlist); above :data:`PER_CELL_MIN_ITEMS`
    items, ``nlist`` = 2 sqrt(G) cells searched a cell at a time (``per_cell`` = 1,
    :mod:`icfrr.ann_cells`), ``nprobe`` = 32. hnsw: M = 32 links,
    efConstruction = 80, efSearch = 600 (FAISS searches at least k deep).

    Raises:
        ValueError: An unknown kind.
    """
    if kind not in GRAPH_KINDS:
        raise ValueError(f"unknown graph kind {kind!r}; use one of {', '.join(GRAPH_KINDS)}")
    if kind == "ivf" and n_gallery > PER_CELL_MIN_ITEMS:
        return GraphSpec("ivf", {"nlist": int(2 * math.sqrt(n_gallery)), "nprobe": 32, "per_cell": 1})
    if kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n_gallery)), n_gallery // 39))
        return GraphSpec("ivf", {"nlist": nlist, "nprobe": min(32, nlist)})
    if kind == "hnsw":
        return GraphSpec("hnsw", {"m": 32, "ef_construction": 80, "ef_search": 600})
    return GraphSpec("exact")


def build_graph(feats: np.ndarray | torch.Tensor, k: int, spec: GraphSpec) -> NeighborGraph:
    """The ``k`` nearest other items of every item, exactly or through the index ``spec`` names.

    Args:
        feats: float [G, D] gallery features.
        k: neighbours per item; clamped to G - 1.
        spec: The graph kind and its parameters.

    Returns:
        NeighborGraph (CPU tensors); for an approximate kind an item may list fewer
        true neighbours, never itself, and never an index twice.

    Raises:
        FaissMissing: An approximate kind without FAISS.
        ValueError: Bad features or k.
    """
    if spec.kind == "exact":
        return neighbor_graph_from_features(feats, k)
    faiss = require_faiss(spec.kind)
    f = np.ascontiguousarray(as_matrix(feats, "feats").cpu().numpy())
    g, d = f.shape
    k = min(check_positive_int(k, "k"), g - 1)
    if k == 0:
        return NeighborGraph(torch.zeros(g, 0, dtype=torch.int64), torch.zeros(g, 0))
    idx = np.empty((g, k), dtype=np.int64)
    dist = np.empty((g, k), dtype=np.float32)
    if spec.kind == "ivf" and spec.params.get("per_cell"):
        found, sq = cell_graph(faiss, f, k, spec.params["nlist"], spec.params["nprobe"], _BLOCK_BYTES)
        step = rows_per_chunk(g, 12 * (k + 1), _BLOCK_BYTES)
        for s in range(0, g, step):
            idx[s : s + step], dist[s : s + step] = _without_self(
                found[s : s + step], sq[s : s + step], np.arange(s, min(s + step, g)), k)
        del found, sq
        return _complete(torch.from_numpy(f), idx, dist)
    if spec.kind == "ivf":
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, spec.params["nlist"])
        index.train(f)
        index.add(f)
        index.nprobe = spec.params["nprobe"]
    else:
        index = faiss.IndexHNSWFlat(d, spec.params["m"])
        index.hnsw.efConstruction = spec.params["ef_construction"]
        index.add(f)
        index.hnsw.efSearch = spec.params["ef_search"]
    step = rows_per_chunk(g, 12 * (k + 1), _BLOCK_BYTES)
    for s in range(0, g, step):
        sq, found = index.search(f[s : s + step], k + 1)
        idx[s : s + step], dist[s : s + step] = _without_self(found, sq, np.arange(s, min(s + step, g)), k)
    return _complete(torch.from_numpy(f), idx, dist)


def _complete(f: torch.Tensor, idx: np.ndarray, dist: np.ndarray) -> NeighborGraph:
    """The graph of (indices int64 [G, k], distances float32 [G, k]) with its rows short of k (an
    infinite distance: a search that saw fewer than k other items, which is rare) found exactly."""
    short = np.flatnonzero(~np.isfinite(dist).all(axis=1))
    if short.size:
        idx[short], dist[short] = _exact_rows(f, short, idx.shape[1])
    return NeighborGraph(torch.from_numpy(idx), torch.from_numpy(dist))


def rank_lists(feats: np.ndarray | torch.Tensor, width: int, spec: GraphSpec) -> np.ndarray:
    """Each item's rank list over the items: itself first, then its ``width - 1`` nearest other items.

    The k-NN sets of k-reciprocal and ECN (``icfrr.baselines``) from the graph
    ``spec`` names (:func:`build_graph`), over the Q + G items given.

    Args:
        feats: float [N, D] features of the items.
        width: entries per list (cut at N).
        spec: The graph kind and its parameters.

    Returns:
        int64 [N, min(width, N)]: item indices, the item itself in column 0, then by
        (distance, index) as the graph lists them.

    Raises:
        FaissMissing: An approximate kind without FAISS.
        ValueError: Bad features or width.
    """
    n = int(as_matrix(feats, "feats").shape[0])
    width = min(check_positive_int(width, "width"), n)
    graph = build_graph(feats, width - 1, spec)
    return np.concatenate([np.arange(n, dtype=np.int64)[:, None], graph.indices.numpy()], axis=1)


class IndexRankLists:
    """``(features [N, D], width) -> rank_lists(...)`` through an approximate index of one kind,
    its parameters chosen for N items as :func:`default_spec` does, keeping the measured recall
    of the lists it made last.

    Attributes:
        kind: ``"ivf"`` or ``"hnsw"``.
        recall: After a call: ``{"knn_recall_at_k": recall@k, "knn_recall_k": k (width - 1, the
            item itself not counted), "knn_recall_sample": items checked}``, measured against
            exact neighbours on the seeded :func:`recall_sample` of the N items; None before.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.recall: dict[str, float | int] | None = None

    def __call__(self, feats: np.ndarray | torch.Tensor, width: int) -> np.ndarray:
        self.recall = None
        ranks = rank_lists(feats, width, default_spec(self.kind, int(feats.shape[0])))
        k = ranks.shape[1] - 1
        if k:
            others = NeighborGraph(torch.from_numpy(ranks[:, 1:].copy()), torch.zeros(ranks.shape[0], k))
            sample = recall_sample(ranks.shape[0])
            self.recall = {"knn_recall_at_k": graph_recall(others, feats, sample)[-1], "knn_recall_k": k,
                           "knn_recall_sample": int(sample.size)}
        return ranks


def item_neighbours(kind: str | None) -> IndexRankLists | None:
    """The rank-list finder of the baselines' streamed forms for a gallery graph of ``kind``.

    None for ``exact`` (or no graph): the baselines then rank every item's full
    row of distances themselves, which equals their dense paths. For an
    approximate kind: an :class:`IndexRankLists` of that kind, which measures its recall.

    Raises:
        ValueError: An unknown kind.
    """
    if kind is None or default_spec(kind, 1).kind == "exact":
        return None
    return IndexRankLists(kind)


def _without_self(found: np.ndarray, sq: np.ndarray, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k of each row without the item itself, ordered by (distance, index); FAISS's -1
    fillers (and a row short of k) come last with an infinite distance.

    FAISS returns each row by ascending distance, so dropping the excluded
    entries (a stable partition) leaves most rows in order; only rows with an
    equal or a descending pair of distances are sorted by (distance, index).
    """
    dist = np.sqrt(np.maximum(sq, 0)).astype(np.float32)
    bad = (found == items[:, None]) | (found < 0)
    dist[bad] = np.inf
    keep = np.argsort(bad, axis=1, kind="stable")
    found, dist, bad = (np.take_along_axis(a, keep, axis=1) for a in (found, dist, bad))
    unsorted = ((dist[:, 1:] <= dist[:, :-1]) & ~bad[:, 1:]).any(axis=1)
    rows = np.flatnonzero(unsorted)
    if rows.size:
        keys = np.where(bad[rows], np.iinfo(np.int64).max, found[rows])
        order = np.lexsort((keys, dist[rows]), axis=1)
        found[rows], dist[rows] = np.take_along_axis(found[rows], order, 1), np.take_along_axis(dist[rows], order, 1)
    return found[:, :k], dist[:, :k]


def _exact_rows(f: torch.Tensor, items: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact (indices int64 [n, k], distances float32 [n, k]) of ``items``, by (distance, index), self excluded."""
    idx = np.empty((items.size, k), dtype=np.int64)
    dist = np.empty((items.size, k), dtype=np.float32)
    step = rows_per_chunk(items.size, 4 * f.shape[0], _BLOCK_BYTES)
    for s in range(0, items.size, step):
        rows = items[s : s + step]
        block = pairwise_distances(f[torch.from_numpy(rows)], f)
        block[torch.arange(rows.size), torch.from_numpy(rows)] = float("inf")
        idx[s : s + step], dist[s : s + step] = smallest_rows(block.numpy(), k)
    return idx, dist


def recall_sample(n_gallery: int, size: int | None = None, seed: int = RECALL_SEED) -> np.ndarray:
    """The seeded sample of items whose neighbours are checked: ``size`` of them (default
    :data:`RECALL_SAMPLE`, or all when the gallery is smaller), sorted.

    Raises:
        ValueError: ``size`` below 1 or above the gallery size.
    """
    if size is None:
        size = min(RECALL_SAMPLE, n_gallery)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 1 <= size <= n_gallery:
        raise ValueError(f"the recall sample must hold 1 to G = {n_gallery} items, got {size!r}")
    return np.sort(np.random.default_rng(seed).choice(n_gallery, int(size), replace=False))


def graph_recall(graph: NeighborGraph, feats: np.ndarray | torch.Tensor, sample: np.ndarray) -> list[float]:
    """Recall of ``graph`` against exact neighbours on the items ``sample``, at every cut-off.

    Args:
        graph: The graph to check (k neighbours per item).
        feats: float [G, D] the features it was built from.
        sample: Item indices to check (see :func:`recall_sample`).

    Returns:
        ``curve`` of length k: ``curve[c - 1]`` = recall@c, the fraction of the c exact
        nearest other items of a sampled item found among its first c graph neighbours,
        averaged over the sample (1.0 for an exact graph, up to distance ties).
    """
    k = graph.k
    if k == 0:
        return []
    f = as_matrix(feats, "feats").cpu()
    exact, _ = _exact_rows(f, np.asarray(sample, dtype=np.int64), k)
    got = graph.indices.numpy()[sample]
    hits = np.zeros(k)
    for r in range(len(sample)):
        # position at which each exact neighbour is found in the graph's list (k when absent)
        where = {int(j): p for p, j in enumerate(got[r])}
        pos = np.array([where.get(int(j), k) for j in exact[r]])
        # recall@c counts exact[r, :c] found in got[r, :c]: for exact neighbour e (its exact
        # place i), it counts for every c > max(i, pos(e)).
        first = np.maximum(np.arange(k), pos)
        np.add.at(hits, first[first < k], 1)
    curve = np.cumsum(hits) / (len(sample) * np.arange(1, k + 1))
    return [float(v) for v in curve]
