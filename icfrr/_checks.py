"""Shared input validators: every public function turns bad input into a ValueError."""

from __future__ import annotations

import numpy as np
import torch


def as_matrix(x: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """Return ``x`` as a 2-D float32 CPU/GPU tensor without copying when it already is one.

    Raises:
        ValueError: if ``x`` is not 2-D, is empty in its first dimension, or holds NaN/inf.
    """
    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(t.shape)}")
    if t.dtype != torch.float32:
        t = t.to(torch.float32)
    check_finite(t, name)
    return t


def check_finite(t: torch.Tensor, name: str, rows_per_chunk: int = 4096) -> None:
    """Raise ValueError if ``t`` holds NaN or infinite values (checked in row chunks)."""
    if t.numel() == 0 or torch.isfinite(t.sum()):
        return  # NaN and inf propagate through a sum (an overflow falls through to the full check)
    for start in range(0, max(t.shape[0], 1), rows_per_chunk):
        if not torch.isfinite(t[start : start + rows_per_chunk]).all():
            raise ValueError(f"{name} contains NaN or infinite values; clean or recompute the distances")


def as_labels(x: np.ndarray | torch.Tensor, n: int, name: str) -> np.ndarray:
    """Return labels as an int64 numpy vector of length ``n`` (-1 = unknown)."""
    a = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{name} must be a vector of length {n}, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        if a.dtype.kind == "f" and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
            a = a.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def check_positive_int(value: int, name: str) -> int:
    """Raise ValueError unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but CUDA is not available; pass device='cpu'")
    return dev
