"""Matrices as Parquet, one row per matrix row, readable by DuckDB without our code.

A matrix [N, M] becomes a table with an int32 index column and one or more
fixed-size list columns of M values per row (Arrow ``fixed_size_list``; DuckDB
reads them as lists). This writes and reads a 2,400 x 28,000 float32 matrix in
about a second and round-trips the values bit for bit. Metadata (shapes,
dataset, backbone, hashes, created time) sits in the file's key/value metadata
under the key ``icfrr`` as JSON:

    SELECT * FROM parquet_kv_metadata('qg_dists.parquet');
    SELECT query_idx, dists[1 + 7] AS d_to_gallery_7 FROM read_parquet('qg_dists.parquet');
    SELECT query_idx, unnest(range(len(dists))) AS gallery_idx, unnest(dists) AS dist
      FROM read_parquet('qg_dists.parquet');      -- long form

Writes go to a temporary file in the same folder, then ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"icfrr"
#: Rows per Parquet row group: small enough for quick point reads, large enough to stream fast.
ROW_GROUP = 64


def _umask_mode(mode: int) -> int:
    """``mode`` filtered by the process umask (mkstemp/mkdtemp create 0600/0700 regardless)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def public_tempdir(parent: Path, prefix: str) -> Path:
    """A new temporary folder in ``parent`` with ordinary (umask) permissions."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, _umask_mode(0o777))
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary sibling file and ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _umask_mode(0o666))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_rows(path: Path, index_name: str, columns: Mapping[str, np.ndarray], meta: Mapping[str, object]) -> None:
    """Write matrices sharing a row count as one Parquet file, atomically.

    Args:
        path: Destination ``.parquet`` file.
        index_name: Name of the int32 row-index column (``query_idx``...).
        columns: Column name -> 2-D array [N, M_c]; each row becomes a fixed-size list.
        meta: JSON-able metadata stored under the ``icfrr`` key.
    """
    arrays = list(columns.values())
    n = arrays[0].shape[0]
    fields = {index_name: pa.array(np.arange(n, dtype=np.int32))}
    for name, arr in columns.items():
        arr = np.ascontiguousarray(arr)
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"column {name} must be [{n}, M], got {arr.shape}")
        fields[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])
    full_meta = dict(meta) | {"columns": {k: [int(v.shape[0]), int(v.shape[1]), str(v.dtype)]
                                          for k, v in columns.items()}}
    write_table(path, pa.table(fields), full_meta)


def write_table(path: Path, table: pa.Table, meta: Mapping[str, object]) -> None:
    """Write an Arrow table as Parquet with ``icfrr`` JSON metadata, atomically (temp file + os.replace)."""
    table = table.replace_schema_metadata({META_KEY: json.dumps(dict(meta)).encode()})
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, _umask_mode(0o666))
        pq.write_table(table, tmp, compression="lz4", row_group_size=ROW_GROUP, use_dictionary=False,
                       write_page_checksum=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_meta(path: Path) -> dict:
    """The ``icfrr`` metadata of a file written by :func:`write_rows`."""
    raw = pq.read_schema(path).metadata or {}
    if META_KEY not in raw:
        raise ValueError(f"{path} has no icfrr metadata; it was not written by this project")
    return json.loads(raw[META_KEY])


def check_rows(path: Path, kind: str, rows: int, widths: Mapping[str, int | None] | None = None,
               key: str | None = None) -> dict:
    """Check, from its footer only, that an artifact file holds what its folder's marker says.

    Args:
        path: A Parquet file written by :func:`write_rows` or :func:`write_table`.
        kind: The ``kind`` its metadata must name (``qg_dists``...).
        rows: The number of rows it must hold.
        widths: Column -> the width its rows must have (None: any), for
            :func:`write_rows` files.
        key: The ``cache_key`` its metadata must carry, if given.

    Returns:
        Its metadata.

    Raises:
        ValueError: A truncated or foreign file, another kind or key, or other shapes.
    """
    info = pq.read_metadata(path)              # a truncated file has no footer: ArrowInvalid (a ValueError)
    raw = (info.metadata or {}).get(META_KEY)
    if raw is None:
        raise ValueError(f"{path} has no icfrr metadata")
    meta = json.loads(raw)
    if meta.get("kind") != kind or (key is not None and meta.get("cache_key") != key):
        raise ValueError(f"{path} holds {meta.get('kind')!r} of key {str(meta.get('cache_key'))[:16]}, "
                         f"not {kind!r} of key {str(key)[:16]}")
    if info.num_rows != rows:
        raise ValueError(f"{path} has {info.num_rows} rows, expected {rows}")
    for name, width in (widths or {}).items():
        got = meta.get("columns", {}).get(name)
        if got is None or got[0] != rows or (width is not None and got[1] != width):
            raise ValueError(f"{path}: column {name} is {got}, expected [{rows}, {width or 'any'}]")
    return meta


def read_rows(path: Path, names: list[str]) -> tuple[dict[str, np.ndarray], dict]:
    """Read back the matrices written by :func:`write_rows`, verifying the page checksums.

    Returns:
        (column name -> array [N, M] of the dtype it was written with, metadata).

    Raises:
        ValueError: A column is missing, its shape disagrees with the metadata,
            or a page's checksum does not match (a damaged file).
    """
    with pq.ParquetFile(path, page_checksum_verification=True) as fh:
        table = fh.read(columns=names)
    meta = json.loads((table.schema.metadata or {})[META_KEY])
    out = {}
    for name in names:
        rows, width, dtype = meta["columns"][name]
        values = np.empty(rows * width, np.dtype(dtype))    # one writable copy, filled chunk by chunk
        filled = 0
        for chunk in table.column(name).chunks:
            part = chunk.flatten().to_numpy(zero_copy_only=False)
            if filled + part.size > values.size:
                raise ValueError(f"{path}: column {name} holds more values than its metadata's {rows}x{width}")
            values[filled:filled + part.size] = part
            filled += part.size
        if filled != values.size:
            raise ValueError(f"{path}: column {name} holds {filled} values, metadata says {rows}x{width}")
        out[name] = values.reshape(rows, width)
    return out, meta


def read_row(path: Path, index_name: str, i: int, name: str) -> np.ndarray:
    """Row ``i`` of matrix ``name`` in a file of :func:`write_rows`, reading one row group only.

    Returns:
        A writable 1-D array of the dtype the matrix was written with.

    Raises:
        ValueError: No such row or column, a damaged page, or rows out of order.
    """
    with pq.ParquetFile(path, page_checksum_verification=True) as fh:
        meta = json.loads((fh.schema_arrow.metadata or {})[META_KEY])
        rows, width, dtype = meta["columns"][name]
        if not 0 <= i < rows:
            raise ValueError(f"{path} has rows 0..{rows - 1}, not row {i}")
        start, group = 0, 0
        while start + fh.metadata.row_group(group).num_rows <= i:
            start += fh.metadata.row_group(group).num_rows
            group += 1
        table = fh.read_row_group(group, columns=[index_name, name])
    if int(table.column(index_name)[i - start].as_py()) != i:
        raise ValueError(f"{path} does not hold its rows in order")
    values = np.asarray(table.column(name)[i - start].values.to_numpy(zero_copy_only=False), np.dtype(dtype))
    if values.shape != (width,):
        raise ValueError(f"{path}: row {i} of {name} has {values.size} values, metadata says {width}")
    return values.copy()
