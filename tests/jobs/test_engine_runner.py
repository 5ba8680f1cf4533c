"""jobs.engine_runner: one configuration's outcome equals the engine called directly."""

from __future__ import annotations

import numpy as np
import pytest

import icfrr
from jobs.engine_runner import run_config, run_configs, run_whole
from icfrr.run_config import RunConfig
from tests.jobs.toy import toy_distances


def test_outcome_matches_engine() -> None:
    qg, gg, labels_q, labels_g = toy_distances()
    graph = icfrr.neighbor_graph(gg, 39)
    cfg = RunConfig(kg=10, kq=6, beta=0.8, n_iter=6, variant="paper")
    seen: list[int] = []
    out = run_whole(qg, graph, labels_q, labels_g, cfg, device="cpu", top_n=7,
                    on_step=lambda step, m: seen.append(step.iteration))
    assert seen == list(range(7))
    direct = icfrr.rerank(qg, gg, kg=10, kq=6, beta=0.8, n_iter=6, variant="paper", device="cpu")
    want = [icfrr.evaluate(r, labels_q, labels_g) for r in direct]
    assert out.metrics == want
    maps = [m["map_all"] for m in want]
    best = int(np.argmax(maps))
    assert out.best == best
    assert set(out.kept) == {0, best, 6}
    for it, kept in out.kept.items():
        np.testing.assert_array_equal(kept.top_gallery, direct[it][:, :7].numpy())
        pq = icfrr.per_query(direct[it], labels_q, labels_g)
        for k, v in pq.items():
            np.testing.assert_array_equal(kept.per_query[k], v)
        assert kept.top_scores.shape == (12, 7)
        assert np.all(np.diff(kept.top_scores, axis=1) <= 1e-6)  # descending scores
    # every iteration's per-query metrics, streamed or whole, equal the engine's
    streamed = run_config(qg, graph, labels_q, labels_g, cfg, device="cpu", top_n=7, chunk_size=5)
    for outcome in (out, streamed):
        assert len(outcome.per_query) == 7
        for it, ranking in enumerate(direct):
            for k, v in icfrr.per_query(ranking, labels_q, labels_g).items():
                np.testing.assert_array_equal(outcome.per_query[it][k], v)
    # iteration 0's scores are the negated distances of the items in that order
    np.testing.assert_allclose(out.kept[0].top_scores,
                               -np.take_along_axis(qg.numpy(), direct[0][:, :7].numpy(), 1))


def _assert_same_outcome(a, b) -> None:
    assert a.metrics == b.metrics and a.best == b.best and set(a.kept) == set(b.kept)
    for it in a.kept:
        np.testing.assert_array_equal(a.kept[it].top_gallery, b.kept[it].top_gallery)
        np.testing.assert_array_equal(a.kept[it].top_scores, b.kept[it].top_scores)
        for k, v in a.kept[it].per_query.items():
            np.testing.assert_array_equal(b.kept[it].per_query[k], v)


@pytest.mark.parametrize("variant", ["reference", "paper"])
def test_streaming_outcome_matches_whole_rankings(variant) -> None:
    qg, gg, labels_q, labels_g = toy_distances(seed=3)
    graph = icfrr.neighbor_graph(gg, 39)
    cfg = RunConfig(kg=12, kq=9, beta=0.6, n_iter=5, variant=variant)
    whole = run_whole(qg, graph, labels_q, labels_g, cfg, device="cpu", top_n=6, on_step=lambda s, m: None)
    progress: list[tuple[int, int]] = []
    for chunk_size in (1, 5, 12, 40):
        streamed = run_config(qg, graph, labels_q, labels_g, cfg, device="cpu", top_n=6, chunk_size=chunk_size,
                              on_progress=lambda done, total: progress.append((done, total)))
        assert streamed.metrics == whole.metrics and streamed.best == whole.best
        assert set(streamed.kept) == {0, whole.best, 5}
        for it, kept in streamed.kept.items():
            np.testing.assert_array_equal(kept.top_gallery, whole.kept[it].top_gallery)
            # whole rankings carry float32 scores; the stream keeps the float64 ones
            np.testing.assert_allclose(kept.top_scores, whole.kept[it].top_scores, rtol=1e-6)
            for k, v in whole.kept[it].per_query.items():
                np.testing.assert_array_equal(kept.per_query[k], v)
    assert progress[-1] == (12, 12) and progress[:12] == [(i, 12) for i in range(1, 13)]
    # distances from a function of the chunk: the same outcome
    lazy = run_config(lambda sl: qg[sl], graph, labels_q, labels_g, cfg, device="cpu", top_n=6, chunk_size=5)
    dense = run_config(qg, graph, labels_q, labels_g, cfg, device="cpu", top_n=6, chunk_size=5)
    _assert_same_outcome(lazy, dense)


def test_run_configs_over_betas_equal_one_at_a_time() -> None:
    qg, gg, labels_q, labels_g = toy_distances(seed=1)
    graph = icfrr.neighbor_graph(gg, 39)
    cfgs = [RunConfig(kg=8, kq=20, beta=b, n_iter=4, variant="paper") for b in (0.1, 2.0, 0.7)]
    together = run_configs(qg, graph, labels_q, labels_g, cfgs, device="cpu", top_n=5, chunk_size=4)
    for cfg, got in zip(cfgs, together):
        _assert_same_outcome(got, run_config(qg, graph, labels_q, labels_g, cfg, device="cpu", top_n=5))
    with pytest.raises(ValueError, match="differ only in beta"):
        run_configs(qg, graph, labels_q, labels_g, [cfgs[0], RunConfig(kg=9, kq=20, beta=0.1, n_iter=4)])
    with pytest.raises(ValueError, match="dense qg_dists"):
        run_whole(lambda sl: qg[sl], graph, labels_q, labels_g, cfgs[0], on_step=lambda s, m: None)
