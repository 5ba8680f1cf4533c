"""The first schema's DDL (version 1), to test migrations from it."""

from __future__ import annotations

import store.schema as schema

#: runs of version 1: ICFRR's columns NOT NULL (made nullable by migration 2 -> 3).
V1_RUNS = """
CREATE SEQUENCE run_id_seq START 2;
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'), sweep_id INTEGER NOT NULL,
    method VARCHAR NOT NULL, variant VARCHAR NOT NULL, kg INTEGER NOT NULL, kq INTEGER NOT NULL,
    beta DOUBLE NOT NULL, n_iter INTEGER NOT NULL, params VARCHAR NOT NULL, device VARCHAR NOT NULL,
    seconds DOUBLE, status VARCHAR NOT NULL, finished_at TIMESTAMP, artifact_id INTEGER, config_key VARCHAR);
"""

_V2_SWEEP_COLUMNS = """    status       VARCHAR NOT NULL,    -- 'running', 'done', 'failed', 'interrupted' (its process died)
    owner_pid    INTEGER,             -- v2: the process running it
    owner_host   VARCHAR,             -- v2: and its machine
    heartbeat_at TIMESTAMP            -- v2: last sign of life (start, each committed run)"""


def first_schema_ddl() -> str:
    """Every table as version 1 had it (no sweep owner columns, runs' ICFRR columns NOT NULL).

    Does not fill ``schema_info``.
    """
    current = schema._ddl()
    assert _V2_SWEEP_COLUMNS in current, "the sweeps DDL changed: update tests/store/first_schema.py"
    return V1_RUNS + current.replace(_V2_SWEEP_COLUMNS, "    status       VARCHAR NOT NULL")
