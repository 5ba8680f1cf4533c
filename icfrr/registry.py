"""The one place where metrics are defined (docs/SPEC.md section 4).

Every metric the lab reports is one :class:`Metric` entry of :data:`METRICS`:
its summary key (a ``run_metrics`` column), its per-query column (a
``query_metrics`` column), its label, its cut-off and a kernel that computes
it from the positions of the relevant items. ``icfrr.metrics`` evaluates the
entries, ``store`` makes a column for each, and the sweep table, the report
and the dashboard list them from here. Adding a metric is adding an entry.

The rule that picks a run's best iteration (:func:`best_iteration`) lives here
too, so the store, the sweep and the dashboard agree on it.

This module imports neither torch nor the database: it is cheap to import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hits:
    """Where the relevant items sit in a chunk of rankings.

    Attributes:
        rows: int64 [H] the query row (0..n_rows-1) of each relevant hit, ascending.
        positions: int64 [H] its 0-based position in that query's ranking,
            ascending within a row.
        order: int64 [H] how many relevant items sit at or above it (1-based).
        n_rows: Number of queries in the chunk.
    """

    rows: np.ndarray
    positions: np.ndarray
    order: np.ndarray
    n_rows: int

    @classmethod
    def from_relevance(cls, rel: np.ndarray) -> Hits:
        """The hits of a boolean relevance matrix [B, G] in rank order."""
        rows, cols = np.nonzero(rel)  # row-major: each row's positions ascending
        return cls.from_positions(rows, cols, rel.shape[0])

    @classmethod
    def from_positions(cls, rows: np.ndarray, positions: np.ndarray, n_rows: int) -> Hits:
        """The hits from (row, position) pairs sorted by row, then position."""
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        counts = np.bincount(rows, minlength=n_rows)
        starts = np.cumsum(counts) - counts
        order = np.arange(rows.size, dtype=np.int64) - starts[rows] + 1
        return cls(rows, positions, order, n_rows)

    def count(self, keep: np.ndarray | None = None) -> np.ndarray:
        """float64 [n_rows]: hits per row (only those where ``keep``)."""
        rows = self.rows if keep is None else self.rows[keep]
        return np.bincount(rows, minlength=self.n_rows).astype(np.float64)


def average_precision(hits: Hits, cutoff: int | None = None) -> np.ndarray:
    """AP of each row, over the top ``cutoff`` positions (None: the whole ranking).

    AP = (1/R) sum over relevant positions k of (hits in 1..k) / k, R the
    relevant items inside the cut-off; 0 when R = 0.
    """
    keep = None if cutoff is None else hits.positions < cutoff
    precision = hits.order / (hits.positions + 1.0)
    rows = hits.rows if keep is None else hits.rows[keep]
    total = np.bincount(rows, weights=precision if keep is None else precision[keep],
                        minlength=hits.n_rows)
    count = hits.count(keep)
    return np.divide(total, count, out=np.zeros(hits.n_rows), where=count > 0)


def precision_at(hits: Hits, k: int) -> np.ndarray:
    """Relevant items in the top ``k`` of each row, divided by ``k``."""
    return hits.count(hits.positions < k) / k


@dataclass(frozen=True)
class Metric:
    """One reported metric.

    Attributes:
        key: Summary name: the ``run_metrics`` column and ``icfrr.evaluate`` key.
        column: Per-query name: the ``query_metrics`` column and ``icfrr.per_query`` key.
        label: Human-readable name (tables, charts).
        cutoff: Positions it looks at (None: the whole ranking).
        kernel: Hits -> float64 [n_rows], the per-query values.
        description: One line for help texts and docs.
    """

    key: str
    column: str
    label: str
    cutoff: int | None
    kernel: Callable[[Hits], np.ndarray]
    description: str


def _precision_metric(k: int) -> Metric:
    return Metric(f"p_{k}", f"p_{k}", f"P@{k}", k, lambda h: precision_at(h, k),
                  f"relevant items in the top {k}, divided by {k}")


#: Every metric, in display order. The first is the headline metric.
METRICS: tuple[Metric, ...] = (
    Metric("map_all", "ap", "mAP@all", None, lambda h: average_precision(h),
           "mean average precision over the full ranking"),
    Metric("map_200", "ap_200", "mAP@200", 200, lambda h: average_precision(h, 200),
           "mean average precision over the top 200 (R counts the relevant items there)"),
    _precision_metric(25),
    _precision_metric(100),
    _precision_metric(200),
)

#: Summary keys in display order (``run_metrics`` columns).
METRIC_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS)
#: Per-query columns in display order (``query_metrics`` columns).
QUERY_COLUMNS: tuple[str, ...] = tuple(m.column for m in METRICS)
#: Summary key -> label.
LABELS: dict[str, str] = {m.key: m.label for m in METRICS}
#: The metric that picks the best iteration and the best run, and leads every table.
HEADLINE: Metric = METRICS[0]


def metric(key: str) -> Metric:
    """The registry entry of a summary key or per-query column.

    Raises:
        KeyError: With the known keys, when ``key`` is not a metric.
    """
    for m in METRICS:
        if key in (m.key, m.column):
            return m
    raise KeyError(f"unknown metric {key!r}; known: {', '.join(METRIC_KEYS)}")


def best_iteration(metrics: Sequence[Mapping[str, float]]) -> int:
    """The iteration with the highest headline metric (the earliest on ties; 0 when all NaN).

    Args:
        metrics: One summary per iteration (0 = the initial ranking).
    """
    values = [float(m[HEADLINE.key]) for m in metrics]
    finite = [(v, -i) for i, v in enumerate(values) if not math.isnan(v)]
    return -max(finite)[1] if finite else 0
