"""Content identities of input files: sha256, cached by stat fingerprint.

Every file a sweep reads (images, imported ``.npy``/``.pth``/Parquet matrices,
labels, weights) is identified by the sha256 of its bytes. Hashing is cached in
a sidecar, ``<cache_root>/file_sha256.json``, keyed by the file's absolute
path and git-style stat fingerprint: size, mtime_ns, ctime_ns, inode, device.
``touch -r`` and ``os.utime`` can set mtime back but not ctime, and ``mv``
gives another inode, so a fingerprint that matches means the bytes are those
that were hashed. An entry is only recorded when the file's ctime is at least
:data:`RACY_NS` old when it was hashed (a write in the same clock tick could
otherwise leave the fingerprint unchanged), as git does with "racily clean"
entries.

A :class:`FileId` is what a sweep resolves its inputs to at its start; every
later read of the file calls :meth:`FileId.check`, which raises
:class:`InputChanged` when the fingerprint no longer matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from icfrr.files import file_sha256

#: The sidecar's file name, under the cache root.
SIDECAR = "file_sha256.json"
SIDECAR_FORMAT = 1
#: Files changed less than this long before hashing are hashed again next time (2 s, in ns).
RACY_NS = 2_000_000_000

Fingerprint = tuple[int, int, int, int, int]


class InputChanged(ValueError):
    """An input file changed after its identity was resolved; the message names it.

    Attributes:
        path: The file.
        what: ``"is gone"`` or ``"changed (size, times or inode)"``.
    """

    def __init__(self, message: str, path: Path, what: str) -> None:
        super().__init__(message)
        self.path, self.what = path, what


def fingerprint(path: Path) -> Fingerprint:
    """(size, mtime_ns, ctime_ns, inode, device) of ``path``, following symlinks.

    Raises:
        OSError: The file cannot be stat'ed (missing).
    """
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


@dataclass(frozen=True)
class FileId:
    """One input file as resolved: where, its stat fingerprint and the sha256 of its bytes.

    Attributes:
        path: The path as given (symlinks followed when it is stat'ed and read).
        fingerprint: :func:`fingerprint` when it was hashed (or found in the sidecar).
        sha256: Hex digest of the bytes.
    """

    path: Path
    fingerprint: Fingerprint
    sha256: str

    def check(self, when: str = "since the command started") -> None:
        """Raise :class:`InputChanged` unless the file still has the fingerprint it was resolved with.

        Call it after reading the file: a match then means the bytes read are those hashed.
        """
        try:
            now = fingerprint(self.path)
        except OSError:
            now = None
        if now != self.fingerprint:
            what = "is gone" if now is None else "changed (size, times or inode)"
            raise InputChanged(f"{self.path} {what} {when}; nothing computed from it was kept: "
                               "run the same command again", self.path, what)

    def record(self) -> dict[str, object]:
        """The JSON record of this identity (path and sha256) for metadata."""
        return {"path": str(self.path), "sha256": self.sha256}


def digest(ids: Iterable[FileId]) -> str:
    """One sha256 hex over the sha256s of ``ids`` in order (a list of files' contents as one key)."""
    h = hashlib.sha256()
    for fid in ids:
        h.update(fid.sha256.encode() + b"\n")
    return h.hexdigest()


class HashCache:
    """Resolves files to :class:`FileId`, hashing each file once per fingerprint.

    Args:
        cache_root: Folder of the sidecar; None keeps the hashes in memory only.
        clock_ns: The current time in ns (for the racy rule; tests pass their own).
    """

    def __init__(self, cache_root: Path | None, clock_ns=time.time_ns) -> None:
        self.sidecar = Path(cache_root) / SIDECAR if cache_root is not None else None
        self._clock = clock_ns
        self._known: dict[str, list] = self._read(self.sidecar)
        self._new: dict[str, list] = {}
        self.hashed = 0      # files hashed (not found in memory or the sidecar) by this cache

    @staticmethod
    def _read(sidecar: Path | None) -> dict[str, list]:
        if sidecar is None:
            return {}
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return {}                              # missing or damaged: every file is hashed again
        if not isinstance(record, dict) or record.get("format") != SIDECAR_FORMAT:
            return {}
        entries = record.get("entries")
        if not isinstance(entries, dict):
            return {}
        return {k: v for k, v in entries.items() if isinstance(v, list) and len(v) == 6}

    def identify(self, path: str | Path) -> FileId:
        """The :class:`FileId` of one file: from the sidecar when its fingerprint matches, else hashed.

        Raises:
            FileNotFoundError: The file is missing (callers turn it into their one-line error).
            InputChanged: It changed while being hashed.
        """
        full = Path(path)                                  # as given: messages and checks use it
        name = os.path.abspath(full)       # the sidecar's key (the fingerprint names the file itself)
        before = fingerprint(full)
        entry = self._new.get(name) or self._known.get(name)
        if entry is not None and tuple(entry[:5]) == before:
            return FileId(full, before, str(entry[5]))
        sha = file_sha256(full)
        self.hashed += 1
        after = fingerprint(full)
        if after != before:
            raise InputChanged(f"{full} changed while it was being read; run the command again once it "
                               "is no longer written to", full, "changed while it was being read")
        if before[2] <= self._clock() - RACY_NS:      # ctime old enough: a later write changes it
            self._new[name] = [*before, sha]
        return FileId(full, before, sha)

    def identify_all(self, paths: Iterable[str | Path]) -> list[FileId]:
        """:meth:`identify` of every path, in order."""
        return [self.identify(p) for p in paths]

    def save(self) -> None:
        """Merge the newly hashed files into the sidecar (atomically); nothing without a sidecar.

        A read-only or missing cache folder is not an error: the hashes are then computed again
        next time.
        """
        if self.sidecar is None or not self._new or not self.sidecar.parent.is_dir():
            return
        from store.parquet_rows import atomic_write_bytes   # pyarrow loads only when needed

        merged = self._read(self.sidecar) | self._new       # another process may have added its own
        try:
            atomic_write_bytes(self.sidecar, json.dumps({"format": SIDECAR_FORMAT, "entries": merged},
                                                        separators=(",", ":")).encode())
        except OSError:
            return
        self._known, self._new = merged, {}
