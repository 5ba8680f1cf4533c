"""Which stores and image folders may be shown, and the store handle the reads are keyed on.

A visitor chooses the store (URL ``?db=``, the sidebar) only among the
DuckDB files of one folder: ``--results-dir`` (or $ICFRR_RESULTS_DIR), else
the folder of the launch ``--db``. ``Stores.find`` resolves a choice
(symlinks followed, ``..`` collapsed) and returns None for anything else;
every such case, and every store that cannot be read, is shown with the one
``NEUTRAL`` message, so the dashboard never tells a visitor whether some
other file exists or what it holds (the reason goes to the server log).

The reads themselves are ``dashboard.queries`` (one typed, cached function
each), keyed on ``Db``: the file's path and change stamp.

A store is untrusted input, so the dataset root it records does not decide
which images are shown: ``image_roots`` (the launch working directory, plus
``--image-root DIR`` and $ICFRR_IMAGE_ROOTS) does; thumbnails of any other
root are placeholders (``dashboard.thumbs``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from store import DEFAULT_DB
from store.db import StoreError

ENV_DB = "ICFRR_DB"
ENV_RESULTS_DIR = "ICFRR_RESULTS_DIR"
ENV_IMAGE_ROOTS = "ICFRR_IMAGE_ROOTS"
#: File names the store list offers (besides the launch ``--db`` itself).
STORE_SUFFIX = ".duckdb"
#: What a page shows, instead of a traceback, when it fails on what a store holds.
PAGE_FAILED = ("This page cannot be shown for this selection. Choose another run or page; "
               "the server log says what went wrong.")
#: The one message for a store that is not allowed, missing, damaged, foreign or unreadable.
NEUTRAL = ("This results store cannot be shown. Choose one of the stores listed in the "
           "sidebar, or reload the page to try again.")

_log = logging.getLogger("icfrr.dashboard")


@functools.lru_cache(maxsize=8)
def _parse(argv: tuple[str, ...]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--db")
    parser.add_argument("--results-dir", "--results_dir", dest="results_dir")
    parser.add_argument("--image-root", "--image_root", dest="image_root", action="append", default=[])
    parser.add_argument("--debug", action="store_true")
    args, _ = parser.parse_known_args(list(argv))
    return args


def launch_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags given after ``--`` to ``streamlit run`` (``--db``, ``--results-dir``,
    ``--image-root``, ``--debug``), parsed once per distinct command line: every page run,
    and every reader of them in it, gets the one cached result.

    Args:
        argv: Launch arguments (default ``sys.argv[1:]``).
    """
    return _parse(tuple(sys.argv[1:] if argv is None else argv))


def db_from_args(argv: list[str] | None = None) -> str | None:
    """The ``--db PATH`` given after ``--`` to ``streamlit run``, if any."""
    return launch_args(argv).db


def debug_from_args(argv: list[str] | None = None) -> bool:
    """Whether ``--debug`` was given after ``--``: pages then show their tracebacks
    (off by default: a visitor sees one neutral line, the server log the details)."""
    return bool(launch_args(argv).debug)


def results_dir_from_args(argv: list[str] | None = None) -> str | None:
    """The ``--results-dir DIR`` given after ``--`` to ``streamlit run``, if any."""
    return launch_args(argv).results_dir


def image_roots(argv: list[str] | None = None,
                environ: dict[str, str] | None = None) -> tuple[Path, ...]:
    """The folders thumbnails may read images under (resolved, in order, no repeats).

    The working directory the dashboard was launched in, every ``--image-root
    DIR`` given after ``--`` (repeatable), and the entries of
    $ICFRR_IMAGE_ROOTS (separated by ``os.pathsep``; empty entries skipped).
    A dataset root the store records is used only when it lies inside one of
    these: the store file cannot choose what the server reads.

    Args:
        argv: Launch arguments (default ``sys.argv[1:]``).
        environ: Environment (default ``os.environ``).
    """
    env = os.environ if environ is None else environ
    given = [*launch_args(argv).image_root,
             *(e for e in env.get(ENV_IMAGE_ROOTS, "").split(os.pathsep) if e)]
    roots: list[Path] = [Path.cwd().resolve()]
    for folder in given:
        try:
            roots.append(Path(folder).expanduser().resolve())
        except (OSError, RuntimeError):  # a looping link: allows nothing
            continue
    return tuple(dict.fromkeys(roots))


def _results_dir_setting(args: argparse.Namespace) -> str | None:
    return args.results_dir or os.environ.get(ENV_RESULTS_DIR) or None


def default_db() -> str:
    """The launch store: ``--db``, then $ICFRR_DB, then ``icfrr.duckdb`` in the
    results folder when one is given, then ``results/icfrr.duckdb``."""
    args = launch_args()
    folder = _results_dir_setting(args)
    return (args.db or os.environ.get(ENV_DB)
            or (str(Path(folder) / "icfrr.duckdb") if folder else str(DEFAULT_DB)))


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
        folder = _results_dir_setting(launch_args())
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


def store_problem(exc: StoreError) -> str:
    """Log why a store cannot be read (server side only) and return ``NEUTRAL``."""
    _log.warning("store not shown: %s", exc)
    return NEUTRAL


__all__ = ["DEFAULT_DB", "ENV_DB", "ENV_IMAGE_ROOTS", "ENV_RESULTS_DIR", "NEUTRAL", "PAGE_FAILED", "Db",
           "StoreError", "Stores", "db_from_args", "debug_from_args", "default_db", "image_roots",
           "launch_args", "results_dir_from_args", "store_problem"]
