"""Deleting runs from a store: their rows, and the rows nothing refers to any more.

:func:`deletion` says what deleting some runs would remove (read-only, any
connection); :func:`delete_runs` removes it in one transaction of a writer
connection, so a kill or an error at any point leaves the store as before or
fully deleted, never in between. ``python -m jobs.runs`` is the command line.

What goes, for the runs asked for:

* the ``runs`` rows and their ``run_metrics``, ``query_metrics`` and
  ``rankings``;
* each sweep of theirs left without runs, unless it is still ``running``;
* each artifact (``artifacts`` row) of theirs that no remaining run or sweep
  refers to;
* each dataset of theirs (with its ``items``) that no remaining sweep or
  artifact refers to.

The artifact cache folders on disk are not touched: a cache is shared by
every store that reuses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb

#: Tables emptied by run id, children first.
_RUN_TABLES = ("rankings", "query_metrics", "run_metrics", "runs")


class UnknownRunError(ValueError):
    """Some asked-for run ids are not in the store (one-line message)."""


@dataclass(frozen=True)
class Deletion:
    """What deleting runs removes.

    Attributes:
        run_ids: The runs, ascending.
        sweep_ids: Sweeps left without runs (not ``running``).
        artifact_ids: Artifacts nothing refers to afterwards.
        dataset_ids: Datasets nothing refers to afterwards.
        rows: Table name -> rows removed (every table, 0 included).
    """

    run_ids: tuple[int, ...]
    sweep_ids: tuple[int, ...]
    artifact_ids: tuple[int, ...]
    dataset_ids: tuple[int, ...]
    rows: dict[str, int]


def _ids(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[object]) -> tuple[int, ...]:
    return tuple(sorted(int(r[0]) for r in con.execute(sql, list(params)).fetchall()))


def deletion(con: duckdb.DuckDBPyConnection, run_ids: Sequence[int]) -> Deletion:
    """What :func:`delete_runs` would remove for ``run_ids``, without changing anything.

    Args:
        con: A reader or writer connection.
        run_ids: Runs to delete (duplicates are ignored).

    Returns:
        A :class:`Deletion`.

    Raises:
        UnknownRunError: A run id is not in the store (nothing is planned).
    """
    asked = sorted({int(r) for r in run_ids})
    runs = _ids(con, "SELECT run_id FROM runs WHERE list_contains(?, run_id)", [asked])
    missing = [r for r in asked if r not in runs]
    if missing:
        raise UnknownRunError(f"no run {', '.join(map(str, missing))} in the store")
    sweeps = _ids(con, """
        SELECT s.sweep_id FROM sweeps s
        WHERE s.status <> 'running'
          AND s.sweep_id IN (SELECT sweep_id FROM runs WHERE list_contains(?, run_id))
          AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.sweep_id = s.sweep_id
                          AND NOT list_contains(?, r.run_id))
    """, [list(runs), list(runs)])
    artifacts = _ids(con, """
        SELECT a.artifact_id FROM artifacts a
        WHERE a.artifact_id IN (SELECT coalesce(r.artifact_id, s.artifact_id)
                                FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
                                WHERE list_contains(?, r.run_id))
          AND NOT EXISTS (SELECT 1 FROM runs r JOIN sweeps s ON s.sweep_id = r.sweep_id
                          WHERE coalesce(r.artifact_id, s.artifact_id) = a.artifact_id
                            AND NOT list_contains(?, r.run_id))
          AND NOT EXISTS (SELECT 1 FROM sweeps s WHERE s.artifact_id = a.artifact_id
                          AND NOT list_contains(?, s.sweep_id))
    """, [list(runs), list(runs), list(sweeps)])
    datasets = _ids(con, """
        SELECT d.dataset_id FROM datasets d
        WHERE d.dataset_id IN (SELECT dataset_id FROM sweeps WHERE list_contains(?, sweep_id))
          AND NOT EXISTS (SELECT 1 FROM sweeps s WHERE s.dataset_id = d.dataset_id
                          AND NOT list_contains(?, s.sweep_id))
          AND NOT EXISTS (SELECT 1 FROM artifacts a WHERE a.dataset_id = d.dataset_id
                          AND NOT list_contains(?, a.artifact_id))
    """, [list(sweeps), list(sweeps), list(artifacts)])
    rows = {t: _count(con, t, "run_id", runs) for t in _RUN_TABLES}
    rows["sweeps"] = len(sweeps)
    rows["artifacts"] = len(artifacts)
    rows["items"] = _count(con, "items", "dataset_id", datasets)
    rows["datasets"] = len(datasets)
    return Deletion(runs, sweeps, artifacts, datasets, rows)


def _count(con: duckdb.DuckDBPyConnection, table: str, column: str, ids: Sequence[int]) -> int:
    return int(con.execute(f"SELECT count(*) FROM {table} WHERE list_contains(?, {column})",
                           [list(ids)]).fetchone()[0])


def _delete_from(con: duckdb.DuckDBPyConnection, table: str, column: str,
                 ids: Sequence[int]) -> None:
    """One DELETE of the transaction (a separate function, so tests can kill the process here)."""
    con.execute(f"DELETE FROM {table} WHERE list_contains(?, {column})", [list(ids)])


def delete_runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[int]) -> Deletion:
    """Delete runs and what only they referred to, in one transaction.

    Args:
        con: A writer connection (``store.db.writer``) with no transaction open.
        run_ids: Runs to delete.

    Returns:
        The :class:`Deletion` done (planned inside the same transaction).

    Raises:
        UnknownRunError: A run id is not in the store; nothing is deleted.
        duckdb.Error: The write failed; the transaction is rolled back.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        plan = deletion(con, run_ids)
        for table in _RUN_TABLES:
            _delete_from(con, table, "run_id", plan.run_ids)
        _delete_from(con, "sweeps", "sweep_id", plan.sweep_ids)
        _delete_from(con, "artifacts", "artifact_id", plan.artifact_ids)
        _delete_from(con, "items", "dataset_id", plan.dataset_ids)
        _delete_from(con, "datasets", "dataset_id", plan.dataset_ids)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return plan


__all__ = ["Deletion", "UnknownRunError", "delete_runs", "deletion"]
