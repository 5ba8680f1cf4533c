"""The ``demo`` backbone: a fixed, weight-free edge-orientation descriptor.

Sketches are strokes and photos are filled regions, so their pixels differ but
their edges agree: an outline in a photo and a stroke in a sketch produce
gradients of the same orientation at the same place. The descriptor is a
histogram of gradient orientations (unsigned, soft-binned) weighted by edge
strength (weak edges of texture and noise dropped), pooled over a spatial
pyramid, square-rooted and L2-normalised per level (a HOG-like feature). Deterministic, no weights, no download.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


#: Bumped whenever the descriptor's output changes, so cached demo features are recomputed.
DESCRIPTOR_VERSION = 1


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


class EdgeHistogram(nn.Module):
    """Image batch [B, 3, H, W] (values in 0..1) -> descriptor [B, D], D = n_bins * sum(g*g).

    Args:
        n_bins: Orientation bins over 0..pi.
        grids: Spatial pyramid levels (g x g cells each).
        sigma: Gaussian pre-blur in pixels, to suppress texture and noise.
        sharpness: Exponent of the cosine soft-binning (higher: narrower bins).
        threshold: Edge strengths below this fraction of the image's strongest
            edge are dropped (background texture, noise); the rest are rescaled.
    """

    def __init__(self, n_bins: int = 8, grids: tuple[int, ...] = (1, 2, 4), sigma: float = 1.5,
                 sharpness: float = 4.0, threshold: float = 0.2) -> None:
        super().__init__()
        self.threshold = threshold
        self.grids = grids
        self.sharpness = sharpness
        self.register_buffer("blur", _gaussian_kernel(sigma), persistent=False)
        self.register_buffer("centres", torch.arange(n_bins, dtype=torch.float32) * math.pi / n_bins,
                             persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8
        self.register_buffer("sobel", torch.stack([sobel, sobel.T])[:, None], persistent=False)

    def _smooth(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.blur.numel()
        x = x.reshape(b * c, 1, h, w)
        x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="replicate"), self.blur.view(1, 1, 1, k))
        x = F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="replicate"), self.blur.view(1, 1, k, 1))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = F.conv2d(F.pad(self._smooth(x.float()), (1, 1, 1, 1), mode="replicate"), self.sobel)
        g = g.reshape(b, c, 2, h, w)
        mag = g[:, :, 0] * g[:, :, 0] + g[:, :, 1] * g[:, :, 1]   # [B, C, H, W], per colour channel
        gx, gy, strength = g[:, 0, 0], g[:, 0, 1], mag[:, 0]
        for ch in range(1, c):                                  # the strongest channel decides
            take = mag[:, ch] > strength
            gx = torch.where(take, g[:, ch, 0], gx)
            gy = torch.where(take, g[:, ch, 1], gy)
            strength = torch.where(take, mag[:, ch], strength)
        strength = strength.sqrt()                              # [B, H, W]
        strength = strength / (strength.flatten(1).amax(1).view(b, 1, 1) + 1e-6)
        strength = F.relu(strength - self.threshold) / (1 - self.threshold)
        theta = torch.atan2(gy, gx)[:, None]                    # [B, 1, H, W]
        weights = torch.cos(theta - self.centres.view(1, -1, 1, 1)).square().pow(self.sharpness)
        hist = weights * strength[:, None]                      # [B, n_bins, H, W]
        levels = []
        for grid in self.grids:
            cells = F.adaptive_avg_pool2d(hist, grid).flatten(1).sqrt()
            levels.append(F.normalize(cells, dim=1) / math.sqrt(len(self.grids)))
        return torch.cat(levels, 1)
