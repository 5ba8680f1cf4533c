"""Small generated distance matrices for the engine tests."""

from __future__ import annotations

import numpy as np


def random_case(n_query: int, n_gallery: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random (qg, gg) float32 distances: continuous values, so no ties."""
    rng = np.random.default_rng(seed)
    qg = rng.random((n_query, n_gallery), dtype=np.float64).astype(np.float32)
    gg = rng.random((n_gallery, n_gallery))
    gg = ((gg + gg.T) / 2).astype(np.float32)
    np.fill_diagonal(gg, 0.0)
    return qg, gg


def clustered_features(n_query: int, n_gallery: int, n_classes: int, dim: int, seed: int):
    """L2-normalised clustered features for both domains, with their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    shift = rng.normal(size=dim) * 0.5  # the domain gap
    labels_q = rng.integers(0, n_classes, n_query)
    labels_g = rng.integers(0, n_classes, n_gallery)
    fq = centres[labels_q] + shift + rng.normal(scale=1.2, size=(n_query, dim))
    fg = centres[labels_g] + rng.normal(scale=1.2, size=(n_gallery, dim))
    fq /= np.linalg.norm(fq, axis=1, keepdims=True)
    fg /= np.linalg.norm(fg, axis=1, keepdims=True)
    return fq.astype(np.float32), fg.astype(np.float32), labels_q, labels_g


def euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact (float64) Euclidean distances, returned as float32."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = np.sqrt(np.maximum(((a64[:, None, :] - b64[None, :, :]) ** 2).sum(-1), 0))
    return d.astype(np.float32)


def clustered_case(n_query: int, n_gallery: int, seed: int, n_classes: int = 5, dim: int = 16):
    """(qg, gg, labels_q, labels_g) from clustered features."""
    fq, fg, lq, lg = clustered_features(n_query, n_gallery, n_classes, dim, seed)
    return euclidean(fq, fg), euclidean(fg, fg), lq, lg
