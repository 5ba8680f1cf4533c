"""Up-front checks that a folder can be written, so commands refuse before computing anything."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class PathError(ValueError):
    """A path a command must write to cannot be written; the message says which and why."""


def check_folder_name(name: str, flag: str) -> None:
    """Refuse a name that would not stay one folder under its root (``../x``, ``/abs``, ``a/b``, empty).

    Args:
        name: The value, used as one folder's name (``<cache_root>/<name>/``).
        flag: The command-line flag giving it, for the message.

    Raises:
        PathError: Empty, ``.`` or ``..``, or holding a path separator or a NUL.
    """
    if name in ("", ".", "..") or any(c in name for c in ("/", "\\", "\0")) or name.strip() != name:
        raise PathError(f"{flag} {name!r} is not a plain name: it names a folder under the cache and "
                        "results folders, so it cannot be empty, '.', '..', start or end with spaces, or "
                        "hold '/' or '\\'; pass a name such as my_dataset")


def existing_ancestor(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(path: str | Path, flag: str, given: str | Path | None = None) -> None:
    """Refuse a folder that could not be created or written, without leaving anything behind.

    The folder (or, when missing, its nearest existing parent, where it would
    be created) must be a directory in which a file can be created: a
    temporary probe file is made and removed (this also catches read-only
    mounts, which permission bits do not show to root).

    Args:
        path: The folder a command will write into (may not exist yet).
        flag: The command-line flag naming it, for the message.
        given: The flag's value when it is not ``path`` itself (``--db``: the
            file, whose folder is ``path``).

    Raises:
        PathError: A file where a folder is needed, or no permission / read-only.
    """
    path = Path(path)
    shown = f"{flag} {given if given is not None else path}"
    base = existing_ancestor(path)
    if not base.is_dir():
        raise PathError(f"{shown}: {base} is a file, not a folder; pass another {flag}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".icfrr-write-probe-", dir=base)
    except OSError as exc:
        why = "is on a read-only file system" if exc.errno == errno.EROFS else "is not writable"
        raise PathError(f"{shown}: {base} {why} ({exc.strerror}); pass another {flag} "
                        "or fix its permissions") from None
    os.close(fd)
    os.unlink(probe)
