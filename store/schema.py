"""The DuckDB schema: docs/SPEC.md section 6 (a public interface) plus our own columns.

Researchers query these tables with SQL, so the spec's tables and columns are
never renamed or dropped; new columns go beside them with a migration step.
"""

from __future__ import annotations

import functools

import duckdb

from icfrr.registry import METRIC_KEYS, QUERY_COLUMNS

#: Bumped by every migration; a database with a newer version is refused.
#: 2 -> 3: runs.variant/kg/kq/beta may be NULL (baseline runs, store.db.MIGRATIONS[2]).
SCHEMA_VERSION = 3
#: The ``runs`` columns that mirror a method parameter of the same name
#: (:attr:`icfrr.registry.Param.column`: ICFRR's), written from its value; NULL
#: for methods without that parameter.
PARAM_COLUMNS: tuple[str, ...] = ("variant", "kg", "kq", "beta")
#: The largest label ``items.label`` (INTEGER, 32 bits) holds; -1 is the only negative one (unknown).
LABEL_MAX = 2**31 - 1

_DDL = """
CREATE TABLE IF NOT EXISTS schema_info (version INTEGER NOT NULL);

CREATE SEQUENCE IF NOT EXISTS dataset_id_seq START 1;
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id   INTEGER PRIMARY KEY DEFAULT nextval('dataset_id_seq'),
    name         VARCHAR NOT NULL,
    root         VARCHAR,            -- absolute path of the dataset root, NULL for imported distances
    n_query      INTEGER NOT NULL,
    n_gallery    INTEGER NOT NULL,
    n_classes    INTEGER NOT NULL,
    created_at   TIMESTAMP NOT NULL,
    fingerprint  VARCHAR              -- hash of the item lists, to reuse the row
);

CREATE TABLE IF NOT EXISTS items (
    dataset_id   INTEGER NOT NULL,
    side         VARCHAR NOT NULL,    -- 'query' or 'gallery'
    idx          INTEGER NOT NULL,    -- row in the distance matrices
    path         VARCHAR,             -- relative to datasets.root, NULL when only distances were given
    label        INTEGER NOT NULL,    -- -1: unknown
    class_name   VARCHAR
);

CREATE SEQUENCE IF NOT EXISTS artifact_id_seq START 1;
CREATE TABLE IF NOT EXISTS artifacts (
    artifact_id        INTEGER PRIMARY KEY DEFAULT nextval('artifact_id_seq'),
    dataset_id         INTEGER NOT NULL,
    backbone           VARCHAR NOT NULL,
    checkpoint_sha256  VARCHAR,
    per_class          INTEGER NOT NULL,
    created_at         TIMESTAMP NOT NULL,
    cache_key          VARCHAR,
    cache_dir          VARCHAR,
    query_features_path   VARCHAR,
    gallery_features_path VARCHAR,
    qg_dists_path      VARCHAR,
    neighbors_path     VARCHAR,
    neighbors_k        INTEGER
);

CREATE SEQUENCE IF NOT EXISTS sweep_id_seq START 1;
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id     INTEGER PRIMARY KEY DEFAULT nextval('sweep_id_seq'),
    dataset_id   INTEGER NOT NULL,
    artifact_id  INTEGER NOT NULL,
    command      VARCHAR NOT NULL,
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP,
    status       VARCHAR NOT NULL,    -- 'running', 'done', 'failed', 'interrupted' (its process died)
    owner_pid    INTEGER,             -- v2: the process running it
    owner_host   VARCHAR,             -- v2: and its machine
    heartbeat_at TIMESTAMP            -- v2: last sign of life (start, each committed run)
);

CREATE SEQUENCE IF NOT EXISTS run_id_seq START 1;
CREATE TABLE IF NOT EXISTS runs (
    run_id       INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
    sweep_id     INTEGER NOT NULL,
    method       VARCHAR NOT NULL,    -- a key of icfrr.registry.METHODS: 'icfrr', 'k_reciprocal', ...
    variant      VARCHAR,             -- ICFRR: 'reference' or 'paper'; NULL for the other methods
    kg           INTEGER,             -- ICFRR's KG, KQ and beta; NULL for the other methods
    kq           INTEGER,
    beta         DOUBLE,
    n_iter       INTEGER NOT NULL,    -- ICFRR: iterations; other methods: 1 (iteration 1 = their ranking)
    params       VARCHAR NOT NULL,    -- JSON text of every parameter
    device       VARCHAR NOT NULL,
    seconds      DOUBLE,
    status       VARCHAR NOT NULL,    -- 'done' once its results are committed
    finished_at  TIMESTAMP,
    artifact_id  INTEGER,             -- which distances the run re-ranked
    config_key   VARCHAR              -- artifact + parameters; a finished run with the same key is skipped
);

-- one DOUBLE column per metric of icfrr.registry.METRICS (see _metric_columns)
CREATE TABLE IF NOT EXISTS run_metrics (
    run_id     INTEGER NOT NULL,
    iteration  INTEGER NOT NULL,      -- 0: initial ranking
    {run_metric_columns}
);

CREATE TABLE IF NOT EXISTS query_metrics (
    run_id     INTEGER NOT NULL,
    iteration  INTEGER NOT NULL,
    query_idx  INTEGER NOT NULL,
    {query_metric_columns},           -- NULL for queries of unknown label
    first_relevant_rank INTEGER       -- 1-based; NULL when nothing relevant
);

CREATE TABLE IF NOT EXISTS rankings (
    run_id       INTEGER NOT NULL,
    iteration    INTEGER NOT NULL,
    query_idx    INTEGER NOT NULL,
    rank         INTEGER NOT NULL,    -- starts at 1
    gallery_idx  INTEGER NOT NULL,
    score        DOUBLE
);

CREATE OR REPLACE VIEW class_metrics AS
SELECT qm.run_id, qm.iteration, i.label, any_value(i.class_name) AS class_name,
       count(*) AS n_queries, avg(qm.ap) AS map
FROM query_metrics qm
JOIN runs r ON r.run_id = qm.run_id
JOIN sweeps s ON s.sweep_id = r.sweep_id
JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query' AND i.idx = qm.query_idx
WHERE i.label <> -1
GROUP BY qm.run_id, qm.iteration, i.label;
"""


def _metric_columns(names: tuple[str, ...]) -> str:
    return ",\n    ".join(f"{name} DOUBLE" for name in names)


def add_metric_columns(con: duckdb.DuckDBPyConnection) -> None:
    """Give ``run_metrics``/``query_metrics`` a column for every registry metric they lack.

    A metric added to :data:`icfrr.registry.METRICS` thus appears in existing
    stores too (older runs hold NULL there).
    """
    for table, names in (("run_metrics", METRIC_KEYS), ("query_metrics", QUERY_COLUMNS)):
        for name in names:
            con.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {name} DOUBLE")


#: Version -> table -> columns that version's migration added (absent from older stores).
ADDED_COLUMNS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"sweeps": ("owner_pid", "owner_host", "heartbeat_at")},
}


def _ddl() -> str:
    """The DDL with one column per registry metric."""
    return _DDL.format(run_metric_columns=_metric_columns(METRIC_KEYS),
                       query_metric_columns=_metric_columns(QUERY_COLUMNS))


@functools.cache
def _current_columns() -> dict[str, frozenset[str]]:
    con = duckdb.connect(":memory:")
    try:
        con.execute(_ddl())
        rows = con.execute("SELECT table_name, column_name FROM information_schema.columns "
                           "WHERE table_schema = 'main' AND table_name IN "
                           "(SELECT table_name FROM information_schema.tables "
                           " WHERE table_type = 'BASE TABLE')").fetchall()
    finally:
        con.close()
    out: dict[str, set[str]] = {}
    for table, column in rows:
        out.setdefault(table, set()).add(column)
    return {t: frozenset(c) for t, c in out.items()}


def expected_columns(version: int) -> dict[str, frozenset[str]]:
    """Table -> the columns a store of schema ``version`` has (every table, at least these).

    The registry's metric columns are left out: a metric added to the registry
    reaches older stores with their next write (:func:`add_metric_columns`).

    Args:
        version: 1 .. SCHEMA_VERSION.
    """
    out = dict(_current_columns())
    out["run_metrics"] = out["run_metrics"] - set(METRIC_KEYS)
    out["query_metrics"] = out["query_metrics"] - set(QUERY_COLUMNS)
    for v, added in ADDED_COLUMNS.items():
        if v > version:
            for table, cols in added.items():
                out[table] = out[table] - set(cols)
    return out


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create (idempotently) every table, sequence and view of the current schema.

    Args:
        con: A writable DuckDB connection.
    """
    con.execute(_ddl())
    add_metric_columns(con)
    if con.execute("SELECT count(*) FROM schema_info").fetchone()[0] == 0:
        con.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION])
