"""Selection protocols: which configuration and iteration of a method is reported, chosen on which queries.

Choosing each method's best configuration on the queries it is then reported
on flatters it, the more so the more parameters it has. Zero-shot benchmarks
have no validation split, so the classes themselves are split:

* ``test``: choose on every query and report on the same ones. Always labelled
  :data:`TEST_LABEL`.
* ``holdout``: choose on the tuning classes' queries, report on the other
  classes' queries only.
* ``cv``: k folds of classes; each fold's queries are scored with the choice
  made on the other folds, so every query is scored exactly once, by a choice
  made without it.

The split (reproducible in any tool): the distinct query labels (label -1
excluded) sorted ascending, permuted with
``numpy.random.default_rng(seed).permutation``; for holdout the first
``round(tune_fraction * n_classes)`` permuted classes tune; for cv the class
at permuted position p belongs to fold ``p % folds``.

Each protocol is one :class:`Protocol` entry of :data:`PROTOCOL_ENTRIES`: its
split (one ``(choose_mask, report_mask)`` pair per choice), the options it
reads and the words every output uses; :func:`choose` and every caller read
the entry, never the name.

The rule: among a method's candidates, every (run, iteration) with iteration
>= 1 (iteration 0 is the initial ranking, not a configuration), the highest
mean AP (mAP@all, :data:`icfrr.registry.HEADLINE`) over the choosing queries;
means are compared rounded to 12 decimals (so a tool that sums in another
order picks the same), ties to the lowest run id, then the lowest iteration.

Everything here works on arrays: ``ap`` is float [C, Q], one row per
candidate and one column per query (NaN: query of unknown label, or a value
the store does not hold), with ``run_ids`` and ``iterations`` [C] naming the
candidates.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from icfrr.registry import method

#: How every output labels the ``test`` protocol.
TEST_LABEL = "tuned on the reported queries (optimistic)"
#: Decimals the mean APs are rounded to before comparing (ties across tools).
TIE_DECIMALS = 12
#: The protocol chosen when none is named (the dashboard's selector, ``ProtocolOptions``): the honest one.
DEFAULT_PROTOCOL = "holdout"
#: The split options a protocol may read -> its ``python -m jobs.report`` flag, a template of the value.
OPTION_FLAGS = {"tune_fraction": "--tune-fraction {:g}", "folds": "--folds {}"}


class ProtocolError(ValueError):
    """A split that cannot be made, with a one-line message saying what to pass instead."""


def permuted_classes(labels: np.ndarray, seed: int) -> np.ndarray:
    """The query classes in split order: distinct labels != -1, sorted, permuted by ``seed``.

    Args:
        labels: int [Q] query labels (-1: unknown).
        seed: Seed of ``numpy.random.default_rng``.

    Raises:
        ProtocolError: Fewer than 2 classes.
    """
    classes = np.unique(np.asarray(labels, dtype=np.int64))
    classes = classes[classes != -1]
    if classes.size < 2:
        raise ProtocolError(f"the queries have {classes.size} known "
                            f"{'class' if classes.size == 1 else 'classes'}; splitting classes "
                            "needs at least 2 (use --protocol test)")
    return np.random.default_rng(seed).permutation(classes)


def holdout_classes(labels: np.ndarray, tune_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The tuning and the reported classes of the holdout protocol.

    Args:
        labels: int [Q] query labels (-1: unknown).
        tune_fraction: Share of the classes that tune, in (0, 1).
        seed: Seed of the permutation.

    Returns:
        ``(tuning, reported)`` class labels, each in permuted order.

    Raises:
        ProtocolError: ``tune_fraction`` outside (0, 1), fewer than 2 classes,
            or a fraction that leaves either side empty.
    """
    if not (isinstance(tune_fraction, (int, float)) and 0.0 < tune_fraction < 1.0):
        raise ProtocolError(f"--tune-fraction must lie strictly between 0 and 1, got {tune_fraction}")
    order = permuted_classes(labels, seed)
    n_tune = int(round(tune_fraction * order.size))
    if not 0 < n_tune < order.size:
        raise ProtocolError(f"--tune-fraction {tune_fraction:g} of {order.size} classes leaves "
                            f"{'no tuning' if n_tune == 0 else 'no reported'} class; "
                            f"pick a fraction between {0.5 / order.size:.2g} and {1 - 0.5 / order.size:.2g}")
    return order[:n_tune], order[n_tune:]


def cv_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold of each query: the class at permuted position p is in fold ``p % folds``.

    Args:
        labels: int [Q] query labels (-1: unknown).
        folds: Number of folds, 2 .. number of classes.
        seed: Seed of the permutation.

    Returns:
        int64 [Q] fold of each query; -1 for queries of unknown label.

    Raises:
        ProtocolError: Fewer than 2 folds, fewer than 2 classes or more folds than classes.
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ProtocolError(f"--folds must be an integer >= 2, got {folds}")
    order = permuted_classes(labels, seed)
    if folds > order.size:
        raise ProtocolError(f"--folds {folds} is more than the {order.size} query classes; "
                            f"pass --folds {order.size} or fewer")
    fold_of = {int(c): p % folds for p, c in enumerate(order)}
    return np.array([fold_of.get(int(label), -1) for label in labels], dtype=np.int64)


def mean_ap(ap: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """float64 [C]: each candidate's mean AP over the ``queries`` (bool [Q]); NaN values skipped.

    Sums are exactly rounded (``math.fsum``), so a mean does not depend on the
    order of the queries: the same values give the same mean wherever they sit.
    """
    sub = np.asarray(ap, dtype=np.float64)[:, np.asarray(queries, dtype=bool)]
    out = np.full(sub.shape[0], np.nan)
    for i, row in enumerate(sub):
        row = row[~np.isnan(row)]
        if row.size:
            out[i] = math.fsum(row.tolist()) / row.size
    return out


def select(ap: np.ndarray, run_ids: np.ndarray, iterations: np.ndarray, queries: np.ndarray) -> int:
    """The candidate the rule picks on ``queries`` (see the module docstring).

    Args:
        ap: float [C, Q] per-query AP of each candidate.
        run_ids: int [C] run of each candidate.
        iterations: int [C] iteration of each candidate; 0 is never picked.
        queries: bool [Q] the choosing queries.

    Returns:
        The row index into ``ap`` of the chosen candidate.

    Raises:
        ProtocolError: No candidate with iteration >= 1 has a value on ``queries``.
    """
    means = np.round(mean_ap(ap, queries), TIE_DECIMALS)
    its = np.asarray(iterations)
    eligible = [i for i in range(means.size) if its[i] >= 1 and not math.isnan(means[i])]
    if not eligible:
        raise ProtocolError("no re-ranked iteration has a per-query AP on the choosing queries; "
                            "rerun the sweep")
    return min(eligible, key=lambda i: (-means[i], int(run_ids[i]), int(its[i])))


@dataclass(frozen=True)
class Selection:
    """One method's choice under a protocol.

    Attributes:
        protocol: A key of :data:`PROTOCOLS`.
        pick: int64 [Q] the candidate (row of ``ap``) that scores each query;
            -1 for queries not reported on (tuning classes, unknown label).
        chosen: The candidate chosen by each choice of the split: one for
            ``test`` and ``holdout``, one per fold for ``cv``.
        reported: bool [Q] the queries reported on.
    """

    protocol: str
    pick: np.ndarray
    chosen: tuple[int, ...]
    reported: np.ndarray

    @property
    def n_queries(self) -> int:
        """Queries reported on."""
        return int(self.reported.sum())

    def times_chosen(self) -> list[tuple[int, int]]:
        """``(candidate, how many choices picked it)``, most often first (then lowest index)."""
        return sorted(Counter(self.chosen).items(), key=lambda kv: (-kv[1], kv[0]))

    def scores(self, values: np.ndarray) -> np.ndarray:
        """float64 [Q]: each reported query's value under its pick, NaN elsewhere.

        Args:
            values: float [C, Q] any per-query metric of the candidates.
        """
        v = np.asarray(values, dtype=np.float64)
        out = np.full(v.shape[1], np.nan)
        rows = np.flatnonzero(self.pick >= 0)
        out[rows] = v[self.pick[rows], rows]
        return out


#: One choice's queries: ``(choose_mask, report_mask)``, each bool [Q].
Split = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Protocol:
    """One selection protocol: how the queries are split into choosing and reported ones.

    Attributes:
        key: The name ``--protocol`` takes and every output prints.
        label: One line on what chooses: the dashboard's selector shows
            ``"<key>: <label>"``.
        flag_help: The few words ``--protocol``'s help says of it.
        selection: What chose each configuration, in words (every format's header).
        split_text: The split in words, a ``str.format`` template over ``seed``,
            ``tune_fraction``, ``folds``, ``n_tuning`` and ``n_reported`` (classes).
        split: ``(labels, *, tune_fraction, folds, seed) -> sequence of Split``:
            one ``(choose_mask, report_mask)`` per choice; the report masks are
            disjoint and exclude unknown labels (raises :class:`ProtocolError`).
        options: Which of :data:`OPTION_FLAGS` the split reads.
        tunes_on_reported: Whether it chooses on the very queries it reports
            (optimistic: labelled :data:`TEST_LABEL`, no optimism to show).
        several_choices: Whether it makes one choice per fold (outputs list
            every choice and the run chosen most often).
    """

    key: str
    label: str
    flag_help: str
    selection: str
    split_text: str
    split: Callable[..., Sequence[Split]]
    options: tuple[str, ...] = ()
    tunes_on_reported: bool = False
    several_choices: bool = False


def on_reported_split(labels: np.ndarray, *, tune_fraction: float, folds: int, seed: int) -> tuple[Split, ...]:
    """``test``: choose on every query of known label and report on the same ones."""
    known = np.asarray(labels, dtype=np.int64) != -1
    return ((known, known),)


def holdout_split(labels: np.ndarray, *, tune_fraction: float, folds: int, seed: int) -> tuple[Split, ...]:
    """``holdout``: choose on the tuning classes' queries, report on the others (:func:`holdout_classes`)."""
    lab = np.asarray(labels, dtype=np.int64)
    tuning, reported = holdout_classes(lab, tune_fraction, seed)
    return ((np.isin(lab, tuning), np.isin(lab, reported)),)


def cv_split(labels: np.ndarray, *, tune_fraction: float, folds: int, seed: int) -> tuple[Split, ...]:
    """``cv``: fold f's queries reported with the choice made on every other fold (:func:`cv_folds`)."""
    lab = np.asarray(labels, dtype=np.int64)
    fold = cv_folds(lab, folds, seed)
    return tuple(((lab != -1) & (fold != f), fold == f) for f in range(folds))


#: Every selection protocol, in the order the outputs offer them.
PROTOCOL_ENTRIES: tuple[Protocol, ...] = (
    Protocol("test", TEST_LABEL, f"on the reported queries: {TEST_LABEL}", TEST_LABEL,
             "test: no split, every class reported; " + TEST_LABEL,
             on_reported_split, tunes_on_reported=True),
    Protocol("holdout", "tuned on some classes, reported on the others",
             "on tuning classes, reported on the others",
             "chosen on the tuning classes' queries, reported on the other classes' queries",
             "holdout: {n_tuning} tuning / {n_reported} reported classes "
             "(--tune-fraction {tune_fraction:g}), seed {seed}",
             holdout_split, options=("tune_fraction",)),
    Protocol("cv", "k folds of classes, each scored by a choice made without it", "k folds of classes",
             "each fold's queries scored by the choice made on the other folds",
             "cv: {folds} folds of {n_reported} classes, seed {seed}; every query scored once, "
             "by a choice made on the other folds",
             cv_split, options=("folds",), several_choices=True),
)
#: Protocol names, as ``python -m jobs.report --protocol`` spells them.
PROTOCOLS = tuple(p.key for p in PROTOCOL_ENTRIES)


def protocol(key: str) -> Protocol:
    """The entry of protocol ``key``.

    Raises:
        ProtocolError: An unknown key, naming the known ones.
    """
    for entry in PROTOCOL_ENTRIES:
        if entry.key == key:
            return entry
    raise ProtocolError(f"unknown protocol {key!r}; use one of {', '.join(p.key for p in PROTOCOL_ENTRIES)}")


def split_classes(
    key: str, labels: np.ndarray, *, tune_fraction: float = 0.5, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The tuning-only and the reported classes of protocol ``key``'s split.

    Args:
        key: A protocol key.
        labels: int [Q] query labels (-1: unknown).
        tune_fraction / folds / seed: The split's options.

    Returns:
        ``(tuning, reported)`` sorted class labels: classes that only ever
        choose, and classes whose queries are reported on.

    Raises:
        ProtocolError: An unknown protocol or an impossible split.
    """
    lab = np.asarray(labels, dtype=np.int64)
    splits = protocol(key).split(lab, tune_fraction=tune_fraction, folds=folds, seed=seed)
    choosing = np.logical_or.reduce([c for c, _ in splits])
    reported = np.logical_or.reduce([r for _, r in splits])
    reported_cls = np.unique(lab[reported])
    return np.setdiff1d(np.unique(lab[choosing & (lab != -1)]), reported_cls), reported_cls


def choose(
    key: str,
    ap: np.ndarray,
    run_ids: np.ndarray,
    iterations: np.ndarray,
    labels: np.ndarray,
    *,
    tune_fraction: float = 0.5,
    folds: int = 5,
    seed: int = 0,
) -> Selection:
    """Apply one protocol to one method's candidates: every choice picks on its choosing queries.

    Args:
        key: A protocol key (:data:`PROTOCOLS`).
        ap: float [C, Q] per-query AP of each candidate.
        run_ids: int [C] run of each candidate.
        iterations: int [C] iteration of each candidate.
        labels: int [Q] query labels (-1: unknown, never chosen on nor reported).
        tune_fraction: Holdout's share of tuning classes, in (0, 1).
        folds: Cross-validation's number of folds.
        seed: Seed of the class permutation.

    Returns:
        The :class:`Selection`: each choice's pick scores its report mask.

    Raises:
        ProtocolError: An unknown protocol or an impossible split.
    """
    lab = np.asarray(labels, dtype=np.int64)
    splits = protocol(key).split(lab, tune_fraction=tune_fraction, folds=folds, seed=seed)
    pick = np.full(lab.size, -1, dtype=np.int64)
    reported = np.zeros(lab.size, dtype=bool)
    chosen = []
    for choose_mask, report_mask in splits:
        best = select(ap, run_ids, iterations, choose_mask)
        pick[report_mask] = best
        reported |= report_mask
        chosen.append(best)
    return Selection(key, pick, tuple(chosen), reported)


def optimism(ap: np.ndarray, run_ids: np.ndarray, iterations: np.ndarray, sel: Selection) -> tuple[float, float]:
    """The test-tuned score on the reported queries and its excess over the protocol's score.

    Args:
        ap: float [C, Q] per-query AP of each candidate.
        run_ids: int [C]; iterations: int [C] (as for :func:`select`).
        sel: The protocol's selection.

    Returns:
        ``(tuned, tuned - protocol)``: mAP@all over ``sel.reported`` of the
        candidate chosen on those same queries, and how much it exceeds the
        protocol's mAP@all there (0 for ``test``).
    """
    tuned = float(mean_ap(ap, sel.reported)[select(ap, run_ids, iterations, sel.reported)])
    return tuned, tuned - float(mean_ap(sel.scores(ap)[None, :], sel.reported)[0])


def spread(ap: np.ndarray, iterations: np.ndarray, queries: np.ndarray) -> tuple[float, float, float]:
    """Min, median and max mAP@all over a method's grid (every candidate with iteration >= 1).

    Args:
        ap: float [C, Q] per-query AP of each candidate.
        iterations: int [C] iteration of each candidate.
        queries: bool [Q] the queries averaged over.
    """
    means = mean_ap(ap, queries)[np.asarray(iterations) >= 1]
    means = means[~np.isnan(means)]
    if not means.size:
        return (math.nan, math.nan, math.nan)
    return (float(means.min()), float(np.median(means)), float(means.max()))


def default_candidate(
    method_key: str, run_ids: np.ndarray, iterations: np.ndarray, params: Mapping[int, Mapping[str, object]]
) -> int | None:
    """The candidate with the registry's default parameters (lowest run id), or None.

    A run matches when every grid parameter it asked for (``asked_<name>``,
    else ``<name>`` of ``runs.params``) equals the registry default (numbers
    compared with ``math.isclose``); the candidate is its iteration at the
    default ``n_iter`` (1 for a method without one).

    Args:
        method_key: A registry method key (None for any other key).
        run_ids: int [C] run of each candidate; iterations: int [C] its iteration.
        params: run id -> its ``runs.params``.

    Returns:
        The row index of that candidate, or None when no run used the defaults.
    """
    try:
        grid = method(method_key).params
    except KeyError:
        return None
    want_it = 1
    for i in np.argsort(run_ids, kind="stable"):
        p = params.get(int(run_ids[i]), {})
        ok = True
        for prm in grid:
            if prm.name == "n_iter":
                want_it = int(prm.default[0])
                continue
            got = p.get(f"asked_{prm.name}", p.get(prm.name))
            ok &= got is not None and (got == prm.default[0] if prm.kind is str
                                       else math.isclose(float(got), float(prm.default[0])))
        if ok and int(iterations[i]) == want_it:
            return int(i)
    return None


__all__ = ["DEFAULT_PROTOCOL", "OPTION_FLAGS", "PROTOCOLS", "PROTOCOL_ENTRIES", "TEST_LABEL", "TIE_DECIMALS",
           "Protocol", "ProtocolError", "Selection", "Split", "choose", "cv_folds", "cv_split", "default_candidate",
           "holdout_classes", "holdout_split", "mean_ap", "on_reported_split", "optimism", "permuted_classes",
           "protocol", "select", "split_classes", "spread"]
