"""store.db: schema creation and checks, and the one-writer / many-readers locking."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import duckdb
import pytest

import store.db as db
from store.schema import SCHEMA_VERSION

# Spec section 6, copied literally: these columns are the public interface.
SPEC_COLUMNS = {
    "datasets": ["dataset_id", "name", "root", "n_query", "n_gallery", "n_classes", "created_at"],
    "items": ["dataset_id", "side", "idx", "path", "label", "class_name"],
    "artifacts": ["artifact_id", "dataset_id", "backbone", "checkpoint_sha256", "per_class",
                  "created_at"],
    "sweeps": ["sweep_id", "dataset_id", "artifact_id", "command", "started_at", "finished_at",
               "status"],
    "runs": ["run_id", "sweep_id", "method", "variant", "kg", "kq", "beta", "n_iter", "params",
             "device", "seconds", "status", "finished_at"],
    "run_metrics": ["run_id", "iteration", "map_all", "map_200", "p_25", "p_100", "p_200"],
    "query_metrics": ["run_id", "iteration", "query_idx", "ap", "ap_200", "p_25", "p_100",
                      "p_200", "first_relevant_rank"],
    "rankings": ["run_id", "iteration", "query_idx", "rank", "gallery_idx", "score"],
    "class_metrics": ["run_id", "iteration", "label", "class_name", "n_queries", "map"],
}

HOLD_WRITER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
print("ready", flush=True)
sys.stdin.read()          # hold the lock until the test closes our stdin
con.close()
"""


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position", [table]).fetchall()
    return [r[0] for r in rows]


class _Holder:
    """Another process holding ``path`` open (read-write or read-only) until released."""

    def __init__(self, path: Path, mode: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_WRITER, str(path), mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready"

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


def test_writer_creates_folders_and_spec_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "results.duckdb"
    with db.connect_writer(path) as con:
        for table, cols in SPEC_COLUMNS.items():
            have = _columns(con, table)
            assert set(cols) <= set(have), table
    # reopening neither duplicates the version row nor changes it
    with db.connect_writer(path) as con:
        assert con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]
    with db.connect_reader(path) as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_reader_is_read_only(tmp_path: Path) -> None:
    path = tmp_path / "r.duckdb"
    db.connect_writer(path).close()
    with db.connect_reader(path) as con, pytest.raises(duckdb.Error):
        con.execute("INSERT INTO schema_info VALUES (99)")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.duckdb"
    with pytest.raises(db.StoreError, match="no results database"):
        db.connect_reader(path)
    db.check_database(path)  # fine: a writer would create it
    assert not path.exists()


@pytest.mark.parametrize("content", [b"", b"definitely not a database\n" * 50])
def test_not_duckdb_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.duckdb"
    path.write_bytes(content)
    for call in (db.connect_writer, db.connect_reader, db.check_database):
        with pytest.raises(db.StoreError, match="not a DuckDB database"):
            call(path)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.duckdb"]


def test_foreign_duckdb_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    for call in (db.connect_writer, db.connect_reader, db.check_database):
        with pytest.raises(db.StoreError, match="not an icfrr-lab results store"):
            call(path)
    con = duckdb.connect(str(path), read_only=True)
    assert [r[0] for r in con.execute("SHOW TABLES").fetchall()] == ["customers"]
    con.close()


def test_newer_schema_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.duckdb"
    with db.connect_writer(path) as con:
        con.execute("UPDATE schema_info SET version = ?", [SCHEMA_VERSION + 1])
    before = path.read_bytes()
    for call in (db.connect_writer, db.connect_reader, db.check_database):
        with pytest.raises(db.StoreError, match="newer than this icfrr-lab"):
            call(path)
    assert path.read_bytes() == before


def test_migration_from_older_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.duckdb"
    with db.connect_writer(path) as con:
        con.execute("INSERT INTO datasets (name, n_query, n_gallery, n_classes, created_at) "
                    "VALUES ('kept', 1, 2, 3, now())")
    monkeypatch.setattr(db, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(db.MIGRATIONS, SCHEMA_VERSION, "ALTER TABLE runs ADD COLUMN note VARCHAR")
    with pytest.raises(db.StoreError, match="older schema"):
        db.connect_reader(path)
    with db.connect_writer(path) as con:
        assert con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION + 1,)]
        assert "note" in _columns(con, "runs")
        assert con.execute("SELECT name FROM datasets").fetchall() == [("kept",)]
    db.connect_reader(path).close()


def test_runs_without_icfrr_parameters_after_migration(tmp_path: Path) -> None:
    """A store of the first schema (ICFRR columns NOT NULL) keeps its runs and takes baseline runs."""
    path = tmp_path / "v1.duckdb"
    con = duckdb.connect(str(path))
    con.execute(_V1_RUNS)
    con.execute("CREATE TABLE schema_info (version INTEGER NOT NULL); INSERT INTO schema_info VALUES (1)")
    con.execute("INSERT INTO runs VALUES (1, 1, 'icfrr', 'reference', 5, 3, 0.5, 3, '{}', 'cpu', 1.0, "
                "'done', now(), 1, 'k')")
    with pytest.raises(duckdb.ConstraintException):
        con.execute("INSERT INTO runs (sweep_id, method, n_iter, params, device, status) "
                    "VALUES (1, 'ecn', 1, '{}', 'cpu', 'done')")
    con.close()
    with db.connect_writer(path) as con:
        assert con.execute("SELECT version FROM schema_info").fetchall() == [(SCHEMA_VERSION,)]
        con.execute("INSERT INTO runs (sweep_id, method, n_iter, params, device, status) "
                    "VALUES (1, 'ecn', 1, '{}', 'cpu', 'done')")
        assert con.execute("SELECT method, variant, kg, kq, beta FROM runs ORDER BY run_id").fetchall() == [
            ("icfrr", "reference", 5, 3, 0.5), ("ecn", None, None, None, None)]
        assert _columns(con, "runs")[:13] == SPEC_COLUMNS["runs"]
    with db.connect_writer(tmp_path / "new.duckdb") as con:  # a new store: the same columns, nullable
        nullable = dict(con.execute("SELECT column_name, is_nullable FROM information_schema.columns "
                                    "WHERE table_name = 'runs'").fetchall())
        assert [c for c in ("method", "variant", "kg", "kq", "beta", "n_iter") if nullable[c] == "YES"] == [
            "variant", "kg", "kq", "beta"]


# the runs table as the first schema created it
_V1_RUNS = """
CREATE SEQUENCE run_id_seq START 2;
CREATE TABLE runs (
    run_id INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'), sweep_id INTEGER NOT NULL,
    method VARCHAR NOT NULL, variant VARCHAR NOT NULL, kg INTEGER NOT NULL, kq INTEGER NOT NULL,
    beta DOUBLE NOT NULL, n_iter INTEGER NOT NULL, params VARCHAR NOT NULL, device VARCHAR NOT NULL,
    seconds DOUBLE, status VARCHAR NOT NULL, finished_at TIMESTAMP, artifact_id INTEGER, config_key VARCHAR)
"""


@pytest.mark.parametrize("held_as, open_", [("rw", db.connect_reader), ("ro", db.connect_writer)])
def test_retries_while_other_process_holds_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_as: str, open_
) -> None:
    path = tmp_path / "locked.duckdb"
    db.connect_writer(path).close()
    retried = threading.Event()

    def sleep(seconds: float) -> None:
        retried.set()
        time.sleep(seconds)

    monkeypatch.setattr(db, "time", types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    holder = _Holder(path, held_as)
    got: list[object] = []
    try:
        with pytest.raises(db.StoreError, match="stayed locked"):
            open_(path, timeout_s=0.2)
        retried.clear()

        def attempt() -> None:
            try:
                with open_(path, timeout_s=60) as con:
                    got.append(con.execute("SELECT count(*) FROM runs").fetchone())
            except Exception as exc:  # noqa: BLE001 - reported by the assert below
                got.append(exc)

        thread = threading.Thread(target=attempt)
        thread.start()
        assert retried.wait(timeout=60)  # it found the file locked and is retrying
    finally:
        holder.release()
    thread.join(timeout=60)
    assert got == [(0,)]


# --- the reader is locked down: a store file is untrusted input ---

PLANTED_EXTENSION = """
import duckdb, sqlite3, sys
from pathlib import Path
import store.db as db

home, lite = Path(sys.argv[1]), Path(sys.argv[2])
ext = home / ".duckdb" / "extensions" / f"v{duckdb.__version__}"
for arch in ("linux_amd64", "linux_arm64", "osx_arm64", "osx_amd64"):
    (ext / arch).mkdir(parents=True, exist_ok=True)
    (ext / arch / "sqlite_scanner.duckdb_extension").write_bytes(b"planted, not an extension")
try:      # control: a plain read-only connection goes for the sqlite extension
    duckdb.connect(str(lite), read_only=True)
    print("control: opened")
except duckdb.Error as exc:
    print("control:", str(exc).splitlines()[0])
try:
    db.connect_reader(lite)
    print("reader: opened")
except db.StoreError as exc:
    print("reader:", exc)
"""


def test_reader_refuses_sqlite_without_touching_extensions(tmp_path: Path) -> None:
    import os
    import sqlite3

    lite = tmp_path / "lite.duckdb"
    con = sqlite3.connect(lite)
    con.execute("CREATE TABLE runs (run_id INTEGER)")
    con.commit()
    con.close()
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home), "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", PLANTED_EXTENSION, str(home), str(lite)],
                         env=env, capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    control, reader = out.stdout.splitlines()
    assert "sqlite" in control.lower() and "extension" in control.lower(), control
    assert reader == f"reader: {lite} is not a DuckDB database; pass --db with a new or " \
                     "existing icfrr-lab results file"


def _store_with(tmp_path: Path, *sql: str) -> Path:
    path = tmp_path / "s.duckdb"
    with db.connect_writer(path) as con:
        for statement in sql:
            con.execute(statement)
    return path


def test_reader_cannot_reach_files_or_unlock(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("S3CRET")
    path = _store_with(tmp_path)
    with db.connect_reader(path) as con:
        for sql in (f"SELECT content FROM read_text('{secret}')",
                    f"SELECT * FROM read_csv('{secret}')",
                    f"ATTACH '{tmp_path / 'other.duckdb'}' AS other",
                    "SET enable_external_access = true",
                    "SET autoload_known_extensions = true",
                    f"SET allowed_paths = ['{secret}']",
                    "INSTALL sqlite", "LOAD sqlite"):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
    assert not (tmp_path / "other.duckdb").exists()


def test_reader_runs_no_stored_view_or_macro(tmp_path: Path) -> None:
    path = _store_with(
        tmp_path,
        "CREATE OR REPLACE VIEW class_metrics AS SELECT 'evil' AS class_name",
        "CREATE MACRO avg(x) AS 42",
        "CREATE MACRO count_star() AS 42",
        "INSERT INTO run_metrics VALUES (1, 0, 0.5, 0.5, 0.5, 0.5, 0.5)",
    )
    with db.connect_reader(path) as con:
        with pytest.raises(duckdb.CatalogException):
            con.execute("SELECT * FROM class_metrics")     # the stored view is not exposed
        assert con.execute("SELECT avg(map_all) FROM run_metrics").fetchone() == (0.5,)


def test_reader_refuses_a_table_that_is_a_view_or_has_generated_columns(tmp_path: Path) -> None:
    path = _store_with(tmp_path, "DROP TABLE rankings",
                       "CREATE VIEW rankings AS SELECT 1 AS run_id")
    with pytest.raises(db.StoreError, match="no rankings table"):
        db.connect_reader(path)
    path.unlink()
    path = _store_with(tmp_path, "DROP TABLE items",
                       "CREATE TABLE items (dataset_id INTEGER, side VARCHAR, idx INTEGER, "
                       "path VARCHAR, label INTEGER, "
                       "class_name VARCHAR GENERATED ALWAYS AS (side || '!'))")
    with pytest.raises(db.StoreError, match="generated columns"):
        db.connect_reader(path)


def test_reader_refuses_a_truncated_store_in_one_line(tmp_path: Path) -> None:
    path = _store_with(tmp_path, "INSERT INTO rankings SELECT 1, 0, i, 1, i, 0.5 "
                                 "FROM range(200000) t(i)")
    data = path.read_bytes()
    for cut in (20, 4096, len(data) // 2):
        path.write_bytes(data[:cut])
        try:
            with db.connect_reader(path) as con:
                con.execute("SELECT sum(score) FROM rankings").fetchone()
        except db.StoreError as exc:
            assert "\n" not in str(exc)
        except duckdb.Error as exc:       # found damaged only by a query: the caller maps it
            assert "Could not read" in str(exc) or "Corrupt" in str(exc)
        else:
            pytest.fail(f"a store cut at {cut} bytes was read")
        assert path.read_bytes() == data[:cut]
