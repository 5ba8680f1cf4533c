"""A deliberately literal implementation of spec sections 2 and 3: the oracle.

It mirrors the published code's shape: a dense [G, G] rank matrix built with
argsort and a Python loop over queries, everything in float64. It is slow and
needs O(G^2) memory; it exists so that tests and ``jobs.bench`` can check the
engine against the spec, never for real use.
"""

from __future__ import annotations

import numpy as np


def rank_matrix(gg_dists: np.ndarray) -> np.ndarray:
    """``R[i, j]`` = position of j in i's list sorted by distance, minus one (self first, at -1).

    Args:
        gg_dists: float [G, G].

    Returns:
        int64 [G, G]; ``R[i, i] == -1``; ties broken by index (stable sort).
    """
    g = gg_dists.shape[0]
    order = np.argsort(gg_dists, axis=1, kind="stable")
    rows = np.arange(g)
    # Identify the item itself by index: move it to the front of its own list.
    self_pos = np.argmax(order == rows[:, None], axis=1)
    ranks = np.empty((g, g), dtype=np.int64)
    np.put_along_axis(ranks, order, np.arange(g, dtype=np.int64)[None, :], axis=1)
    # Items listed before self move down one place; self goes to position 0.
    np.add(ranks, 1, out=ranks, where=ranks < self_pos[:, None])
    ranks[rows, rows] = 0
    return ranks - 1


def rank_weights(n_gallery: int, kg: int) -> np.ndarray:
    """``alpha`` indexed by ``R + 1``: float64 [G], with ``alpha[-1] = 0`` stored at index 0."""
    weights = np.zeros(n_gallery)
    r = np.arange(n_gallery - 1)
    if n_gallery > 1:
        weights[1:] = np.where(r < kg, 1.0 - r / (n_gallery - 1), 0.0)
    return weights


def bonus(ranks: np.ndarray, weights: np.ndarray, top: np.ndarray) -> np.ndarray:
    """``delta[j] = mean over i in top of alpha[R[i, j]]``: float64 [G]."""
    return weights[ranks[top] + 1].mean(axis=0)


def literal_rerank(
    qg_dists: np.ndarray,
    gg_dists: np.ndarray,
    *,
    kg: int,
    kq: int,
    beta: float,
    n_iter: int,
    variant: str = "reference",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The spec, one query at a time.

    Returns:
        (rankings, item_scores): ``n_iter + 1`` int64 [Q, G] rankings, and for each
        iteration the float64 [Q, G] score of every gallery ITEM (by index) that
        its ranking was sorted by.
    """
    n_query, n_gallery = qg_dists.shape
    ranks = rank_matrix(gg_dists)
    weights = rank_weights(n_gallery, kg)
    top_n = min(kq, n_gallery)
    rankings = [np.empty((n_query, n_gallery), dtype=np.int64) for _ in range(n_iter + 1)]
    scores = [np.empty((n_query, n_gallery)) for _ in range(n_iter + 1)]
    for q in range(n_query):
        s0 = -qg_dists[q].astype(np.float64)
        order = np.argsort(-s0, kind="stable")
        v = s0[order]
        rankings[0][q], scores[0][q] = order, s0
        s = s0.copy()
        for t in range(1, n_iter + 1):
            delta = bonus(ranks, weights, order[:top_n])
            if variant == "reference":
                u = v + beta * delta[order]
                scores[t][q, order] = u
            else:
                s = s + beta * delta
                u = s[order]
                scores[t][q] = s
            order = order[np.argsort(-u, kind="stable")]
            rankings[t][q] = order
    return rankings, scores


def max_order_violation(ranking: np.ndarray, item_scores: np.ndarray) -> float:
    """How far a ranking is from a descending sort of ``item_scores`` (spec section 7).

    Args:
        ranking: int [Q, G] gallery indices, best first.
        item_scores: float64 [Q, G] score of every gallery item, by index.

    Returns:
        The largest amount by which an item's score exceeds the score of the item
        ranked just before it (0.0 for a valid descending order).
    """
    ordered = np.take_along_axis(item_scores, np.asarray(ranking), axis=1)
    if ordered.shape[1] < 2:
        return 0.0
    return float(max(0.0, np.max(ordered[:, 1:] - ordered[:, :-1])))
