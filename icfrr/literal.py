"""A deliberately literal implementation of docs/SPEC.md sections 2 and 3: the oracle.

It mirrors the published code's shape: a dense [G, G] rank matrix built with
argsort and a Python loop over queries, everything in float64. It is slow and
needs O(G^2) memory; it exists so that tests and ``jobs.bench`` can check the
engine against docs/SPEC.md, never for real use.
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


def literal_initial(qg_dists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Initial rankings and original descending scores ``v``, one query at a time.

    Returns:
        (ranking int64 [Q, G], v float64 [Q, G]).
    """
    ranking = np.empty(qg_dists.shape, dtype=np.int64)
    v = np.empty(qg_dists.shape)
    for q in range(qg_dists.shape[0]):
        s0 = -qg_dists[q].astype(np.float64)
        ranking[q] = np.argsort(-s0, kind="stable")
        v[q] = s0[ranking[q]]
    return ranking, v


def literal_step(
    ranks: np.ndarray,
    weights: np.ndarray,
    ranking: np.ndarray,
    v: np.ndarray,
    item_scores: np.ndarray,
    *,
    kq: int,
    beta: float,
    variant: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One ICFRR update of every query, one query at a time.

    Args:
        ranks, weights: from ``rank_matrix`` and ``rank_weights``.
        ranking: int [Q, G] current rankings ``pi_t``.
        v: float64 [Q, G] original descending scores (reference variant).
        item_scores: float64 [Q, G] accumulated item scores ``s_t`` (paper variant).

    Returns:
        (next ranking int64 [Q, G], float64 [Q, G] score of every item by index).
    """
    n_query, n_gallery = ranking.shape
    top_n = min(kq, n_gallery)
    new_ranking = np.empty_like(ranking)
    new_scores = np.empty(ranking.shape)
    for q in range(n_query):
        order = ranking[q]
        delta = bonus(ranks, weights, order[:top_n])
        if variant == "reference":
            u = v[q] + beta * delta[order]
            new_scores[q, order] = u
        else:
            new_scores[q] = item_scores[q] + beta * delta
            u = new_scores[q][order]
        new_ranking[q] = order[np.argsort(-u, kind="stable")]
    return new_ranking, new_scores


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
    ranks = rank_matrix(gg_dists)
    weights = rank_weights(qg_dists.shape[1], kg)
    ranking, v = literal_initial(qg_dists)
    rankings, scores = [ranking], [-qg_dists.astype(np.float64)]
    for _ in range(n_iter):
        ranking, item_scores = literal_step(
            ranks, weights, rankings[-1], v, scores[-1], kq=kq, beta=beta, variant=variant
        )
        rankings.append(ranking)
        scores.append(item_scores)
    return rankings, scores


def literal_evaluate(ranking: np.ndarray, labels_q: np.ndarray, labels_g: np.ndarray) -> dict[str, float]:
    """Spec section 4 metrics, one query at a time (the published evaluation's shape)."""
    per_metric: dict[str, list[float]] = {"map_all": [], "map_200": [], "p_25": [], "p_100": [], "p_200": []}
    for q in range(ranking.shape[0]):
        if labels_q[q] == -1:
            continue
        rel = (labels_g[ranking[q]] == labels_q[q]).astype(np.float64)
        for name, cut in (("map_all", None), ("map_200", 200)):
            r = rel[:cut]
            hits = np.cumsum(r)
            n_rel = r.sum()
            ap = (r * hits / np.arange(1, r.size + 1)).sum() / n_rel if n_rel else 0.0
            per_metric[name].append(ap)
        for k in (25, 100, 200):
            per_metric[f"p_{k}"].append(rel[:k].sum() / k)
    return {name: float(np.mean(values)) for name, values in per_metric.items()}


def max_order_violation(ranking: np.ndarray, item_scores: np.ndarray) -> float:
    """How far a ranking is from a descending sort of ``item_scores`` (docs/SPEC.md section 7).

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
