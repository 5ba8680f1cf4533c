"""Retrieval metrics of spec section 4, from the positions of each query's relevant items.

A compiled scan per query (``row_metrics``) walks the ranking until every
relevant item has been seen; the engine calls it on each ranking it makes, so
no [Q, G] relevance matrix is ever built.

Relevance: gallery item j is relevant to query q when their labels are equal.
Queries labelled -1 (unknown) get NaN metrics and are left out of every mean.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from icfrr._checks import as_labels

#: Cut-offs of the precision metrics, and of ``map_200``.
PRECISION_KS = (25, 100, 200)
MAP_CUTOFF = 200
#: Metric names as ``evaluate`` returns them.
METRIC_NAMES = ("map_all", "map_200", "p_25", "p_100", "p_200")


def _as_ranking(ranking: np.ndarray | torch.Tensor) -> np.ndarray:
    r = np.asarray(ranking.cpu() if isinstance(ranking, torch.Tensor) else ranking)
    if r.ndim != 2:
        raise ValueError(f"ranking must be a [Q, G] matrix of gallery indices, got shape {r.shape}")
    if r.dtype.kind not in "iu":
        raise ValueError(f"ranking must hold integer gallery indices, got dtype {r.dtype}")
    return r


#: Per-query float columns, in the order the compiled row scan fills them.
ROW_COLUMNS = ("ap", "ap_200") + tuple(f"p_{k}" for k in PRECISION_KS)


@njit(cache=True, nogil=True)
def row_metrics(order, labels_g, label, n_relevant, out):  # pragma: no cover - compiled
    """Metrics of one ranking from the positions of its relevant items.

    Walks ``order`` (gallery indices, best first) until the ``n_relevant``
    items labelled ``label`` are found; the j-th of them, at 0-based position
    p, adds precision j / (p + 1) to AP. Sums run in position order, so the
    values are bit-identical to a vectorised reading of the same definition.

    Args:
        order: int [G] ranking.
        labels_g: int [G] gallery labels.
        label: the query's label.
        n_relevant: how many gallery items carry ``label``.
        out: float64 [len(ROW_COLUMNS) + 1]: ROW_COLUMNS, then the 1-based rank
            of the first relevant item (-1 when none).

    Returns:
        Nothing; ``out`` is filled.
    """
    hits = 0
    total = 0.0
    hits_cut = 0
    total_cut = 0.0
    first = -1
    counts = np.zeros(len(PRECISION_KS), dtype=np.int64)
    for p in range(order.shape[0]):
        if hits == n_relevant:
            break
        if labels_g[order[p]] != label:
            continue
        hits += 1
        precision = hits / (p + 1.0)
        total += precision
        if first < 0:
            first = p + 1
        if p < MAP_CUTOFF:
            hits_cut += 1
            total_cut += precision
        for i in range(len(PRECISION_KS)):
            if p < PRECISION_KS[i]:
                counts[i] += 1
    out[0] = total / hits if hits > 0 else 0.0
    out[1] = total_cut / hits_cut if hits_cut > 0 else 0.0
    for i in range(len(PRECISION_KS)):
        out[2 + i] = counts[i] / PRECISION_KS[i]
    out[2 + len(PRECISION_KS)] = first


@njit(parallel=True, cache=True, nogil=True)
def rows_metrics(ranking, labels_g, labels_q, n_relevant, out):  # pragma: no cover - compiled
    """``row_metrics`` of each row of ``ranking`` [Q, G] into ``out`` [Q, len(ROW_COLUMNS) + 1], in parallel."""
    for q in prange(ranking.shape[0]):
        row_metrics(ranking[q], labels_g, labels_q[q], n_relevant[q], out[q])


def relevant_counts(labels_q: np.ndarray, labels_g: np.ndarray) -> np.ndarray:
    """int64 [Q]: how many gallery items carry each query's label."""
    values, counts = np.unique(labels_g, return_counts=True)
    if values.size == 0:
        return np.zeros(labels_q.shape[0], dtype=np.int64)
    idx = np.searchsorted(values, labels_q).clip(max=values.size - 1)
    return np.where(values[idx] == labels_q, counts[idx], 0).astype(np.int64)


def columns_from_rows(rows: np.ndarray, labels_q: np.ndarray, query_idx: np.ndarray) -> dict[str, np.ndarray]:
    """``per_query`` columns from ``row_metrics`` rows float64 [Q, len(ROW_COLUMNS) + 1]."""
    unknown = labels_q == -1
    out: dict[str, np.ndarray] = {"query_idx": query_idx, "label": labels_q}
    for i, name in enumerate(ROW_COLUMNS):
        column = rows[:, i].copy()
        column[unknown] = np.nan
        out[name] = column
    first = rows[:, len(ROW_COLUMNS)].astype(np.int64)
    first[unknown] = -1
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
    rows = np.empty((n_query, len(ROW_COLUMNS) + 1))
    rows_metrics(np.ascontiguousarray(r), lg, lq, relevant_counts(lq, lg), rows)
    return columns_from_rows(rows, lq, np.arange(n_query, dtype=np.int64))


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
    for name, column in (("map_all", "ap"), ("map_200", "ap_200"), ("p_25", "p_25"), ("p_100", "p_100"), ("p_200", "p_200")):
        values = per_query_columns[column][known]
        result[name] = float(values.mean()) if values.size else float("nan")
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
