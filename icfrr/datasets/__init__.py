"""Datasets: every supported layout read into one :class:`Dataset` shape.

Layouts (docs/SPEC.md section 5): ``tuberlin``, ``sketchy_zs1``, ``sketchy_zs2`` (SBIR
file lists), ``custom`` (published folder layout, optional labels.json),
``folder`` (``query/<class>/*``, ``gallery/<class>/*``) and ``demo`` (generated).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .base import Dataset, DatasetError, Item
from .custom import load_custom_dataset
from .demo import DEFAULT_ROOT as DEMO_ROOT
from .demo import demo_version, ensure_demo
from .filelist import LAYOUTS, load_filelist_dataset
from .folder import load_folder_dataset

#: Every dataset name load_dataset accepts.
DATASET_NAMES = (*LAYOUTS, "custom", "folder", "demo")

__all__ = ["DATASET_NAMES", "Dataset", "DatasetError", "Item", "ensure_demo", "load_dataset"]


def load_dataset(name: str, data_root: str | Path | None = None, per_class: int = -1) -> Dataset:
    """Read a dataset's items (paths, labels, class names) in distance-matrix order.

    Args:
        name: One of :data:`DATASET_NAMES`.
        data_root: Folder holding the data: for ``tuberlin`` the parent of
            ``TUBerlin/``, for ``sketchy_*`` the parent of ``Sketchy/``, for
            ``custom`` and ``folder`` the folder with ``query/`` and ``gallery/``.
            For ``demo`` where to generate it (default ``data/demo``).
        per_class: Keep the first N items of each label in list order; -1 keeps all.

    Returns:
        The :class:`Dataset`; ``query[i].idx == i`` and ``gallery[j].idx == j``.

    Raises:
        DatasetError: Unknown name, missing data_root, or a malformed layout.
    """
    if name not in DATASET_NAMES:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    if name == "demo":
        root = ensure_demo(Path(data_root) if data_root else DEMO_ROOT)
        ds = load_folder_dataset(root, per_class, "demo")
        return dataclasses.replace(ds, version=demo_version(root))
    if data_root is None:
        raise DatasetError(f"dataset {name!r} needs --data_root")
    if name in LAYOUTS:
        return load_filelist_dataset(name, Path(data_root), per_class)
    if name == "custom":
        return load_custom_dataset(Path(data_root), per_class)
    return load_folder_dataset(Path(data_root), per_class)
