"""Write the tiny published-style distance cache used by the documented examples.

    python examples/make_example_cache.py

Creates ``examples/custom/-1/{qg_dists,gg_dists,labels}.pth`` exactly as the
published ICFRR code caches distances (``<cache_root>/<dataset>/<per_class>/``),
plus the optional ``qq_dists.pth`` that k-reciprocal and ECN need:
16 queries and 48 gallery items of 4 classes, Euclidean distances between
L2-normalised synthetic features with a domain gap, so re-ranking has
something to fix. Then, for example:

    python -m jobs.extract --dataset custom --cache_root examples --data_root examples/custom
    python -m jobs.sweep --dataset custom --cache_root examples --method icfrr k_reciprocal ecn dba
"""

from __future__ import annotations

from pathlib import Path

import torch

N_CLASSES, Q_PER_CLASS, G_PER_CLASS, DIM = 4, 4, 12, 16


def make(folder: Path, seed: int = 0) -> None:
    """Write the four files into ``folder``."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(N_CLASSES, DIM, generator=gen)
    shift = 0.8 * torch.randn(DIM, generator=gen)                     # the query domain's offset
    labels_q = torch.arange(N_CLASSES).repeat_interleave(Q_PER_CLASS)
    labels_g = torch.arange(N_CLASSES).repeat_interleave(G_PER_CLASS)
    fq = centres[labels_q] + shift + 1.8 * torch.randn(len(labels_q), DIM, generator=gen)
    fg = centres[labels_g] + 0.9 * torch.randn(len(labels_g), DIM, generator=gen)
    fq, fg = (torch.nn.functional.normalize(f, dim=1) for f in (fq, fg))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(torch.cdist(fq, fg), folder / "qg_dists.pth")
    torch.save(torch.cdist(fg, fg), folder / "gg_dists.pth")
    torch.save(torch.cdist(fq, fq), folder / "qq_dists.pth")
    torch.save({"query": labels_q, "gallery": labels_g}, folder / "labels.pth")


if __name__ == "__main__":
    make(Path(__file__).resolve().parent / "custom" / "-1")
