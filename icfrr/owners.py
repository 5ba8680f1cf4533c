"""Temporary folders tagged with their owner process, so stale ones of killed runs can be removed.

A temporary folder's name carries ``<pid>@<host>``; a later run on the same
host removes the ones whose process is gone. Folders of other hosts (a
shared file system) or of live processes are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

_TAG = re.compile(r"-(\d+)@([A-Za-z0-9_.-]+)-")


def host_name() -> str:
    """This machine's name, reduced to ``[A-Za-z0-9_.-]``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", socket.gethostname()) or "host"


def owner_tag() -> str:
    """``<pid>@<host>`` of this process, to put in a temporary folder's name."""
    return f"{os.getpid()}@{host_name()}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:      # exists, owned by another user
        return True
    return True


def remove_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove folders ``<parent>/<prefix>*`` whose tagged owner process is dead on this host.

    Args:
        parent: The folder to scan (missing: nothing to do).
        prefix: The start of the temporary folders' names, e.g. ``".tmp-"``.

    Returns:
        The folders removed.
    """
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    here = host_name()
    for entry in entries:
        if not entry.name.startswith(prefix) or not entry.is_dir() or entry.is_symlink():
            continue
        found = _TAG.search(entry.name[len(prefix) - 1:])
        if found is None or found.group(2) != here or pid_alive(int(found.group(1))):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed
