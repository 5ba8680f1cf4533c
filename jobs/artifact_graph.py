"""The gallery graph's choice and record, and whether the [Q, G] distances are kept dense.

Which graph (exact, ivf or hnsw: :mod:`icfrr.ann`) a request gets, the part of
the cache key and metadata that records it, and its measured recall.
"""

from __future__ import annotations

import numpy as np
import torch

from icfrr import NeighborGraph, pairwise_distances
from icfrr.ann import RECALL_SEED, FaissMissing, GraphSpec, build_graph, default_spec, graph_recall, recall_sample, require_faiss
from jobs.artifact_request import ArtifactRequest
from jobs.source_flags import EXACT_GRAPH_MAX_ITEMS
from store import artifacts as cache
from store.artifacts import ArtifactError, Artifacts

#: Largest float32 [Q, G] distance matrix kept dense (2 GiB, e.g. Q=2400 x G=27989 is 0.25 GiB);
#: above it, distances that come from features are computed per chunk of queries, never held whole.
DENSE_QG_MAX_BYTES = 2 * 2**30


def dense_qg_fits(n_query: int, n_gallery: int) -> bool:
    """Whether the float32 [Q, G] distances stay within :data:`DENSE_QG_MAX_BYTES` (then kept dense)."""
    return 4 * n_query * n_gallery <= DENSE_QG_MAX_BYTES


def distances_and_graph(feats: dict[str, np.ndarray], kg_max: int, device: str, spec: GraphSpec,
                         sample: int | None) -> tuple[np.ndarray | None, NeighborGraph, dict[str, object]]:
    """float32 [Q, G] Euclidean distances (None above the dense limit) and the gallery graph, from
    float32 [N, D] features, plus the record of those choices (and the graph's recall) for the metadata."""
    fq, fg = (torch.from_numpy(feats[s]).to(device) for s in ("query", "gallery"))
    dense = dense_qg_fits(fq.shape[0], fg.shape[0])
    qg = pairwise_distances(fq, fg).cpu().numpy() if dense else None
    choice = {"qg": "dense" if dense else "features", "dense_qg_max_bytes": DENSE_QG_MAX_BYTES}
    graph = build_graph(fg, cache.graph_k(fg.shape[0], kg_max), spec)
    return qg, graph, choice | graph_record(spec, graph, feats["gallery"], sample)


def graph_spec(request: ArtifactRequest, n_gallery: int) -> GraphSpec:
    """How the gallery graph of ``n_gallery`` items is built: ``request.graph``, or the default
    (exact up to :data:`EXACT_GRAPH_MAX_ITEMS`, ivf above; exact when FAISS is missing).

    Raises:
        ArtifactError: FAISS missing for an approximate graph asked for, or a recall sample above G.
    """
    kind = request.graph
    if kind is None:
        kind = "exact" if n_gallery <= EXACT_GRAPH_MAX_ITEMS else "ivf"
        if kind != "exact":
            try:
                require_faiss(kind)
            except FaissMissing:
                kind = "exact"
    elif kind != "exact":
        try:
            require_faiss(kind)
        except FaissMissing as exc:
            raise ArtifactError(str(exc)) from None
    if request.recall_sample is not None and request.recall_sample > n_gallery:
        raise ArtifactError(f"--graph-recall-sample {request.recall_sample} is larger than the gallery "
                            f"({n_gallery} items); use at most {n_gallery}")
    return default_spec(kind, n_gallery)


def graph_choice(request: ArtifactRequest, arts: Artifacts) -> str:
    """The one line that says which graph was used and why."""
    kind = arts.meta.get("graph", {}).get("kind", "exact")
    n_gallery = arts.shape[1]
    if request.graph is not None:
        return f"gallery graph: {kind} (--graph {request.graph})"
    why = f"exact up to {EXACT_GRAPH_MAX_ITEMS:,} items, ivf above"
    if n_gallery > EXACT_GRAPH_MAX_ITEMS and kind == "exact":
        why += "; FAISS is not installed, so exact"
    return f"gallery graph: {kind} for {n_gallery:,} items ({why}; --graph chooses)"


def graph_key(spec: GraphSpec) -> dict[str, object]:
    """The graph's part of a cache key: none for the exact graph (keys made before it stay valid)."""
    return {} if spec.kind == "exact" else {"graph": spec.record()}


def graph_record(spec: GraphSpec, graph: NeighborGraph, gallery: np.ndarray, sample: int | None
                 ) -> dict[str, object]:
    """The metadata of a graph: its kind and parameters, and for an approximate one its recall
    against exact neighbours on a seeded sample (``graph_recall.curve[c - 1]`` = recall@c)."""
    out: dict[str, object] = {"graph": spec.record()}
    if spec.kind != "exact":
        items = recall_sample(graph.n_items, sample)
        out["graph_recall"] = {"k": graph.k, "sample": int(items.size), "seed": RECALL_SEED,
                               "curve": graph_recall(graph, gallery, items)}
    return out


def recall_at(meta: dict, kg: int) -> float | None:
    """An approximate graph's recall@kg from the artifacts' metadata (None for an exact graph)."""
    rec = meta.get("graph_recall")
    if not rec or not rec["curve"]:
        return None
    curve = rec["curve"]
    return float(curve[min(kg, len(curve)) - 1])

