"""Tiny clustered retrieval problems for the jobs tests (features -> Euclidean distances)."""

from __future__ import annotations

import numpy as np
import torch


def toy_distances(seed: int = 0, q: int = 12, g: int = 40, classes: int = 4, dim: int = 8):
    """Distances of a small clustered problem with one query of unknown label.

    Returns:
        qg float32 [Q, G], gg float32 [G, G], labels_q int64 [Q] (query 0 is -1),
        labels_g int64 [G].
    """
    rng = np.random.default_rng(seed)
    labels_g = rng.integers(0, classes, g)
    labels_q = rng.integers(0, classes, q)
    centres = rng.normal(size=(classes, dim))
    fq = centres[labels_q] + rng.normal(scale=1.2, size=(q, dim))
    fg = centres[labels_g] + rng.normal(scale=1.2, size=(g, dim))
    qg = torch.cdist(torch.tensor(fq), torch.tensor(fg)).float()
    gg = torch.cdist(torch.tensor(fg), torch.tensor(fg)).float()
    labels_q[0] = -1
    return qg, gg, labels_q.astype(np.int64), labels_g.astype(np.int64)
