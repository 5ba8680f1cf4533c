"""Reading distance matrices and labels that users bring: the published ``.pth`` cache and ``.npy`` files.

The published code caches ``<cache_root>/<dataset>/<per_class>/qg_dists.pth``
(float [Q, G]), ``gg_dists.pth`` (float [G, G]) and optionally ``labels.pth``
(``{"query": int [Q], "gallery": int [G]}``), each written by ``torch.save``.
The lab also reads an optional ``qq_dists.pth`` (float [Q, Q]) there, for the
re-ranking methods that need query-query distances (k-reciprocal, ECN).
They are loaded with ``weights_only=True``: no code from the file runs.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch

from icfrr.features.checkpoint import pickled_global


class SourceError(ValueError):
    """A user-provided distance or label file is missing or malformed; the message names it."""


PUBLISHED_FILES = ("qg_dists.pth", "gg_dists.pth", "labels.pth", "qq_dists.pth")


def published_cache_dir(cache_root: str | Path, dataset: str, per_class: int) -> Path:
    """``<cache_root>/<dataset>/<per_class>/``, where the published code keeps its cache."""
    return Path(cache_root) / dataset / str(per_class)


def has_published_cache(folder: Path) -> bool:
    """Whether ``folder`` holds the published ``qg_dists.pth`` and ``gg_dists.pth``."""
    return (folder / "qg_dists.pth").is_file() and (folder / "gg_dists.pth").is_file()


def _load_pth(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = pickled_global(exc)
        if found is None:
            raise SourceError(f"cannot read {path}: not a torch.save file") from None
        raise SourceError(f"{path} holds pickled Python objects (e.g. {found}), not plain tensors; "
                          "save it with torch.save(tensor) or as .npy") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise SourceError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None


def read_matrix(path: str | Path) -> np.ndarray:
    """A float32 2-D matrix from a ``.pth`` (one tensor) or ``.npy`` file.

    ``.npy`` files are memory-mapped when they already hold float32, so a
    [G, G] gallery matrix is read by pieces, not loaded twice.

    Raises:
        SourceError: Missing file, not a 2-D float matrix, or NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"distance file not found: {path}")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {path} as .npy: {str(exc).splitlines()[0]}") from None
    elif path.suffix in (".pth", ".pt"):
        obj = _load_pth(path)
        if not isinstance(obj, torch.Tensor):
            raise SourceError(f"{path} must hold one tensor, got {type(obj).__name__}")
        arr = obj.numpy() if obj.dtype != torch.bfloat16 else obj.float().numpy()
    else:
        raise SourceError(f"{path}: distance matrices must be .npy or .pth files")
    if arr.ndim != 2 or arr.dtype.kind != "f":
        raise SourceError(f"{path} must hold a 2-D float matrix, got shape {arr.shape} dtype {arr.dtype}")
    for start in range(0, arr.shape[0], 4096):
        if not np.isfinite(arr[start:start + 4096]).all():
            raise SourceError(f"{path} contains NaN or infinite distances; recompute them")
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


def _as_label_vector(x: object, n: int, what: str, path: Path) -> np.ndarray:
    a = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x)
    if a.ndim != 1 or a.shape[0] != n or a.dtype.kind not in "iu":
        raise SourceError(f"{path}: {what} labels must be {n} integers, got shape {a.shape} dtype {a.dtype}")
    return a.astype(np.int64)


def read_labels(path: str | Path, n_query: int, n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Query and gallery labels from ``.pth`` / ``.npz`` / ``.json`` holding ``query`` and ``gallery``.

    Returns:
        (labels_q int64 [Q], labels_g int64 [G]); -1 means unknown.

    Raises:
        SourceError: Missing file, missing keys, or wrong lengths.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"labels file not found: {path}")
    if path.suffix in (".pth", ".pt"):
        data = _load_pth(path)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise SourceError(f"cannot read {path} as JSON: {exc}") from None
    else:
        raise SourceError(f"{path}: labels must be a .pth, .npz or .json file")
    if not isinstance(data, dict) or "query" not in data or "gallery" not in data:
        raise SourceError(f"{path} must hold {{'query': int [Q], 'gallery': int [G]}}")
    return (_as_label_vector(data["query"], n_query, "query", path),
            _as_label_vector(data["gallery"], n_gallery, "gallery", path))
