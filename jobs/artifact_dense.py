"""Whole gallery-gallery and query-query distances, for the baselines that need them."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from icfrr import pairwise_distances
from jobs.artifact_imports import read_qq
from jobs.artifact_request import log_to_stderr
from store import artifacts as cache
from store.artifacts import ArtifactError, Artifacts
from store.imports import read_matrix

def _distances_by_rows(a: np.ndarray, b: np.ndarray, rows: int, same: bool) -> np.ndarray:
    """float32 [A, B] Euclidean distances computed ``rows`` rows at a time (0 on the diagonal when ``same``)."""
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.float32)
    fb = torch.from_numpy(np.ascontiguousarray(b))
    for start in range(0, a.shape[0], rows):
        out[start:start + rows] = pairwise_distances(torch.from_numpy(a[start:start + rows]), fb).numpy()
    if same:
        np.fill_diagonal(out, 0.0)  # an item's distance to itself, without rounding noise
    return out


def dense_gg(arts: Artifacts, rows: int = 1024) -> np.ndarray:
    """float32 [G, G] gallery-gallery distances, in memory (3.1 GB at the TU-Berlin size; never cached).

    From the gallery features, computed ``rows`` rows at a time, or read from the
    imported gallery-gallery file.

    Raises:
        ArtifactError: Imported artifacts that do not name their gallery-gallery file.
        InputChanged: The file is gone or changed since the artifacts identified it (its bytes
            may no longer be those the neighbour graph was built from).
    """
    if not arts.imported:
        f = arts.features("gallery")
        return _distances_by_rows(f, f, rows, same=True)
    source = arts.gg_source
    if source is None:
        raise ArtifactError("these imported artifacts do not name their gallery-gallery file; import them again")
    source.check()
    gg = read_matrix(source.path)
    n_g = arts.shape[1]
    if gg.shape != (n_g, n_g):
        raise ArtifactError(f"{source.path} is {list(gg.shape)}, expected [{n_g}, {n_g}]")
    gg = np.array(gg)  # a writable copy, not the read-only memmap
    source.check()     # what was read is what the graph was built from
    return gg


def qq_dists(arts: Artifacts, log: Callable[[str], None] = log_to_stderr, rows: int = 1024) -> np.ndarray:
    """float32 [Q, Q] query-query distances, kept as ``qq_dists.parquet`` in the cache folder.

    Reused from that file when it belongs to these artifacts (and, for imports,
    to the same source file); else computed from the query features ``rows``
    rows at a time, or read from the imported file, and kept there (unless
    the artifacts live in memory only).

    Raises:
        ArtifactError: Imported artifacts without query-query distances, or a
            file of the wrong shape.
        InputChanged: The imported file changed since the artifacts identified it.
    """
    kept = cache.kept_qq(arts, log)
    if kept is not None:
        return kept
    sha = cache.qq_identity(arts)  # raises when an import has none
    n_q = arts.shape[0]
    if arts.imported:
        source = arts.qq_source
        source.check()
        qq = np.array(read_qq(source.path, n_q))   # read whole now, then checked: the bytes read are the identified ones
        source.check()
    else:
        f = arts.features("query")
        qq = _distances_by_rows(f, f, rows, same=True)
    cache.keep_qq(arts, qq, sha, log)
    return qq

