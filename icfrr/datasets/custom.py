"""The published code's custom folder layout (docs/SPEC.md section 5).

``<root>/query/*`` and ``<root>/gallery/*`` image files in sorted file-name order,
with an optional ``<root>/labels.json``:
``{"query": {"file name": int}, "gallery": {"file name": int}}``.
Without labels every item gets -1: re-ranking runs, metrics are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Dataset, DatasetError, keep_per_class, list_images, make_items, require_dir


def _read_labels(path: Path) -> dict[str, dict[str, int]] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}; it must be JSON "
                           '{"query": {"file": int}, "gallery": {"file": int}}') from None
    if not isinstance(data, dict) or not all(isinstance(data.get(s), dict) for s in ("query", "gallery")):
        raise DatasetError(f"{path} must hold {{\"query\": {{...}}, \"gallery\": {{...}}}} mapping file names to ints")
    for side in ("query", "gallery"):
        for k, v in data[side].items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise DatasetError(f"{path}: label of {side}/{k} must be an integer, got {v!r}")
    return data


def load_custom_dataset(data_root: Path, per_class: int = -1, name: str = "custom") -> Dataset:
    """Load the custom layout under ``data_root``.

    Args:
        data_root: Folder with ``query/``, ``gallery/`` and optionally ``labels.json``.
        per_class: First N items of each label in file order; -1 keeps all
            (with no labels every item shares label -1, so N applies to all).
        name: Name given to the dataset.

    Raises:
        DatasetError: Missing folders, no images, a bad labels file, or an image
            without a label when labels.json exists.
    """
    root = Path(data_root)
    labels = _read_labels(root / "labels.json")
    sides = {}
    for side in ("query", "gallery"):
        files = list_images(require_dir(root / side, f"{side} folder"))
        if not files:
            raise DatasetError(f"no image files in {root / side}")
        entries = []
        for f in files:
            if labels is None:
                lab = -1
            elif f.name in labels[side]:
                lab = labels[side][f.name]
            else:
                raise DatasetError(f"{root / 'labels.json'} has no {side} label for {f.name}; "
                                   "label every image or remove labels.json")
            entries.append((f"{side}/{f.name}", lab, None))
        sides[side] = make_items(side, keep_per_class(entries, per_class))
    return Dataset(name, root, sides["query"], sides["gallery"])
