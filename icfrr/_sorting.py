"""Fast exact sorts on the CPU: float32 distance rows and the engine's float64 scores.

A float's bits, mapped to an unsigned integer that orders like the float
(-0.0 taken as 0.0), give keys whose ascending order is the float's. Uses:

- full row sorts (``stable_argsort_rows``, ``row_sort_keys``) and the
  engine's float64 scores, descending (``desc_key``): one compiled stable sort
  of keys with a payload (``sort_pairs``): LSD radix passes of 11 bits on the
  top 32 bits of the keys, then the rare runs equal in those bits finished by
  insertion sort, so ties keep input order;
- the k smallest of each row (``smallest_rows``): ``torch.topk`` picks
  k + 1 candidates (numpy's argpartition took 12-84 ns per entry on distance
  rows here, topk 1-3 ns), whose keys, shifted left 32 bits and OR-ed with the column
  index, sort into (distance, index) order; rows where a tie crosses the cut
  are sorted whole. Full sorts run row slices on a thread pool (numpy releases the GIL).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from icfrr._compiled import helper, kernel

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


_THREADS = max(1, min(8, os.cpu_count() or 1))
_POOL = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="icfrr-rows") if _THREADS > 1 else None


def _by_row_slices(fn: Callable[..., tuple[np.ndarray, np.ndarray]], x: np.ndarray, *args) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``fn`` to slices of rows of ``x`` on a thread pool (numpy sorts release the GIL)."""
    n = x.shape[0]
    if _POOL is None or n < 2 * _THREADS:
        return fn(x, *args)
    step = -(-n // _THREADS)
    parts = list(_POOL.map(lambda s: fn(x[s : s + step], *args), range(0, n, step)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def on_row_slices(fn: Callable[[int, int], None], n_rows: int) -> None:
    """Call ``fn(start, stop)`` on slices covering rows 0..n_rows-1, on the thread pool (for nogil kernels)."""
    if _POOL is None or n_rows < 2:
        fn(0, n_rows)
        return
    step = -(-n_rows // _THREADS)
    for future in [_POOL.submit(fn, s, min(s + step, n_rows)) for s in range(0, n_rows, step)]:
        future.result()


_TOP64 = np.uint64(1 << 63)
_TOP32 = np.uint32(1 << 31)


_DIGIT_BITS = 11
_RADIX = 1 << _DIGIT_BITS
_DIGIT = np.uint64(_RADIX - 1)
_LOW_BIT = 32  # radix passes on bits 32..63
_N_PASSES = (64 - _LOW_BIT + _DIGIT_BITS - 1) // _DIGIT_BITS


@helper
def sort_pairs(keys: np.ndarray, payload: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Stable sort of uint64 ``keys`` with their int32 ``payload``: the order of a full 64-bit sort.

    LSD radix passes of 11 bits on the top 32 bits of the keys (one read counts
    every pass's digits; a pass where all keys share the digit is skipped), then
    the rare runs equal in those bits are finished by insertion sort. One
    function, not a radix kernel and a run kernel: each compiled function costs
    its own compilation, and its callers re-optimise its code. The inputs are
    used as scratch.

    Returns:
        (sorted keys, payload in the same order).
    """
    n = keys.shape[0]
    # Allocations as elsewhere in the engine (1-D, int64/uint64/int32): every other shape or dtype is one
    # more numba overload to compile on a fresh cache.
    counts = np.empty(_N_PASSES * _RADIX, dtype=np.int64)
    for d in range(_N_PASSES * _RADIX):
        counts[d] = 0
    for i in range(n):
        key = keys[i]
        for pass_ in range(_N_PASSES):
            counts[pass_ * _RADIX + ((key >> np.uint64(_LOW_BIT + _DIGIT_BITS * pass_)) & _DIGIT)] += 1
    spare_keys = np.empty(n, dtype=np.uint64)
    spare_payload = np.empty(n, dtype=np.int32)
    for pass_ in range(_N_PASSES):
        shift = np.uint64(_LOW_BIT + _DIGIT_BITS * pass_)
        offsets = counts[pass_ * _RADIX : (pass_ + 1) * _RADIX]
        if n == 0 or offsets[(keys[0] >> shift) & _DIGIT] == n:
            continue
        total = 0
        for d in range(offsets.shape[0]):
            c = offsets[d]
            offsets[d] = total
            total += c
        for i in range(n):
            d = (keys[i] >> shift) & _DIGIT
            p = offsets[d]
            offsets[d] = p + 1
            spare_keys[p] = keys[i]
            spare_payload[p] = payload[i]
        keys, spare_keys = spare_keys, keys
        payload, spare_payload = spare_payload, payload
    # Runs of keys equal in the top 32 bits: insertion sort on the whole key (stable).
    shift = np.uint64(_LOW_BIT)
    start = 0
    while start < n:
        stop = start + 1
        high = keys[start] >> shift
        while stop < n and keys[stop] >> shift == high:
            stop += 1
        for i in range(start + 1, stop):
            key, item = keys[i], payload[i]
            j = i - 1
            while j >= start and keys[j] > key:
                keys[j + 1], payload[j + 1] = keys[j], payload[j]
                j -= 1
            keys[j + 1], payload[j + 1] = key, item
        start = stop
    return keys, payload


@helper
def desc_key(value: float) -> np.uint64:  # pragma: no cover - compiled
    """A uint64 whose ascending order is the float64 ``value``'s descending order (-0.0 as 0.0)."""
    bits = np.float64(value + 0.0).view(np.uint64)
    return ~(~bits if bits & _TOP64 else bits | _TOP64)


@helper
def value_of_desc_key(key: np.uint64) -> float:  # pragma: no cover - compiled
    """Inverse of ``desc_key`` (0.0 for -0.0)."""
    bits = ~np.uint64(key)
    if bits & _TOP64:
        bits = bits & ~_TOP64
    else:
        bits = ~bits
    return np.uint64(bits).view(np.float64)


@helper
def row_sort_keys(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """``sort_pairs`` input for one float32 row ``x`` [N]: (uint64 keys, int32 positions 0..N-1).

    The keys order like the floats (-0.0 as 0.0) and sit on bits 32..63, so
    ``sort_pairs`` gives the stable ascending order; the positions are int32,
    the payload of every engine sort (one compiled specialisation). The
    callers sort and gather themselves: a row-sort kernel between them and
    ``sort_pairs`` would be one more compiled layer re-optimising the sort.
    """
    n = x.shape[0]
    keys = np.empty(n, dtype=np.uint64)
    payload = np.empty(n, dtype=np.int32)
    for i in range(n):
        bits = np.float32(x[i] + np.float32(0.0)).view(np.uint32)
        keys[i] = np.uint64(~bits if bits & _TOP32 else bits | _TOP32) << np.uint64(32)
        payload[i] = i
    return keys, payload


@kernel
def _stable_argsort_rows_numba(x: np.ndarray, order: np.ndarray, values: np.ndarray, start: int, stop: int) -> None:  # pragma: no cover
    for b in range(start, stop):  # rows in parallel through on_row_slices: no parfor to compile
        keys, payload = row_sort_keys(x[b])
        keys, payload = sort_pairs(keys, payload)
        for i in range(x.shape[1]):
            order[b, i] = payload[i]
            values[b, i] = x[b, payload[i]]


def stable_argsort_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending sort of each row of float32 ``x`` [B, N], ties by column index.

    A compiled 32-bit radix sort per row, slices of rows on the thread pool.

    Returns:
        (order int64 [B, N], sorted values float32 [B, N]).
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    order = np.empty(x.shape, dtype=np.int64)
    values = np.empty(x.shape, dtype=np.float32)
    on_row_slices(lambda start, stop: _stable_argsort_rows_numba(x, order, values, start, stop), x.shape[0])
    return order, values


def smallest_rows(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest entries of each row of float ``x`` (float32 or float64), ties by column index.

    The first ``k`` columns of ``np.argsort(x, axis=1, kind="stable")`` (-0.0
    ties with 0.0), ``k`` cut at the row length.

    Returns:
        (column indices int64 [B, k], values [B, k] in ``x``'s dtype), ascending.
    """
    n = x.shape[1]
    k = min(k, n)
    if k + 1 >= n:
        idx, values = _sorted_rows(x)
        return idx[:, :k], values[:, :k]
    cand = smallest_candidates(x, k)  # k + 1: the (k+1)-th tells whether a tie crosses the cut
    cand.sort(axis=1)  # ascending columns: a stable sort of their values then breaks ties by column
    idx, values = _sorted_rows(np.take_along_axis(x, cand, axis=1), cand)
    straddles = np.flatnonzero(values[:, k] == values[:, k - 1])
    idx, values = idx[:, :k].copy(), values[:, :k].copy()
    for r in straddles:
        # Items tied with the k-th value may lie outside the candidates: sort the whole row.
        row_idx, row_values = _sorted_rows(x[r : r + 1])
        idx[r], values[r] = row_idx[0, :k], row_values[0, :k]
    return idx, values


def _sorted_rows(x: np.ndarray, columns: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``x`` ascending, ties by column: (columns int64, values), ``columns`` [B, M] default 0..M-1.

    float32: one sort of (value, column) uint64 keys (whole rows in slices on the thread pool); other
    floats: numpy's stable argsort, so given ``columns`` must be ascending in each row.
    """
    if x.dtype == np.float32:
        if columns is None:
            return _by_row_slices(_stable_argsort_rows, x)
        keys = row_keys(x, columns)
        keys.sort(axis=1)
        return split_keys(keys)
    order = np.argsort(x, axis=1, kind="stable")
    idx = order if columns is None else np.take_along_axis(columns, order, axis=1)
    return idx.astype(np.int64, copy=False), np.take_along_axis(x, order, axis=1)


def smallest_candidates(x: np.ndarray, k: int) -> np.ndarray:
    """int64 [B, k + 1]: column indices of k + 1 smallest entries of each row of ``x`` (float, no NaN), in
    no order; among entries tied with the (k+1)-th smallest, an arbitrary choice (callers resolve ties)."""
    return torch.topk(torch.from_numpy(x), k + 1, dim=1, largest=False, sorted=False).indices.numpy()


def _stable_argsort_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keys = row_keys(x)
    keys.sort(axis=1)
    return split_keys(keys)
