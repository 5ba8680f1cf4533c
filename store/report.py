"""The comparison report's reads: which dataset and distances, their finished runs, per-query values.

Base tables only (``runs``, ``run_metrics``, ``query_metrics``, ``sweeps``,
``datasets``, ``artifacts``), through a reader connection. The analysis (best
run, paired tests, Holm) is :mod:`icfrr.comparison`'s and the formats are
``jobs.report_format``'s; :func:`comparison` joins the reads to the analysis,
for ``python -m jobs.report`` and the dashboard.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np

from icfrr.comparison import (Comparison, ComparisonOptions, Distances, ReportError, RunSummary,
                              build_comparison, query_columns)
from icfrr.registry import METRIC_KEYS


def pick_dataset(con: duckdb.DuckDBPyConnection, dataset: str | int | None) -> tuple[int, str]:
    """``(dataset_id, name)`` of the dataset to report: by name or id, or the only one with finished runs.

    Raises:
        ReportError: No finished runs, an unknown dataset, or several that fit.
    """
    rows = con.execute("""
        SELECT d.dataset_id, d.name FROM datasets d
        WHERE EXISTS (SELECT 1 FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
                      WHERE s.dataset_id = d.dataset_id AND r.status = 'done')
        ORDER BY d.dataset_id
    """).fetchall()
    if not rows:
        raise ReportError("the store holds no finished runs; run python -m jobs.sweep first")
    listing = ", ".join(f"{name} (id {i})" for i, name in rows)
    if dataset is None:
        if len(rows) > 1:
            raise ReportError(f"the store holds several datasets: {listing}; pick one with --dataset")
        return int(rows[0][0]), str(rows[0][1])
    hits = [r for r in rows if r[1] == dataset]
    if not hits and (isinstance(dataset, int) or str(dataset).isdigit()):
        hits = [r for r in rows if r[0] == int(dataset)]
    if not hits:
        raise ReportError(f"no finished runs on dataset {dataset!r}; datasets with runs: {listing}")
    if len(hits) > 1:
        ids = ", ".join(str(r[0]) for r in hits)
        raise ReportError(f"several datasets are named {dataset!r} (ids {ids}); pass --dataset ID")
    return int(hits[0][0]), str(hits[0][1])


_ARTIFACT = "coalesce(r.artifact_id, s.artifact_id)"


def pick_artifact(
    con: duckdb.DuckDBPyConnection, dataset_id: int, name: str, backbone: str | int | None
) -> tuple[int, str]:
    """``(artifact_id, backbone)`` of the distances to report: by backbone name or artifact id,
    or the only ones the dataset's finished runs use.

    Raises:
        ReportError: An unknown backbone, or several distance sets that fit.
    """
    rows = con.execute(f"""
        SELECT {_ARTIFACT} AS artifact_id, any_value(a.backbone), any_value(a.per_class)
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        LEFT JOIN artifacts a ON a.artifact_id = {_ARTIFACT}
        WHERE s.dataset_id = ? AND r.status = 'done'
        GROUP BY ALL ORDER BY 1
    """, [dataset_id]).fetchall()
    listing = ", ".join(f"{bb} per_class {pc} (artifact {i})" for i, bb, pc in rows)
    if backbone is None:
        if len(rows) > 1:
            raise ReportError(f"dataset {name} has runs on several distance sets: {listing}; "
                              "pick one with --backbone NAME or ARTIFACT_ID")
        hits = rows
    else:
        hits = [r for r in rows if r[1] == backbone]
        if not hits and (isinstance(backbone, int) or str(backbone).isdigit()):
            hits = [r for r in rows if r[0] == int(backbone)]
        if not hits:
            raise ReportError(f"no runs of dataset {name} on backbone {backbone!r}; "
                              f"there are: {listing}")
        if len(hits) > 1:
            raise ReportError(f"backbone {backbone!r} has several distance sets on {name}: "
                              f"{listing}; pass --backbone ARTIFACT_ID")
    return int(hits[0][0]), str(hits[0][1])


def _metric_columns(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {c[0] for c in con.execute("SELECT * FROM run_metrics LIMIT 0").description}


def finished_runs(con: duckdb.DuckDBPyConnection, dataset_id: int, artifact_id: int) -> list[RunSummary]:
    """Every finished run on these distances, with its last and initial metrics, by run id."""
    present = _metric_columns(con)
    keys = [k for k in METRIC_KEYS if k in present]  # a metric newer than the store: NaN
    cols = ", ".join([f"m.{k}" for k in keys] + [f"m0.{k}" for k in keys])
    rows = con.execute(f"""
        WITH last AS (SELECT run_id, max(iteration) AS it FROM run_metrics GROUP BY run_id)
        SELECT r.run_id, r.method, r.params, l.it{", " + cols if cols else ""}
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN last l ON l.run_id = r.run_id
        JOIN run_metrics m ON m.run_id = r.run_id AND m.iteration = l.it
        LEFT JOIN run_metrics m0 ON m0.run_id = r.run_id AND m0.iteration = 0
        WHERE r.status = 'done' AND s.dataset_id = ? AND {_ARTIFACT} = ?
        ORDER BY r.run_id
    """, [dataset_id, artifact_id]).fetchall()

    def values(vals: Sequence[object]) -> dict[str, float]:
        got = {k: math.nan if v is None else float(v) for k, v in zip(keys, vals)}
        return {k: got.get(k, math.nan) for k in METRIC_KEYS}

    out = []
    for run_id, meth, params, last, *vals in rows:
        try:
            parsed = json.loads(params) if params else {}
        except json.JSONDecodeError:
            parsed = {}
        out.append(RunSummary(int(run_id), str(meth), parsed if isinstance(parsed, dict) else {},
                        int(last), values(vals[:len(keys)]), values(vals[len(keys):])))
    return out


def query_values(con: duckdb.DuckDBPyConnection, run_id: int, iteration: int,
                  columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per-query values of one stored (run, iteration): int64 query_idx [n] and float64 [n, len(columns)].

    NULL (queries of unknown label, or a column newer than the store) is NaN.
    """
    present = {c[0] for c in con.execute("SELECT * FROM query_metrics LIMIT 0").description}
    sel = ", ".join(f"{c}::DOUBLE" if c in present else "NULL::DOUBLE" for c in columns)
    got = con.execute(f"SELECT query_idx, {sel} FROM query_metrics WHERE run_id = ? AND "
                      "iteration = ? ORDER BY query_idx", [run_id, iteration]).fetchnumpy()
    cols = list(got.values())
    idx = np.asarray(cols[0], dtype=np.int64)
    vals = [np.ma.filled(np.ma.asarray(c, dtype=np.float64), np.nan) for c in cols[1:]]
    return idx, (np.stack(vals, axis=1) if vals else np.empty((idx.size, 0)))


def pick_distances(con: duckdb.DuckDBPyConnection, dataset: str | int | None,
                   backbone: str | int | None) -> Distances:
    """The dataset (:func:`pick_dataset`) and its distances (:func:`pick_artifact`) to report on."""
    dataset_id, name = pick_dataset(con, dataset)
    artifact_id, backbone_name = pick_artifact(con, dataset_id, name, backbone)
    return Distances(name, dataset_id, artifact_id, backbone_name)


def comparison(con: duckdb.DuckDBPyConnection, *, dataset: str | int | None = None,
               backbone: str | int | None = None, **options: Any) -> Comparison:
    """The comparison table of a store: its reads handed to :func:`icfrr.comparison.build_comparison`.

    Args:
        con: A reader connection (``store.db.connect_reader``).
        dataset: Dataset name or id; None when the store holds runs on one
            dataset only.
        backbone: Which distances (``artifacts``) of the dataset: a backbone
            name or an artifact id; None when the dataset's runs use one.
        **options: :class:`icfrr.comparison.ComparisonOptions`' fields (metrics,
            baseline, test, alpha), checked before anything is read.

    Raises:
        ReportError: With a one-line message: no runs, an unknown or ambiguous
            dataset/backbone, an unknown metric, test, method or run.
    """
    opts = ComparisonOptions(**options)
    where = pick_distances(con, dataset, backbone)
    runs = finished_runs(con, where.dataset_id, where.artifact_id)
    if not runs:
        raise ReportError(f"the runs of {where} hold no metrics; rerun the sweep")
    columns = query_columns(opts.metrics or ())
    return build_comparison(runs, lambda run_id, it: query_values(con, run_id, it, columns),
                            where, opts)


__all__ = ["ReportError", "comparison", "finished_runs", "pick_artifact", "pick_dataset",
           "pick_distances", "query_values"]
