"""Items and datasets: the common shape every layout loader returns."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

#: File name endings read as images by the folder-style layouts.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DatasetError(ValueError):
    """A dataset cannot be read as asked; the message says what to fix."""


@dataclass(frozen=True)
class Item:
    """One query or gallery image.

    Attributes:
        side: ``"query"`` or ``"gallery"``.
        idx: Row of this item in the distance matrices (0-based, per side).
        path: Path relative to the dataset root, None when only distances exist.
        label: Integer class label, -1 when unknown.
        class_name: Human-readable class name, None when unknown.
    """

    side: str
    idx: int
    path: str | None
    label: int
    class_name: str | None


@dataclass(frozen=True)
class Dataset:
    """The query and gallery items of one dataset, in distance-matrix order.

    Attributes:
        name: Dataset name (``tuberlin``, ``custom``, ``demo``...).
        root: Directory the item paths are relative to; None for imported distances.
        query: Query items, ``query[i].idx == i``.
        gallery: Gallery items, ``gallery[j].idx == j``.
        version: What else the images depend on (the demo's seed and generator
            version), so that regenerated images get another fingerprint.
    """

    name: str
    root: Path | None
    query: list[Item] = field(repr=False)
    gallery: list[Item] = field(repr=False)
    version: str | None = None

    @property
    def labels_q(self) -> np.ndarray:
        """int64 [Q] query labels (-1: unknown)."""
        return np.array([it.label for it in self.query], dtype=np.int64)

    @property
    def labels_g(self) -> np.ndarray:
        """int64 [G] gallery labels (-1: unknown)."""
        return np.array([it.label for it in self.gallery], dtype=np.int64)

    @property
    def class_names(self) -> dict[int, str]:
        """Label -> class name for every labelled item that has a name."""
        names: dict[int, str] = {}
        for it in (*self.query, *self.gallery):
            if it.label != -1 and it.class_name is not None:
                names.setdefault(it.label, it.class_name)
        return names

    @property
    def n_classes(self) -> int:
        """Number of distinct known labels over both sides."""
        labels = set(self.labels_q.tolist()) | set(self.labels_g.tolist())
        labels.discard(-1)
        return len(labels)

    def fingerprint(self) -> str:
        """sha256 hex of the item lists (sides, paths, labels) in order, and the version.

        It names the items, not the pictures: two roots holding the same file
        names share it. Cached features are keyed by the pictures' content too
        (``jobs.artifacts``, with :mod:`store.identity`).
        """
        h = hashlib.sha256()
        if self.version is not None:
            h.update(f"version\t{self.version}\n".encode())
        for it in (*self.query, *self.gallery):
            h.update(f"{it.side}\t{it.idx}\t{it.path}\t{it.label}\n".encode())
        return h.hexdigest()

    def absolute_paths(self, side: str) -> list[Path]:
        """Absolute image paths of one side, in index order.

        Raises:
            DatasetError: When the dataset has no root or an item has no path.
        """
        items = self.query if side == "query" else self.gallery
        if self.root is None or any(it.path is None for it in items):
            raise DatasetError(f"dataset {self.name!r} has no image files (only distances); "
                               "give --data_root with the images")
        return [self.root / it.path for it in items]


def make_items(side: str, entries: Iterable[tuple[str | None, int, str | None]]) -> list[Item]:
    """Number ``(path, label, class_name)`` entries into items of one side."""
    return [Item(side, i, p, int(lab), name) for i, (p, lab, name) in enumerate(entries)]


def keep_per_class(entries: list[tuple], per_class: int) -> list[tuple]:
    """Keep the first ``per_class`` entries of each label, in order (docs/SPEC.md section 5).

    Args:
        entries: Tuples whose second element is the integer label.
        per_class: How many to keep per label; -1 keeps all.
    """
    if per_class == -1:
        return list(entries)
    if per_class < 1:
        raise DatasetError(f"per_class must be -1 (all) or a positive integer, got {per_class}")
    seen: dict[int, int] = defaultdict(int)
    kept = []
    for e in entries:
        if seen[e[1]] < per_class:
            seen[e[1]] += 1
            kept.append(e)
    return kept


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by file name."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                  key=lambda p: p.name)


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise a one-line DatasetError."""
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path} (check --data_root)")
    return path
