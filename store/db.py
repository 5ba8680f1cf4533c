"""Opening the results database: one short-lived writer, read-only readers.

DuckDB lets exactly one process hold a database file read-write, and while it
does, no other process can open the file at all, not even read-only; while
readers hold it read-only, no process can open it read-write (both sides get
an ``IOException`` "Could not set lock on file"). The store therefore never
keeps a connection open for long:

* the writer (the sweep) opens the file, commits one run in one transaction
  and closes it again, so readers get in between runs;
* readers (the dashboard) open read-only, run their queries and close;
* both sides retry briefly when the other holds the lock (the writer for
  longer, since losing a computed run would cost more than waiting).

A reader therefore only ever sees committed transactions, i.e. complete runs.
"""

from __future__ import annotations

import os
import random
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from store.fs import PathError, check_writable_dir
from store.schema import SCHEMA_VERSION, create_schema, expected_columns

#: Statements that bring a database from version ``v`` to ``v + 1``; every
#: step keeps the spec's public columns (tables and columns are only added).
MIGRATIONS: dict[int, str] = {
    1: "ALTER TABLE sweeps ADD COLUMN owner_pid INTEGER; "
       "ALTER TABLE sweeps ADD COLUMN owner_host VARCHAR; "
       "ALTER TABLE sweeps ADD COLUMN heartbeat_at TIMESTAMP;",
    # 2 -> 3: baseline runs have no ICFRR parameters (NULL); every column is kept
    2: "; ".join(f"ALTER TABLE runs ALTER COLUMN {c} DROP NOT NULL" for c in ("variant", "kg", "kq", "beta")),
}


class StoreError(Exception):
    """A database that cannot be used, with a one-line message saying what to do."""


#: Every connection's configuration: DuckDB never loads or installs an extension by itself (given a
#: SQLite file it would otherwise try to download ``sqlite_scanner``).
NO_EXTENSIONS: tuple[tuple[str, bool], ...] = (("autoload_known_extensions", False),
                                               ("autoinstall_known_extensions", False),
                                               ("allow_community_extensions", False))


def _check_regular_duckdb(path: Path) -> None:
    """Refuse, without blocking, an existing ``path`` that is not a regular DuckDB file.

    A FIFO or a device is refused before it is opened (opening a FIFO waits
    for a writer); a regular file that does not start like a DuckDB file (a
    SQLite database, say) is refused before DuckDB sees it. A missing or empty
    file passes: DuckDB makes a new database there.

    Raises:
        StoreError: The one line saying what ``path`` is and what to do.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):   # the folder checks say why it cannot be made
        return
    except OSError as exc:
        raise StoreError(f"cannot read --db {path}: {exc.strerror or exc}; pass --db with another file") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise StoreError(f"{path} is {kind}, not a database file; pass --db with a database file path")
    if st.st_size and not _has_duckdb_magic(path):
        raise StoreError(f"{path} is not a DuckDB database; pass --db with a new or existing "
                         "icfrr-lab results file")


def _is_lock_error(exc: Exception) -> bool:
    """Whether ``exc`` means another connection holds the file (worth retrying)."""
    text = str(exc)
    return "Could not set lock" in text or "different configuration" in text


def _is_not_duckdb(exc: Exception) -> bool:
    return "not a valid DuckDB database file" in str(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def damaged(path: Path, exc: BaseException) -> StoreError:
    """The one-line error for a store DuckDB cannot read (truncated, corrupted, unreadable)."""
    return StoreError(
        f"{path} is damaged or unreadable ({_first_line(exc)}); restore it from a copy or pass "
        "--db with another file (it was left as it is)"
    )


def _with_retry(
    open_: Callable[[], duckdb.DuckDBPyConnection], path: Path, timeout_s: float, *,
    retryable: Callable[[Exception], bool], refused: Callable[[Exception], StoreError], holder: str,
) -> duckdb.DuckDBPyConnection:
    """``open_()``, retried with jittered backoff while another connection holds ``path``.

    Args:
        open_: Opens the connection.
        path: The database file (for messages).
        timeout_s: How long to keep retrying.
        retryable: Whether a DuckDB error means the file is held (worth retrying).
        refused: The StoreError for any other DuckDB error.
        holder: Who holds the file, for the message after ``timeout_s``.

    Raises:
        StoreError: ``refused``'s, or the file stayed locked for ``timeout_s``.
    """
    deadline = time.monotonic() + max(timeout_s, 0.0)
    delay = 0.02
    while True:
        try:
            return open_()
        except duckdb.Error as exc:
            if not retryable(exc):
                raise refused(exc) from None
            if time.monotonic() >= deadline:
                raise StoreError(
                    f"{path} stayed locked by {holder} for {timeout_s:g} s; "
                    "wait for it to finish and try again"
                ) from None
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.1)


def _open_with_retry(
    path: Path, *, read_only: bool, timeout_s: float
) -> duckdb.DuckDBPyConnection:
    """Open ``path``, retrying while another process holds it.

    Raises:
        StoreError: The file is not DuckDB, is damaged, or stayed locked for ``timeout_s``.
    """
    def refused(exc: Exception) -> StoreError:
        if _is_not_duckdb(exc):
            return StoreError(f"{path} is not a DuckDB database; pass --db with a new or existing "
                              "icfrr-lab results file")
        return damaged(path, exc)

    _check_regular_duckdb(path)
    return _with_retry(lambda: duckdb.connect(str(path), read_only=read_only, config=dict(NO_EXTENSIONS)),
                       path, timeout_s, retryable=_is_lock_error, refused=refused,
                       holder="a writer (a running sweep?)" if read_only else "another process")


def _table_names(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()
    return {r[0] for r in rows}


def _columns(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """Table -> column names of every table in the ``main`` schema."""
    out: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'main'"
    ).fetchall():
        out.setdefault(table, set()).add(column)
    return out


def stored_version(con: duckdb.DuckDBPyConnection, path: Path) -> int | None:
    """The schema version stored in an open database, ``None`` for an empty one.

    A database counts as an icfrr-lab store only when every table of its
    stored version exists with at least that version's columns.

    Raises:
        StoreError: The database holds tables but is not an icfrr-lab store,
            or DuckDB cannot read it (damaged).
    """
    not_ours = StoreError(
        f"{path} is a DuckDB database but not an icfrr-lab results store; "
        "pass --db with another file"
    )
    try:
        columns = _columns(con)
        if "schema_info" not in columns:
            if columns:
                raise not_ours
            return None
        if "version" not in columns["schema_info"]:
            raise not_ours
        row = con.execute("SELECT max(version) FROM schema_info").fetchone()
    except duckdb.Error as exc:
        raise damaged(path, exc) from None
    version = None if row is None or row[0] is None else int(row[0])
    if version is not None and 1 <= version <= SCHEMA_VERSION:
        want = expected_columns(version)
        if any(not cols <= columns.get(table, set()) for table, cols in want.items()):
            raise not_ours
    return version


def _check_not_newer(version: int | None, path: Path) -> None:
    if version is not None and version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {version}, newer than this icfrr-lab's "
            f"{SCHEMA_VERSION}; upgrade icfrr-lab or pass --db with another file"
        )


def check_database(path: str | Path, *, timeout_s: float = 5.0) -> None:
    """Check, without writing anything, that a writer could use ``path``.

    A missing file is fine (the writer creates it) when its folder can be
    made and written. Used by jobs to refuse bad input before any work starts.

    Raises:
        StoreError: Not DuckDB, damaged, not our store, a newer schema, or a
            folder that cannot be written (a file on the way, read-only).
    """
    path = Path(path)
    _check_regular_duckdb(path)
    try:  # DuckDB writes a .wal file beside the database: its folder must be writable
        check_writable_dir(Path(os.path.realpath(path)).parent, "--db", path)   # a symlink's target folder
    except PathError as exc:
        raise StoreError(str(exc)) from None
    if not path.exists():
        return
    con = _open_with_retry(path, read_only=True, timeout_s=timeout_s)
    try:
        _check_not_newer(stored_version(con, path), path)
        _check_complete(con, path)
    finally:
        con.close()


#: DuckDB's file starts with a 4 KiB main header and two 4 KiB database headers, then the blocks.
_HEADER_BYTES = 3 * 4096


def _check_complete(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """Refuse a file shorter than the blocks in use need (a truncated copy or download).

    DuckDB only reads a block when a query touches it, so a truncated file
    opens fine and fails at the first write. Only the used blocks are
    counted: DuckDB cuts free blocks off the end of the file, so the total it
    reports can exceed a healthy file's size. Skipped while a ``.wal`` file
    exists (its blocks are not in the main file yet).

    Raises:
        StoreError: The file is shorter than its header says.
    """
    if Path(f"{path}.wal").exists():
        return
    try:
        row = con.execute("SELECT block_size, used_blocks FROM pragma_database_size()").fetchone()
    except duckdb.Error as exc:
        raise damaged(path, exc) from None
    if row is None:
        return
    need = _HEADER_BYTES + int(row[0]) * int(row[1])
    size = path.stat().st_size
    if size < need:
        raise damaged(path, ValueError(f"the file has {size} bytes, its blocks in use need {need}"))


def _migrate(con: duckdb.DuckDBPyConnection, version: int, path: Path) -> None:
    """Apply the migrations from ``version`` up to ``SCHEMA_VERSION`` in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        for v in range(version, SCHEMA_VERSION):
            if v not in MIGRATIONS:
                raise StoreError(
                    f"{path} has schema version {version} and no migration from {v} "
                    f"exists; pass --db with another file"
                )
            con.execute(MIGRATIONS[v])
        create_schema(con)  # new tables and views of the current version
        con.execute("UPDATE schema_info SET version = ?", [SCHEMA_VERSION])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def connect_writer(path: str | Path, *, timeout_s: float = 120.0) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-write, creating or migrating the schema.

    Creates missing parent folders. Keep the connection for one short unit of
    work and close it (``with connect_writer(path) as con:`` does): while it
    is open no reader can get in.

    Args:
        path: The database file.
        timeout_s: How long to retry while readers hold the file.

    Returns:
        A read-write connection on a database at ``SCHEMA_VERSION``.

    Raises:
        StoreError: Not DuckDB, not our store, a newer schema, or locked too long.
    """
    path = Path(path)
    _check_regular_duckdb(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the folder of --db {path}: {exc.strerror or exc}") from None
    con = _open_with_retry(path, read_only=False, timeout_s=timeout_s)
    try:
        version = stored_version(con, path)
        _check_not_newer(version, path)
        if version is None:
            con.execute("BEGIN TRANSACTION")
            create_schema(con)
            con.execute("COMMIT")
        elif version < SCHEMA_VERSION:
            _migrate(con, version, path)
    except duckdb.Error as exc:
        _close_quietly(con)
        raise write_failed(path, exc) from None
    except BaseException:
        _close_quietly(con)
        raise
    return con


#: DuckDB's file magic: bytes 8..12 of every database file.
_DUCKDB_MAGIC = b"DUCK"

#: The attached store's name on a reader connection.
_STORE = "store"

#: Base tables every icfrr-lab store holds (docs/SPEC.md section 6 plus ``schema_info``).
READER_TABLES: tuple[str, ...] = ("schema_info", "datasets", "items", "artifacts", "sweeps",
                                  "runs", "run_metrics", "query_metrics", "rankings")


def _has_duckdb_magic(path: Path) -> bool:
    """Whether ``path`` starts like a DuckDB file (so no other format's reader is tried)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head[8:12] == _DUCKDB_MAGIC


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _attach_locked_down(path: Path) -> duckdb.DuckDBPyConnection:
    """An in-memory connection with the store at ``path`` attached read-only, locked down.

    Extensions are never autoloaded or autoinstalled; external access is off
    (only ``path``, its ``.wal`` and the ``.wal.checkpoint`` DuckDB may leave stay readable); the configuration is then
    locked. The store's catalog is not on the search path, so its own
    macros can neither shadow built-in functions nor run.
    """
    con = duckdb.connect(":memory:", config=dict(NO_EXTENSIONS))
    try:
        target = str(path.resolve())
        con.execute("SET allowed_paths = ?", [[target, target + ".wal", target + ".wal.checkpoint"]])
        con.execute("SET enable_external_access = false")
        con.execute(f"ATTACH ? AS {_STORE} (TYPE duckdb, READ_ONLY)", [target])
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _expose_base_tables(con: duckdb.DuckDBPyConnection, path: Path) -> set[str]:
    """Make the store's base tables queryable by their plain names; return those names.

    Each base table of the store's ``main`` schema becomes a temporary view
    of this connection (``SELECT *`` of the table). The store's own views
    (``class_metrics`` and anything a store file adds) are never exposed, so
    no SQL stored in the file runs.

    Raises:
        StoreError: A table has generated columns (expressions stored in the file).
    """
    names = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
        "AND schema_name = 'main' AND NOT temporary ORDER BY table_name", [_STORE]).fetchall()]
    generated = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_catalog = ? "
        "AND table_schema = 'main' AND is_generated <> 'NEVER'", [_STORE]).fetchone()[0]
    if generated:
        raise StoreError(f"{path} is not an icfrr-lab results store (it holds generated "
                         "columns); pass --db with another file")
    for name in names:
        con.execute(f"CREATE TEMP VIEW {_quote(name)} AS "
                    f"SELECT * FROM {_STORE}.main.{_quote(name)}")
    return set(names)


def _reader_error(exc: Exception, path: Path) -> StoreError:
    if _is_not_duckdb(exc):
        return StoreError(f"{path} is not a DuckDB database; pass --db with a new or existing "
                          "icfrr-lab results file")
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return StoreError(f"cannot open {path}: {first}")


def _attach_with_retry(path: Path, timeout_s: float) -> duckdb.DuckDBPyConnection:
    """``_attach_locked_down``, retrying while a writer holds ``path``.

    Raises:
        StoreError: The file is not DuckDB, is damaged, or stayed locked for ``timeout_s``.
    """
    # "file handle conflict": this same process holds the file (another connection)
    return _with_retry(lambda: _attach_locked_down(path), path, timeout_s,
                       retryable=lambda exc: _is_lock_error(exc) or "file handle conflict" in str(exc),
                       refused=lambda exc: _reader_error(exc, path), holder="a writer (a running sweep?)")


def _close_quietly(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.close()
    except duckdb.Error:  # a connection DuckDB invalidated after an I/O error
        pass


def write_failed(path: Path, exc: BaseException) -> StoreError:
    """The one-line error for a write DuckDB could not do (disk full, I/O error, damaged file)."""
    if any(sign in str(exc) for sign in ("Could not read enough bytes", "Corrupt database file",
                                         "checksum")):
        return damaged(path, exc)
    return StoreError(
        f"could not write to {path} ({_first_line(exc)}); runs committed before are kept: "
        "free some space (or fix the disk) and run the same command again"
    )


@contextmanager
def writer(path: str | Path, *, timeout_s: float = 120.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """``with writer(path) as con:`` = :func:`connect_writer`, with failures as one-line StoreErrors.

    A DuckDB or OS error inside the block (a full disk while committing, an
    I/O error) becomes :class:`StoreError`; the transaction it interrupted is
    not committed, earlier commits stay. The connection is always closed.
    """
    path = Path(path)
    con = connect_writer(path, timeout_s=timeout_s)
    try:
        yield con
    except (duckdb.Error, OSError) as exc:
        raise write_failed(path, exc) from None
    finally:
        _close_quietly(con)


def connect_reader(path: str | Path, *, timeout_s: float = 5.0) -> duckdb.DuckDBPyConnection:
    """Open ``path`` read-only and locked down, retrying briefly while a writer holds it.

    A store file is untrusted input (stores are shared), so the connection is
    an in-memory DuckDB with the store attached read-only: no extension is
    ever loaded or installed, external access is off (nothing but the store
    file and its write-ahead log can be read), the configuration is locked,
    and only the store's base tables are visible, under their plain names
    (temporary views of this connection). The store's own views and macros
    never run; a file that does not start like a DuckDB file (a SQLite
    database, say) is refused before DuckDB sees it.

    Close the connection soon after use (``with connect_reader(path) as con:``
    does): while it is open the sweep cannot write.

    Args:
        path: The database file.
        timeout_s: How long to retry while a writer holds the file.

    Returns:
        A read-only connection.

    Raises:
        StoreError: Missing, not DuckDB, damaged, not our store, a schema
            other than ``SCHEMA_VERSION``, or locked for longer than ``timeout_s``.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(
            f"no results database at {path}; run `python -m jobs.sweep --dataset demo "
            f"--db {path}` first"
        )
    if not _has_duckdb_magic(path):
        raise _reader_error(duckdb.IOException("not a valid DuckDB database file"), path)
    con = _attach_with_retry(path, timeout_s)
    try:
        tables = _expose_base_tables(con, path)
        if "schema_info" not in tables:
            if tables:
                raise StoreError(
                    f"{path} is a DuckDB database but not an icfrr-lab results store; "
                    "pass --db with another file"
                )
            raise StoreError(f"{path} holds no results yet; run `python -m jobs.sweep` first")
        row = con.execute("SELECT max(version) FROM schema_info").fetchone()
        version = None if row is None or row[0] is None else int(row[0])
        _check_not_newer(version, path)
        if version is None:
            raise StoreError(f"{path} holds no results yet; run `python -m jobs.sweep` first")
        if version < SCHEMA_VERSION:
            raise StoreError(
                f"{path} has the older schema version {version}; run any sweep on it "
                "(python -m jobs.sweep ... --db PATH) to migrate it"
            )
        missing = [t for t in READER_TABLES if t not in tables]
        if missing:
            raise StoreError(
                f"{path} is not an icfrr-lab results store (no {', '.join(missing)} table); "
                "pass --db with another file"
            )
    except duckdb.Error as exc:  # a damaged file can fail on its first read
        con.close()
        raise _reader_error(exc, path) from None
    except BaseException:
        con.close()
        raise
    return con
