"""Writing sweep results: dataset, item, artifact and sweep rows, and one run per transaction.

Every bulk insert goes through an Arrow table registered on the connection
(``INSERT INTO t BY NAME SELECT ... FROM arrow_view``), never row by row. A run's
rows (``runs`` with status ``'done'``, ``run_metrics``, ``query_metrics``,
``rankings``) are committed in one transaction, so a reader or a killed sweep
never leaves a partial run behind.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from icfrr.registry import METRIC_KEYS as METRICS
from icfrr.registry import QUERY_COLUMNS as QUERY_METRICS
from icfrr.registry import best_iteration
from icfrr.run_config import sha256_json
from icfrr.owners import host_name, pid_alive
from store.schema import PARAM_COLUMNS

if TYPE_CHECKING:
    from icfrr.run_config import RunConfig


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _insert_arrow(con: duckdb.DuckDBPyConnection, table: str, data: pa.Table) -> None:
    """Append ``data`` to ``table``, matching columns by name, in the current transaction."""
    view = f"_arrow_{table}"
    con.register(view, data)
    try:
        con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM {view}")
    finally:
        con.unregister(view)


class _Transaction:
    """``with _Transaction(con):`` commits on success, rolls back on any exception."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        self.con.execute("BEGIN TRANSACTION")
        return self.con

    def __exit__(self, exc_type, exc, tb) -> None:
        self.con.execute("COMMIT" if exc_type is None else "ROLLBACK")


# --------------------------------------------------------------------------- datasets


def items_table(
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    *,
    paths_q: Sequence[str | None] | None = None,
    paths_g: Sequence[str | None] | None = None,
    class_names: Mapping[int, str] | None = None,
) -> pa.Table:
    """The ``items`` rows of one dataset as an Arrow table.

    Args:
        labels_q: int [Q] query labels (-1 unknown).
        labels_g: int [G] gallery labels.
        paths_q: Q paths relative to the dataset root, or None (imported distances).
        paths_g: G paths, or None.
        class_names: label -> class name, where known.

    Returns:
        Columns side, idx, path, label, class_name; queries first, then gallery.
    """
    names = dict(class_names or {})
    sides, idxs, paths, labels = [], [], [], []
    for side, labs, pth in (("query", labels_q, paths_q), ("gallery", labels_g, paths_g)):
        labs = np.asarray(labs, dtype=np.int64).reshape(-1)
        if pth is not None and len(pth) != len(labs):
            raise ValueError(f"{side}: {len(pth)} paths for {len(labs)} labels")
        sides += [side] * len(labs)
        idxs += range(len(labs))
        paths += list(pth) if pth is not None else [None] * len(labs)
        labels += labs.tolist()
    return pa.table({
        "side": pa.array(sides, pa.string()),
        "idx": pa.array(idxs, pa.int32()),
        "path": pa.array(paths, pa.string()),
        "label": pa.array(labels, pa.int32()),
        "class_name": pa.array([names.get(x) for x in labels], pa.string()),
    })


def dataset_fingerprint(name: str, root: str | None, items: pa.Table) -> str:
    """A hash of the dataset's name, root and item lists (what makes a row reusable)."""
    return sha256_json({"name": name, "root": root, "items": items.to_pydict()})


def upsert_dataset(
    con: duckdb.DuckDBPyConnection, *, name: str, root: str | None, items: pa.Table
) -> int:
    """Reuse the dataset row with the same fingerprint, or add it and its items.

    Args:
        con: A writer connection (no transaction open).
        name: Dataset name, e.g. ``"demo"``.
        root: Absolute dataset root, None for imported distances.
        items: ``items_table(...)``.

    Returns:
        The ``dataset_id``.
    """
    fingerprint = dataset_fingerprint(name, root, items)
    with _Transaction(con):
        row = con.execute(
            "SELECT dataset_id FROM datasets WHERE fingerprint = ? ORDER BY dataset_id LIMIT 1",
            [fingerprint]).fetchone()
        if row is not None:
            return int(row[0])
        sides = np.asarray(items.column("side").to_pylist())
        labels = np.asarray(items.column("label").to_pylist(), dtype=np.int64)
        n_classes = len(set(labels[labels != -1].tolist()))
        dataset_id = con.execute(
            "INSERT INTO datasets (name, root, n_query, n_gallery, n_classes, created_at, "
            "fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING dataset_id",
            [name, root, int((sides == "query").sum()), int((sides == "gallery").sum()),
             n_classes, _now(), fingerprint]).fetchone()[0]
        _insert_arrow(con, "items", items.append_column(
            "dataset_id", pa.array([dataset_id] * items.num_rows, pa.int32())))
    return int(dataset_id)


# -------------------------------------------------------------------------- artifacts


@dataclass(frozen=True)
class ArtifactInfo:
    """What the store records about one set of distances (an ``artifacts`` row).

    ``key`` identifies the distances (same key, same numbers); the neighbour
    graph's size may grow without changing it.
    """

    key: str
    backbone: str
    checkpoint_sha256: str | None
    per_class: int
    cache_dir: str | None = None
    query_features_path: str | None = None
    gallery_features_path: str | None = None
    qg_dists_path: str | None = None
    neighbors_path: str | None = None
    neighbors_k: int | None = None


def upsert_artifact(con: duckdb.DuckDBPyConnection, dataset_id: int, info: ArtifactInfo) -> int:
    """Reuse the artifact row with the same dataset and key (refreshing its paths), or add one.

    Returns:
        The ``artifact_id``.
    """
    cols = asdict(info)
    cols.pop("key")
    with _Transaction(con):
        row = con.execute(
            "SELECT artifact_id FROM artifacts WHERE dataset_id = ? AND cache_key = ? "
            "ORDER BY artifact_id LIMIT 1", [dataset_id, info.key]).fetchone()
        if row is not None:
            sets = ", ".join(f"{c} = ?" for c in cols)
            con.execute(f"UPDATE artifacts SET {sets} WHERE artifact_id = ?",
                        [*cols.values(), row[0]])
            return int(row[0])
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        return int(con.execute(
            f"INSERT INTO artifacts (dataset_id, cache_key, created_at, {names}) "
            f"VALUES (?, ?, ?, {marks}) RETURNING artifact_id",
            [dataset_id, info.key, _now(), *cols.values()]).fetchone()[0])


# ----------------------------------------------------------------------------- sweeps


def start_sweep(
    con: duckdb.DuckDBPyConnection, *, dataset_id: int, artifact_id: int, command: str,
    owner_pid: int | None = None, owner_host: str | None = None,
) -> int:
    """Add a ``sweeps`` row with status ``'running'`` and its owner; returns its ``sweep_id``.

    Args:
        owner_pid: The process running it (default this one).
        owner_host: Its machine (default this one).
    """
    now = _now()
    return int(con.execute(
        "INSERT INTO sweeps (dataset_id, artifact_id, command, started_at, status, owner_pid, "
        "owner_host, heartbeat_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?) RETURNING sweep_id",
        [dataset_id, artifact_id, command, now,
         os.getpid() if owner_pid is None else owner_pid,
         host_name() if owner_host is None else owner_host, now]).fetchone()[0])


def heartbeat(con: duckdb.DuckDBPyConnection, sweep_id: int) -> None:
    """Stamp a running sweep's ``heartbeat_at`` (after each committed run)."""
    con.execute("UPDATE sweeps SET heartbeat_at = ? WHERE sweep_id = ? AND status = 'running'",
                [_now(), sweep_id])


#: A running sweep of another machine whose heartbeat is older than this is taken as dead.
STALE_AFTER_S = 6 * 3600.0


def mark_interrupted(con: duckdb.DuckDBPyConnection, *, lock_held: bool = True,
                     stale_after_s: float = STALE_AFTER_S) -> list[int]:
    """Mark the ``'running'`` sweeps whose process is gone ``'interrupted'``.

    On this machine a sweep is dead when its process no longer exists, or, when
    the caller holds the store's sweep lock (``lock_held``), whatever its pid
    (only the lock holder runs). Sweeps without an owner (from schema version 1)
    count as this machine's. Another machine's sweep is dead when its heartbeat
    is older than ``stale_after_s``.

    Returns:
        The sweep ids marked.
    """
    here = host_name()
    rows = con.execute("SELECT sweep_id, owner_pid, owner_host, coalesce(heartbeat_at, started_at) "
                       "FROM sweeps WHERE status = 'running'").fetchall()
    now = _now()
    dead = []
    for sweep_id, pid, host, beat in rows:
        if host is None or host == here:
            if pid == os.getpid():
                continue
            if lock_held or pid is None or not pid_alive(int(pid)):
                dead.append(sweep_id)
        elif (now - beat).total_seconds() > stale_after_s:
            dead.append(sweep_id)
    if dead:
        con.execute("UPDATE sweeps SET status = 'interrupted', finished_at = coalesce(heartbeat_at, ?) "
                    "WHERE sweep_id IN (SELECT unnest(?::INTEGER[]))", [now, dead])
    return dead


def finish_sweep(con: duckdb.DuckDBPyConnection, sweep_id: int, status: str) -> None:
    """Mark a sweep ``'done'``, ``'failed'`` or ``'interrupted'`` (stopped by Ctrl-C) and stamp its end time."""
    if status not in ("done", "failed", "interrupted"):
        raise ValueError(f"sweep status must be 'done', 'failed' or 'interrupted', not {status!r}")
    con.execute("UPDATE sweeps SET status = ?, finished_at = ?, heartbeat_at = ? WHERE sweep_id = ?",
                [status, _now(), _now(), sweep_id])


# ------------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class KeptIteration:
    """Per-query results of one iteration that the store keeps in full.

    Attributes:
        per_query: ``icfrr.per_query`` output (arrays of length Q).
        top_gallery: int [Q, N] gallery indices of each query's top N, best first.
        top_scores: float [Q, N] their scores.
    """

    per_query: Mapping[str, np.ndarray]
    top_gallery: np.ndarray
    top_scores: np.ndarray


def finished_config_keys(con: duckdb.DuckDBPyConnection, keys: Sequence[str]) -> set[str]:
    """Which of ``keys`` already have a run with status ``'done'``."""
    if not keys:
        return set()
    rows = con.execute(
        "SELECT DISTINCT config_key FROM runs WHERE status = 'done' AND config_key IN "
        "(SELECT unnest(?::VARCHAR[]))", [list(keys)]).fetchall()
    return {r[0] for r in rows}


def finished_runs(
    con: duckdb.DuckDBPyConnection, keys: Sequence[str]
) -> dict[str, tuple[int, list[dict[str, float]]]]:
    """The finished run of each of ``keys`` that has one: ``key -> (run_id, metrics by iteration)``.

    With several finished runs for a key (possible only if two sweeps raced),
    the latest is taken. NULL metrics come back as NaN.
    """
    if not keys:
        return {}
    rows = con.execute(
        f"SELECT r.config_key, r.run_id, m.iteration, {', '.join('m.' + m for m in METRICS)} "
        "FROM runs r JOIN run_metrics m USING (run_id) "
        "WHERE r.status = 'done' AND r.config_key IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY r.run_id, m.iteration", [list(keys)]).fetchall()
    out: dict[str, tuple[int, list[dict[str, float]]]] = {}
    for key, run_id, _it, *vals in rows:
        if key not in out or out[key][0] != run_id:
            out[key] = (run_id, [])
        out[key][1].append({m: math.nan if v is None else float(v) for m, v in zip(METRICS, vals)})
    return out


def stored_top_n(con: duckdb.DuckDBPyConnection, run_ids: Sequence[int]) -> dict[int, int | None]:
    """How many gallery items per query each of ``run_ids`` keeps in ``rankings`` (``runs.params``'
    ``top_n``; None when it records none)."""
    if not run_ids:
        return {}
    rows = con.execute("SELECT run_id, params FROM runs WHERE run_id IN (SELECT unnest(?::INTEGER[]))",
                       [list(run_ids)]).fetchall()
    out: dict[int, int | None] = {}
    for run_id, params in rows:
        try:
            value = json.loads(params).get("top_n")
        except (ValueError, AttributeError):
            value = None
        out[int(run_id)] = int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return out


def _null_nan(values: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(values, dtype=np.float64), pa.float64(), from_pandas=True)


def _metrics_table(metrics: Sequence[Mapping[str, float]]) -> pa.Table:
    cols: dict[str, pa.Array] = {"iteration": pa.array(range(len(metrics)), pa.int32())}
    for m in METRICS:
        cols[m] = _null_nan(np.array([float(it[m]) for it in metrics]))
    return pa.table(cols)


def _query_table(iteration: int, pq: Mapping[str, np.ndarray]) -> pa.Table:
    n = len(pq["ap"])
    qidx = np.asarray(pq.get("query_idx", np.arange(n)), dtype=np.int32)
    first = np.asarray(pq["first_relevant_rank"], dtype=np.int64)
    cols: dict[str, pa.Array] = {
        "iteration": pa.array(np.full(n, iteration, np.int32)),
        "query_idx": pa.array(qidx),
    }
    for m in QUERY_METRICS:
        cols[m] = _null_nan(pq[m])
    cols["first_relevant_rank"] = pa.array(first, pa.int32(), mask=first < 1)
    return pa.table(cols)


def _rankings_table(iteration: int, kept: KeptIteration) -> pa.Table:
    gal = np.asarray(kept.top_gallery, dtype=np.int32)
    scores = np.asarray(kept.top_scores, dtype=np.float64)
    if gal.ndim != 2 or gal.shape != scores.shape:
        raise ValueError(f"top_gallery {gal.shape} and top_scores {scores.shape} must be [Q, N]")
    q, n = gal.shape
    return pa.table({
        "iteration": pa.array(np.full(q * n, iteration, np.int32)),
        "query_idx": pa.array(np.repeat(np.arange(q, dtype=np.int32), n)),
        "rank": pa.array(np.tile(np.arange(1, n + 1, dtype=np.int32), q)),
        "gallery_idx": pa.array(gal.reshape(-1)),
        "score": _null_nan(scores.reshape(-1)),
    })


def _with_run_id(table: pa.Table, run_id: int) -> pa.Table:
    return table.append_column("run_id", pa.array(np.full(table.num_rows, run_id, np.int32)))


def delete_runs(con: duckdb.DuckDBPyConnection, config_key: str) -> int:
    """Delete every run with ``config_key`` and its rows (call inside a transaction).

    Returns:
        How many runs were deleted.
    """
    ids = [r[0] for r in con.execute(
        "SELECT run_id FROM runs WHERE config_key = ?", [config_key]).fetchall()]
    for table in ("rankings", "query_metrics", "run_metrics", "runs"):
        con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT unnest(?::INTEGER[]))", [ids])
    return len(ids)


def write_run(
    con: duckdb.DuckDBPyConnection,
    *,
    sweep_id: int,
    artifact_id: int,
    artifact_key: str,
    config: RunConfig,
    device: str,
    seconds: float,
    metrics: Sequence[Mapping[str, float]],
    kept: Mapping[int, KeptIteration],
    per_query: Sequence[Mapping[str, np.ndarray]] | None = None,
    force: bool = False,
) -> int | None:
    """Commit one finished run in ONE transaction: run row, every iteration's metrics, kept details.

    Args:
        con: A writer connection (no transaction open).
        sweep_id: The sweep this run belongs to.
        artifact_id: The distances it re-ranked.
        artifact_key: Their identity (``ArtifactInfo.key``), part of the config key.
        config: The configuration.
        device: Where it ran, e.g. ``"cpu"`` or ``"cuda:0"``.
        seconds: Wall time of the re-ranking and evaluation.
        metrics: ``icfrr.summarize`` output for iterations 0..n_iter, in order.
        kept: iteration -> per-query metrics and top-N ranking (at least 0, the
            last and the best iteration); its rankings are stored.
        per_query: ``icfrr.per_query`` output of every iteration 0..n_iter, in
            order: ``query_metrics`` then holds every iteration (so the
            iteration count can be chosen like any parameter, ``icfrr.protocols``).
            None: only the kept iterations' per-query metrics are stored.
        force: Replace finished runs with the same config key (deleted in the
            same transaction) instead of keeping them.

    Returns:
        The new ``run_id``, or None when a finished run with the same key
        exists and ``force`` is False (nothing is written).
    """
    if len(metrics) != config.n_iter + 1:
        raise ValueError(f"{len(metrics)} metric rows for {config.n_iter} iterations "
                         f"(expected {config.n_iter + 1})")
    bad = [it for it in kept if not 0 <= it <= config.n_iter]
    if bad:
        raise ValueError(f"kept iterations {bad} outside 0..{config.n_iter}")
    if per_query is not None and len(per_query) != config.n_iter + 1:
        raise ValueError(f"{len(per_query)} per-query rows for {config.n_iter} iterations "
                         f"(expected {config.n_iter + 1})")
    key = config.config_key(artifact_key)
    best = best_iteration(metrics)
    with _Transaction(con):
        if force:
            delete_runs(con, key)
        elif finished_config_keys(con, [key]):
            return None
        mirrored = config.columns()
        run_id = int(con.execute(
            f"INSERT INTO runs (sweep_id, method, {', '.join(PARAM_COLUMNS)}, n_iter, params, device, "
            "seconds, status, finished_at, artifact_id, config_key) "
            f"VALUES (?, ?, {', '.join('?' for _ in PARAM_COLUMNS)}, ?, ?, ?, ?, 'done', ?, ?, ?) RETURNING run_id",
            [sweep_id, config.method, *(mirrored.get(c) for c in PARAM_COLUMNS), config.n_iter,
             config.params_json(best_iteration=best, top_n=_top_n(kept)),
             device, float(seconds), _now(), artifact_id, key]).fetchone()[0])
        _insert_arrow(con, "run_metrics", _with_run_id(_metrics_table(metrics), run_id))
        query_rows = ([_query_table(it, pq) for it, pq in enumerate(per_query)]
                      if per_query is not None else
                      [_query_table(it, k.per_query) for it, k in sorted(kept.items())])
        if query_rows:
            _insert_arrow(con, "query_metrics", _with_run_id(pa.concat_tables(query_rows), run_id))
        if kept:
            _insert_arrow(con, "rankings", _with_run_id(
                pa.concat_tables([_rankings_table(it, k) for it, k in sorted(kept.items())]),
                run_id))
    return run_id


def _top_n(kept: Mapping[int, KeptIteration]) -> int | None:
    return max((int(np.shape(k.top_gallery)[1]) for k in kept.values()), default=None)
