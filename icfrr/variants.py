"""ICFRR's two update rules (docs/SPEC.md sections 2 and 3), one form through the engine.

The public API takes ``variant="reference"`` or ``"paper"``; it becomes a
:class:`Variant` once (:meth:`Variant.parse`) and, per chunk of queries, the
score state of that variant: :class:`PositionScores` (reference: the original
scores belong to positions and never change) or :class:`ItemScores` (paper:
each gallery item accumulates its bonuses). The engine's update steps ask the
state for what they need; the compiled kernels get the state's float64 array
and its ``paper`` flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import torch


class Variant(str, Enum):
    """Which update rule ICFRR uses."""

    REFERENCE = "reference"
    PAPER = "paper"

    @classmethod
    def parse(cls, value: str | Variant) -> Variant:
        """The variant named ``value``.

        Raises:
            ValueError: An unknown name (one line, listing the known ones).
        """
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"variant must be one of {[v.value for v in cls]}, got {value!r}") from None

    def scores(self, base: torch.Tensor, dist: torch.Tensor) -> PositionScores | ItemScores:
        """The score state of a chunk of queries before the first update.

        Args:
            base: float32 [B, G] the original scores sorted descending (by position).
            dist: float [B, G] the query-gallery distances (by item).
        """
        if self is Variant.PAPER:
            return ItemScores(-dist.to(torch.float64))
        return PositionScores(base)


@dataclass
class PositionScores:
    """Reference variant: the original scores by position, fixed (float32 [B, G])."""

    values: torch.Tensor
    paper = False

    def rows(self, sl: slice) -> PositionScores:
        """The state of queries ``sl``."""
        return PositionScores(self.values[sl])

    def kernel_values(self) -> np.ndarray:
        """float64 [B, G] for the compiled kernels (float32 -> float64 is exact)."""
        return self.values.cpu().numpy().astype(np.float64)

    def position_scores(self, ranking: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """float64 [B, G]: ``v[r] + delta[pi[r]]`` for each position r."""
        return self.values.to(torch.float64).add_(delta.gather(1, ranking))


@dataclass
class ItemScores:
    """Paper variant: each item's accumulated score (float64 [B, G], updated in place)."""

    values: torch.Tensor
    paper = True

    def rows(self, sl: slice) -> ItemScores:
        """The state of queries ``sl`` (a view: updates reach this state)."""
        return ItemScores(self.values[sl])

    def kernel_values(self) -> np.ndarray:
        """The float64 [B, G] scores themselves (CPU), which the kernel updates in place."""
        return self.values.numpy()

    def position_scores(self, ranking: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Add ``delta`` to every item's score; float64 [B, G] scores by position."""
        self.values += delta
        return self.values.gather(1, ranking)
