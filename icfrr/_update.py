"""The hot step: one ICFRR update of a chunk of queries, from sparse neighbour lists.

For a query whose current top items are ``top`` (KQ gallery indices), the vote
for gallery item j is ``sum over i in top, r < KG with nbr[i, r] == j of w[r]``
with ``w[r] = G - 1 - r``, an integer. Every partial sum is an integer below
2**53, so float64 accumulation is exact and independent of the order of
addition: the CPU and CUDA paths compute bit-identical votes, and
``delta = votes / ((G - 1) * KQ)`` is the mean of ``alpha`` of docs/SPEC.md section 2.

Vote sums are kept as int64 on the CPU (the same integers).

The position score is ``u[r] = base[r] + beta * delta[pi[r]]`` (``base`` = the
original scores ``v`` in the reference variant, the accumulated item scores in
the paper variant), and the new ranking is ``pi`` reordered by ``u``
descending, ties kept in the current order.

On the CPU one compiled loop per query does it all: votes, then a merge of the
items without votes (already in descending order, since the current ranking is
sorted by their unchanged scores) with the items that got votes, sorted. That
is O(KQ * KG + G + m log m) per query for m voted items, instead of a full
O(G log G) sort. The torch path (CUDA) scatters and sorts whole rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from icfrr._compiled import helper, kernel
from icfrr._sparse import sparse_rows
from icfrr._sorting import (
    on_row_slices, desc_key, row_sort_keys, sort_pairs, stable_argsort_rows, value_of_desc_key,
)
from icfrr.metrics import positions_buffer, row_positions, rows_from_positions
from icfrr.variants import ItemScores, PositionScores, Variant


@kernel
def _add_votes(items: np.ndarray, sign: int, nbr: np.ndarray, weights: np.ndarray, votes: np.ndarray) -> None:  # pragma: no cover
    """``votes[nbr[i, r]] += sign * weights[r]`` for every i in ``items`` (int64 arithmetic, exact)."""
    for a in range(items.shape[0]):
        neighbours = nbr[items[a]]
        for r in range(neighbours.shape[0]):
            votes[neighbours[r]] += sign * weights[r]


@helper
def _rerank_row(order, votes, scores, paper, denom, beta, dense, out_order, out_scores):  # pragma: no cover
    """One update of one query from its item-indexed integer ``votes``.

    ``scores`` float64 [G]: the original scores by position (reference
    variant) or the accumulated item scores (``paper``, updated in place; see
    ``icfrr.variants``). Writes the new ranking and its position scores (float64). With
    ``dense`` (most items get votes) every position is re-sorted by its score;
    otherwise only the voted ones, merged with the rest (already in order).
    Both give the stable order: higher score first, ties by current position.
    """
    n_gallery = order.shape[0]
    if paper:
        for j in range(n_gallery):
            if votes[j] > 0:
                scores[j] += beta * (votes[j] / denom)
    if dense:
        keys = np.empty(n_gallery, dtype=np.uint64)
        for r in range(n_gallery):
            j = order[r]
            keys[r] = desc_key(scores[j] if paper else scores[r] + beta * (votes[j] / denom))
        positions = np.empty(n_gallery, dtype=np.int32)  # int32: less memory traffic in the full re-sort
        for r in range(n_gallery):
            positions[r] = r
        keys, positions = sort_pairs(keys, positions)
        for out in range(n_gallery):
            out_order[out] = order[positions[out]]
            out_scores[out] = value_of_desc_key(keys[out])
        return
    # Split positions into items with votes (to sort) and without (already in order).
    voted_pos = np.empty(n_gallery, dtype=np.int32)  # int32: the payload type of every engine sort
    voted_keys = np.empty(n_gallery, dtype=np.uint64)
    n_voted = 0
    for r in range(n_gallery):
        j = order[r]
        vote = votes[j]
        if vote > 0:
            voted_pos[n_voted] = r
            voted_keys[n_voted] = desc_key(scores[j] if paper else scores[r] + beta * (vote / denom))
            n_voted += 1
    # Sorted keys (order-preserving bits of u) carry the positions along; stable: ties keep position order.
    keys, by_u = sort_pairs(voted_keys[:n_voted], voted_pos[:n_voted])
    # Merge: take the higher score; on equal scores the earlier current position.
    r = 0
    v = 0
    for out in range(n_gallery):
        while r < n_gallery and votes[order[r]] > 0:  # voted: placed from the sorted keys
            r += 1
        take_plain = False
        plain_u = 0.0
        if r < n_gallery:
            plain_u = scores[order[r]] if paper else scores[r]
            if v >= n_voted:
                take_plain = True
            else:
                plain_key = desc_key(plain_u)
                take_plain = plain_key < keys[v] or (plain_key == keys[v] and r < by_u[v])
        if take_plain:
            out_order[out] = order[r]
            out_scores[out] = plain_u
            r += 1
        else:
            out_order[out] = order[by_u[v]]
            out_scores[out] = value_of_desc_key(keys[v])
            v += 1


@kernel
def _update_rows_numba(
    ranking, scores, paper, nbr, weights, kq, denom, beta, out_ranking, out_scores, start, stop
):  # pragma: no cover - compiled
    """Rows ``start .. stop - 1``: every vote counted afresh (one function: each compiled layer costs its own)."""
    for b in range(start, stop):
        order = ranking[b]
        votes = np.zeros(order.shape[0], dtype=np.int64)
        _add_votes(order[:kq], 1, nbr, weights, votes)
        _rerank_row(order, votes, scores[b], paper, denom, beta, kq * nbr.shape[1] >= order.shape[0],
                    out_ranking[b], out_scores[b])


def update_cpu(
    ranking: torch.Tensor,
    state: PositionScores | ItemScores,
    nbr: torch.Tensor,
    weights: torch.Tensor,
    *,
    kq: int,
    denom: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of a chunk of queries on the CPU.

    Args:
        ranking: int64 [B, G] current rankings.
        state: the variant's scores of the chunk (``icfrr.variants``; item
            scores are updated in place).
        nbr: int64 [G, KG] contiguous neighbour lists.
        weights: [KG] integer-valued ``G - 1 - r`` (any dtype).
        kq: top items that vote; denom: ``(G - 1) * KQ``; beta: update strength.

    Returns:
        (new ranking int64 [B, G], position scores float64 [B, G]).
    """
    b, g = ranking.shape
    out_ranking = np.empty((b, g), dtype=np.int64)
    out_scores = np.empty((b, g))
    args = (np.ascontiguousarray(ranking.numpy()), state.kernel_values(), state.paper, nbr.numpy(),
            int_weights(weights), kq, float(denom), float(beta), out_ranking, out_scores)
    on_row_slices(lambda start, stop: _update_rows_numba(*args, start, stop), b)
    return torch.from_numpy(out_ranking), torch.from_numpy(out_scores)


def int_weights(weights: torch.Tensor | np.ndarray) -> np.ndarray:
    """The integer vote weights ``G - 1 - r`` as int64 (exactly; they are integers)."""
    w = np.asarray(weights.cpu() if isinstance(weights, torch.Tensor) else weights)
    out = w.astype(np.int64)
    if not np.array_equal(out, w):
        raise ValueError("vote weights must be integers")
    return out


@helper
def _move_votes(order, kq, in_top, prev_top, nbr, weights, votes):  # pragma: no cover - compiled
    """Make ``votes`` those of ``order[:kq]`` from those of ``prev_top`` (exact integer updates).

    ``in_top`` int32 [G] marks ``prev_top`` on entry and ``order[:kq]`` on exit.
    Only the items that entered or left the top cast or withdraw their votes,
    unless so many changed that a recount is cheaper.
    """
    entered = 0
    for a in range(kq):
        j = order[a]
        if in_top[j] == 0:
            entered += 1
            in_top[j] = 3  # entering
        else:
            in_top[j] = 2  # staying
    recount = 2 * entered >= kq
    if recount:
        for j in range(votes.shape[0]):
            votes[j] = 0
    # The vote loops are written out, not calls of ``_add_votes``: a callee is one more compiled library,
    # and its code is optimised again in every caller's.
    for a in range(kq):
        prev = prev_top[a]
        if in_top[prev] == 1:  # left the top
            in_top[prev] = 0
            if not recount:
                neighbours = nbr[prev]
                for r in range(neighbours.shape[0]):
                    votes[neighbours[r]] -= weights[r]
    for a in range(kq):
        j = order[a]
        if recount or in_top[j] == 3:  # every voter in a recount, else those that entered
            neighbours = nbr[j]
            for r in range(neighbours.shape[0]):
                votes[neighbours[r]] += weights[r]
        in_top[j] = 1
        prev_top[a] = j


@kernel
def _run_rows(dists, nbr, weights, kq, denom, betas, n_iter, paper, labels_g, labels_q, n_relevant,
              out_top, out_scores, out_positions, start, stop):  # pragma: no cover - compiled
    """Queries ``start .. stop - 1`` of a chunk through every iteration for each beta (see ``run_rows_cpu``).

    Outputs [C, B, T+1, ...]. The loop over queries is here, not in a wrapper
    kernel: every compiled layer re-optimises the code of the layers below it
    (a second compilation of the whole engine). Threads come from
    ``on_row_slices`` (no parfor to compile).
    """
    n_gallery = dists.shape[1]
    top_n = out_top.shape[3]
    order0 = np.empty(n_gallery, dtype=np.int64)
    values = np.empty(n_gallery, dtype=np.float32)
    base = np.empty(n_gallery, dtype=np.float32)
    base64 = np.empty(n_gallery)  # exact; the reference variant's scores by position
    votes0 = np.empty(n_gallery, dtype=np.int64)
    order = np.empty(n_gallery, dtype=np.int64)
    new_order = np.empty(n_gallery, dtype=np.int64)
    scores = np.empty(n_gallery)
    votes = np.empty(n_gallery, dtype=np.int64)
    in_top = np.empty(n_gallery, dtype=np.int32)  # int32, not int8: one dtype fewer to compile np.empty for
    prev_top = np.empty(kq, dtype=np.int64)
    items = np.empty(n_gallery if paper else 0)
    dense = kq * nbr.shape[1] >= n_gallery  # most items get votes: re-sort every position
    # Element loops, not slice assignments or array expressions: those compile numba's shape-mismatch
    # message or a ufunc kernel (seconds of compile).
    for b in range(start, stop):
        dist = dists[b]
        label = labels_q[b]
        keys, positions = row_sort_keys(dist)
        keys, positions = sort_pairs(keys, positions)
        for r in range(n_gallery):
            order0[r] = positions[r]
            values[r] = dist[positions[r]]
            base[r] = -values[r]
            base64[r] = base[r]
            votes0[r] = 0
        row_positions(order0, labels_g, label, n_relevant[b], out_positions[0, b, 0])
        for a in range(kq):  # the votes of pi_0's top, written out as in _move_votes (no callee to compile)
            neighbours = nbr[order0[a]]
            for r in range(neighbours.shape[0]):
                votes0[neighbours[r]] += weights[r]
        for c in range(betas.shape[0]):
            for a in range(top_n):
                out_top[c, b, 0, a] = order0[a]
                out_scores[c, b, 0, a] = base[a]
            for a in range(out_positions.shape[3]):
                out_positions[c, b, 0, a] = out_positions[0, b, 0, a]
            for j in range(n_gallery):
                order[j] = order0[j]
                votes[j] = votes0[j]
                in_top[j] = 0
            for a in range(kq):
                prev_top[a] = order0[a]
                in_top[prev_top[a]] = 1
            if paper:
                for j in range(n_gallery):
                    items[j] = -np.float64(dist[j])
            for t in range(1, n_iter + 1):
                if t > 1:
                    _move_votes(order, kq, in_top, prev_top, nbr, weights, votes)
                _rerank_row(order, votes, items if paper else base64, paper, denom, betas[c], dense, new_order, scores)
                order, new_order = new_order, order
                for a in range(top_n):
                    out_top[c, b, t, a] = order[a]
                    out_scores[c, b, t, a] = scores[a]
                row_positions(order, labels_g, label, n_relevant[b], out_positions[c, b, t])


@dataclass(frozen=True)
class ChunkSpec:
    """What every chunk of a ``rerank_chunks`` call shares.

    Attributes:
        nbr: int64 [G, KG] neighbour lists (numpy on the CPU path, a tensor on
            the device for the torch path).
        weights: [KG] the integer weights ``G - 1 - r`` (int64 numpy / float64 tensor).
        kq: voters per query; denom: ``(G - 1) * KQ``.
        betas: float64 [C] update strengths.
        n_iter: updates T; variant: the update rule.
        labels_g: int64 [G] gallery labels.
        top_n: best items kept per query and iteration.
        sparse: CPU path only: update with ``icfrr._sparse`` (cost per
            iteration independent of G) instead of the dense kernel.
    """

    nbr: np.ndarray | torch.Tensor
    weights: np.ndarray | torch.Tensor
    kq: int
    denom: float
    betas: np.ndarray
    n_iter: int
    variant: Variant
    labels_g: np.ndarray
    top_n: int
    sparse: bool = False

    def outputs(self, n_relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Empty (top int64 [C, B, T+1, N], scores float64 [C, B, T+1, N], relevant positions [C, B, T+1, R])."""
        shape = (self.betas.shape[0], n_relevant.shape[0], self.n_iter + 1, self.top_n)
        return np.empty(shape, dtype=np.int64), np.empty(shape), positions_buffer(shape[:3], n_relevant)


def run_rows_cpu(
    spec: ChunkSpec, dist: np.ndarray, labels_q: np.ndarray, n_relevant: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A chunk of queries through every iteration, for each beta, on the CPU.

    Each query is sorted, then updated ``n_iter`` times; the votes of the first
    update are counted once and shared by every beta, and later updates only
    add the votes of items that entered the top KQ and withdraw those of items
    that left it. Every ranking is evaluated as it is made.

    Args:
        spec: the shared parameters.
        dist: float32 [B, G] query-gallery distances of the chunk.
        labels_q, n_relevant: int64 [B] labels and ``metrics.relevant_counts``.

    Returns:
        (top gallery indices int64 [C, B, T+1, N], their scores float64
        [C, B, T+1, N], metric rows float64 [C, B, T+1, icfrr.metrics.n_row_metrics()]).
    """
    top, scores, positions = spec.outputs(n_relevant)
    args = (np.ascontiguousarray(dist, dtype=np.float32), spec.nbr, spec.weights, spec.kq, spec.denom,
            spec.betas, spec.n_iter, spec.variant is Variant.PAPER, spec.labels_g, labels_q, n_relevant, top, scores, positions)
    kernel = sparse_rows if spec.sparse else _run_rows
    on_row_slices(lambda start, stop: kernel(*args, start, stop), dist.shape[0])
    return top, scores, rows_from_positions(positions, n_relevant[None, :, None])


def run_rows_torch(
    spec: ChunkSpec, dist: torch.Tensor, labels_q: np.ndarray, n_relevant: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``run_rows_cpu`` with torch operations on the device of ``spec.nbr`` (the CUDA path).

    Each update recounts every vote with ``scatter_add_`` and sorts whole
    rows. Only the top N and the positions of the relevant items leave the
    device (copying whole [B, G] rankings to the host took 93% of the CUDA
    time at the TU-Berlin shape); the metrics are computed from them on the CPU.
    """
    top, scores, positions = spec.outputs(n_relevant)
    dist = dist.to(spec.nbr.device)
    labels_g = torch.as_tensor(spec.labels_g, device=dist.device)
    labels_q_dev = torch.as_tensor(labels_q, device=dist.device)
    order0, values = sort_distances(dist)
    base = values.neg_()
    for c, beta in enumerate(spec.betas.tolist()):
        ranking, step_scores = order0, base
        state = spec.variant.scores(base, dist)
        for t in range(spec.n_iter + 1):
            if t > 0:
                ranking, step_scores = update_torch(ranking, state, spec.nbr, spec.weights,
                                                    kq=spec.kq, denom=spec.denom, beta=beta)
            top[c, :, t] = ranking[:, : spec.top_n].cpu().numpy()
            scores[c, :, t] = step_scores[:, : spec.top_n].cpu().numpy()
            relevant_positions_torch(ranking, labels_g, labels_q_dev, n_relevant, positions[c, :, t])
    return top, scores, rows_from_positions(positions, n_relevant[None, :, None])


def relevant_positions_torch(ranking: torch.Tensor, labels_g: torch.Tensor, labels_q: torch.Tensor,
                             n_relevant: np.ndarray, out: np.ndarray) -> None:
    """``metrics.rows_positions`` on the ranking's device: the 0-based positions of
    the first ``n_relevant[q]`` items of row q labelled as its query, ascending,
    into ``out`` int32 [B, >= max(n_relevant)].
    """
    rows, cols = (labels_g[ranking] == labels_q[:, None]).nonzero(as_tuple=True)  # row-major: ascending per row
    rows, cols = rows.cpu().numpy(), cols.to(torch.int32).cpu().numpy()
    within = np.arange(rows.size) - np.searchsorted(rows, np.arange(out.shape[0]))[rows]
    keep = within < n_relevant[rows]
    out[rows[keep], within[keep]] = cols[keep]


def sort_distances(dist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stable ascending sort of each row: (order int64, sorted float32 distances)."""
    if dist.device.type == "cpu":
        order, values = stable_argsort_rows(dist.numpy())
        return torch.from_numpy(order), torch.from_numpy(values)
    values, order = torch.sort(dist, dim=1, stable=True)
    return order, values


def vote_sums_torch(top: torch.Tensor, nbr: torch.Tensor, weights: torch.Tensor, n_gallery: int) -> torch.Tensor:
    """Vote sums float64 [B, G] (item-indexed) with ``scatter_add_``; ``top`` int64 [B, KQ]."""
    b, kq = top.shape
    idx = nbr[top].reshape(b, -1)
    src = weights.repeat(kq).expand(b, -1)
    out = torch.zeros(b, n_gallery, dtype=torch.float64, device=top.device)
    return out.scatter_add_(1, idx, src)


def update_torch(
    ranking: torch.Tensor,
    state: PositionScores | ItemScores,
    nbr: torch.Tensor,
    weights: torch.Tensor,
    *,
    kq: int,
    denom: float,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``update_cpu`` for any device (the CUDA path): scatter, then a full stable sort."""
    delta = vote_sums_torch(ranking[:, :kq], nbr, weights, ranking.shape[1]).div_(denom).mul_(beta)
    by_position = state.position_scores(ranking, delta)
    scores, order = torch.sort(by_position, dim=1, descending=True, stable=True)
    return ranking.gather(1, order), scores
