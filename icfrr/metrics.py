"""Retrieval metrics (docs/SPEC.md section 4), from the positions of each query's relevant items.

A compiled scan per query (``row_positions``) walks the ranking until every
relevant item has been seen and records where each one sits; the engine calls
it on each ranking it makes, so no [Q, G] relevance matrix is ever built. The
metrics themselves are the kernels of :data:`icfrr.registry.METRICS`, applied
to those positions (:func:`rows_from_positions`): adding a metric to the
registry adds it here.

Relevance: gallery item j is relevant to query q when their labels are equal.
Queries labelled -1 (unknown) get NaN metrics and are left out of every mean.
"""

from __future__ import annotations

import numpy as np
import torch

from icfrr._checks import as_labels
from icfrr._compiled import helper, kernel
from icfrr._sorting import on_row_slices
from icfrr.registry import METRIC_KEYS, METRICS, QUERY_COLUMNS, Hits

#: Metric names as ``evaluate`` returns them (the registry's summary keys).
METRIC_NAMES = METRIC_KEYS
#: Queries whose relevant positions are held at once by ``per_query``.
_QUERY_CHUNK = 2048


def _as_ranking(ranking: np.ndarray | torch.Tensor) -> np.ndarray:
    r = np.asarray(ranking.cpu() if isinstance(ranking, torch.Tensor) else ranking)
    if r.ndim != 2:
        raise ValueError(f"ranking must be a [Q, G] matrix of gallery indices, got shape {r.shape}")
    if r.dtype.kind not in "iu":
        raise ValueError(f"ranking must hold integer gallery indices, got dtype {r.dtype}")
    return r


def n_row_metrics() -> int:
    """Width of a metric row: the registry's per-query columns, then the first relevant rank."""
    return len(METRICS) + 1


@helper
def row_positions(order, labels_g, label, n_relevant, out):  # pragma: no cover - compiled
    """Where the relevant items of one ranking sit.

    Walks ``order`` (gallery indices, best first) until the ``n_relevant``
    items labelled ``label`` are found, writing their 0-based positions, in
    rank order, into ``out[:n_relevant]``.

    Args:
        order: int [G] ranking.
        labels_g: int [G] gallery labels.
        label: the query's label.
        n_relevant: how many gallery items carry ``label``.
        out: int32 [>= n_relevant], filled.
    """
    found = 0
    for p in range(order.shape[0]):
        if found == n_relevant:
            break
        if labels_g[order[p]] == label:
            out[found] = p
            found += 1


def rows_positions(ranking: np.ndarray, labels_g: np.ndarray, labels_q: np.ndarray, n_relevant: np.ndarray,
                   out: np.ndarray) -> None:
    """``row_positions`` of each row of ``ranking`` [Q, G] into ``out`` [Q, R], slices of rows on threads
    (a serial nogil kernel: no ``parallel=True`` parfor to compile)."""
    on_row_slices(lambda start, stop: _rows_positions(ranking, labels_g, labels_q, n_relevant, out, start, stop),
                  ranking.shape[0])


@kernel
def _rows_positions(ranking, labels_g, labels_q, n_relevant, out, start, stop):  # pragma: no cover - compiled
    for q in range(start, stop):
        row_positions(ranking[q], labels_g, labels_q[q], n_relevant[q], out[q])


def positions_buffer(shape: tuple[int, ...], n_relevant: np.ndarray) -> np.ndarray:
    """An int32 array ``shape + (R,)`` for relevant positions, R = the largest of ``n_relevant`` (>= 1)."""
    width = max(int(n_relevant.max()) if n_relevant.size else 0, 1)
    return np.zeros(shape + (width,), dtype=np.int32)


def rows_from_positions(positions: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Metric rows from relevant positions, by the registry's kernels.

    Args:
        positions: int [..., R]: each ranking's relevant positions, ascending;
            only the first ``n_relevant[...]`` of each row are read.
        n_relevant: int, broadcastable to ``positions.shape[:-1]``: relevant
            items per ranking.

    Returns:
        float64 [..., n_row_metrics()]: the registry's per-query columns in
        order, then the 1-based rank of the first relevant item (-1 when none).
    """
    lead, width = positions.shape[:-1], positions.shape[-1]
    flat = positions.reshape(-1, width)
    counts = np.broadcast_to(np.asarray(n_relevant, dtype=np.int64), lead).reshape(-1)
    keep = np.arange(width)[None, :] < counts[:, None]
    hits = Hits.from_positions(np.repeat(np.arange(flat.shape[0]), counts), flat[keep], flat.shape[0])
    out = np.empty((flat.shape[0], n_row_metrics()))
    for i, m in enumerate(METRICS):
        out[:, i] = m.kernel(hits)
    out[:, -1] = np.where(counts > 0, flat[:, 0] + 1, -1) if width else -1
    return out.reshape(lead + (n_row_metrics(),))


def relevant_counts(labels_q: np.ndarray, labels_g: np.ndarray) -> np.ndarray:
    """int64 [Q]: how many gallery items carry each query's label."""
    values, counts = np.unique(labels_g, return_counts=True)
    if values.size == 0:
        return np.zeros(labels_q.shape[0], dtype=np.int64)
    idx = np.searchsorted(values, labels_q).clip(max=values.size - 1)
    return np.where(values[idx] == labels_q, counts[idx], 0).astype(np.int64)


def columns_from_rows(rows: np.ndarray, labels_q: np.ndarray, query_idx: np.ndarray) -> dict[str, np.ndarray]:
    """``per_query`` columns from metric rows float64 [Q, n_row_metrics()]."""
    unknown = labels_q == -1
    out: dict[str, np.ndarray] = {"query_idx": query_idx, "label": labels_q}
    for i, name in enumerate(QUERY_COLUMNS):
        column = rows[:, i].copy()
        column[unknown] = np.nan
        out[name] = column
    first = rows[:, len(QUERY_COLUMNS)].astype(np.int64)
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
        Columns of length Q: ``query_idx``, ``label`` (int64), the registry's
        per-query columns (``ap``, ``ap_200``, ``p_25``, ...: float64, NaN for unknown labels) and
        ``first_relevant_rank`` (int64, 1-based; -1 when nothing is relevant or
        the label is unknown).
    """
    r = _as_ranking(ranking)
    n_query, n_gallery = r.shape
    lq = as_labels(labels_q, n_query, "labels_q")
    lg = as_labels(labels_g, n_gallery, "labels_g")
    if n_gallery and (r.min() < 0 or r.max() >= n_gallery):
        raise ValueError("ranking holds indices outside the gallery")
    n_rel = relevant_counts(lq, lg)
    rows = np.empty((n_query, n_row_metrics()))
    for start in range(0, n_query, _QUERY_CHUNK):
        sl = slice(start, min(start + _QUERY_CHUNK, n_query))
        positions = positions_buffer((sl.stop - sl.start,), n_rel[sl])
        rows_positions(np.ascontiguousarray(r[sl]), lg, lq[sl], n_rel[sl], positions)
        rows[sl] = rows_from_positions(positions, n_rel[sl])
    return columns_from_rows(rows, lq, np.arange(n_query, dtype=np.int64))


def summarize(per_query_columns: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean metrics over the queries of known label: what ``evaluate`` returns.

    Args:
        per_query_columns: the output of ``per_query`` (or a subset of its rows).

    Returns:
        The registry's summary keys (``map_all``, ``map_200``, ``p_25``, ...;
        NaN when no query has a known label).
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
    """Mean metrics of a ranking (docs/SPEC.md section 4): the registry's summary keys.

    Args:
        ranking: int [Q, G] gallery indices, best first.
        labels_q: int [Q] query labels (-1 = unknown, left out).
        labels_g: int [G] gallery labels.

    Returns:
        Summary key (``map_all``, ``map_200``, ``p_25``, ...) -> mean over the queries of known label.

    Example:
        Each query finds its two relevant items at ranks 1 and 3, so its AP is
        (1/1 + 2/3) / 2; two of its first 25 items are relevant:

        >>> import numpy as np, icfrr
        >>> ranking = np.array([[0, 2, 1, 3], [2, 1, 3, 0]])
        >>> m = icfrr.evaluate(ranking, np.array([0, 1]), np.array([0, 0, 1, 1]))
        >>> round(m["map_all"], 4), round(m["p_25"], 2)
        (0.8333, 0.08)
    """
    return summarize(per_query(ranking, labels_q, labels_g))
