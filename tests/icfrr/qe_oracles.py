"""Literal float64 αQE / DBA, one loop per query (or gallery item), from the papers' equations.

Radenović, Tolias & Chum (TPAMI 2018), Arandjelović & Zisserman (CVPR 2012):
weights max(xᵀy, 0)^α on unit vectors; neighbours by Euclidean distance, ties by index.
"""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` as float64 unit vectors."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _distances(x: np.ndarray, items: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(((items - x) ** 2).sum(1), 0.0))


def _weight(sim: float, alpha: float) -> float:
    return max(sim, 0.0) ** alpha  # Python: 0.0 ** 0 == 1.0


def dba_gallery(fg: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """g'_j = normalise(g_j + Σ_{k in n nearest other items} max(g_jᵀg_k, 0)^α g_k)."""
    fg = unit(fg)
    n = min(n, len(fg) - 1)
    out = np.empty_like(fg)
    for j in range(len(fg)):
        d = _distances(fg[j], fg)
        d[j] = np.inf  # the item itself, by index
        v = fg[j].copy()
        for k in np.argsort(d, kind="stable")[:n]:
            v += _weight(float(fg[j] @ fg[k]), alpha) * fg[k]
        out[j] = v / np.linalg.norm(v)
    return out


def alpha_qe(fq: np.ndarray, fg: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """For each query: q' = normalise(q + Σ_{i in n nearest} max(qᵀg_i, 0)^α g_i); ‖q' - g‖ [Q, G]."""
    fq, fg = unit(fq), unit(fg)
    n = min(n, len(fg))
    out = np.empty((len(fq), len(fg)))
    for i, q in enumerate(fq):
        v = q.copy()
        for k in np.argsort(_distances(q, fg), kind="stable")[:n]:
            v += _weight(float(q @ fg[k]), alpha) * fg[k]
        out[i] = _distances(v / np.linalg.norm(v), fg)
    return out


def dba_then_qe(fq: np.ndarray, fg: np.ndarray, n_dba: int, alpha_dba: float, n_qe: int, alpha_qe_: float) -> np.ndarray:
    """αQE over the DBA'd gallery (n_qe = 0: plain distances to it)."""
    return alpha_qe(fq, dba_gallery(fg, n_dba, alpha_dba), n_qe, alpha_qe_)
