"""Retrieval metrics of spec section 4, vectorised over queries with cumulative sums.

Relevance: gallery item j is relevant to query q when their labels are equal.
Queries labelled -1 (unknown) get NaN metrics and are left out of every mean.
"""

from __future__ import annotations

import numpy as np
import torch

from icfrr._checks import as_labels

#: Cut-offs of the precision metrics, and of ``map_200``.
PRECISION_KS = (25, 100, 200)
MAP_CUTOFF = 200
#: Metric names as ``evaluate`` returns them.
METRIC_NAMES = ("map_all", "map_200", "p_25", "p_100", "p_200")

_QUERY_CHUNK = 256


def _as_ranking(ranking: np.ndarray | torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(ranking)
    if r.ndim != 2:
        raise ValueError(f"ranking must be a [Q, G] matrix of gallery indices, got shape {tuple(r.shape)}")
    if r.dtype.is_floating_point or r.dtype == torch.bool:
        raise ValueError(f"ranking must hold integer gallery indices, got dtype {r.dtype}")
    return r.cpu()


def _average_precision(rel: torch.Tensor) -> torch.Tensor:
    """AP of each row of a boolean relevance matrix [B, L]; 0 where nothing is relevant."""
    hits = rel.cumsum(dim=1, dtype=torch.float64)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float64)
    n_rel = hits[:, -1] if rel.shape[1] else torch.zeros(rel.shape[0], dtype=torch.float64)
    total = torch.where(rel, hits / ranks, 0.0).sum(dim=1)
    return torch.where(n_rel > 0, total / n_rel.clamp(min=1), 0.0)


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
    lg = torch.from_numpy(as_labels(labels_g, n_gallery, "labels_g"))
    if n_gallery and (int(r.min()) < 0 or int(r.max()) >= n_gallery):
        raise ValueError("ranking holds indices outside the gallery")
    out = {name: np.full(n_query, np.nan) for name in ("ap", "ap_200", "p_25", "p_100", "p_200")}
    first = np.full(n_query, -1, dtype=np.int64)
    known_all = lq != -1
    for start in range(0, n_query, _QUERY_CHUNK):
        sl = slice(start, min(start + _QUERY_CHUNK, n_query))
        rel = lg[r[sl]] == torch.from_numpy(lq[sl])[:, None]
        known = known_all[sl]
        out["ap"][sl] = np.where(known, _average_precision(rel).numpy(), np.nan)
        out["ap_200"][sl] = np.where(known, _average_precision(rel[:, :MAP_CUTOFF]).numpy(), np.nan)
        for k in PRECISION_KS:
            out[f"p_{k}"][sl] = np.where(known, rel[:, :k].sum(dim=1).numpy() / k, np.nan)
        any_rel = rel.any(dim=1).numpy() & known
        first[sl] = np.where(any_rel, rel.to(torch.uint8).argmax(dim=1).numpy() + 1, -1)
    return {"query_idx": np.arange(n_query, dtype=np.int64), "label": lq, **out, "first_relevant_rank": first}


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
