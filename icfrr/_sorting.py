"""Fast exact row sorts for float32 distances on the CPU.

A float32's bits, mapped to an unsigned integer that orders like the float,
shifted left 32 bits and OR-ed with the column index, make one uint64 key per
entry whose ascending order is (distance, index): exactly what a stable sort
gives, at the speed of numpy's vectorised integer sort and partition.
"""

from __future__ import annotations

import numpy as np

_SIGN = np.uint32(0x80000000)
_LOW = np.uint64(0xFFFFFFFF)
_SHIFT = np.uint64(32)


def _ordered_bits(x: np.ndarray) -> np.ndarray:
    """uint32 bits of float32 ``x`` that sort like the floats (-0.0 is taken as 0.0)."""
    bits = (x + np.float32(0.0)).view(np.uint32)  # x + 0.0 turns -0.0 into +0.0
    negative = (bits & _SIGN) != 0
    return np.where(negative, ~bits, bits | _SIGN)


def _float_from_bits(bits: np.ndarray) -> np.ndarray:
    """Inverse of ``_ordered_bits``."""
    positive = (bits & _SIGN) != 0
    return np.where(positive, bits & ~_SIGN, ~bits).astype(np.uint32).view(np.float32)


def row_keys(x: np.ndarray, columns: np.ndarray | None = None) -> np.ndarray:
    """uint64 keys [B, N] ordering each row of float32 ``x`` by (value, column index)."""
    keys = _ordered_bits(np.ascontiguousarray(x, dtype=np.float32)).astype(np.uint64)
    keys <<= _SHIFT
    keys |= (np.arange(x.shape[1], dtype=np.uint64) if columns is None else columns.astype(np.uint64))
    return keys


def split_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(column indices int64, float32 values) of ``row_keys`` output."""
    return (keys & _LOW).astype(np.int64), _float_from_bits((keys >> _SHIFT).astype(np.uint32))


def stable_argsort_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending sort of each row of float32 ``x`` [B, N], ties by column index.

    Returns:
        (order int64 [B, N], sorted values float32 [B, N]).
    """
    keys = row_keys(x)
    keys.sort(axis=1)
    return split_keys(keys)


def smallest_rows(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of float32 ``x``, ties by column index.

    Returns:
        (column indices int64 [B, k], values float32 [B, k]), ascending.
    """
    n = x.shape[1]
    if k + 1 >= n:
        order, values = stable_argsort_rows(x)
        return order[:, :k], values[:, :k]
    # k + 1 candidates per row: the (k+1)-th smallest tells whether a tie crosses the cut.
    cand = np.argpartition(x, k, axis=1)[:, : k + 1]
    keys = row_keys(np.take_along_axis(x, cand, axis=1), cand)
    keys.sort(axis=1)
    idx, values = split_keys(keys)
    straddles = np.flatnonzero(values[:, k] == values[:, k - 1])
    idx, values = idx[:, :k].copy(), values[:, :k].copy()
    for r in straddles:
        # Items tied with the k-th value may lie outside the candidates: sort the whole row.
        row_idx, row_values = stable_argsort_rows(x[r : r + 1])
        idx[r], values[r] = row_idx[0, :k], row_values[0, :k]
    return idx, values
