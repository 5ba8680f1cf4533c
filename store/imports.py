"""Reading the files users bring: distance matrices (the published ``.pth`` cache, ``.npy``),
feature matrices (``.npy``, Parquet) and labels (``.pth``, ``.npz``, ``.json``).

The published code caches ``<cache_root>/<dataset>/<per_class>/qg_dists.pth``
(float [Q, G]), ``gg_dists.pth`` (float [G, G]) and optionally ``labels.pth``
(``{"query": int [Q], "gallery": int [G]}``), each written by ``torch.save``.
The lab also reads an optional ``qq_dists.pth`` (float [Q, Q]) there, for the
re-ranking methods that need query-query distances (k-reciprocal, ECN).
They are loaded with ``weights_only=True``: no code from the file runs.

Feature files (:func:`read_features`) are float ``[N, D]``: a 2-D ``.npy``
array, or a Parquet file with either one list column (the vectors; other
columns are ignored, rows in file order) or only numeric columns, one per
dimension. Every reader checks shapes and finiteness and raises
:class:`SourceError` with one line naming the file.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from icfrr.files import pickled_global
from store.schema import LABEL_MAX


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
    if 0 in arr.shape:
        raise SourceError(f"{path} is a {arr.shape[0]} x {arr.shape[1]} matrix; it needs at least one row "
                          "and one column")
    if arr.dtype != np.float32:
        arr = _as_float32(arr)
    for start in range(0, arr.shape[0], 4096):   # after the cast: 1e300 in float64 is inf in float32
        if not np.isfinite(arr[start:start + 4096]).all():
            raise SourceError(f"{path} contains NaN or infinite distances (in float32, as they are used); "
                              "recompute them")
    return arr


def _as_float32(arr: np.ndarray) -> np.ndarray:
    """``arr`` cast to float32, without numpy's overflow warning (the caller checks finiteness after)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=np.float32)


def _as_label_vector(x: object, n: int, what: str, path: Path) -> np.ndarray:
    a = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x)
    if a.ndim != 1 or a.shape[0] != n or a.dtype.kind not in "iu":
        raise SourceError(f"{path}: {what} labels must be {n} integers, got shape {a.shape} dtype {a.dtype}")
    if n and int(a.min()) < -1:   # compared as Python ints: a uint64 2**64-1 is not -1
        i = int(np.argmax(a < -1))
        raise SourceError(f"{path}: {what} label {int(a[i])} at index {i} is negative; labels are 0 or more, "
                          "-1 for unknown")
    if n and int(a.max()) > LABEL_MAX:
        i = int(np.argmax(a > LABEL_MAX))
        raise SourceError(f"{path}: {what} label {int(a[i])} at index {i} is above {LABEL_MAX}, the largest "
                          "the store keeps; number the classes 0..C-1")
    return a.astype(np.int64)


def _label_record(path: Path) -> dict:
    """The ``{"query": ..., "gallery": ..., ...}`` mapping of a labels file."""
    if not path.is_file():
        raise SourceError(f"labels file not found: {path}")
    if path.suffix in (".pth", ".pt"):
        data = _load_pth(path)
    elif path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise SourceError(f"cannot read {path} as .npz ({str(exc).splitlines()[0][:120]}); "
                              "save it with numpy.savez(path, query=..., gallery=...) and string arrays "
                              "for the names") from None
    elif path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise SourceError(f"cannot read {path} as JSON: {exc}") from None
    else:
        raise SourceError(f"{path}: labels must be a .pth, .npz or .json file")
    if not isinstance(data, dict) or "query" not in data or "gallery" not in data:
        raise SourceError(f"{path} must hold {{'query': int [Q], 'gallery': int [G]}}")
    return data


def read_labels(path: str | Path, n_query: int, n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Query and gallery labels from ``.pth`` / ``.npz`` / ``.json`` holding ``query`` and ``gallery``.

    Returns:
        (labels_q int64 [Q], labels_g int64 [G]); -1 means unknown.

    Raises:
        SourceError: Missing file, missing keys, or wrong lengths.
    """
    path = Path(path)
    data = _label_record(path)
    return (_as_label_vector(data["query"], n_query, "query", path),
            _as_label_vector(data["gallery"], n_gallery, "gallery", path))


def _as_names(x: object, n: int, what: str, path: Path) -> list[str]:
    a = np.asarray(x)
    if a.ndim != 1 or a.shape[0] != n or a.dtype.kind not in "US":
        raise SourceError(f"{path}: {what}_names must be {n} strings (one per {what} item), "
                          f"got shape {a.shape} dtype {a.dtype}")
    return [str(v.decode() if isinstance(v, bytes) else v) for v in a.tolist()]


def read_labels_and_names(path: str | Path, n_query: int, n_gallery: int
                          ) -> tuple[np.ndarray, np.ndarray, list[str] | None, list[str] | None]:
    """Labels as :func:`read_labels`, plus the optional ``query_names`` / ``gallery_names`` string arrays.

    Returns:
        (labels_q int64 [Q], labels_g int64 [G], query names or None, gallery
        names or None); names are the items' file paths as the user wrote them.

    Raises:
        SourceError: Missing file or keys, wrong lengths, non-integer labels,
            names that are not strings.
    """
    path = Path(path)
    data = _label_record(path)
    names = {side: _as_names(data[f"{side}_names"], n, side, path) if f"{side}_names" in data else None
             for side, n in (("query", n_query), ("gallery", n_gallery))}
    return (_as_label_vector(data["query"], n_query, "query", path),
            _as_label_vector(data["gallery"], n_gallery, "gallery", path), names["query"], names["gallery"])


CLASS_NAMES_FILE = "class_names.json"


def _class_name_map(x: object, path: Path) -> dict[int, str]:
    """Label -> name from a string array indexed by label, or a ``{label: name}`` mapping."""
    if isinstance(x, dict):
        try:
            pairs = [(int(k), v) for k, v in x.items()]
        except (TypeError, ValueError):
            pairs = None
        if pairs is None or not all(isinstance(v, str) for _, v in pairs) or any(k < 0 for k, _ in pairs):
            raise SourceError(f"{path}: class_names must map labels (integers >= 0) to strings")
        return dict(pairs)
    a = np.asarray(x)
    if a.ndim != 1 or (a.dtype.kind not in "US" and not (a.size == 0 or a.dtype.kind == "O" and all(
            isinstance(v, str) for v in a.tolist()))):
        raise SourceError(f"{path}: class_names must be a list of strings indexed by label "
                          f"(class_names[label] is the name), got shape {a.shape} dtype {a.dtype}")
    return {i: str(v.decode() if isinstance(v, bytes) else v) for i, v in enumerate(a.tolist())}


def read_class_names(path: str | Path) -> dict[int, str] | None:
    """The optional class names of a labels file, or of a ``class_names.json`` file.

    A labels file (``.npz``, ``.json``, ``.pth``) may hold ``class_names``: a
    string array indexed by label. A ``class_names.json`` file (the published
    cache layout's optional names) holds that list itself, or an object
    mapping labels to names. Labels without a name are simply absent.

    Returns:
        Label -> class name, None when the file holds no names.

    Raises:
        SourceError: Unreadable file, or names that are not strings.
    """
    path = Path(path)
    if path.name == CLASS_NAMES_FILE:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {path} as JSON ({str(exc).splitlines()[0][:120]}); it must "
                              "hold a list of class names indexed by label") from None
        return _class_name_map(data, path)
    data = _label_record(path)
    return _class_name_map(data["class_names"], path) if "class_names" in data else None


def _parquet_matrix(path: Path) -> np.ndarray:
    """[N, D] from one list column (others ignored) or from numeric columns, one per dimension."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"cannot read {path} as Parquet: {str(exc).splitlines()[0][:120]}") from None
    lists = [f.name for f in table.schema
             if pa.types.is_list(f.type) or pa.types.is_large_list(f.type) or pa.types.is_fixed_size_list(f.type)]
    if len(lists) > 1:
        raise SourceError(f"{path} has {len(lists)} list columns ({', '.join(lists)}); keep the one "
                          "holding the feature vectors")
    if lists:
        col = table.column(lists[0]).combine_chunks()
        if col.null_count or (len(col) and col.flatten().null_count):
            raise SourceError(f"{path}: column {lists[0]!r} has missing values")
        lengths = np.asarray(pc.list_value_length(col)) if len(col) else np.zeros(0, np.int64)
        if len(lengths) and (lengths != lengths[0]).any():
            raise SourceError(f"{path}: the vectors of column {lists[0]!r} have different lengths "
                              f"({int(lengths.min())} to {int(lengths.max())}); they must all have D values")
        values = col.flatten()
        if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            raise SourceError(f"{path}: column {lists[0]!r} must hold numbers, got {values.type}")
        dim = int(lengths[0]) if len(lengths) else 0
        return _as_float32(values.to_numpy(zero_copy_only=False)).reshape(len(col), dim)
    bad = [f.name for f in table.schema if not (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))]
    if bad or table.num_columns == 0:
        raise SourceError(f"{path} must hold one list<float> column, or only numeric columns (one per "
                          f"dimension); found {', '.join(bad) or 'no columns'}")
    if any(c.null_count for c in table.columns):
        raise SourceError(f"{path} has missing values")
    return np.column_stack([_as_float32(c.to_numpy()) for c in table.columns]
                           ).reshape(table.num_rows, table.num_columns)


def read_features(path: str | Path) -> np.ndarray:
    """A float32 [N, D] feature matrix from a ``.npy`` or ``.parquet`` file (see the module doc).

    Raises:
        SourceError: Missing file, another format, not 2-D, no rows or no
            columns, NaN or infinite values.
    """
    path = Path(path)
    if not path.is_file():
        raise SourceError(f"features file not found: {path}")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {path} as .npy: {str(exc).splitlines()[0]}") from None
        if arr.ndim != 2 or arr.dtype.kind not in "fiu":
            raise SourceError(f"{path} must hold a 2-D float array [N, D], got shape {arr.shape} dtype {arr.dtype}")
    elif path.suffix in (".parquet", ".pq"):
        arr = _parquet_matrix(path)
    else:
        raise SourceError(f"{path}: feature files must be .npy or .parquet")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SourceError(f"{path} holds {arr.shape[0]} vectors of {arr.shape[1]} values; it needs at least "
                          "one of each")
    arr = _as_float32(arr)
    if not arr.flags.writeable:          # Arrow's buffers: torch wants to own writable memory
        arr = arr.copy()
    if not np.isfinite(arr).all():       # after the cast: 1e300 in float64 is inf in float32
        raise SourceError(f"{path} contains NaN or infinite values (in float32, as they are used); "
                          "fix the features")
    return arr
