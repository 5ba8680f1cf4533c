"""Small file helpers shared by the feature code and the store (no torch, no database)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (read by :func:`hashlib.file_digest`)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def pickled_global(exc: BaseException) -> str | None:
    """The Python object a weights-only ``torch.load`` refused, or None if it failed otherwise."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    return found.group(1) if found else None
