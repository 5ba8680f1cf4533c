"""ICFRR updates whose cost per iteration does not grow with G (the sparse CPU path).

Only items that receive votes move in an update; every other item keeps its
relative order (docs/SPEC.md section 2: an item without a bonus keeps the base
score of its position; section 3: it keeps its own score). So after t updates,
the items never voted for (the complement of U, the union of the voted sets)
are still in their initial order ``pi_0`` and fill, in that order, the
positions that the items of U do not occupy. The kernel keeps per query:

- ``pi_0``, its sorted distances and the inverse ``pos0`` (one full sort of the
  query's distance row, once);
- the items of U with their current positions, sorted both by ``pos0`` and by
  current position.

An update counts the votes of the current top KQ (O(KQ * KG)), finds where the
voted items sit (binary searches in U's two orders), sorts them by their new
score (ties by current position, as the stable sort of the dense kernel) and
places each by counting the unvoted items ahead of it: in the reference
variant those are the positions ``p`` with ``(v[p], p)`` before the voted
item's ``(u, r)`` (a binary search in ``v``, less the voted positions among
them); in the paper variant the never-voted items ahead (a binary search in
``v`` over ``pi_0``) plus the voted-before items of U ahead. Unvoted items of U
then fill the remaining positions in their order. The top N, the next top KQ
and the positions of the relevant items (for mAP@all) are read off this
representation. Per iteration: O(KQ * KG * log G + |U| + N + R) for R relevant
items, instead of O(G).

Results are those of ``icfrr._update``'s dense kernel, bit for bit (the same
float64 scores, the same tie order).
"""

from __future__ import annotations

import numpy as np

from icfrr._compiled import helper, kernel
from icfrr._sorting import desc_key, row_sort_keys, sort_pairs
from icfrr.metrics import row_positions

#: The sparse path is used when G is at least this many times KQ * KG. Measured (``jobs.bench --crossover``,
#: CPU time, sparse/dense per iteration): KQ = KG = 64: 1.16 at G = 100k (G / KQ*KG = 24), 0.66 at 200k (49);
#: KQ = KG = 128: 1.85 at 200k (12); KQ = KG = 16: 0.60 at G = 27,989 (109). The sparse kernel costs
#: about 0.2-0.4 us per voted item, the dense one about 10 ns per gallery position.
SPARSE_RATIO = 32
#: ...and G at least this large (below it, the dense kernel's O(G) merge costs next to nothing).
SPARSE_MIN_GALLERY = 20_000


def use_sparse(n_gallery: int, kq: int, kg: int, top_n: int) -> bool:
    """Whether the sparse update is the faster one for this shape (the measured crossover).

    Args:
        n_gallery: G. kq, kg: voters and neighbours per voter. top_n: items kept per ranking.
    """
    return n_gallery >= SPARSE_MIN_GALLERY and n_gallery >= SPARSE_RATIO * kq * kg and top_n * 4 <= n_gallery


@helper
def _count_below(sorted_values, n, value):  # pragma: no cover - compiled
    """How many of ``sorted_values[:n]`` (ascending) are below ``value``."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@helper
def _slot(taken, n, k):  # pragma: no cover - compiled
    """Position of the k-th (0-based) position not in ``taken[:n]`` (ascending, distinct)."""
    lo, hi = 0, n  # count i with taken[i] - i <= k (non-decreasing in i)
    while lo < hi:
        mid = (lo + hi) >> 1
        if taken[mid] - mid <= k:
            lo = mid + 1
        else:
            hi = mid
    return k + lo


@helper
def _v_bounds(values, key):  # pragma: no cover - compiled
    """(positions p whose base score ``-values[p]`` sorts before ``key``, those up to and equal to it).

    ``values`` float32 ascending distances; keys are ``desc_key`` of the float64 scores.
    """
    lo, hi = 0, values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if desc_key(-np.float64(values[mid])) < key:
            lo = mid + 1
        else:
            hi = mid
    below = lo
    hi = values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if desc_key(-np.float64(values[mid])) <= key:
            lo = mid + 1
        else:
            hi = mid
    return below, lo


@helper
def _sort_by_position(items, n, cur, out_items, out_pos):  # pragma: no cover - compiled
    """``items[:n]`` ordered by ``cur[item]`` (distinct, < 2**32) into ``out_items``, ``out_pos``."""
    keys = np.empty(n, dtype=np.uint64)
    idx = np.empty(n, dtype=np.int32)  # int32 payloads: the engine's one compiled sort specialisation
    for a in range(n):
        keys[a] = np.uint64(cur[items[a]]) << np.uint64(32)
        idx[a] = a
    keys, idx = sort_pairs(keys, idx)
    for a in range(n):
        out_items[a] = items[idx[a]]
        out_pos[a] = cur[items[idx[a]]]


@helper
def _relevant_positions(rel0, n_relevant, order0, in_u, u0, ucur, ucur_items, n_u, labels_g, label, rel_a, rel_b,
                        dest):  # pragma: no cover - compiled
    """Current positions of the relevant items, ascending, into ``dest``: the never-voted ones by their
    pi_0 rank (``rel0``, ascending), those of U by their position; ``rel_a``, ``rel_b`` scratch."""
    n_a = 0
    iu0 = 0
    for a in range(n_relevant):
        p = rel0[a]
        if not in_u[order0[p]]:
            while iu0 < n_u and u0[iu0] < p:
                iu0 += 1
            rel_a[n_a] = _slot(ucur, n_u, p - iu0)
            n_a += 1
    n_b = 0
    for a in range(n_u if n_relevant > 0 else 0):
        if labels_g[ucur_items[a]] == label:
            rel_b[n_b] = ucur[a]
            n_b += 1
    ia, ib = 0, 0
    for out in range(n_a + n_b):
        if ib >= n_b or (ia < n_a and rel_a[ia] < rel_b[ib]):
            dest[out] = rel_a[ia]
            ia += 1
        else:
            dest[out] = rel_b[ib]
            ib += 1


@kernel
def sparse_rows(dists, nbr, weights, kq, denom, betas, n_iter, paper, labels_g, labels_q, n_relevant_q,
                out_top, out_scores, out_positions, start, stop):  # pragma: no cover - compiled
    """Queries ``start .. stop - 1`` of a chunk through every iteration for each beta (outputs [C, B, T+1, ...]).

    As ``_update._run_rows``, and with the loop over queries here too: a wrapper
    kernel would re-optimise the whole of this one (a second compilation).
    """
    for b in range(start, stop):
        dist, label, n_relevant = dists[b], labels_q[b], n_relevant_q[b]
        n_gallery = dist.shape[0]
        zero = np.int64(0)  # not a literal 0: a literal passed to a helper compiles it a second time
        kg = nbr.shape[1]
        top_n = out_top.shape[3]
        order0 = np.empty(n_gallery, dtype=np.int64)
        values = np.empty(n_gallery, dtype=np.float32)
        keys, idx = row_sort_keys(dist)
        keys, idx = sort_pairs(keys, idx)
        pos0 = np.empty(n_gallery, dtype=np.int64)
        for p in range(n_gallery):
            order0[p] = idx[p]
            values[p] = dist[idx[p]]
            pos0[order0[p]] = p
        rel0 = out_positions[0, b, 0]  # relevant items' pi_0 positions, ascending (read, never written, below)
        row_positions(order0, labels_g, label, n_relevant, rel0)
        # Conditional expressions, not min/max: those are two more numba overloads to compile.
        cap_v = kq * kg if kq * kg < n_gallery else n_gallery
        cap_u = (n_iter if n_iter > 1 else 1) * cap_v
        cap_u = cap_u if cap_u < n_gallery else n_gallery
        n_prefix = kq if kq > top_n else top_n
        n_prefix = n_prefix if n_prefix < n_gallery else n_gallery  # the next voters and the top N
        votes = np.empty(n_gallery, dtype=np.int64)
        in_u = np.empty(n_gallery, dtype=np.int32)  # 0/1; int32 and np.empty: no more numba overloads to compile
        for j in range(n_gallery):
            votes[j] = 0
            in_u[j] = 0
        cur = np.empty(n_gallery, dtype=np.int64)  # current position, for items of U
        item_score = np.empty(n_gallery)  # paper: accumulated score, for items of U
        shown = np.empty(n_gallery)  # score at the item's position in the newest ranking, for items of U
        u_items = np.empty(cap_u, dtype=np.int64)
        u0 = np.empty(cap_u, dtype=np.int64)  # pos0 of U, ascending
        u_items_by0 = np.empty(cap_u, dtype=np.int64)
        ucur_items = np.empty(cap_u, dtype=np.int64)  # U by current position
        ucur = np.empty(cap_u, dtype=np.int64)
        old_ucur = np.empty(cap_u, dtype=np.int64)
        voted = np.empty(cap_v, dtype=np.int64)
        r_v = np.empty(cap_v, dtype=np.int64)
        u_v = np.empty(cap_v)
        vpos = np.empty(cap_v, dtype=np.int64)  # voted current positions, ascending
        new_v = np.empty(cap_v, dtype=np.int64)  # voted new positions, in score order (ascending)
        plain_key = np.empty(cap_u, dtype=np.uint64)  # paper: unvoted items of U, by position
        plain_pos = np.empty(cap_u, dtype=np.int64)
        prefix = np.empty(n_prefix, dtype=np.int64)
        rel_a = np.empty(n_relevant, dtype=np.int64)
        rel_b = np.empty(n_relevant, dtype=np.int64)
        for c in range(betas.shape[0]):
            beta = betas[c]
            for a in range(top_n):
                out_top[c, b, 0, a] = order0[a]
                out_scores[c, b, 0, a] = -values[a]
            for a in range(out_positions.shape[3]):  # element loops: a slice assignment compiles an error message
                out_positions[c, b, 0, a] = rel0[a]
            for a in range(n_prefix):
                prefix[a] = order0[a]
            n_u = zero
            for t in range(1, n_iter + 1):
                # Votes of the current top KQ; the voted items in order of first vote.
                m = zero
                for a in range(kq):
                    neighbours = nbr[prefix[a]]
                    for r in range(kg):
                        j = neighbours[r]
                        if votes[j] == 0:
                            voted[m] = j
                            m += 1
                        votes[j] += weights[r]
                # Where the voted items sit now, their new scores, and U' = U and the newly voted items
                # (one loop: each item is voted once; positions in U are looked up in U as it was).
                n_u_before = n_u
                for a in range(m):
                    j = voted[a]
                    if not in_u[j]:
                        cur[j] = _slot(ucur, n_u_before, pos0[j] - _count_below(u0, n_u_before, pos0[j]))
                        item_score[j] = -np.float64(values[pos0[j]])  # paper: a new item's score is its base
                        in_u[j] = 1
                        u_items[n_u] = j
                        n_u += 1
                    r_v[a] = cur[j]
                    bonus = beta * (votes[j] / denom)
                    u_v[a] = (item_score[j] if paper else -np.float64(values[r_v[a]])) + bonus
                _sort_by_position(u_items, n_u, pos0, u_items_by0, u0)  # the shared radix sort, not ndarray.sort
                _sort_by_position(u_items, n_u, cur, ucur_items, ucur)
                for a in range(n_u):
                    old_ucur[a] = ucur[a]
                # Voted items: by current position, then stably by new score (descending).
                keys = np.empty(m, dtype=np.uint64)
                idx = np.empty(m, dtype=np.int32)
                for a in range(m):
                    keys[a] = np.uint64(r_v[a]) << np.uint64(32)
                    idx[a] = a
                keys, idx = sort_pairs(keys, idx)
                for a in range(m):
                    vpos[a] = r_v[idx[a]]
                    keys[a] = desc_key(u_v[idx[a]])
                keys, by_score = sort_pairs(keys, idx.copy())  # payload: indices into voted
                n_plain_u = 0
                if paper:
                    for a in range(n_u):
                        j = ucur_items[a]
                        if votes[j] == 0:
                            plain_key[n_plain_u] = desc_key(item_score[j])
                            plain_pos[n_plain_u] = ucur[a]
                            n_plain_u += 1
                # Each voted item goes after the unvoted items that sort before it.
                for i in range(m):
                    a = by_score[i]
                    key = keys[i]
                    r = r_v[a]
                    below, upto = _v_bounds(values, key)
                    if paper:
                        k_lo = below - _count_below(u0, n_u, below)
                        k_hi = upto - _count_below(u0, n_u, upto)
                        k_cur = r - _count_below(ucur, n_u, r)
                        ahead = k_hi if k_cur > k_hi else (k_lo if k_cur < k_lo else k_cur)
                        lo, hi = 0, n_plain_u
                        while lo < hi:
                            mid = (lo + hi) >> 1
                            if plain_key[mid] < key or (plain_key[mid] == key and plain_pos[mid] < r):
                                lo = mid + 1
                            else:
                                hi = mid
                        ahead += lo
                    else:
                        p = upto if r > upto else (below if r < below else r)
                        ahead = p - _count_below(vpos, m, p)
                    new_v[i] = i + ahead
                # Scores at the new positions, then the new positions of U'.
                for a in range(n_u):
                    j = ucur_items[a]
                    if votes[j] == 0:
                        shown[j] = item_score[j] if paper else -np.float64(values[ucur[a]])
                        k = ucur[a] - _count_below(vpos, m, ucur[a])
                        cur[j] = _slot(new_v, m, k)
                for i in range(m):
                    a = by_score[i]
                    j = voted[a]
                    shown[j] = u_v[a]
                    if paper:
                        item_score[j] = u_v[a]
                    cur[j] = new_v[i]
                    votes[j] = 0  # every vote is counted afresh next time
                _sort_by_position(u_items, n_u, cur, ucur_items, ucur)
                # The new ranking's first positions (top N and the next voters).
                iu, p0, k = 0, 0, zero
                for out in range(n_prefix):
                    if iu < n_u and ucur[iu] == out:
                        j = ucur_items[iu]
                        score = shown[j]
                        iu += 1
                    else:
                        while in_u[order0[p0]]:
                            p0 += 1
                        j = order0[p0]
                        score = -np.float64(values[p0]) if paper else -np.float64(values[_slot(old_ucur, n_u, k)])
                        p0 += 1
                        k += 1
                    prefix[out] = j
                    if out < top_n:
                        out_top[c, b, t, out] = j
                        out_scores[c, b, t, out] = score
                _relevant_positions(rel0, n_relevant, order0, in_u, u0, ucur, ucur_items, n_u, labels_g, label,
                                    rel_a, rel_b, out_positions[c, b, t])
            for a in range(n_u):
                in_u[u_items[a]] = 0
