"""Metrics against a brute-force reading of docs/SPEC.md section 4, and torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_average_precision

import icfrr


def brute_ap(relevant: list[bool]) -> float:
    hits, total = 0, 0.0
    for k, rel in enumerate(relevant, start=1):
        if rel:
            hits += 1
            total += hits / k
    return total / hits if hits else 0.0


def brute_force(ranking, labels_q, labels_g):
    rows = []
    for q, row in enumerate(ranking):
        if labels_q[q] == -1:
            continue
        rel = [labels_g[j] == labels_q[q] for j in row]
        rows.append(
            dict(
                map_all=brute_ap(rel),
                map_200=brute_ap(rel[:200]),
                **{f"p_{k}": sum(rel[:k]) / k for k in (25, 100, 200)},
            )
        )
    return {name: float(np.mean([r[name] for r in rows])) for name in rows[0]}


def make_case(n_query, n_gallery, n_classes, seed):
    rng = np.random.default_rng(seed)
    labels_g = rng.integers(0, n_classes, n_gallery)
    labels_q = rng.integers(-1, n_classes + 1, n_query)  # includes unknown and absent classes
    ranking = np.stack([rng.permutation(n_gallery) for _ in range(n_query)])
    return ranking, labels_q, labels_g


@pytest.mark.parametrize("shape", [(40, 150, 4), (30, 420, 6), (300, 60, 3)])
def test_evaluate_matches_brute_force(shape):
    ranking, lq, lg = make_case(*shape, seed=shape[1])
    got = icfrr.evaluate(ranking, lq, lg)
    want = brute_force(ranking, lq, lg)
    assert set(got) == set(icfrr.METRIC_NAMES)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=1e-12), name


def test_per_query_columns_match_brute_force_and_torchmetrics():
    ranking, lq, lg = make_case(25, 300, 5, seed=7)
    cols = icfrr.per_query(torch.from_numpy(ranking), lq, lg)
    n_gallery = ranking.shape[1]
    for q in range(25):
        rel = [lg[j] == lq[q] for j in ranking[q]]
        if lq[q] == -1:
            assert np.isnan(cols["ap"][q]) and cols["first_relevant_rank"][q] == -1
            continue
        assert cols["ap"][q] == pytest.approx(brute_ap(rel), abs=1e-12)
        assert cols["ap_200"][q] == pytest.approx(brute_ap(rel[:200]), abs=1e-12)
        assert cols["p_100"][q] == pytest.approx(sum(rel[:100]) / 100)
        assert cols["first_relevant_rank"][q] == (rel.index(True) + 1 if any(rel) else -1)
        if any(rel):
            # torchmetrics wants positive scores: turn ranks into them.
            scores = torch.empty(n_gallery)
            scores[torch.from_numpy(ranking[q])] = torch.arange(n_gallery, 0, -1, dtype=torch.float32)
            target = torch.from_numpy(lg == lq[q])
            assert cols["ap"][q] == pytest.approx(float(retrieval_average_precision(scores, target)), abs=1e-6)
    np.testing.assert_array_equal(cols["query_idx"], np.arange(25))
    np.testing.assert_array_equal(cols["label"], lq)


def test_map_200_counts_only_relevant_items_inside_the_top_200():
    # One relevant item at rank 1 and one at rank 300: AP@200 is 1, AP@all is (1 + 2/300) / 2.
    ranking = np.arange(400)[None, :]
    labels_g = np.zeros(400, dtype=int)
    labels_g[[0, 299]] = 1
    got = icfrr.evaluate(ranking, np.array([1]), labels_g)
    assert got["map_200"] == 1.0
    assert got["map_all"] == pytest.approx((1 + 2 / 300) / 2)
    assert got["p_200"] == pytest.approx(1 / 200)


def test_summarize_equals_evaluate_and_skips_unknown_labels():
    ranking, lq, lg = make_case(50, 80, 3, seed=1)
    cols = icfrr.per_query(ranking, lq, lg)
    assert icfrr.summarize(cols) == icfrr.evaluate(ranking, lq, lg)
    all_unknown = icfrr.evaluate(ranking, np.full(50, -1), lg)
    assert all(np.isnan(v) for v in all_unknown.values())


@pytest.mark.parametrize(
    "args,message",
    [
        ((np.zeros((2, 3), dtype=np.int64), np.zeros(3, int), np.zeros(3, int)), "labels_q"),
        ((np.zeros((2, 3), dtype=np.int64), np.zeros(2, int), np.zeros(4, int)), "labels_g"),
        ((np.zeros((2, 3)), np.zeros(2, int), np.zeros(3, int)), "integer gallery indices"),
        ((np.zeros(3, dtype=np.int64), np.zeros(2, int), np.zeros(3, int)), r"\[Q, G\]"),
        ((np.full((2, 3), 5), np.zeros(2, int), np.zeros(3, int)), "outside the gallery"),
        ((np.zeros((2, 3), dtype=np.int64), np.array([0.5, 1.0]), np.zeros(3, int)), "integer class labels"),
    ],
)
def test_bad_input(args, message):
    with pytest.raises(ValueError, match=message):
        icfrr.evaluate(*args)


def test_literal_per_query_evaluation_agrees():
    from icfrr.literal import literal_evaluate

    ranking, lq, lg = make_case(60, 250, 4, seed=3)
    got, want = icfrr.evaluate(ranking, lq, lg), literal_evaluate(ranking, lq, lg)
    for name in icfrr.METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], abs=1e-12)


def _vectorised_per_query(ranking, lq, lg):
    """The earlier reading of the definitions: a [Q, G] relevance matrix, cumulative sums."""
    rel = lg[ranking] == lq[:, None]
    hits = np.cumsum(rel, axis=1)
    precision = hits / np.arange(1, ranking.shape[1] + 1)
    n_rel = rel.sum(1)
    out = {"ap": np.where(n_rel > 0, (precision * rel).sum(1) / np.maximum(n_rel, 1), 0.0)}
    n200 = rel[:, :200].sum(1)
    out["ap_200"] = np.where(n200 > 0, (precision * rel)[:, :200].sum(1) / np.maximum(n200, 1), 0.0)
    for k in (25, 100, 200):
        out[f"p_{k}"] = rel[:, :k].sum(1) / k
    out["first_relevant_rank"] = np.where(n_rel > 0, rel.argmax(1) + 1, -1)
    unknown = lq == -1
    for name in ("ap", "ap_200", "p_25", "p_100", "p_200"):
        out[name][unknown] = np.nan
    out["first_relevant_rank"][unknown] = -1
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relevant_position_scan_matches_a_relevance_matrix_on_random_rankings(seed):
    rng = np.random.default_rng(seed)
    n_query, n_gallery = 60, 517
    lg = rng.integers(-3, 9, n_gallery)  # negative labels other than -1 are ordinary classes
    lq = rng.integers(-3, 12, n_query)   # includes -1 (unknown) and labels absent from the gallery
    ranking = np.stack([rng.permutation(n_gallery) for _ in range(n_query)]).astype(np.int32)
    got = icfrr.per_query(ranking, lq, lg)
    want = _vectorised_per_query(ranking, lq, lg)
    for name, values in want.items():
        np.testing.assert_allclose(got[name], values, rtol=1e-12, atol=0, err_msg=name)
    np.testing.assert_array_equal(icfrr.metrics.relevant_counts(lq, lg), [(lg == x).sum() for x in lq])
