"""Failure analysis from stored top-N rankings: retrieval confusions and the failure signature.

Pure functions on arrays (numpy only: no torch), for ``python -m jobs.report
--confusions`` / ``--signature`` and the dashboard.

- :func:`confusions`: for each query class, the share of its queries' top-k
  slots held by each other class, before and after re-ranking.
- :func:`failure_signature`: each query's precision in its initial top-KQ
  (the items that cast the first update's votes) against its AP change, binned,
  and the precision below which queries lose AP on average.

Queries of unknown label (-1) are left out, as from every metric (docs/SPEC.md
section 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: A summed AP change counts as a loss below ``-LOSS_TOL``, and sums within it of each
#: other as equal (float sums of changes that cancel are neither losses nor different).
LOSS_TOL = 1e-12


def _top(top: np.ndarray, name: str, n_query: int, n_gallery: int) -> np.ndarray:
    """``top`` as int64 [Q, N] gallery indices, checked."""
    a = np.asarray(top)
    if a.ndim != 2 or a.shape[0] != n_query:
        raise ValueError(f"{name} must be int [Q, N] with Q = {n_query}, got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold gallery indices (integers), got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= n_gallery):
        raise ValueError(f"{name} holds gallery indices outside 0..{n_gallery - 1}")
    return a.astype(np.int64, copy=False)


def _labels(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an int vector of class labels, got shape {a.shape}, dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


def _cutoff(k: int, n: int, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {k!r}")
    if k > n:
        raise ValueError(f"{what}={k} exceeds the stored top-{n}; pick {what} <= {n}")
    return int(k)


@dataclass(frozen=True)
class Confusions:
    """Top-k slots of each query class held by each other class.

    One row per (query class, other class) pair with a slot before or after;
    pairs that hold none on either side are left out. Rows are sorted by query
    label, then other label.

    Attributes:
        k: the cut-off.
        query_label, other_label: int64 [P].
        n_queries: int64 [P] queries of known label in the query class.
        share_before, share_after: float64 [P] slots held / (n_queries * k).
        change: float64 [P] ``share_after - share_before``.
    """

    k: int
    query_label: np.ndarray
    other_label: np.ndarray
    n_queries: np.ndarray
    share_before: np.ndarray
    share_after: np.ndarray
    change: np.ndarray


def confusions(
    top_before: np.ndarray,
    top_after: np.ndarray,
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    k: int = 10,
) -> Confusions:
    """Which other classes hold each query class's top-k slots, before and after.

    Args:
        top_before, top_after: int [Q, N] each query's stored top-N gallery
            indices, best first (N may differ between the two).
        labels_q: int [Q] query labels (-1: unknown, left out).
        labels_g: int [G] gallery labels. Items of unknown label (-1) fill
            slots (they count in the denominator) but are no class.
        k: cut-off, at most either side's N.

    Returns:
        Confusions, one row per pair of distinct known classes with a slot.

    Raises:
        ValueError: k above the stored N, shapes or indices that do not fit.
    """
    lq, lg = _labels(labels_q, "labels_q"), _labels(labels_g, "labels_g")
    before = _top(top_before, "top_before", lq.shape[0], lg.shape[0])
    after = _top(top_after, "top_after", lq.shape[0], lg.shape[0])
    k = _cutoff(k, min(before.shape[1], after.shape[1]), "k")
    known = lq != -1
    classes = np.unique(np.concatenate([lq[known], lg[lg != -1]]))
    n_cls = classes.size
    q_of = np.searchsorted(classes, lq[known])
    n_queries = np.bincount(q_of, minlength=n_cls)

    def slots(top: np.ndarray) -> np.ndarray:
        held = lg[top[known, :k]]  # [Qk, k] labels in the slots
        q = np.repeat(q_of, k)
        g = held.reshape(-1)
        use = (g != -1)
        pair = q[use] * n_cls + np.searchsorted(classes, g[use])
        return np.bincount(pair, minlength=n_cls * n_cls).reshape(n_cls, n_cls)

    b, a = slots(before), slots(after)
    np.fill_diagonal(b, 0)
    np.fill_diagonal(a, 0)
    qi, oi = np.nonzero((b > 0) | (a > 0))  # row-major: by query class, then other class
    denom = (n_queries[qi] * k).astype(np.float64)
    share_b, share_a = b[qi, oi] / denom, a[qi, oi] / denom
    return Confusions(k, classes[qi], classes[oi], n_queries[qi], share_b, share_a, share_a - share_b)


@dataclass(frozen=True)
class FailureSignature:
    """Initial top-KQ precision against AP change, per query and binned.

    Attributes:
        cutoff: m = min(KQ, stored N): the initial top-m is what is measured.
        queries: int64 [Q'] positions (in the input arrays) of the queries used:
            known label and both APs defined.
        precision: float64 [Q'] relevant items in the initial top-m / m.
        change: float64 [Q'] AP after - AP before.
        bin_lo, bin_hi: float64 [B] precision bins ``[lo, hi)``, the last ``[lo, 1]``.
        bin_n: int64 [B] queries per bin.
        bin_mean_change: float64 [B] their mean AP change (NaN for an empty bin).
        bin_losing: int64 [B] how many of them lose AP (change < 0).
        threshold: the precision X below which the queries' summed AP change is
            the most negative (so they lose AP on average); None when no group
            of queries below a precision value loses AP in total.
        n_below, mean_below: those queries' count and mean AP change (0, NaN without X).
        n_above, mean_above: the other queries' count and mean AP change (NaN when none).
    """

    cutoff: int
    queries: np.ndarray
    precision: np.ndarray
    change: np.ndarray
    bin_lo: np.ndarray
    bin_hi: np.ndarray
    bin_n: np.ndarray
    bin_mean_change: np.ndarray
    bin_losing: np.ndarray
    threshold: float | None
    n_below: int
    mean_below: float
    n_above: int
    mean_above: float


def failure_signature(
    top_before: np.ndarray,
    labels_q: np.ndarray,
    labels_g: np.ndarray,
    ap_before: np.ndarray,
    ap_after: np.ndarray,
    *,
    kq: int,
    n_bins: int = 10,
) -> FailureSignature:
    """Does a poor initial top-KQ predict an AP loss? Per query, binned and as one threshold.

    The threshold X is chosen among the precision values that occur: the one
    for which the summed AP change of the queries strictly below it is the
    most negative (below ``-LOSS_TOL``; the smallest such X on ties). Those
    queries lose AP on average, and widening the group to a higher X would add
    queries that gain more than they lose in total.

    Args:
        top_before: int [Q, N] each query's stored initial top-N, best first.
        labels_q, labels_g: int [Q], [G] labels (queries of label -1 are left out).
        ap_before, ap_after: float [Q] each query's AP before and after (NaN: left out).
        kq: the run's KQ; capped by N.
        n_bins: equal-width precision bins over [0, 1].

    Returns:
        FailureSignature.

    Raises:
        ValueError: shapes that do not fit, kq or n_bins below 1.
    """
    lq, lg = _labels(labels_q, "labels_q"), _labels(labels_g, "labels_g")
    top = _top(top_before, "top_before", lq.shape[0], lg.shape[0])
    if isinstance(kq, bool) or not isinstance(kq, (int, np.integer)) or kq < 1:
        raise ValueError(f"kq must be an integer >= 1, got {kq!r}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if top.shape[1] == 0:
        raise ValueError("top_before holds no ranks")
    before = np.asarray(ap_before, dtype=np.float64)
    after = np.asarray(ap_after, dtype=np.float64)
    if before.shape != lq.shape or after.shape != lq.shape:
        raise ValueError(f"ap_before and ap_after must be float [Q] with Q = {lq.shape[0]}")
    m = min(int(kq), top.shape[1])
    used = np.flatnonzero((lq != -1) & np.isfinite(before) & np.isfinite(after))
    hits = (lg[top[used, :m]] == lq[used, None]).sum(axis=1)
    precision = hits / m
    change = after[used] - before[used]

    which = np.minimum(hits * n_bins // m, n_bins - 1)  # integer arithmetic: exact bin edges
    bin_n = np.bincount(which, minlength=n_bins)
    sums = np.bincount(which, weights=change, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_mean = np.where(bin_n > 0, sums / np.maximum(bin_n, 1), np.nan)
    bin_losing = np.bincount(which[change < 0], minlength=n_bins)
    edges = np.arange(n_bins + 1) / n_bins

    # Threshold: the total change of the queries strictly below each distinct precision value.
    values, counts = np.unique(hits, return_counts=True)
    value_sums = np.bincount(np.searchsorted(values, hits), weights=change, minlength=values.size)
    below_sum = np.cumsum(value_sums)[:-1]  # strictly below values[1:]
    threshold, below = None, np.zeros(used.size, dtype=bool)
    if below_sum.size and below_sum.min() < -LOSS_TOL:
        cut = values[int(np.flatnonzero(below_sum <= below_sum.min() + LOSS_TOL)[0]) + 1]
        threshold, below = float(cut / m), hits < cut
    n_below, n_above = int(below.sum()), int((~below).sum())
    mean_below = float(change[below].mean()) if n_below else float("nan")
    mean_above = float(change[~below].mean()) if n_above else float("nan")
    return FailureSignature(m, used, precision, change, edges[:-1], edges[1:], bin_n, bin_mean, bin_losing,
                            threshold, n_below, mean_below, n_above, mean_above)


def signature_sentence(s: FailureSignature, top: str) -> str:
    """The finding in one sentence, from the computed threshold (``jobs.report --signature``, the dashboard).

    Args:
        s: :func:`failure_signature`'s result.
        top: How the measured list is named, e.g. ``"top-6"``.
    """
    if s.precision.size == 0:
        return "no query of known label with an AP on both sides: nothing to summarise"
    if s.threshold is None:
        return (f"no initial {top} precision X was found below which queries lose AP on average "
                f"(mean AP change of all {s.n_above} queries: {s.mean_above:+.4f})")
    hits = round(s.threshold * s.cutoff)
    rest = ("" if s.n_above == 0 else
            f"; the {s.n_above} at or above it change by {s.mean_above:+.4f} on average")
    return (f"queries whose initial {top} precision is below {s.threshold:.3f} ({hits} of {s.cutoff} "
            f"relevant) lose AP on average: {s.n_below} queries, mean change {s.mean_below:+.4f}{rest}")
