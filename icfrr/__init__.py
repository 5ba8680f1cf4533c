"""ICFRR: Iterative Cluster-free Re-ranking for cross-domain image retrieval.

The public engine API: neighbour graphs, re-ranking and retrieval metrics.
See ``docs/ARCHITECTURE.md`` and the spec for the semantics.
"""

from icfrr.metrics import METRIC_NAMES, evaluate, per_query, summarize
from icfrr.neighbors import NeighborGraph, neighbor_graph, neighbor_graph_from_features, pairwise_distances
from icfrr.rerank import RerankStep, iter_rerank, rerank

__all__ = [
    "METRIC_NAMES",
    "NeighborGraph",
    "RerankStep",
    "evaluate",
    "iter_rerank",
    "neighbor_graph",
    "neighbor_graph_from_features",
    "pairwise_distances",
    "per_query",
    "rerank",
    "summarize",
]
