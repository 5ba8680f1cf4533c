"""Input conversion shared by the baselines: numpy or torch in, float numpy inside, the same type out."""

from __future__ import annotations

import math

import numpy as np
import torch

Matrix = np.ndarray | torch.Tensor


def to_numpy(x: Matrix, name: str) -> np.ndarray:
    """``x`` as a 2-D float32/float64 CPU numpy array, without a copy where it already is one.

    Other numeric dtypes become float64; CUDA tensors are copied to the host.

    Raises:
        ValueError: if ``x`` is not a 2-D numeric matrix or holds NaN/inf.
    """
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold numbers, got dtype {a.dtype}")
        a = a.astype(np.float64)
    if a.size and not np.isfinite(a.sum(dtype=np.float64)):
        # NaN and inf propagate through a sum; an overflow falls through to the row check.
        step = max(1, (1 << 24) // max(a.shape[1], 1))
        for start in range(0, a.shape[0], step):
            if not np.isfinite(a[start : start + step]).all():
                raise ValueError(f"{name} contains NaN or infinite values; clean or recompute the distances")
    return a


def distance_blocks(qg: Matrix, gg: Matrix, qq: Matrix | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Check and convert query-gallery ``[Q, G]``, gallery-gallery ``[G, G]`` and query-query ``[Q, Q]`` distances.

    ``qq`` may be None for methods that do not need it.

    Raises:
        ValueError: on a wrong shape, an empty side, or NaN/inf.
    """
    qg_np = to_numpy(qg, "qg")
    n_query, n_gallery = qg_np.shape
    if n_query < 1 or n_gallery < 1:
        raise ValueError(f"qg must hold at least one query and one gallery item, got shape {qg_np.shape}")
    gg_np = to_numpy(gg, "gg")
    if gg_np.shape != (n_gallery, n_gallery):
        raise ValueError(
            f"gg must be the [G, G] = [{n_gallery}, {n_gallery}] gallery distances, got shape {gg_np.shape}"
        )
    if qq is None:
        return qg_np, gg_np, None
    qq_np = to_numpy(qq, "qq")
    if qq_np.shape != (n_query, n_query):
        raise ValueError(f"qq must be the [Q, Q] = [{n_query}, {n_query}] query distances, got shape {qq_np.shape}")
    return qg_np, gg_np, qq_np


def check_fraction(value: float, name: str) -> float:
    """Raise ValueError unless ``value`` is a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
        math.isfinite(value) and 0.0 <= value <= 1.0
    ):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def same_type_as(out: np.ndarray, ref: Matrix) -> Matrix:
    """``out`` as a torch tensor on ``ref``'s device when ``ref`` is one, else as it is."""
    if isinstance(ref, torch.Tensor):
        return torch.from_numpy(out).to(ref.device)
    return out
