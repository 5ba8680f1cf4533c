"""icfrr.explain against icfrr.rerank (same rankings) and the spec's vote formula (icfrr.literal).

The oracle for the votes is docs/SPEC.md section 2 read literally: the dense
rank matrix R of ``icfrr.literal``, ``alpha`` by rank and, for each voter i
and gallery item j, ``beta * alpha[R[i, j]] / V``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import icfrr
import icfrr.explaining
from icfrr import literal
from tests.icfrr.engine_data import clustered_case, random_case

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom" / "-1"


def oracle_votes(ranks: np.ndarray, alpha: np.ndarray, voters: np.ndarray, beta: float) -> dict[tuple[int, int], float]:
    """Every non-zero vote ``(voter, item) -> beta * alpha[R[voter, item]] / V``, by the spec's formula."""
    out = {}
    for i in voters.tolist():
        for j in range(ranks.shape[1]):
            amount = beta * alpha[ranks[i, j] + 1] / voters.size
            if amount != 0:
                out[(i, j)] = amount
    return out


def check_query(qg_row, gg, graph, *, kg, kq, beta, n_iter, variant, want_rankings) -> float:
    """Assert one query's steps against rerank's rankings and the literal votes.

    Returns the largest order violation of each ranking against the float64
    oracle scores computed from the previous ranking (docs/SPEC.md section 7).
    """
    n_gallery = qg_row.shape[0]
    ranks = literal.rank_matrix(gg)
    alpha = literal.rank_weights(n_gallery, kg)
    steps = icfrr.explain(qg_row, graph, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant)
    assert [s.iteration for s in steps] == list(range(1, n_iter + 1))
    v = -np.sort(qg_row.astype(np.float64))
    item_scores = -qg_row.astype(np.float64)
    worst = 0.0
    for t, step in enumerate(steps, start=1):
        prev = want_rankings[t - 1]
        np.testing.assert_array_equal(step.voters, prev[: min(kq, n_gallery)])
        np.testing.assert_array_equal(step.ranking, want_rankings[t], err_msg=f"iteration {t}")
        assert step.voter.shape == step.item.shape == step.amount.shape
        got = {}
        for i, j, a in zip(step.voter.tolist(), step.item.tolist(), step.amount.tolist()):
            assert (i, j) not in got, "one entry per vote"
            got[(i, j)] = a
        want = oracle_votes(ranks, alpha, step.voters, beta)
        assert got.keys() == want.keys()
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-12, atol=0)
        delta = literal.bonus(ranks, alpha, step.voters)
        np.testing.assert_allclose(step.bonus(), beta * delta, rtol=1e-12, atol=1e-15)
        # The ranking is a descending sort of the oracle's scores after this update.
        if variant == "reference":
            scores = np.empty(n_gallery)
            scores[prev] = v + beta * delta[prev]
        else:
            item_scores = item_scores + beta * delta
            scores = item_scores
        worst = max(worst, literal.max_order_violation(step.ranking[None], scores[None]))
    return worst


def check_all_queries(qg, gg, graph, *, kg, kq, beta, n_iter, variant) -> float:
    want = [r.numpy() for r in icfrr.rerank(qg, graph, kg=kg, kq=kq, beta=beta, n_iter=n_iter,
                                            variant=variant, device="cpu")]
    worst = 0.0
    for q in range(qg.shape[0]):
        worst = max(worst, check_query(qg[q], gg, graph, kg=kg, kq=kq, beta=beta, n_iter=n_iter,
                                       variant=variant, want_rankings=[r[q] for r in want]))
    return worst


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("kg,kq,beta,n_iter", [(8, 6, 0.5, 3), (3, 12, 2.0, 4), (47, 48, 1.0, 2)],
                         ids=["mid", "strong", "kg-kq-whole-gallery"])
def test_published_example_matches_rerank_and_the_spec(variant, kg, kq, beta, n_iter):
    qg = torch.load(EXAMPLE / "qg_dists.pth", weights_only=True).numpy()
    gg = torch.load(EXAMPLE / "gg_dists.pth", weights_only=True).numpy()
    graph = icfrr.neighbor_graph(gg, 47)  # more neighbours than kg: explain keeps the first kg
    worst = check_all_queries(qg, gg, graph, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant)
    assert worst <= 1e-9
    # On this example (no near-ties) the whole chain is also the literal implementation's.
    want, _ = literal.literal_rerank(qg, gg, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant)
    for q in range(qg.shape[0]):
        steps = icfrr.explain(qg[q], graph, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant)
        for step in steps:
            np.testing.assert_array_equal(step.ranking, want[step.iteration][q])


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("case", [(6, 30, 5, 4, 0.5, 3), (5, 9, 20, 3, 0.5, 2), (6, 11, 4, 50, 0.7, 2),
                                  (5, 40, 6, 1, 2.0, 3), (3, 2, 1, 1, 0.5, 2)],
                         ids=["mid", "kg>=G", "kq>=G", "kq=1", "G=2"])
def test_random_data(case, variant):
    n_query, n_gallery, kg, kq, beta, n_iter = case
    qg, gg = random_case(n_query, n_gallery, seed=sum(case[:4]))
    graph = icfrr.neighbor_graph(gg, kg)
    assert check_all_queries(qg, gg, graph, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant) <= 1e-9


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_clustered_data(variant):
    qg, gg, _, _ = clustered_case(8, 150, seed=4)
    graph = icfrr.neighbor_graph(gg, 30)
    assert check_all_queries(qg, gg, graph, kg=20, kq=15, beta=0.5, n_iter=4, variant=variant) <= 1e-9


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_near_ties_follow_the_engine_and_the_spec(variant):
    # Quantised distances: many exact ties and votes that bring scores level. The
    # spec (section 7) asks for a valid descending sort of the float64 oracle scores;
    # explain must moreover give exactly rerank's order.
    rng = np.random.default_rng(3)
    qg = rng.integers(0, 5, (10, 40)).astype(np.float32) / 4
    gg = rng.integers(1, 6, (40, 40)).astype(np.float32)
    gg = np.minimum(gg, gg.T)
    np.fill_diagonal(gg, 0)
    graph = icfrr.neighbor_graph(gg, 6)
    worst = check_all_queries(qg, gg, graph, kg=6, kq=5, beta=0.25, n_iter=3, variant=variant)
    assert worst <= 1e-9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_cuda_rerank_gives_the_rankings_explain_gives(variant):
    # explain runs on the CPU; rerank's default device on a GPU machine is CUDA.
    qg, gg, _, _ = clustered_case(20, 300, seed=9)
    graph = icfrr.neighbor_graph(gg, 20)
    gpu = icfrr.rerank(qg, graph, kg=20, kq=15, beta=0.5, n_iter=3, variant=variant, device="cuda")
    for q in range(qg.shape[0]):
        for step in icfrr.explain(qg[q], graph, kg=20, kq=15, beta=0.5, n_iter=3, variant=variant):
            np.testing.assert_array_equal(step.ranking, gpu[step.iteration][q].numpy())


def test_zero_beta_casts_no_votes_and_keeps_the_ranking():
    qg, gg = random_case(1, 20, seed=5)
    steps = icfrr.explain(qg[0], icfrr.neighbor_graph(gg, 4), kg=4, kq=3, beta=0.0, n_iter=2)
    initial = np.argsort(qg[0], kind="stable")
    for step in steps:
        assert step.voter.size == step.item.size == step.amount.size == 0
        np.testing.assert_array_equal(step.voters, initial[:3])
        np.testing.assert_array_equal(step.ranking, initial)


def test_torch_input_and_no_iterations():
    qg, gg = random_case(1, 15, seed=6)
    graph = icfrr.neighbor_graph(gg, 4)
    a = icfrr.explain(qg[0], graph, kg=4, kq=3, beta=0.5, n_iter=2)
    b = icfrr.explain(torch.from_numpy(qg[0]).double(), graph, kg=4, kq=3, beta=0.5, n_iter=2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.ranking, y.ranking)
        assert x.ranking.dtype == x.voters.dtype == x.voter.dtype == x.item.dtype == np.int64
    assert icfrr.explain(qg[0], graph, kg=4, kq=3, beta=0.5, n_iter=0) == []


@pytest.mark.parametrize("row,graph_k,kwargs,match", [
    (np.zeros((2, 15)), 4, {}, "one query's distances"),
    (np.full(15, np.nan), 4, {}, "finite"),
    (np.zeros(14), 4, {}, "14 gallery columns"),
    (np.zeros(15), 2, {}, "kg=4 needs 4"),
    (np.zeros(15), 4, {"variant": "other"}, "variant must be one of"),
    (np.zeros(15), 4, {"kq": 0}, "kq must be an integer"),
])
def test_bad_input_is_a_one_line_value_error(row, graph_k, kwargs, match):
    _, gg = random_case(1, 15, seed=7)
    args = {"kg": 4, "kq": 3, "beta": 0.5, "n_iter": 1, **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        icfrr.explain(row, icfrr.neighbor_graph(gg, graph_k), **args)
    assert "\n" not in str(info.value)


def test_a_dense_matrix_is_refused_with_what_to_pass():
    qg, gg = random_case(1, 15, seed=8)
    with pytest.raises(ValueError, match="NeighborGraph"):
        icfrr.explain(qg[0], gg, kg=4, kq=3, beta=0.5, n_iter=1)


@pytest.mark.parametrize("bad", [15, -1])
def test_a_graph_with_indices_outside_the_gallery_is_refused(bad):
    # The compiled loop does not check bounds: a bad index must never reach it.
    qg, gg = random_case(1, 15, seed=9)
    graph = icfrr.neighbor_graph(gg, 4)
    indices = graph.indices.clone()
    indices[7, 2] = bad
    with pytest.raises(ValueError, match="outside the gallery"):
        icfrr.explain(qg[0], icfrr.NeighborGraph(indices, graph.distances), kg=4, kq=3, beta=0.5, n_iter=1)
