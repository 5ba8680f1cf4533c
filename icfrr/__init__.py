"""ICFRR: Iterative Cluster-free Re-ranking for cross-domain image retrieval.

The public engine API: neighbour graphs, re-ranking and retrieval metrics.
See ``docs/ARCHITECTURE.md`` and ``docs/SPEC.md`` for the semantics.

Names are imported on first use (PEP 562), so that light submodules such as
``icfrr.stats`` can be imported without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "METRIC_NAMES": "icfrr.metrics",
    "evaluate": "icfrr.metrics",
    "VoteStep": "icfrr.explaining",
    "explain": "icfrr.explaining",
    "per_query": "icfrr.metrics",
    "summarize": "icfrr.metrics",
    "FeatureDistances": "icfrr.neighbors",
    "NeighborGraph": "icfrr.neighbors",
    "neighbor_graph": "icfrr.neighbors",
    "neighbor_graph_from_features": "icfrr.neighbors",
    "pairwise_distances": "icfrr.neighbors",
    "ChunkResult": "icfrr.reranking",
    "RerankStep": "icfrr.reranking",
    "iter_rerank": "icfrr.reranking",
    "rerank": "icfrr.reranking",
    "rerank_chunks": "icfrr.reranking",
}

__all__ = [
    "ChunkResult",
    "FeatureDistances",
    "METRIC_NAMES",
    "NeighborGraph",
    "RerankStep",
    "VoteStep",
    "evaluate",
    "explain",
    "iter_rerank",
    "neighbor_graph",
    "neighbor_graph_from_features",
    "pairwise_distances",
    "per_query",
    "rerank",
    "rerank_chunks",
    "summarize",
]

if TYPE_CHECKING:
    from icfrr.explaining import VoteStep, explain
    from icfrr.metrics import METRIC_NAMES, evaluate, per_query, summarize
    from icfrr.neighbors import FeatureDistances, NeighborGraph, neighbor_graph, neighbor_graph_from_features, pairwise_distances
    from icfrr.reranking import ChunkResult, RerankStep, iter_rerank, rerank, rerank_chunks


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'icfrr' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
