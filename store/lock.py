"""One sweep per store at a time: an exclusive ``flock`` on ``<db>.lock`` beside the database.

The lock is taken on the store's resolved real path, so ``--db`` given as a
symlink locks the store it points to. The lock file holds the owner's pid, host and command, so a second sweep can
say who holds it. The kernel drops the lock when its process dies (even by
SIGKILL), so a killed sweep never leaves the store locked. The file is
removed on release; a sweep that opened it just before checks after locking
that the path still names the file it locked, and retries otherwise.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from icfrr.owners import host_name
from store.db import StoreError


def lock_path(db: str | Path) -> Path:
    """``<db>.lock`` beside the real file: a symlink to a store (or another spelling of its path)
    shares that store's lock."""
    return Path(f"{os.path.realpath(db)}.lock")


class SweepLock:
    """The exclusive sweep lock of one store; ``with SweepLock(db, command):`` or acquire/release."""

    def __init__(self, db: str | Path, command: str) -> None:
        self.path = lock_path(db)
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock without waiting.

        Raises:
            StoreError: Another sweep holds it (its pid, host and command in the
                message), or the lock file cannot be created.
        """
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise StoreError(f"cannot create the sweep lock {self.path}: {exc.strerror or exc}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise StoreError(
                    f"another sweep (pid {holder.get('pid', '?')} on {holder.get('host', '?')}: "
                    f"{holder.get('command', '?')}) is writing to {str(self.path)[:-5]}; wait for it to "
                    "finish or pass another --db") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:               # the previous holder removed it between our open and flock
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": host_name(),
                                     "command": self.command}).encode())
            self._fd = fd
            return
        raise StoreError(f"could not take the sweep lock {self.path}; try again")

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> SweepLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 65536).decode() or "{}")
    except (OSError, ValueError):
        return {}
