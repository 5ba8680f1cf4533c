"""icfrr.protocols against literal, loop-by-loop implementations of the documented split and rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from icfrr import protocols as P


def _problem(seed: int = 0, n_classes: int = 7, per_class: int = 5, n_runs: int = 4, n_iter: int = 3):
    """Random per-query APs of n_runs runs x iterations 0..n_iter; two queries of unknown label."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(rng.permutation(np.arange(10, 10 + 3 * n_classes, 3)), per_class)
    labels[[3, 11]] = -1
    run_ids = np.repeat(np.arange(1, n_runs + 1) * 2, n_iter + 1)
    iterations = np.tile(np.arange(n_iter + 1), n_runs)
    ap = rng.random((run_ids.size, labels.size))
    ap[:, labels == -1] = np.nan
    return ap, run_ids, iterations, labels


def _literal_order(labels: np.ndarray, seed: int) -> list[int]:
    classes = sorted({int(x) for x in labels} - {-1})
    return [int(c) for c in np.random.default_rng(seed).permutation(classes)]


def _literal_select(ap, run_ids, iterations, queries) -> int:
    """The rule in plain Python: highest mean AP (12 decimals), lowest run id, lowest iteration."""
    best = None
    for i in range(len(run_ids)):
        if iterations[i] < 1:
            continue
        vals = [ap[i][q] for q in range(len(queries)) if queries[q] and not np.isnan(ap[i][q])]
        key = (-round(sum(vals) / len(vals), 12), int(run_ids[i]), int(iterations[i]))
        if best is None or key < best[0]:
            best = (key, i)
    return best[1]


@pytest.mark.parametrize("seed", [0, 3])
def test_holdout_split_is_the_documented_recipe(seed: int) -> None:
    _, _, _, labels = _problem()
    order = _literal_order(labels, seed)
    for fraction in (0.2, 0.5, 0.7):
        tune, rep = P.holdout_classes(labels, fraction, seed)
        n = round(fraction * len(order))
        assert tune.tolist() == order[:n] and rep.tolist() == order[n:]


def test_cv_folds_are_the_documented_recipe() -> None:
    _, _, _, labels = _problem()
    order = _literal_order(labels, 5)
    fold = P.cv_folds(labels, 3, 5)
    for q, label in enumerate(labels):
        assert fold[q] == (-1 if label == -1 else order.index(int(label)) % 3)


def test_select_matches_the_literal_rule_with_ties() -> None:
    ap, run_ids, its, labels = _problem(1)
    queries = labels != -1
    assert P.select(ap, run_ids, its, queries) == _literal_select(ap, run_ids, its, queries)
    # iteration 0 is never chosen, however high
    ap0 = ap.copy()
    ap0[its == 0] = 1.0
    assert its[P.select(ap0, run_ids, its, queries)] >= 1
    # a tie across runs goes to the lowest run id; within a run, to the lowest iteration
    tied = ap.copy()
    tied[:] = 0.1
    tied[[6, 2, 3]] = 0.9    # run 4 it 2, run 2 it 2, run 2 it 3
    assert (run_ids[P.select(tied, run_ids, its, queries)],
            its[P.select(tied, run_ids, its, queries)]) == (2, 2)
    # a difference below the 12th decimal is a tie too (sums in another order agree)
    tied[2] += 1e-14
    tied[6] += 2e-14
    assert P.select(tied, run_ids, its, queries) == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_holdout_chooses_on_tuning_classes_and_reports_the_others(seed: int) -> None:
    ap, run_ids, its, labels = _problem(seed)
    tune, rep = P.holdout_classes(labels, 0.5, seed)
    sel = P.choose("holdout", ap, run_ids, its, labels, tune_fraction=0.5, seed=seed)
    want = _literal_select(ap, run_ids, its, np.isin(labels, tune))
    assert sel.chosen == (want,)
    assert sel.reported.tolist() == np.isin(labels, rep).tolist()
    assert sel.pick.tolist() == [want if r else -1 for r in np.isin(labels, rep)]
    # the reported queries' values cannot move the choice
    moved = ap.copy()
    moved[:, sel.reported] = np.random.default_rng(9).random((ap.shape[0], sel.n_queries))
    assert P.choose("holdout", moved, run_ids, its, labels, seed=seed).chosen == (want,)
    # protocol score: the chosen candidate's mean over the reported queries only
    score = np.nanmean(sel.scores(ap)[sel.reported])
    assert score == pytest.approx(np.nanmean(ap[want][np.isin(labels, rep)]), abs=1e-15)
    tuned, opt = P.optimism(ap, run_ids, its, sel)
    best_on_reported = _literal_select(ap, run_ids, its, sel.reported)
    assert tuned == pytest.approx(np.nanmean(ap[best_on_reported][sel.reported]), abs=1e-15)
    assert opt == pytest.approx(tuned - score, abs=1e-15) and opt >= 0


@pytest.mark.parametrize("folds", [2, 3, 7])
def test_cv_scores_each_query_exactly_once_by_a_choice_made_without_it(folds: int) -> None:
    ap, run_ids, its, labels = _problem(4)
    sel = P.choose("cv", ap, run_ids, its, labels, folds=folds, seed=1)
    fold = P.cv_folds(labels, folds, 1)
    known = labels != -1
    assert sel.reported.tolist() == known.tolist()
    assert len(sel.chosen) == folds
    # every known query has exactly one pick, the unknown ones none
    assert np.all((sel.pick >= 0) == known)
    scored = sel.scores(ap)
    assert np.sum(~np.isnan(scored)) == known.sum()
    for f in range(folds):
        want = _literal_select(ap, run_ids, its, known & (fold != f))
        assert sel.chosen[f] == want
        assert np.all(sel.pick[fold == f] == want)
        assert np.all(scored[fold == f] == ap[want][fold == f])
        # the fold's own queries do not move its choice
        moved = ap.copy()
        moved[:, fold == f] = 1.0 - moved[:, fold == f]
        assert P.choose("cv", moved, run_ids, its, labels, folds=folds, seed=1).chosen[f] == want
    assert sum(n for _, n in sel.times_chosen()) == folds


def test_test_protocol_has_no_optimism() -> None:
    ap, run_ids, its, labels = _problem(2)
    sel = P.choose("test", ap, run_ids, its, labels)
    assert sel.chosen == (_literal_select(ap, run_ids, its, labels != -1),)
    assert P.optimism(ap, run_ids, its, sel)[1] == 0.0


def test_spread_over_the_grid() -> None:
    ap, run_ids, its, labels = _problem(3)
    q = labels != -1
    means = [np.nanmean(ap[i][q]) for i in range(len(its)) if its[i] >= 1]
    assert P.spread(ap, its, q) == pytest.approx((min(means), np.median(means), max(means)))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2, 1.5])
def test_tune_fraction_outside_the_open_interval(fraction: float) -> None:
    _, _, _, labels = _problem()
    with pytest.raises(P.ProtocolError, match="strictly between 0 and 1"):
        P.holdout_classes(labels, fraction, 0)


def test_bad_splits() -> None:
    ap, run_ids, its, labels = _problem(n_classes=4)
    with pytest.raises(P.ProtocolError, match="more than the 4 query classes"):
        P.choose("cv", ap, run_ids, its, labels, folds=5)
    with pytest.raises(P.ProtocolError, match=">= 2"):
        P.cv_folds(labels, 1, 0)
    with pytest.raises(P.ProtocolError, match="leaves no tuning"):
        P.holdout_classes(labels, 0.1, 0)
    one = np.where(labels == -1, -1, 5)
    for protocol in ("holdout", "cv"):
        with pytest.raises(P.ProtocolError, match="1 known class"):
            P.choose(protocol, ap, run_ids, its, one)
    with pytest.raises(P.ProtocolError, match="unknown protocol"):
        P.choose("best", ap, run_ids, its, labels)


def test_every_split_is_a_partition() -> None:
    _, _, _, labels = _problem(n_classes=9)
    classes = set(labels.tolist()) - {-1}
    for seed, fraction in itertools.product(range(3), (0.3, 0.5)):
        tune, rep = P.holdout_classes(labels, fraction, seed)
        assert set(tune) | set(rep) == classes and not set(tune) & set(rep)


def test_default_candidate_is_the_registry_defaults_at_their_iteration() -> None:
    from icfrr.registry import method

    defaults = {p.name: p.default[0] for p in method("icfrr").params}
    params = {4: defaults | {"kg": 8}, 2: defaults | {"beta": 0.5000000001}, 7: dict(defaults)}
    run_ids = np.array([4, 4, 2, 2, 2, 7, 7])
    iterations = np.array([0, 5, 0, 1, 5, 5, 0])
    # run 2 matches up to isclose and comes first by run id; its candidate at the default n_iter (5)
    assert P.default_candidate("icfrr", run_ids, iterations, params) == 4
    # an asked grid value counts over the capped one the run used
    params[2] = defaults | {"asked_kg": 999, "kg": defaults["kg"]}
    assert P.default_candidate("icfrr", run_ids, iterations, params) == 5
    del params[7]
    assert P.default_candidate("icfrr", run_ids, iterations, params) is None
    # a single-shot method's candidate is iteration 1; methods outside the registry have none
    k = {p.name: p.default[0] for p in method("k_reciprocal").params}
    assert P.default_candidate("k_reciprocal", np.array([3, 3]), np.array([0, 1]), {3: k}) == 1
    assert P.default_candidate("mine", np.array([3]), np.array([1]), {3: {}}) is None


def _halves(labels, *, tune_fraction, folds, seed):
    """A two-choice split: each half of the permuted classes is scored by the choice made on the other."""
    lab = np.asarray(labels)
    order = P.permuted_classes(lab, seed)
    first, second = np.isin(lab, order[: order.size // 2]), np.isin(lab, order[order.size // 2:])
    return ((second, first), (first, second))


def test_an_added_entry_is_chosen_on_its_own_split(monkeypatch: pytest.MonkeyPatch) -> None:
    halves = P.Protocol("halves", "each half scored by the other", "halves", "each half by the other",
                        "halves, seed {seed}", _halves, several_choices=True)
    monkeypatch.setattr(P, "PROTOCOL_ENTRIES", (*P.PROTOCOL_ENTRIES, halves))
    ap, run_ids, its, labels = _problem(5)
    order = _literal_order(labels, 4)
    first = np.isin(labels, order[: len(order) // 2])
    second = np.isin(labels, order[len(order) // 2:])
    sel = P.choose("halves", ap, run_ids, its, labels, seed=4)
    want = (_literal_select(ap, run_ids, its, second), _literal_select(ap, run_ids, its, first))
    assert sel.protocol == "halves" and sel.chosen == want
    assert sel.pick.tolist() == [want[0] if a else want[1] if b else -1 for a, b in zip(first, second)]
    assert sel.reported.tolist() == (labels != -1).tolist()
    tuning, reported = P.split_classes("halves", labels, seed=4)
    assert tuning.tolist() == [] and reported.tolist() == sorted(order)
    assert P.protocol("halves") is halves


def test_split_classes_are_the_documented_recipes() -> None:
    _, _, _, labels = _problem()
    order = _literal_order(labels, 2)
    n = round(0.3 * len(order))
    tuning, reported = P.split_classes("holdout", labels, tune_fraction=0.3, seed=2)
    assert tuning.tolist() == sorted(order[:n]) and reported.tolist() == sorted(order[n:])
    for key in ("test", "cv"):
        tuning, reported = P.split_classes(key, labels, folds=3, seed=2)
        assert tuning.tolist() == [] and reported.tolist() == sorted(order)


def test_every_entry_is_looked_up_by_its_key_and_reads_known_options() -> None:
    assert P.PROTOCOLS == ("test", "holdout", "cv")
    for entry in P.PROTOCOL_ENTRIES:
        assert P.protocol(entry.key) is entry and set(entry.options) <= set(P.OPTION_FLAGS)
    with pytest.raises(P.ProtocolError, match=r"unknown protocol 'best'; use one of test, holdout, cv$"):
        P.protocol("best")
