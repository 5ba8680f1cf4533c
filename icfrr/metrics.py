"""Retrieval metrics of spec section 4, vectorised over queries with cumulative sums.

Relevance: gallery item j is relevant to query q when their labels are equal.
Queries labelled -1 (unknown) get NaN metrics and are left out of every mean.
"""

from __future__ import annotations

import numpy as np
import torch

from icfrr._checks import as_labels
from icfrr.registry import METRIC_KEYS, METRICS, QUERY_COLUMNS, Hits

#: Metric names as ``evaluate`` returns them (the registry's summary keys).
METRIC_NAMES = METRIC_KEYS

_QUERY_CHUNK = 256


def _as_ranking(ranking: np.ndarray | torch.Tensor) -> np.ndarray:
    r = np.asarray(ranking.cpu() if isinstance(ranking, torch.Tensor) else ranking)
    if r.ndim != 2:
        raise ValueError(f"ranking must be a [Q, G] matrix of gallery indices, got shape {r.shape}")
    if r.dtype.kind not in "iu":
        raise ValueError(f"ranking must hold integer gallery indices, got dtype {r.dtype}")
    return r


def _chunk_metrics(rel: np.ndarray) -> dict[str, np.ndarray]:
    """Every registry metric of each row of a boolean relevance matrix [B, G] (rank order).

    Works on the relevant positions only (see :class:`icfrr.registry.Hits`).
    """
    hits = Hits.from_relevance(rel)
    out = {m.column: m.kernel(hits) for m in METRICS}
    has_rel = hits.count() > 0
    first = np.full(hits.n_rows, -1, dtype=np.int64)
    starts = np.searchsorted(hits.rows, np.arange(hits.n_rows))
    first[has_rel] = hits.positions[starts[has_rel]] + 1
    out["first_relevant_rank"] = first
    return out


def per_query(
    ranking: np.ndarray | torch.Tensor,
    labels_q: np.ndarray | torch.Tensor,
    labels_g: np.ndarray | torch.Tensor,
) -> dict[str, np.ndarray]:
    """Per-query metrics of a ranking.

    Args:
        ranking: int [Q, G] gallery indices, best first.
        labels_q: int [Q] query labels (-1 = unknown).
        labels_g: int [G] gallery labels.

    Returns:
        Columns of length Q: ``query_idx``, ``label`` (int64), ``ap``, ``ap_200``,
        ``p_25``, ``p_100``, ``p_200`` (float64, NaN for unknown labels) and
        ``first_relevant_rank`` (int64, 1-based; -1 when nothing is relevant or
        the label is unknown).
    """
    r = _as_ranking(ranking)
    n_query, n_gallery = r.shape
    lq = as_labels(labels_q, n_query, "labels_q")
    lg = as_labels(labels_g, n_gallery, "labels_g")
    if n_gallery and (r.min() < 0 or r.max() >= n_gallery):
        raise ValueError("ranking holds indices outside the gallery")
    names = QUERY_COLUMNS
    out: dict[str, np.ndarray] = {name: np.empty(n_query) for name in names}
    out["first_relevant_rank"] = np.empty(n_query, dtype=np.int64)
    for start in range(0, n_query, _QUERY_CHUNK):
        sl = slice(start, min(start + _QUERY_CHUNK, n_query))
        chunk = _chunk_metrics(lg[r[sl]] == lq[sl, None])
        for name, values in chunk.items():
            out[name][sl] = values
    unknown = lq == -1
    for name in names:
        out[name][unknown] = np.nan
    out["first_relevant_rank"][unknown] = -1
    return {"query_idx": np.arange(n_query, dtype=np.int64), "label": lq, **out}


def summarize(per_query_columns: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean metrics over the queries of known label: what ``evaluate`` returns.

    Args:
        per_query_columns: the output of ``per_query`` (or a subset of its rows).

    Returns:
        ``map_all``, ``map_200``, ``p_25``, ``p_100``, ``p_200`` (NaN when no
        query has a known label).
    """
    known = per_query_columns["label"] != -1
    result = {}
    for m in METRICS:
        values = per_query_columns[m.column][known]
        result[m.key] = float(values.mean()) if values.size else float("nan")
    return result


def evaluate(
    ranking: np.ndarray | torch.Tensor,
    labels_q: np.ndarray | torch.Tensor,
    labels_g: np.ndarray | torch.Tensor,
) -> dict[str, float]:
    """Mean metrics of a ranking (spec section 4): ``map_all``, ``map_200``, ``p_25``, ``p_100``, ``p_200``.

    Args:
        ranking: int [Q, G] gallery indices, best first.
        labels_q: int [Q] query labels (-1 = unknown, left out).
        labels_g: int [G] gallery labels.
    """
    return summarize(per_query(ranking, labels_q, labels_g))
