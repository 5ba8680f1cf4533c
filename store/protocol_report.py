"""The protocol report's reads: query labels, every stored (run, iteration) with its per-query values.

:func:`stored_candidates` and friends read ``runs``, ``query_metrics`` and
``items`` through a reader connection; the selection, the tests and the
intervals are :mod:`icfrr.protocol_comparison`'s; :func:`protocol_comparison`
and :func:`grid_scores` join the reads to it, for ``python -m jobs.report
--protocol`` and the dashboard's Methods section. Stores written before every
iteration's per-query metrics were kept hold iterations 0, the best and the
last per run: selection then uses the stored iterations, and
:attr:`ProtocolComparison.stored_note` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from icfrr.protocol_comparison import (CI_UNITS, Candidates, ProtocolComparison, ProtocolOptions,
                                       build_protocol_comparison, check_labels, grid_rows)
from icfrr.registry import METRICS
from store.report import finished_runs, pick_distances

_COLUMN = {m.key: m.column for m in METRICS}


def query_labels(con: duckdb.DuckDBPyConnection, dataset_id: int) -> np.ndarray:
    """int64 [Q]: the label of each query of a dataset, by ``items.idx`` (-1: unknown)."""
    rows = con.execute("SELECT idx, label FROM items WHERE dataset_id = ? AND side = 'query' "
                       "ORDER BY idx", [dataset_id]).fetchall()
    labels = np.full(max((int(r[0]) for r in rows), default=-1) + 1, -1, dtype=np.int64)
    for idx, label in rows:
        labels[int(idx)] = int(label)
    return labels


def stored_candidates(
    con: duckdb.DuckDBPyConnection, dataset_id: int, artifact_id: int, n_query: int,
    method_key: str | None = None,
) -> dict[str, Candidates]:
    """Method -> its :class:`Candidates`: every finished run's stored iterations on these
    distances (only ``method_key``'s when given)."""
    cols = ", ".join(f"qm.{_COLUMN[m.key]}" for m in METRICS)
    got = con.execute(f"""
        SELECT r.method, qm.run_id, qm.iteration, qm.query_idx, {cols}
        FROM query_metrics qm JOIN runs r ON r.run_id = qm.run_id
        JOIN sweeps s ON s.sweep_id = r.sweep_id
        WHERE r.status = 'done' AND s.dataset_id = ? AND coalesce(r.artifact_id, s.artifact_id) = ?
          AND (?::VARCHAR IS NULL OR r.method = ?)
        ORDER BY r.method, qm.run_id, qm.iteration, qm.query_idx
    """, [dataset_id, artifact_id, method_key, method_key]).fetchnumpy()
    meth = np.asarray(got["method"]).astype(str)
    out: dict[str, Candidates] = {}
    for key in dict.fromkeys(meth.tolist()):
        rows = np.flatnonzero(meth == key)
        pairs = np.stack([np.asarray(got["run_id"])[rows], np.asarray(got["iteration"])[rows]], 1)
        uniq, cand = np.unique(pairs.astype(np.int64), axis=0, return_inverse=True)
        qidx = np.asarray(got["query_idx"])[rows].astype(np.int64)
        values = {}
        for m in METRICS:
            v = np.full((uniq.shape[0], n_query), np.nan)
            col = np.ma.filled(np.ma.asarray(got[m.column])[rows].astype(np.float64), np.nan)
            v[cand.reshape(-1), qidx] = col
            values[m.column] = v
        out[key] = Candidates(key, uniq[:, 0], uniq[:, 1], values)
    return out


def partially_stored_runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[int]) -> list[int]:
    """The runs whose ``query_metrics`` lack some iteration 0..n_iter (older stores)."""
    rows = con.execute("""
        SELECT r.run_id FROM runs r LEFT JOIN query_metrics qm ON qm.run_id = r.run_id
        WHERE r.run_id IN (SELECT unnest(?::INTEGER[]))
        GROUP BY r.run_id, r.n_iter HAVING count(DISTINCT qm.iteration) < r.n_iter + 1
        ORDER BY 1
    """, [list(map(int, run_ids))]).fetchall()
    return [int(r[0]) for r in rows]


def grid_scores(
    con: duckdb.DuckDBPyConnection, *, dataset_id: int, artifact_id: int,
    reported_classes: Sequence[int], method_key: str,
) -> pd.DataFrame:
    """Every configuration of one method on these distances, scored on the reported queries.

    The sensitivity of a method (:func:`icfrr.protocol_comparison.grid_rows`):
    one row per stored (run, iteration >= 1) candidate of ``method_key``'s
    finished runs, with its parameters and its mAP@all over the queries of
    ``reported_classes`` (a :class:`ProtocolComparison`'s ``reported_classes``).

    Returns:
        Columns ``run_id``, ``iteration``, one column per registry parameter
        of the method and ``map_all``; sorted by run and iteration. Empty
        (same columns) without such runs.
    """
    labels = query_labels(con, dataset_id)
    cands = stored_candidates(con, dataset_id, artifact_id, labels.size, method_key).get(method_key)
    params = {r.run_id: r.params for r in finished_runs(con, dataset_id, artifact_id)}
    columns, rows = grid_rows(cands, labels, reported_classes, params, method_key)
    return pd.DataFrame(rows, columns=columns)


def protocol_comparison(con: duckdb.DuckDBPyConnection, *, dataset: str | int | None = None,
                        backbone: str | int | None = None, **options: Any) -> ProtocolComparison:
    """The protocol table of a store: its reads handed to
    :func:`icfrr.protocol_comparison.build_protocol_comparison`.

    Args:
        con: A reader connection (``store.db.connect_reader``).
        dataset / backbone: As for ``store.report.comparison``.
        **options: :class:`icfrr.protocol_comparison.ProtocolOptions`' fields
            (protocol, metrics, baseline, test, alpha, tune_fraction, folds,
            seed, ci, n_boot), checked before anything is read.

    Raises:
        ReportError: One line: bad arguments, no labels, fewer than 2 query
            classes, more folds than classes, an unknown dataset or baseline.
    """
    opts = ProtocolOptions(**options)
    where = pick_distances(con, dataset, backbone)
    labels = check_labels(query_labels(con, where.dataset_id), where.dataset)
    cands = stored_candidates(con, where.dataset_id, where.artifact_id, labels.size)
    partial = partially_stored_runs(con, [int(r) for c in cands.values()
                                          if np.any(c.iterations >= 1) for r in np.unique(c.run_ids)])
    runs = {r.run_id: r for r in finished_runs(con, where.dataset_id, where.artifact_id)}
    return build_protocol_comparison(cands, labels, runs, where, opts, partial)


__all__ = ["CI_UNITS", "Candidates", "ProtocolComparison", "grid_scores", "partially_stored_runs",
           "protocol_comparison", "query_labels", "stored_candidates"]
