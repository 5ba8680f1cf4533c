"""The dashboard's read API: every query the dashboard runs, returning DataFrames.

Each function takes an open connection (``store.db.connect_reader``) and
only reads the base tables of docs/SPEC.md section 6 plus our own columns, with the
SQL written here: never a view stored in the file (a store is untrusted input). "Before"
is the initial ranking (iteration 0) unless a ``baseline_iteration`` is
given; "after" is the iteration asked for, by default a run's last one.
Queries of unknown label (-1) have no AP and are left out of every metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pandas as pd

from icfrr.registry import HEADLINE, METHODS, METRIC_KEYS, QUERY_COLUMNS, Method, Metric, method
from icfrr.registry import METRICS as _REGISTRY_METRICS

#: The metric columns of ``run_metrics``, in display order (the registry's).
METRICS: tuple[str, ...] = METRIC_KEYS


def before_column(m: Metric) -> str:
    """The :func:`runs` column of a metric at iteration 0 (``map_all`` -> ``map_all_before``)."""
    return f"{m.key}_before"


def after_column(m: Metric) -> str:
    """The :func:`runs` column of a metric at the last iteration (``map_all_after``)."""
    return f"{m.key}_after"


def gain_column(m: Metric) -> str:
    """The :func:`runs` column of a metric's change, last iteration minus iteration 0
    (``map_all_gain``; the store makes it for the headline metric only)."""
    return f"{m.key}_gain"


def best_column(m: Metric) -> str:
    """The :func:`runs` column of a metric's value at the best iteration (``best_map_all``;
    the headline metric only)."""
    return f"best_{m.key}"


def registered(key: object) -> Method | None:
    """The registry entry of a stored method key, None for a method outside the registry."""
    try:
        return method(str(key))
    except KeyError:
        return None


def has_params(key: object, *names: str) -> bool:
    """Whether the method ``key`` is registered with a grid parameter of every one of ``names``
    (``has_params("icfrr", "kg", "kq")``); False outside the registry."""
    m = registered(key)
    return m is not None and set(names) <= {p.name for p in m.params}


def explainable(key: object) -> bool:
    """Whether the method ``key`` casts votes that can be replayed (``Method.explainable``)."""
    m = registered(key)
    return m is not None and m.explainable


def iterative(key: object) -> bool:
    """Whether the method ``key`` yields one ranking per iteration (``Method.iterative``)."""
    m = registered(key)
    return m is not None and m.iterative


#: The two parameters of the gain grid (:func:`sweep_grid`): its rows and columns.
GRID_AXES: tuple[str, str] = ("kg", "kq")
#: The parameters ``runs`` keeps as its own columns (NULL for other methods; docs/SPEC.md
#: section 6): those of the methods with a KG x KQ grid (ICFRR's kg, kq, beta, n_iter,
#: variant), in registry order. Every other parameter is in ``runs.params``.
PARAM_COLUMNS: tuple[str, ...] = tuple(dict.fromkeys(
    p.name for m in METHODS if has_params(m.key, *GRID_AXES) for p in m.params))

_H = HEADLINE.key

_RUNS_SQL = """
WITH span AS (
    SELECT run_id, max(iteration) AS last_iteration,
           first(iteration ORDER BY {h} DESC NULLS LAST, iteration) AS best_iteration,
           max({h}) AS {best}
    FROM run_metrics GROUP BY run_id
)
SELECT r.run_id, r.sweep_id, d.dataset_id, d.name AS dataset,
       coalesce(r.artifact_id, s.artifact_id) AS artifact_id, a.backbone, a.per_class,
       r.method, {param_columns}, r.params, r.device, r.seconds,
       r.finished_at, sp.last_iteration, sp.best_iteration, sp.{best},
       {before_after}
FROM runs r
JOIN sweeps s ON s.sweep_id = r.sweep_id
JOIN datasets d ON d.dataset_id = s.dataset_id
LEFT JOIN artifacts a ON a.artifact_id = coalesce(r.artifact_id, s.artifact_id)
LEFT JOIN span sp ON sp.run_id = r.run_id
LEFT JOIN run_metrics m0 ON m0.run_id = r.run_id AND m0.iteration = 0
LEFT JOIN run_metrics m1 ON m1.run_id = r.run_id AND m1.iteration = sp.last_iteration
WHERE r.status = 'done' {where}
ORDER BY r.run_id
""".format(
    before_after=",\n       ".join(
        [f"m0.{m.key} AS {before_column(m)}" for m in _REGISTRY_METRICS]
        + [f"m1.{m.key} AS {after_column(m)}" for m in _REGISTRY_METRICS]
        + [f"m1.{_H} - m0.{_H} AS {gain_column(HEADLINE)}",
           f"sp.{best_column(HEADLINE)} - m0.{_H} AS best_gain"]
    ),
    h=_H,
    best=best_column(HEADLINE),
    param_columns=", ".join(f"r.{c}" for c in PARAM_COLUMNS),
    where="{where}",
)


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object] = ()) -> pd.DataFrame:
    return con.execute(sql, list(params)).df()


def has_results(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store holds at least one finished run."""
    row = con.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()
    return bool(row and row[0])


def sweeps(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every sweep with its dataset, backbone and number of finished runs.

    Returns:
        Columns sweep_id, dataset, backbone, per_class, command, started_at,
        finished_at, status, n_runs; newest sweep first.
    """
    return _df(con, """
        SELECT s.sweep_id, d.name AS dataset, a.backbone, a.per_class, s.command,
               s.started_at, s.finished_at, s.status,
               count(r.run_id) FILTER (WHERE r.status = 'done') AS n_runs
        FROM sweeps s
        JOIN datasets d ON d.dataset_id = s.dataset_id
        LEFT JOIN artifacts a ON a.artifact_id = s.artifact_id
        LEFT JOIN runs r ON r.sweep_id = s.sweep_id
        GROUP BY ALL
        ORDER BY s.sweep_id DESC
    """)


def runs(con: duckdb.DuckDBPyConnection, sweep_id: int | None = None) -> pd.DataFrame:
    """Finished runs with their dataset, parameters and metrics before and after.

    Args:
        con: A reader connection.
        sweep_id: Only the runs of this sweep (all sweeps when None).

    Returns:
        One row per run: run_id, sweep_id, dataset_id, dataset, artifact_id
        (the distances it re-ranked), backbone, per_class, method, the
        :data:`PARAM_COLUMNS` (kg, kq, beta, n_iter, variant; all but n_iter
        NULL for baselines), params (JSON text),
        device, seconds, finished_at, last_iteration, best_iteration,
        ``best_<headline>`` (:func:`best_column`), ``<metric>_before``
        (iteration 0) and ``<metric>_after`` (last iteration) for each of
        ``METRICS``, ``<headline>_gain`` (after - before; :func:`gain_column`)
        and best_gain (best iteration - before); the headline is
        ``icfrr.registry.HEADLINE`` (``map_all``).
    """
    if sweep_id is None:
        return _df(con, _RUNS_SQL.format(where=""))
    return _df(con, _RUNS_SQL.format(where="AND r.sweep_id = ?"), [sweep_id])


def metrics_by_iteration(
    con: duckdb.DuckDBPyConnection, run_ids: Sequence[int]
) -> pd.DataFrame:
    """Every iteration's metrics of the given runs.

    Returns:
        Long table: run_id, iteration and the ``METRICS`` columns, sorted.
    """
    if not run_ids:
        return pd.DataFrame(columns=["run_id", "iteration", *METRICS])
    return _df(con, f"""
        SELECT run_id, iteration, {", ".join(METRICS)}
        FROM run_metrics WHERE list_contains(?, run_id)
        ORDER BY run_id, iteration
    """, [[int(r) for r in run_ids]])


def stored_iterations(con: duckdb.DuckDBPyConnection, run_id: int) -> list[int]:
    """Iterations of a run whose rankings (and so per-query metrics) were kept: 0, the best, the last.

    ``query_metrics`` holds every iteration in stores written since the
    selection protocols (``icfrr.protocols``); the pages that show a ranking
    offer only the iterations that have one.
    """
    rows = con.execute(
        "SELECT DISTINCT iteration FROM rankings WHERE run_id = ? ORDER BY iteration",
        [run_id],
    ).fetchall()
    return [int(r[0]) for r in rows]


def dataset_root(con: duckdb.DuckDBPyConnection, run_id: int) -> str | None:
    """The recorded root folder of a run's dataset (None for imported distances)."""
    row = con.execute("""
        SELECT d.root FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN datasets d ON d.dataset_id = s.dataset_id WHERE r.run_id = ?
    """, [run_id]).fetchone()
    return None if row is None else row[0]


def classes(con: duckdb.DuckDBPyConnection, run_id: int) -> pd.DataFrame:
    """The known query classes of a run's dataset.

    Returns:
        label, class_name, n_queries; sorted by class name then label.
    """
    return _df(con, """
        SELECT i.label, any_value(i.class_name) AS class_name, count(*) AS n_queries
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query'
        WHERE r.run_id = ? AND i.label <> -1
        GROUP BY i.label ORDER BY class_name, i.label
    """, [run_id])


def class_before_after(
    con: duckdb.DuckDBPyConnection, run_id: int, iteration: int, baseline_iteration: int = 0
) -> pd.DataFrame:
    """Per-class mAP of a run, before and after, from the base tables.

    The same numbers as the schema's ``class_metrics`` view (kept for SQL
    users), computed here with our own SQL: a reader never runs a view
    stored in the file.

    Args:
        con: A reader connection.
        run_id: The run.
        iteration: The "after" iteration (must be stored for the run).
        baseline_iteration: The "before" iteration.

    Returns:
        label, class_name, n_queries, map_before, map_after, gain
        (after - before); sorted by gain, largest loss first.
    """
    return _df(con, """
        WITH cm AS (
            SELECT qm.iteration, i.label, any_value(i.class_name) AS class_name,
                   count(*) AS n_queries, avg(qm.ap) AS map
            FROM query_metrics qm
            JOIN runs r ON r.run_id = qm.run_id
            JOIN sweeps s ON s.sweep_id = r.sweep_id
            JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query'
                        AND i.idx = qm.query_idx
            WHERE qm.run_id = ? AND qm.iteration IN (?, ?) AND i.label <> -1
            GROUP BY qm.iteration, i.label
        )
        SELECT b.label, b.class_name, b.n_queries, b.map AS map_before, a.map AS map_after,
               a.map - b.map AS gain
        FROM cm b JOIN cm a ON a.label = b.label
        WHERE b.iteration = ? AND a.iteration = ?
        ORDER BY gain, b.label
    """, [run_id, baseline_iteration, iteration, baseline_iteration, iteration])


def query_changes(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    iteration: int,
    *,
    baseline_iteration: int = 0,
    label: int | None = None,
) -> pd.DataFrame:
    """Queries of a run ranked by AP change, largest loss first.

    Args:
        con: A reader connection.
        run_id: The run.
        iteration: The "after" iteration.
        baseline_iteration: The "before" iteration.
        label: Only queries of this class (all known classes when None).

    Returns:
        query_idx, label, class_name, path (NULL without images), ap_before,
        ap_after, delta (after - before), ap_200_before, ap_200_after,
        first_relevant_before, first_relevant_after; sorted by delta then
        query_idx. Queries of unknown label are left out.
    """
    return _df(con, """
        SELECT b.query_idx, i.label, i.class_name, i.path,
               b.ap AS ap_before, a.ap AS ap_after, a.ap - b.ap AS delta,
               b.ap_200 AS ap_200_before, a.ap_200 AS ap_200_after,
               b.first_relevant_rank AS first_relevant_before,
               a.first_relevant_rank AS first_relevant_after
        FROM query_metrics b
        JOIN query_metrics a ON a.run_id = b.run_id AND a.query_idx = b.query_idx
        JOIN runs r ON r.run_id = b.run_id
        JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query' AND i.idx = b.query_idx
        WHERE b.run_id = ? AND b.iteration = ? AND a.iteration = ?
          AND i.label <> -1 AND b.ap IS NOT NULL AND a.ap IS NOT NULL
          AND (? IS NULL OR i.label = ?)
        ORDER BY delta, b.query_idx
    """, [run_id, baseline_iteration, iteration, label, label])


def query_item(con: duckdb.DuckDBPyConnection, run_id: int, query_idx: int) -> dict | None:
    """One query of a run's dataset: ``{query_idx, label, class_name, path}`` or None."""
    row = con.execute("""
        SELECT i.idx, i.label, i.class_name, i.path
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query' AND i.idx = ?
        WHERE r.run_id = ?
    """, [query_idx, run_id]).fetchone()
    if row is None:
        return None
    return {"query_idx": int(row[0]), "label": int(row[1]), "class_name": row[2], "path": row[3]}


def n_queries(con: duckdb.DuckDBPyConnection, run_id: int) -> int:
    """Number of queries in a run's dataset."""
    row = con.execute("""
        SELECT d.n_query FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN datasets d ON d.dataset_id = s.dataset_id WHERE r.run_id = ?
    """, [run_id]).fetchone()
    return 0 if row is None else int(row[0])


def query_metrics_by_iteration(
    con: duckdb.DuckDBPyConnection, run_id: int, query_idx: int
) -> pd.DataFrame:
    """One query's stored per-iteration metrics.

    Returns:
        iteration, the registry's per-query columns, first_relevant_rank.
    """
    return _df(con, f"""
        SELECT iteration, {", ".join(QUERY_COLUMNS)}, first_relevant_rank
        FROM query_metrics WHERE run_id = ? AND query_idx = ? ORDER BY iteration
    """, [run_id, query_idx])


def per_query_table(con: duckdb.DuckDBPyConnection, run_id: int, iteration: int) -> pd.DataFrame:
    """Every query's stored metrics of one (run, iteration), with its class and name.

    Returns:
        One row per query, by query_idx: run_id, iteration, query_idx, label
        (-1: unknown), class_name, name (``items.path``: the query's file
        relative to the dataset root, or the name it was given; NULL when
        none was), the registry's per-query columns (NULL for queries of
        unknown label) and first_relevant_rank (1-based; NULL when nothing
        relevant). Empty when the iteration was not kept
        (:func:`stored_iterations`).
    """
    cols = ", ".join(f"qm.{c}" for c in QUERY_COLUMNS)
    return _df(con, f"""
        SELECT qm.run_id, qm.iteration, qm.query_idx, i.label, i.class_name, i.path AS name,
               {cols}, qm.first_relevant_rank
        FROM query_metrics qm
        JOIN runs r ON r.run_id = qm.run_id
        JOIN sweeps s ON s.sweep_id = r.sweep_id
        LEFT JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query'
                          AND i.idx = qm.query_idx
        WHERE qm.run_id = ? AND qm.iteration = ?
        ORDER BY qm.query_idx
    """, [run_id, iteration])


def query_topn(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    query_idx: int,
    iteration: int,
    *,
    baseline_iteration: int = 0,
    top_n: int | None = None,
) -> pd.DataFrame:
    """One query's stored top-N before and after, with labels, relevance and paths.

    Args:
        con: A reader connection.
        run_id: The run.
        query_idx: The query.
        iteration: The "after" iteration.
        baseline_iteration: The "before" iteration.
        top_n: Keep ranks ``<= top_n`` on each side (all stored ranks when None).

    Returns:
        side ('before' or 'after'), rank, gallery_idx, score, label,
        class_name, path, relevant (same known label as the query),
        rank_before and rank_after (the item's rank in each list, NULL when
        it is outside that list's stored top-N); sorted by side then rank.
    """
    limit = 2**31 - 1 if top_n is None else int(top_n)
    return _df(con, """
        WITH q AS (
            SELECT i.label AS q_label, s.dataset_id
            FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
            JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query' AND i.idx = ?
            WHERE r.run_id = ?
        ),
        b AS (SELECT rank, gallery_idx, score FROM rankings
              WHERE run_id = ? AND query_idx = ? AND iteration = ?),
        a AS (SELECT rank, gallery_idx, score FROM rankings
              WHERE run_id = ? AND query_idx = ? AND iteration = ?),
        both_sides AS (
            SELECT 'before' AS side, b.rank, b.gallery_idx, b.score,
                   b.rank AS rank_before, a.rank AS rank_after
            FROM b LEFT JOIN a ON a.gallery_idx = b.gallery_idx WHERE b.rank <= ?
            UNION ALL
            SELECT 'after' AS side, a.rank, a.gallery_idx, a.score,
                   b.rank AS rank_before, a.rank AS rank_after
            FROM a LEFT JOIN b ON b.gallery_idx = a.gallery_idx WHERE a.rank <= ?
        )
        SELECT x.side, x.rank, x.gallery_idx, x.score, g.label, g.class_name, g.path,
               (g.label = q.q_label AND q.q_label <> -1) AS relevant,
               x.rank_before, x.rank_after
        FROM both_sides x CROSS JOIN q
        LEFT JOIN items g ON g.dataset_id = q.dataset_id AND g.side = 'gallery'
                         AND g.idx = x.gallery_idx
        ORDER BY x.side DESC, x.rank
    """, [query_idx, run_id, run_id, query_idx, baseline_iteration,
          run_id, query_idx, iteration, limit, limit])


def sweep_grid(con: duckdb.DuckDBPyConnection, sweep_id: int) -> pd.DataFrame:
    """A sweep's configurations of the methods with a KG and a KQ (:data:`GRID_AXES`), with
    their headline gain, for the KG x KQ heatmap.

    Runs of other methods (the baselines) are left out.

    Returns:
        run_id, the :data:`PARAM_COLUMNS`, ``<headline>_before``, ``<headline>_after``,
        ``<headline>_gain``, best_iteration, ``best_<headline>``, best_gain.
    """
    all_runs = runs(con, sweep_id)
    cols = ["run_id", *PARAM_COLUMNS, before_column(HEADLINE),
            after_column(HEADLINE), gain_column(HEADLINE), "best_iteration", best_column(HEADLINE),
            "best_gain"]
    on_grid = [has_params(k, *GRID_AXES) for k in all_runs.method]
    return all_runs.loc[on_grid, cols].reset_index(drop=True)


def paired_ap(
    con: duckdb.DuckDBPyConnection,
    run_a: int,
    iteration_a: int,
    run_b: int,
    iteration_b: int,
) -> pd.DataFrame:
    """Per-query AP of two (run, iteration) rankings of the same dataset, aligned.

    A run against its initial ranking is ``run_b = run_a, iteration_b = 0``.

    Returns:
        query_idx, label, class_name, ap_a, ap_b for the queries of known
        label that both sides stored; sorted by query_idx.

    Raises:
        ValueError: The two runs belong to different datasets.
    """
    ds = con.execute("""
        SELECT DISTINCT s.dataset_id FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        WHERE r.run_id IN (?, ?)
    """, [run_a, run_b]).fetchall()
    if len(ds) > 1:
        raise ValueError(f"runs {run_a} and {run_b} belong to different datasets")
    return _df(con, """
        SELECT a.query_idx, i.label, i.class_name, a.ap AS ap_a, b.ap AS ap_b
        FROM query_metrics a
        JOIN query_metrics b ON b.query_idx = a.query_idx
        JOIN runs r ON r.run_id = a.run_id
        JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query' AND i.idx = a.query_idx
        WHERE a.run_id = ? AND a.iteration = ? AND b.run_id = ? AND b.iteration = ?
          AND i.label <> -1 AND a.ap IS NOT NULL AND b.ap IS NOT NULL
        ORDER BY a.query_idx
    """, [run_a, iteration_a, run_b, iteration_b])


def run_info(con: duckdb.DuckDBPyConnection, run_id: int) -> dict | None:
    """One run's row: ``{run_id, dataset_id, method, <PARAM_COLUMNS>, status}`` or None.

    Any status (callers decide what an unfinished run means); None when no such run.
    """
    row = con.execute(f"""
        SELECT r.run_id, s.dataset_id, r.method, {", ".join(f"r.{c}" for c in PARAM_COLUMNS)}, r.status
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id WHERE r.run_id = ?
    """, [run_id]).fetchone()
    if row is None:
        return None
    keys = ("run_id", "dataset_id", "method", *PARAM_COLUMNS, "status")
    return dict(zip(keys, row))


def ranking_iterations(con: duckdb.DuckDBPyConnection, run_id: int) -> list[int]:
    """Iterations of a run whose top-N rankings are stored, ascending."""
    rows = con.execute(
        "SELECT DISTINCT iteration FROM rankings WHERE run_id = ? ORDER BY iteration", [run_id]
    ).fetchall()
    return [int(r[0]) for r in rows]


def top_rankings(
    con: duckdb.DuckDBPyConnection, run_id: int, iteration: int
) -> tuple[np.ndarray, np.ndarray]:
    """A run's stored top-N of every query at one iteration, as arrays.

    N is the smallest number of ranks stored for a query (the writer stores
    the same N for every query).

    Returns:
        (query_idx int64 [Q'], gallery_idx int64 [Q', N] best first); empty
        (shapes [0], [0, 0]) when nothing is stored for that iteration.
    """
    row = con.execute("""
        SELECT min(n) FROM (SELECT count(*) AS n FROM rankings
                            WHERE run_id = ? AND iteration = ? GROUP BY query_idx)
    """, [run_id, iteration]).fetchone()
    n = 0 if row is None or row[0] is None else int(row[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.int64)
    cols = con.execute("""
        SELECT query_idx, gallery_idx FROM rankings
        WHERE run_id = ? AND iteration = ? AND rank <= ? ORDER BY query_idx, rank
    """, [run_id, iteration, n]).fetchnumpy()
    gallery = np.asarray(cols["gallery_idx"], dtype=np.int64).reshape(-1, n)
    return np.asarray(cols["query_idx"], dtype=np.int64)[::n], gallery


def dataset_items(con: duckdb.DuckDBPyConnection, run_id: int, side: str) -> pd.DataFrame:
    """The query or gallery items of a run's dataset.

    Args:
        con: A reader connection.
        run_id: The run.
        side: ``'query'`` or ``'gallery'``.

    Returns:
        idx, label, class_name, path; sorted by idx.
    """
    return _df(con, """
        SELECT i.idx, i.label, i.class_name, i.path
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN items i ON i.dataset_id = s.dataset_id AND i.side = ?
        WHERE r.run_id = ? ORDER BY i.idx
    """, [side, run_id])


def artifact_files(con: duckdb.DuckDBPyConnection, run_id: int) -> dict | None:
    """Where the distances a run re-ranked are kept: its ``artifacts`` row, or None.

    Returns:
        ``{artifact_id, backbone, cache_key, cache_dir, qg_dists_path,
        query_features_path, gallery_features_path, neighbors_path, neighbors_k}``
        (paths NULL when nothing was kept on disk), None when the run has no row.
        Untrusted: a reader checks every file against ``cache_key``
        (``store.artifacts.read_graph``, ``read_query_distances``).
    """
    keys = ("artifact_id", "backbone", "cache_key", "cache_dir", "qg_dists_path", "query_features_path",
            "gallery_features_path", "neighbors_path", "neighbors_k")
    row = con.execute(f"""
        SELECT {", ".join(f"a.{k}" for k in keys)}
        FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
        JOIN artifacts a ON a.artifact_id = coalesce(r.artifact_id, s.artifact_id)
        WHERE r.run_id = ?
    """, [run_id]).fetchone()
    return None if row is None else dict(zip(keys, row))
