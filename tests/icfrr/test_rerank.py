"""The engine against the literal spec implementation (icfrr.literal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import icfrr
from icfrr import literal
from icfrr._update import update_cpu, update_torch, vote_sums_torch
from tests.icfrr.engine_data import clustered_case, random_case

EXACT_CASES = [
    # (Q, G, kg, kq, beta, n_iter)
    (7, 30, 5, 4, 0.5, 3),
    (12, 64, 10, 8, 1.0, 2),
    (5, 9, 20, 3, 0.5, 2),  # kg >= G
    (6, 11, 4, 50, 0.7, 2),  # kq >= G
    (8, 40, 6, 1, 2.0, 3),  # kq = 1
    (4, 25, 5, 5, 0.5, 0),  # n_iter = 0
    (3, 2, 1, 1, 0.5, 2),  # tiny gallery
]


def engine(qg, gg, variant, **kw):
    return [r.numpy() for r in icfrr.rerank(qg, gg, variant=variant, device="cpu", **kw)]


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("case", EXACT_CASES, ids=lambda c: "Q{}-G{}-kg{}-kq{}-b{}-T{}".format(*c))
def test_matches_literal_exactly_on_random_data(case, variant):
    n_query, n_gallery, kg, kq, beta, n_iter = case
    qg, gg = random_case(n_query, n_gallery, seed=sum(case[:4]))
    got = engine(qg, gg, variant, kg=kg, kq=kq, beta=beta, n_iter=n_iter)
    want, _ = literal.literal_rerank(qg, gg, kg=kg, kq=kq, beta=beta, n_iter=n_iter, variant=variant)
    assert len(got) == n_iter + 1
    for t, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.int64 and g.shape == (n_query, n_gallery)
        np.testing.assert_array_equal(g, w, err_msg=f"iteration {t}")


def stepwise_violations(qg, gg, rankings, *, kg, kq, beta, variant):
    """For each iteration, how far the engine's ranking is from a descending sort of
    the float64 oracle's scores computed from the engine's previous ranking."""
    n_query, n_gallery = qg.shape
    ranks = literal.rank_matrix(gg)
    weights = literal.rank_weights(n_gallery, kg)
    s0 = -qg.astype(np.float64)
    v = -np.sort(qg.astype(np.float64), axis=1)
    s = s0.copy()
    worst = [literal.max_order_violation(rankings[0], s0)]
    for t in range(1, len(rankings)):
        prev = rankings[t - 1]
        item_scores = np.empty_like(s0)
        for q in range(n_query):
            delta = literal.bonus(ranks, weights, prev[q, : min(kq, n_gallery)])
            if variant == "reference":
                item_scores[q, prev[q]] = v[q] + beta * delta[prev[q]]
            else:
                s[q] += beta * delta
                item_scores[q] = s[q]
        worst.append(literal.max_order_violation(rankings[t], item_scores))
    return worst


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize(
    "shape,kg,kq", [((30, 200), 20, 15), ((20, 120), 200, 10), ((25, 150), 8, 150)], ids=["mid", "kg>G", "kq>G"]
)
def test_valid_descending_sort_of_oracle_scores_on_clustered_data(shape, kg, kq, variant):
    qg, gg, _, _ = clustered_case(*shape, seed=shape[0])
    rankings = engine(qg, gg, variant, kg=kg, kq=kq, beta=0.5, n_iter=4)
    for t, worst in enumerate(stepwise_violations(qg, gg, rankings, kg=kg, kq=kq, beta=0.5, variant=variant)):
        assert worst <= 1e-9, f"iteration {t}: an item sits {worst} above its predecessor"
    # Without near-ties the whole chain is also identical to the oracle's own.
    want, _ = literal.literal_rerank(qg, gg, kg=kg, kq=kq, beta=0.5, n_iter=4, variant=variant)
    agree = np.mean([np.mean(g == w) for g, w in zip(rankings, want)])
    assert agree > 0.999


def test_ties_follow_the_current_order():
    # Quantised distances make many exact ties; the oracle's order must still be honoured.
    rng = np.random.default_rng(3)
    qg = rng.integers(0, 5, (10, 40)).astype(np.float32)
    gg = rng.integers(1, 6, (40, 40)).astype(np.float32)
    gg = np.minimum(gg, gg.T)
    np.fill_diagonal(gg, 0)
    rankings = engine(qg, gg, "reference", kg=6, kq=5, beta=0.5, n_iter=3)
    for worst in stepwise_violations(qg, gg, rankings, kg=6, kq=5, beta=0.5, variant="reference"):
        assert worst <= 1e-9
    # Iteration 0 is exactly a stable sort: ties by gallery index.
    np.testing.assert_array_equal(rankings[0], np.argsort(qg, axis=1, kind="stable"))


def test_duplicate_gallery_item_is_a_neighbour_not_self():
    qg, gg = random_case(6, 20, seed=11)
    # Make item 7 an exact duplicate of item 3 (distance 0 between them).
    gg[7, :], gg[:, 7] = gg[3, :], gg[:, 3]
    gg[3, 7] = gg[7, 3] = gg[7, 7] = 0.0
    qg[:, 7] = qg[:, 3] + 1e-3
    got = engine(qg, gg, "reference", kg=4, kq=3, beta=1.0, n_iter=2)
    want, _ = literal.literal_rerank(qg, gg, kg=4, kq=3, beta=1.0, n_iter=2)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    graph = icfrr.neighbor_graph(gg, 3)
    assert graph.indices[3, 0] == 7 and graph.indices[7, 0] == 3


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_dense_matrix_and_neighbour_graph_give_the_same_rankings(variant):
    qg, gg, _, _ = clustered_case(15, 90, seed=5)
    dense = engine(qg, gg, variant, kg=12, kq=9, beta=0.5, n_iter=3)
    for k in (12, 40):  # exactly kg neighbours, and more than needed
        graph = icfrr.neighbor_graph(gg, k)
        from_graph = engine(qg, graph, variant, kg=12, kq=9, beta=0.5, n_iter=3)
        for a, b in zip(dense, from_graph):
            np.testing.assert_array_equal(a, b)


def test_numpy_and_torch_inputs_agree():
    qg, gg = random_case(5, 30, seed=2)
    a = icfrr.rerank(qg, gg, kg=5, kq=4, n_iter=2, device="cpu")
    b = icfrr.rerank(torch.from_numpy(qg), torch.from_numpy(gg), kg=5, kq=4, n_iter=2, device="cpu")
    for x, y in zip(a, b):
        assert x.dtype == torch.int64 and x.device.type == "cpu"
        assert torch.equal(x, y)


def test_iter_rerank_scores_are_the_sorted_oracle_scores():
    qg, gg = random_case(6, 40, seed=9)
    steps = list(icfrr.iter_rerank(qg, gg, kg=6, kq=5, beta=0.5, n_iter=2, device="cpu"))
    _, oracle_scores = literal.literal_rerank(qg, gg, kg=6, kq=5, beta=0.5, n_iter=2)
    for step, want in zip(steps, oracle_scores):
        got = step.scores.numpy()
        assert np.all(np.diff(got, axis=1) <= 0)
        np.testing.assert_allclose(got, np.take_along_axis(want, step.ranking.numpy(), 1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_cpu_kernel_and_torch_kernel_are_bit_identical(variant):
    # The CUDA path's code (scatter + full sort), run on the CPU, against the compiled CPU path.
    qg, gg, _, _ = clustered_case(30, 400, seed=12)
    graph = icfrr.neighbor_graph(gg, 25)
    g, kq = 400, 20
    nbr = graph.indices.contiguous()
    weights = torch.arange(g - 1, g - 1 - 25, -1, dtype=torch.float64)
    ranking = torch.from_numpy(np.argsort(qg, axis=1, kind="stable"))
    base = torch.from_numpy(-np.sort(qg, axis=1))
    items = -torch.from_numpy(qg).double() if variant == "paper" else None
    kw = dict(kq=kq, denom=float((g - 1) * kq), beta=0.7)
    for _ in range(3):
        base_arg = None if items is not None else base
        items_cpu = items.clone() if items is not None else None
        r_cpu, s_cpu = update_cpu(ranking, base_arg, items_cpu, nbr, weights, **kw)
        r_torch, s_torch = update_torch(ranking, base_arg, items, nbr, weights, **kw)
        assert torch.equal(r_cpu, r_torch)
        assert torch.equal(s_cpu, s_torch)
        if items is not None:
            assert torch.equal(items_cpu, items)
        ranking = r_cpu


def test_torch_vote_sums_match_brute_force():
    rng = np.random.default_rng(0)
    g, kg = 300, 30
    nbr = torch.from_numpy(rng.integers(0, g, (g, kg)))
    top = torch.from_numpy(rng.integers(0, g, (13, 17)))
    weights = torch.arange(g - 1, g - 1 - kg, -1, dtype=torch.float64)
    want = np.zeros((13, g))
    for q in range(13):
        for i in top[q].tolist():
            for r, j in enumerate(nbr[i].tolist()):
                want[q, j] += g - 1 - r
    np.testing.assert_array_equal(vote_sums_torch(top, nbr, weights, g).numpy(), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_cuda_gives_the_cpu_rankings(variant):
    qg, gg, _, _ = clustered_case(40, 300, seed=8)
    cpu = icfrr.rerank(qg, gg, kg=20, kq=15, n_iter=3, variant=variant, device="cpu")
    gpu = icfrr.rerank(qg, gg, kg=20, kq=15, n_iter=3, variant=variant, device="cuda")
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cpu"
        assert torch.equal(a, b)


def test_default_device_runs():
    qg, gg = random_case(3, 10, seed=1)
    assert len(icfrr.rerank(qg, gg, kg=3, kq=2)) == 2


def test_non_symmetric_gg_warns_and_uses_rows():
    qg, gg = random_case(4, 15, seed=4)
    gg[0, 5] += 0.3
    with pytest.warns(UserWarning, match="not symmetric"):
        got = engine(qg, gg, "reference", kg=4, kq=3, beta=0.5, n_iter=2)
    want, _ = literal.literal_rerank(qg, gg, kg=4, kq=3, beta=0.5, n_iter=2)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def _bad(**overrides):
    qg, gg = random_case(4, 10, seed=0)
    args = dict(qg_dists=qg, gg=gg, kg=3, kq=2, beta=0.5, n_iter=1, variant="reference")
    args.update(overrides)
    qg_dists, gg = args.pop("qg_dists"), args.pop("gg")
    return lambda: icfrr.rerank(qg_dists, gg, **args)


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


_QG, _GG = random_case(4, 10, seed=0)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(qg_dists=_QG[:, :9]), "gallery columns"),
        (dict(qg_dists=_QG[0]), "2-D"),
        (dict(gg=_GG[:, :9]), "square"),
        (dict(qg_dists=_with(_QG, (1, 2), np.nan)), "NaN or infinite"),
        (dict(gg=_with(_GG, (1, 2), np.inf)), "NaN or infinite"),
        (dict(kg=0), "kg must be an integer >= 1"),
        (dict(kq=0), "kq must be an integer >= 1"),
        (dict(kq=2.5), "kq must be an integer"),
        (dict(beta=float("nan")), "beta must be finite"),
        (dict(n_iter=-1), "n_iter"),
        (dict(variant="fast"), "variant"),
        (dict(gg=icfrr.neighbor_graph(_GG, 2), kg=3), "keeps 2 neighbours"),
        (dict(gg=icfrr.neighbor_graph(_GG[:8, :8], 3)), "8 items"),
        (dict(qg_dists=np.zeros((4, 0), np.float32), gg=np.zeros((0, 0), np.float32)), "gallery is empty"),
    ],
)
def test_bad_input_is_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _bad(**overrides)()


def test_iter_rerank_validates_before_yielding():
    with pytest.raises(ValueError, match="kg"):
        icfrr.iter_rerank(_QG, _GG, kg=0, kq=2)


def test_public_names_stay_functions_after_submodules_are_imported():
    import importlib
    import pkgutil
    import types

    for info in pkgutil.walk_packages(icfrr.__path__, "icfrr."):
        importlib.import_module(info.name)  # a submodule named like an export would shadow it
    for name in icfrr.__all__:
        assert not isinstance(getattr(icfrr, name), types.ModuleType), name
