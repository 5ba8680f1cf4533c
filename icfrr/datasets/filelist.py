"""The SBIR file-list layout of TU-Berlin and Sketchy (docs/SPEC.md section 5).

Each line of a list file is ``<path relative to the dataset folder> <integer label>``;
the path may contain spaces, so the label is whatever follows the last space.
The class name is the name of the folder that holds the image.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from .base import Dataset, DatasetError, keep_per_class, make_items

#: name -> (dataset folder under data_root, query list, gallery list), lists relative to that folder.
LAYOUTS: dict[str, tuple[str, str, str]] = {
    "tuberlin": ("TUBerlin",
                 "zeroshot/png_ready_filelist_zero.txt",
                 "zeroshot/ImageResized_ready_filelist_zero.txt"),
    "sketchy_zs1": ("Sketchy",
                    "zeroshot1/sketch_tx_000000000000_ready_filelist_zero.txt",
                    "zeroshot1/all_photo_filelist_zero.txt"),
    "sketchy_zs2": ("Sketchy",
                    "zeroshot2/sketch_tx_000000000000_ready_filelist_zero.txt",
                    "zeroshot2/all_photo_filelist_zero.txt"),
}


def read_filelist(path: Path) -> list[tuple[str, int, str]]:
    """Parse one list file into ``(relative path, label, class name)`` entries.

    Raises:
        DatasetError: When the file is missing or a line is not ``<path> <int>``.
    """
    if not path.is_file():
        raise DatasetError(f"file list not found: {path} (check --data_root and --dataset)")
    entries = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            rel, sep, label = line.rpartition(" ")
            try:
                lab = int(label)
            except ValueError:
                lab = None
            if not sep or not rel or lab is None or lab < 0:
                raise DatasetError(f"{path}:{lineno}: expected '<path> <non-negative integer label>', "
                                   f"got {line[:80]!r}")
            rel = rel.replace("\\", "/")
            entries.append((rel, lab, PurePosixPath(rel).parent.name or None))
    if not entries:
        raise DatasetError(f"file list is empty: {path}")
    return entries


def load_filelist_dataset(name: str, data_root: Path, per_class: int = -1) -> Dataset:
    """Load ``tuberlin``, ``sketchy_zs1`` or ``sketchy_zs2`` from ``data_root``.

    Args:
        name: One of :data:`LAYOUTS`.
        data_root: The folder holding ``TUBerlin/`` or ``Sketchy/``.
        per_class: First N items of each label in file-list order; -1 keeps all.
    """
    folder, qlist, glist = LAYOUTS[name]
    root = Path(data_root) / folder
    query = keep_per_class(read_filelist(root / qlist), per_class)
    gallery = keep_per_class(read_filelist(root / glist), per_class)
    return Dataset(name, root, make_items("query", query), make_items("gallery", gallery))
