"""What every benchmark shares: synthetic clustered features and the process's peak memory.

A leaf module (it imports no other ``jobs.bench*`` module), so that
``jobs.bench``, ``jobs.bench_sweep``, ``jobs.bench_methods`` and
``jobs.bench_million`` can each import it without importing one another.
"""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Feature width, classes, per-item noise and the query-gallery shift of :func:`make_features`.
DIM, N_CLASSES, NOISE, SHIFT = 768, 30, 3.2, 0.6


def make_features(n_query: int, n_gallery: int, seed: int = 0, dim: int = DIM
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic clustered features: (query [Q, dim], gallery [G, dim], labels_q [Q], labels_g [G]).

    L2-normalised float32, :data:`N_CLASSES` classes; queries shifted by a
    common offset (the domain gap). The default ``dim`` draws the same
    numbers as before ``dim`` existed.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(N_CLASSES, dim, generator=gen)
    shift = torch.randn(dim, generator=gen) * SHIFT  # the domain gap between queries and gallery
    labels_q = torch.randint(0, N_CLASSES, (n_query,), generator=gen)
    labels_g = torch.randint(0, N_CLASSES, (n_gallery,), generator=gen)
    fq = torch.nn.functional.normalize(centres[labels_q] + shift + NOISE * torch.randn(n_query, dim, generator=gen), dim=1)
    fg = torch.nn.functional.normalize(centres[labels_g] + NOISE * torch.randn(n_gallery, dim, generator=gen), dim=1)
    return fq, fg, labels_q, labels_g


def peak_gib() -> float:
    """This process's peak resident memory in GiB (VmHWM of /proc/self/status).

    Not ``ru_maxrss``: Linux carries the parent's peak across fork + exec into
    a child's ``ru_maxrss``, so a benchmark child would report the memory of
    the process that generated its inputs.
    """
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 2**20
