"""The engine against the literal spec implementation (icfrr.literal)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import icfrr
from icfrr import literal
from icfrr._update import update_cpu, update_torch, vote_sums_torch
from icfrr.variants import ItemScores, PositionScores, Variant
from tests.icfrr.engine_data import clustered_case, clustered_features, random_case

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
    state_cpu = Variant.parse(variant).scores(base, torch.from_numpy(qg))
    state_torch = Variant.parse(variant).scores(base, torch.from_numpy(qg))
    kw = dict(kq=kq, denom=float((g - 1) * kq), beta=0.7)
    for _ in range(3):
        r_cpu, s_cpu = update_cpu(ranking, state_cpu, nbr, weights, **kw)
        r_torch, s_torch = update_torch(ranking, state_torch, nbr, weights, **kw)
        assert torch.equal(r_cpu, r_torch)
        assert torch.equal(s_cpu, s_torch)
        assert torch.equal(state_cpu.values, state_torch.values)  # item scores accumulate alike
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


# --------------------------------------------------------------- chunked engine


def _chunked(qg, gg, *, betas, chunk_size, labels=None, top_n=None, device="cpu", **kw):
    """Concatenate rerank_chunks' outputs: (top [C, Q, T+1, N], scores, metrics or None)."""
    lq, lg = labels if labels is not None else (None, None)
    n_gallery = gg.n_items if isinstance(gg, icfrr.NeighborGraph) else gg.shape[0]
    chunks = list(icfrr.rerank_chunks(qg, gg, betas=betas, chunk_size=chunk_size, labels_q=lq, labels_g=lg,
                                      top_n=top_n or n_gallery, device=device, **kw))
    starts = [c.queries.start for c in chunks]
    assert starts == sorted(starts) and all(c.queries.stop - c.queries.start <= chunk_size for c in chunks)
    top = np.concatenate([c.top_gallery for c in chunks], axis=1)
    scores = np.concatenate([c.top_scores for c in chunks], axis=1)
    metrics = None if lq is None else np.concatenate([c.metrics for c in chunks], axis=1)
    return top, scores, metrics


@pytest.mark.parametrize("variant", ["reference", "paper"])
@pytest.mark.parametrize("chunk_size", [1, 4, 11, 50])
def test_chunks_give_the_whole_rankings_scores_and_metrics(variant, chunk_size):
    qg, gg, lq, lg = clustered_case(11, 120, seed=21)
    lq[2] = -1
    kw = dict(kg=15, kq=12, n_iter=4, variant=variant)
    top, scores, metrics = _chunked(qg, gg, betas=[0.5], chunk_size=chunk_size, labels=(lq, lg), **kw)
    steps = list(icfrr.iter_rerank(qg, gg, beta=0.5, device="cpu", **kw))
    want, _ = literal.literal_rerank(qg, gg, beta=0.5, **kw)
    for t, step in enumerate(steps):
        np.testing.assert_array_equal(top[0, :, t], step.ranking.numpy())
        np.testing.assert_array_equal(top[0, :, t], want[t])
        # iter_rerank keeps float32 scores; the chunks keep the float64 scores that were sorted
        np.testing.assert_array_equal(scores[0, :, t].astype(np.float32), step.scores.numpy())
        cols = icfrr.metrics.columns_from_rows(metrics[0, :, t], lq, np.arange(11))
        for name, column in icfrr.per_query(step.ranking, lq, lg).items():
            np.testing.assert_array_equal(cols[name], column, err_msg=f"{name}, iteration {t}")


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_several_betas_equal_separate_runs_and_top_n_is_a_prefix(variant):
    qg, gg, lq, lg = clustered_case(9, 80, seed=4)
    kw = dict(kg=10, kq=30, n_iter=3, variant=variant, labels=(lq, lg))
    betas = [0.25, 1.0, 0.5]
    top, scores, metrics = _chunked(qg, gg, betas=betas, chunk_size=4, top_n=7, **kw)
    assert top.shape == (3, 9, 4, 7) and metrics.shape[:3] == (3, 9, 4)
    for c, beta in enumerate(betas):
        alone = _chunked(qg, gg, betas=[beta], chunk_size=100, **kw)
        np.testing.assert_array_equal(top[c], alone[0][0, :, :, :7])
        np.testing.assert_array_equal(scores[c], alone[1][0, :, :, :7])
        np.testing.assert_array_equal(metrics[c], alone[2][0])
        want = icfrr.rerank(qg, gg, kg=10, kq=30, beta=beta, n_iter=3, variant=variant, device="cpu")
        for t in range(4):
            np.testing.assert_array_equal(alone[0][0, :, t], want[t].numpy())


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_distances_from_a_function_equal_the_dense_matrix(variant):
    qg, gg, lq, lg = clustered_case(10, 70, seed=6)
    graph = icfrr.neighbor_graph(gg, 9)
    calls = []

    def fetch(queries: slice) -> torch.Tensor:
        calls.append(queries)
        return torch.from_numpy(qg[queries])

    kw = dict(kg=9, kq=8, n_iter=3, variant=variant, labels=(lq, lg), top_n=20)
    dense = _chunked(qg, graph, betas=[0.5], chunk_size=3, **kw)
    lazy = _chunked(fetch, graph, betas=[0.5], chunk_size=3, n_query=10, **kw)
    assert calls == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    for a, b in zip(dense, lazy):
        np.testing.assert_array_equal(a, b)


def test_feature_distances_rerank_like_their_matrix():
    fq, fg, lq, lg = clustered_features(12, 90, 4, 16, seed=2)
    feats = icfrr.FeatureDistances(fq, fg)
    assert feats.shape == (12, 90)
    graph = icfrr.neighbor_graph_from_features(fg, 10)
    # The same rows as one product: chunks of a function see exactly these numbers.
    qg = torch.cat([feats(slice(s, s + 5)) for s in range(0, 12, 5)]).numpy()
    kw = dict(kg=10, kq=6, n_iter=2, labels=(lq, lg), top_n=90, betas=[0.5])
    for a, b in zip(_chunked(qg, graph, chunk_size=5, **kw), _chunked(feats, graph, chunk_size=5, **kw)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_torch_chunk_path_equals_the_compiled_one(variant):
    # The CUDA path's code (full recounts, scatter + sort), run on the CPU.
    from icfrr._update import ChunkSpec, run_rows_cpu, run_rows_torch
    from icfrr.metrics import relevant_counts

    qg, gg, lq, lg = clustered_case(8, 150, seed=13)
    graph = icfrr.neighbor_graph(gg, 12)
    nbr = graph.indices.contiguous()
    g, kq = 150, 40
    betas = np.array([0.5, 2.0])
    args = (kq, float((g - 1) * kq), betas, 3, Variant.parse(variant), lg.astype(np.int64), 25)
    cpu = run_rows_cpu(ChunkSpec(nbr.numpy(), np.arange(g - 1, g - 13, -1, dtype=np.int64), *args),
                       qg, lq.astype(np.int64), relevant_counts(lq, lg))
    dev = run_rows_torch(ChunkSpec(nbr, torch.arange(g - 1, g - 13, -1, dtype=torch.float64), *args),
                         torch.from_numpy(qg), lq.astype(np.int64), relevant_counts(lq, lg))
    for a, b in zip(cpu, dev):
        np.testing.assert_array_equal(a, b)


def test_moving_votes_equals_a_fresh_count():
    from numba import njit

    from icfrr._update import _add_votes, _move_votes

    move_votes = njit(lambda *args: _move_votes(*args))  # a compiled helper: reached from compiled code only
    rng = np.random.default_rng(5)
    g, kg, kq = 60, 7, 10
    nbr = rng.integers(0, g, (g, kg))
    weights = np.arange(g - 1, g - 1 - kg, -1, dtype=np.int64)
    order = rng.permutation(g)
    votes = np.zeros(g, dtype=np.int64)
    _add_votes(order[:kq], 1, nbr, weights, votes)
    in_top = np.zeros(g, dtype=np.int32)
    in_top[order[:kq]] = 1
    prev_top = order[:kq].copy()
    for swaps in (1, 2, 4, 6, 10, 0):  # few changes (moved votes) and many (recounted)
        order = order.copy()
        for _ in range(swaps):
            i, j = rng.integers(0, kq), rng.integers(kq, g)
            order[i], order[j] = order[j], order[i]
        rng.shuffle(order[:kq])
        move_votes(order, kq, in_top, prev_top, nbr, weights, votes)
        want = np.zeros(g, dtype=np.int64)
        for i in order[:kq]:
            for r, j in enumerate(nbr[i]):
                want[j] += g - 1 - r
        np.testing.assert_array_equal(votes, want)
        np.testing.assert_array_equal(np.flatnonzero(in_top), np.sort(order[:kq]))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(betas=[]), "betas"),
        (dict(betas=0.5), "betas"),
        (dict(betas=[0.5, float("inf")]), "beta must be finite"),
        (dict(top_n=0), "top_n"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(labels_q=np.zeros(4, dtype=np.int64)), "both labels_q and labels_g"),
    ],
)
def test_rerank_chunks_bad_input(kwargs, message):
    args = dict(kg=3, kq=2, n_iter=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        list(icfrr.rerank_chunks(_QG, _GG, **args))


def test_rerank_chunks_function_needs_n_query_and_right_shapes():
    with pytest.raises(ValueError, match="n_query is required"):
        icfrr.rerank_chunks(lambda s: _QG[s], _GG, kg=3, kq=2)
    chunks = icfrr.rerank_chunks(lambda s: _QG[s, :9], _GG, kg=3, kq=2, n_query=4)
    with pytest.raises(ValueError, match="expected"):
        next(chunks)


def test_variant_names_parse_once_and_pick_their_score_state():
    assert Variant.parse("paper") is Variant.PAPER and Variant.parse(Variant.REFERENCE) is Variant.REFERENCE
    with pytest.raises(ValueError, match="variant must be one of"):
        Variant.parse("other")
    base, dist = torch.zeros(2, 3), torch.ones(2, 3)
    assert isinstance(Variant.REFERENCE.scores(base, dist), PositionScores)
    state = Variant.PAPER.scores(base, dist)
    assert isinstance(state, ItemScores) and state.values.dtype == torch.float64
    assert torch.equal(state.values, -dist.double())


@pytest.mark.parametrize("unlabelled", [False, True])
def test_device_relevant_positions_equal_the_cpu_walk(unlabelled):
    # The CUDA path finds relevant positions on the device; the oracle is the CPU walk,
    # with unknown labels (-1, also in the gallery), a label no gallery item has, and
    # (unlabelled) the engine's no-labels call: counts of 0 although -1 matches -1.
    from icfrr._update import relevant_positions_torch
    from icfrr.metrics import positions_buffer, relevant_counts, rows_positions

    rng = np.random.default_rng(3)
    g = 200
    lg = rng.integers(-1, 6, g).astype(np.int64)
    lq = np.array([0, 1, -1, 5, 9, 2, 2, 4], dtype=np.int64)
    if unlabelled:
        lg, lq = np.full(g, -1, np.int64), np.full(lq.size, -1, np.int64)
    ranking = np.stack([rng.permutation(g) for _ in lq])
    n_rel = np.zeros(lq.size, np.int64) if unlabelled else relevant_counts(lq, lg)
    want, got = positions_buffer((lq.size,), n_rel), positions_buffer((lq.size,), n_rel)
    rows_positions(ranking, lg, lq, n_rel, want)
    relevant_positions_torch(torch.from_numpy(ranking), torch.from_numpy(lg), torch.from_numpy(lq), n_rel, got)
    np.testing.assert_array_equal(want, got)
