"""Which stores may be shown, where they are, and cached calls into ``store.read``.

A visitor chooses the store (URL ``?db=``, the sidebar) only among the
DuckDB files of one folder: ``--results-dir`` (or $ICFRR_RESULTS_DIR), else
the folder of the launch ``--db``. ``Stores.find`` resolves a choice
(symlinks followed, ``..`` collapsed) and returns None for anything else;
every such case, and every store that cannot be read, is shown with the one
``NEUTRAL`` message, so the dashboard never tells a visitor whether some
other file exists or what it holds (the reason goes to the server log).

Every read goes through ``load``: it opens a read-only connection
(``store.db.connect_reader``, which retries briefly while a sweep writes),
calls one ``store.read`` function and closes the connection again, so the
dashboard never blocks a running sweep for long. Results are cached with
``st.cache_data`` keyed on the database file's (and its write-ahead log's)
change time and size, so a finished sweep shows up on the next rerun.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import streamlit as st

from store import read
from store.db import StoreError, connect_reader

from icfrr.stats import PairedComparison, compare_paired

DEFAULT_DB = "results/icfrr.duckdb"
ENV_DB = "ICFRR_DB"
ENV_RESULTS_DIR = "ICFRR_RESULTS_DIR"
#: File names the store list offers (besides the launch ``--db`` itself).
STORE_SUFFIX = ".duckdb"
#: The one message for a store that is not allowed, missing, damaged, foreign or unreadable.
NEUTRAL = ("This results store cannot be shown. Choose one of the stores listed in the "
           "sidebar, or reload the page to try again.")

_log = logging.getLogger("icfrr.dashboard")


def _launch_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    parser.add_argument("--results-dir")
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return args


def db_from_args(argv: list[str] | None = None) -> str | None:
    """The ``--db PATH`` given after ``--`` to ``streamlit run``, if any."""
    return _launch_args(argv).db


def results_dir_from_args(argv: list[str] | None = None) -> str | None:
    """The ``--results-dir DIR`` given after ``--`` to ``streamlit run``, if any."""
    return _launch_args(argv).results_dir


def _results_dir_setting() -> str | None:
    return results_dir_from_args() or os.environ.get(ENV_RESULTS_DIR) or None


def default_db() -> str:
    """The launch store: ``--db``, then $ICFRR_DB, then ``icfrr.duckdb`` in the
    results folder when one is given, then ``results/icfrr.duckdb``."""
    folder = _results_dir_setting()
    return (db_from_args() or os.environ.get(ENV_DB)
            or (str(Path(folder) / "icfrr.duckdb") if folder else DEFAULT_DB))


@dataclass(frozen=True)
class Stores:
    """The stores a visitor may choose: the launch store and the DuckDB files beside it.

    Attributes:
        folder: The results folder (resolved): ``--results-dir``,
            $ICFRR_RESULTS_DIR, else the launch store's folder.
        default: The launch store (resolved; it may not exist yet).
    """

    folder: Path
    default: Path

    @classmethod
    def from_launch(cls) -> Stores:
        """The allowed stores of this server, from its launch flags and environment."""
        default = Path(default_db()).resolve()
        folder = _results_dir_setting()
        return cls(Path(folder).resolve() if folder else default.parent, default)

    def paths(self) -> list[Path]:
        """The allowed stores (resolved): the launch store first, then the folder's
        ``*.duckdb`` regular files whose real path is in the folder, by name."""
        found: set[Path] = set()
        try:
            entries = list(self.folder.iterdir())
        except OSError:
            entries = []
        for entry in entries:
            if not entry.name.endswith(STORE_SUFFIX):
                continue
            try:
                real = entry.resolve()
                if real.parent == self.folder and real.is_file():
                    found.add(real)
            except (OSError, RuntimeError):  # a broken or looping link
                continue
        found.discard(self.default)
        return [self.default, *sorted(found, key=lambda p: p.name)]

    def key(self, path: Path) -> str:
        """How the URL and the sidebar name an allowed store: its path in the folder."""
        return path.relative_to(self.folder).as_posix() if path.is_relative_to(self.folder) \
            else str(path)

    def keys(self) -> list[str]:
        """``key`` of every allowed store, in ``paths`` order."""
        return [self.key(p) for p in self.paths()]

    def find(self, value: str | None) -> Path | None:
        """The allowed store that ``value`` (a key, or a path) names, else None.

        Relative values are taken inside the folder; symlinks are followed
        and ``..`` collapsed before the comparison, so nothing outside the
        allowed list is ever returned.
        """
        if not value or "\x00" in value:
            return None
        try:
            real = (self.folder / value).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        return real if real in self.paths() else None


@dataclass(frozen=True)
class Db:
    """A database file and its change stamp (the cache key).

    Attributes:
        path: Absolute path of the file.
        stamp: (mtime_ns, size) of the file and of its ``.wal``; zeros when missing.
        key: How the URL names it (``Stores.key``); the path when not given.
    """

    path: str
    stamp: tuple[int, int, int, int]
    key: str = ""

    @classmethod
    def at(cls, path: str | Path, key: str | None = None) -> Db:
        """Stamp ``path`` now."""
        p = Path(path).expanduser().resolve()

        def stat(f: Path) -> tuple[int, int]:
            try:
                s = f.stat()
            except OSError:
                return 0, 0
            return s.st_mtime_ns, s.st_size

        return cls(str(p), stat(p) + stat(p.with_name(p.name + ".wal")),
                   str(p) if key is None else key)


def _read(path: str, fn_name: str, *args: Any, **kwargs: Any) -> Any:
    """``store.read.<fn_name>`` on a fresh reader; any DuckDB failure becomes a StoreError."""
    try:
        with closing(connect_reader(path)) as con:
            return getattr(read, fn_name)(con, *args, **kwargs)
    except duckdb.Error as exc:  # e.g. a block found damaged half-way through a query
        raise StoreError(f"cannot read {path}: {(str(exc).splitlines() or [''])[0]}") from None


@st.cache_data(show_spinner=False, max_entries=512)
def _cached_read(path: str, stamp: tuple, fn_name: str, args: tuple, kwargs: tuple) -> Any:
    return _read(path, fn_name, *args, **dict(kwargs))


def load(db: Db, fn_name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``store.read.<fn_name>(con, *args, **kwargs)`` through the cache.

    Raises:
        StoreError: The database is missing, not ours, or stayed locked.
    """
    return _cached_read(db.path, db.stamp, fn_name, args, tuple(sorted(kwargs.items())))


@st.cache_data(show_spinner=False, max_entries=64)
def _cached_compare(path: str, stamp: tuple, a: tuple[int, int], b: tuple[int, int]):
    pairs = _read(path, "paired_ap", a[0], a[1], b[0], b[1])
    return pairs, compare_paired(pairs.ap_a.to_numpy(), pairs.ap_b.to_numpy())


def compare(db: Db, a: tuple[int, int], b: tuple[int, int]) -> tuple[Any, PairedComparison]:
    """Per-query AP of (run, iteration) ``a`` against ``b`` and their paired statistics."""
    return _cached_compare(db.path, db.stamp, a, b)


def store_problem(exc: StoreError) -> str:
    """Log why a store cannot be read (server side only) and return ``NEUTRAL``."""
    _log.warning("store not shown: %s", exc)
    return NEUTRAL


def probe(db: Db) -> str | None:
    """Why ``db`` cannot be shown, None when it can.

    A missing file or a store without finished runs gets a "nothing yet"
    reason (the page then shows how to make one); anything else that stops
    the read gets ``NEUTRAL``.
    """
    if not Path(db.path).exists():
        return "there is no results database yet."
    try:
        if not load(db, "has_results"):
            return "the database holds no finished runs yet."
    except StoreError as exc:
        return store_problem(exc)
    return None


__all__ = ["DEFAULT_DB", "ENV_DB", "ENV_RESULTS_DIR", "NEUTRAL", "Db", "StoreError", "Stores",
           "compare", "db_from_args", "default_db", "load", "probe", "results_dir_from_args",
           "store_problem"]
