"""Where the database is, and cached calls into ``store.read``.

Every read goes through ``load``: it opens a read-only connection
(``store.db.connect_reader``, which retries briefly while a sweep writes),
calls one ``store.read`` function and closes the connection again, so the
dashboard never blocks a running sweep for long. Results are cached with
``st.cache_data`` keyed on the database file's (and its write-ahead log's)
change time and size, so a finished sweep shows up on the next rerun.
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from store import read
from store.db import StoreError, connect_reader

from icfrr.stats import PairedComparison, compare_paired

DEFAULT_DB = "results/icfrr.duckdb"
ENV_DB = "ICFRR_DB"


def db_from_args(argv: list[str] | None = None) -> str | None:
    """The ``--db PATH`` given after ``--`` to ``streamlit run``, if any."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args.db


def default_db() -> str:
    """The database path before any URL choice: ``--db``, then $ICFRR_DB, then the default."""
    return db_from_args() or os.environ.get(ENV_DB) or DEFAULT_DB


@dataclass(frozen=True)
class Db:
    """A database file and its change stamp (the cache key).

    Attributes:
        path: Absolute path of the file.
        stamp: (mtime_ns, size) of the file and of its ``.wal``; zeros when missing.
    """

    path: str
    stamp: tuple[int, int, int, int]

    @classmethod
    def at(cls, path: str | Path) -> Db:
        """Stamp ``path`` now."""
        p = Path(path).expanduser().resolve()

        def stat(f: Path) -> tuple[int, int]:
            try:
                s = f.stat()
            except OSError:
                return 0, 0
            return s.st_mtime_ns, s.st_size

        return cls(str(p), stat(p) + stat(p.with_name(p.name + ".wal")))


@st.cache_data(show_spinner=False, max_entries=512)
def _cached_read(path: str, stamp: tuple, fn_name: str, args: tuple, kwargs: tuple) -> Any:
    fn = getattr(read, fn_name)
    with closing(connect_reader(path)) as con:
        return fn(con, *args, **dict(kwargs))


def load(db: Db, fn_name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``store.read.<fn_name>(con, *args, **kwargs)`` through the cache.

    Raises:
        StoreError: The database is missing, not ours, or stayed locked.
    """
    return _cached_read(db.path, db.stamp, fn_name, args, tuple(sorted(kwargs.items())))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_compare(path: str, stamp: tuple, a: tuple[int, int], b: tuple[int, int]):
    with closing(connect_reader(path)) as con:
        pairs = read.paired_ap(con, a[0], a[1], b[0], b[1])
    return pairs, compare_paired(pairs.ap_a.to_numpy(), pairs.ap_b.to_numpy())


def compare(db: Db, a: tuple[int, int], b: tuple[int, int]) -> tuple[Any, PairedComparison]:
    """Per-query AP of (run, iteration) ``a`` against ``b`` and their paired statistics."""
    return _cached_compare(db.path, db.stamp, a, b)


def probe(db: Db) -> str | None:
    """Why ``db`` cannot be shown (missing, empty, not ours, locked), None when it can."""
    try:
        if not load(db, "has_results"):
            return f"{db.path} holds no finished runs yet."
    except StoreError as exc:
        return str(exc)
    return None


__all__ = ["DEFAULT_DB", "ENV_DB", "Db", "StoreError", "compare", "db_from_args",
           "default_db", "load", "probe"]
