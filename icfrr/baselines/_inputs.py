"""Input conversion shared by the baselines: numpy or torch in, float numpy inside, the same type out."""

from __future__ import annotations

import math

import numpy as np
import torch

from icfrr._checks import as_matrix
from icfrr.chunks import CHUNK_BYTES, rows_per_chunk
from icfrr.neighbors import euclidean

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
        step = rows_per_chunk(a.shape[0], a.itemsize * a.shape[1])
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


class ItemFeatures:
    """The Q + G items' features, for the baselines' Euclidean distances computed on demand.

    Distances are float32 as :func:`icfrr.pairwise_distances` gives them (an item's
    distance to itself is 0), so they match the dense matrices made from the same
    features up to the rounding of the products.

    Args:
        fq: float [Q, D] query features.
        fg: float [G, D] gallery features.

    Raises:
        ValueError: an empty side, features of different widths, or NaN/inf.
    """

    def __init__(self, fq: Matrix, fg: Matrix) -> None:
        q = as_matrix(fq, "fq").cpu()
        g = as_matrix(fg, "fg").cpu()
        if q.shape[0] < 1 or g.shape[0] < 1:
            raise ValueError(f"need at least one query and one gallery item, got Q={q.shape[0]}, G={g.shape[0]}")
        if q.shape[1] != g.shape[1]:
            raise ValueError(f"fq and fg must have the same width, got {q.shape[1]} and {g.shape[1]}")
        self.n_query, self.n_gallery = int(q.shape[0]), int(g.shape[0])
        self.n_items = self.n_query + self.n_gallery
        self.features = torch.cat([q, g]).contiguous()
        self._norms = (self.features * self.features).sum(1)   # squared norms, once for every chunk

    def rows(self, start: int, stop: int) -> np.ndarray:
        """float32 [stop - start, N]: distances of items ``start:stop`` to every item."""
        out = euclidean(self.features[start:stop], self.features, self._norms).numpy()
        out[np.arange(stop - start), np.arange(start, stop)] = 0.0
        return out

    def entries(self, rows: np.ndarray, cols: np.ndarray, budget: int = CHUNK_BYTES) -> np.ndarray:
        """float64 distances of the pairs (rows[i], cols[i]), computed a budget's worth of pairs at a time."""
        out = np.empty(rows.shape, dtype=np.float64)
        f = self.features
        step = rows_per_chunk(rows.size, 8 * f.shape[1], budget)
        norms = self._norms
        for s in range(0, rows.size, step):
            r = torch.from_numpy(rows[s : s + step])
            c = torch.from_numpy(cols[s : s + step])
            sq = norms[r] + norms[c] - 2.0 * (f[r] * f[c]).sum(1)
            out[s : s + step] = sq.clamp_(min=0).sqrt_().numpy()
        out[rows == cols] = 0.0
        return out

    def query_gallery(self, queries: slice) -> np.ndarray:
        """float32 [B, G]: distances of ``queries`` to the gallery."""
        f = self.features
        return euclidean(f[: self.n_query][queries], f[self.n_query :], self._norms[self.n_query :]).numpy()
