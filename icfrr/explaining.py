"""Why one query's ranking moved: the votes of each ICFRR update (docs/SPEC.md sections 2 and 3).

At iteration t the query's current top ``V = min(KQ, G)`` items vote: voter i
gives gallery item j the amount ``beta * alpha[R[i, j]] / V``, where
``alpha[r] = 1 - r / (G - 1)`` for the ``KG`` nearest other items of i and 0
otherwise. An item's amounts add up to the bonus ``beta * delta[j]`` the
update gave it (added to its position's original score in the reference
variant, to its accumulated score in the paper variant).

The rankings come from the engine's own compiled loop for one query
(``icfrr._update._run_rows``, the kernel under ``icfrr.rerank`` on the CPU), so
they are ``icfrr.rerank``'s, near-ties included; the votes are read from the
neighbour graph for each ranking's voters. (The module is ``explaining``, as
``rerank`` lives in ``reranking``: a submodule named ``explain`` would
replace the function ``icfrr.explain`` once imported.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from icfrr._update import _run_rows
from icfrr.metrics import positions_buffer
from icfrr.neighbors import NeighborGraph, as_graph
from icfrr.reranking import _check_params
from icfrr.variants import Variant


@dataclass(frozen=True)
class VoteStep:
    """One update of one query and the votes behind it.

    Attributes:
        iteration: t, 1-based: the update that made ``ranking`` from the previous one.
        voters: int64 [V] gallery indices of the query's top ``V = min(KQ, G)``
            items before this update, best first.
        voter: int64 [M] who cast each non-zero vote (a gallery index among ``voters``).
        item: int64 [M] which gallery item received it.
        amount: float64 [M] ``beta * alpha[R[voter, item]] / V``.
        ranking: int64 [G] the query's ranking after this update, best first.
    """

    iteration: int
    voters: np.ndarray
    voter: np.ndarray
    item: np.ndarray
    amount: np.ndarray
    ranking: np.ndarray

    def bonus(self) -> np.ndarray:
        """float64 [G]: each gallery item's total bonus ``beta * delta[j]`` in this update."""
        return np.bincount(self.item, weights=self.amount, minlength=self.ranking.shape[0])


def explain(
    qg_row: np.ndarray | torch.Tensor,
    graph: NeighborGraph,
    *,
    kg: int,
    kq: int,
    beta: float,
    n_iter: int,
    variant: str = "reference",
) -> list[VoteStep]:
    """One query through ``n_iter`` ICFRR updates, with every vote of every update.

    Args:
        qg_row: float [G] the query's distances to the gallery, smaller = closer.
        graph: the gallery's NeighborGraph (``icfrr.neighbor_graph``) with at
            least ``min(kg, G - 1)`` neighbours per item.
        kg, kq, beta, n_iter, variant: as for ``icfrr.rerank`` (kg clamped to
            G - 1, kq to G).

    Returns:
        One VoteStep per iteration t = 1..n_iter; ``steps[t - 1].ranking`` equals
        ``icfrr.rerank(...)[t][q]`` for this query.

    Raises:
        ValueError: bad parameters, a row that is not 1-D, not finite or does not
            match the graph's size.

    Example:
        Query 0 of ``icfrr.rerank``'s example: its top two, items 0 and 2, each
        give their one neighbour (items 1 and 3) ``beta * alpha[0] / 2 = 0.05``:

        >>> import numpy as np, icfrr
        >>> gg = np.array([[0, 1, 4, 5], [1, 0, 3, 4], [4, 3, 0, 1], [5, 4, 1, 0]], dtype=np.float32)
        >>> qg = np.array([0.50, 0.52, 0.51, 0.90], dtype=np.float32)
        >>> steps = icfrr.explain(qg, icfrr.neighbor_graph(gg, 1), kg=1, kq=2, beta=0.1, n_iter=1)
        >>> s = steps[0]
        >>> s.voters.tolist(), s.voter.tolist(), s.item.tolist(), s.amount.tolist()
        ([0, 2], [0, 2], [1, 3], [0.05, 0.05])
        >>> s.ranking.tolist()  # from [0, 2, 1, 3]: item 1's vote lifts it to the top, item 3 stays last
        [1, 0, 2, 3]
        >>> s.bonus().tolist()
        [0.0, 0.05, 0.0, 0.05]
    """
    kg, kq, beta, n_iter = _check_params(kg, kq, beta, n_iter, variant)
    row = np.asarray(qg_row.detach().cpu() if isinstance(qg_row, torch.Tensor) else qg_row)
    if row.ndim != 1 or row.shape[0] == 0:
        raise ValueError(f"qg_row must be one query's distances, float [G], got shape {row.shape}")
    if not np.issubdtype(row.dtype, np.number) or not np.all(np.isfinite(row)):
        raise ValueError("qg_row must hold finite numbers; clean or recompute the distances")
    dist = np.ascontiguousarray(row, dtype=np.float32)
    n_gallery = dist.shape[0]
    if not isinstance(graph, NeighborGraph):
        raise ValueError(f"graph must be an icfrr.NeighborGraph, got {type(graph).__name__}")
    nbr = as_graph(graph, kg, n_gallery).indices.cpu().numpy()  # [G, kg'] view, kg' = min(kg, G - 1)
    kq = min(kq, n_gallery)
    weights = np.arange(n_gallery - 1, n_gallery - 1 - nbr.shape[1], -1, dtype=np.int64)  # G - 1 - r
    denom = float(max(n_gallery - 1, 1) * kq)

    # The engine's loop for this one query, keeping every position of every iteration.
    order = np.empty((1, n_iter + 1, n_gallery), dtype=np.int64)
    scores = np.empty((1, n_iter + 1, n_gallery))
    no_labels = np.zeros(n_gallery, dtype=np.int64)
    no_query = np.zeros(1, dtype=np.int64)  # one query: label 0, no relevant items
    _run_rows(dist[None], nbr, weights, kq, denom, np.array([beta]), n_iter, Variant.parse(variant) is Variant.PAPER,
              no_labels, no_query, no_query, order[:, None], scores[:, None],
              positions_buffer((1, 1, n_iter + 1), no_query), 0, 1)

    amounts = beta * (weights / denom)  # beta * alpha[r] / V for r = 0 .. kg' - 1
    keep = amounts != 0  # beta = 0 casts no non-zero vote
    steps = []
    for t in range(1, n_iter + 1):
        voters = order[0, t - 1, :kq].copy()
        items = nbr[voters]
        steps.append(VoteStep(
            iteration=t,
            voters=voters,
            voter=np.repeat(voters, int(keep.sum())),
            item=items[:, keep].reshape(-1).astype(np.int64),
            amount=np.tile(amounts[keep], kq),
            ranking=order[0, t].copy(),
        ))
    return steps
