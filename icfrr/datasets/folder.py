"""Class-folder layout: ``<root>/query/<class>/*`` and ``<root>/gallery/<class>/*``.

Covers exports of Office-Home, DomainNet, QuickDraw and the generated demo.
Labels are the positions of the class names in the sorted union of both sides'
class folders, so the same class gets the same label on both sides.
"""

from __future__ import annotations

from pathlib import Path

from .base import Dataset, DatasetError, keep_per_class, list_images, make_items, require_dir


def load_folder_dataset(data_root: Path, per_class: int = -1, name: str = "folder") -> Dataset:
    """Load the class-folder layout under ``data_root``.

    Args:
        data_root: Folder with ``query/<class>/`` and ``gallery/<class>/`` subfolders.
        per_class: First N images of each class (sorted file names); -1 keeps all.
        name: Name given to the dataset.

    Raises:
        DatasetError: Missing folders or a side without any image.
    """
    root = Path(data_root)
    class_dirs = {side: sorted(d.name for d in require_dir(root / side, f"{side} folder").iterdir()
                               if d.is_dir())
                  for side in ("query", "gallery")}
    classes = sorted(set(class_dirs["query"]) | set(class_dirs["gallery"]))
    label_of = {c: i for i, c in enumerate(classes)}
    sides = {}
    for side in ("query", "gallery"):
        entries = [(f"{side}/{c}/{f.name}", label_of[c], c)
                   for c in class_dirs[side] for f in list_images(root / side / c)]
        if not entries:
            raise DatasetError(f"no images in {root / side}/<class>/ (expected query/<class>/*, gallery/<class>/*)")
        sides[side] = make_items(side, keep_per_class(entries, per_class))
    return Dataset(name, root, sides["query"], sides["gallery"])
