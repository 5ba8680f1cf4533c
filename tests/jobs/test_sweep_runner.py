"""jobs.sweep_runner: one configuration's outcome equals the engine called directly."""

from __future__ import annotations

import numpy as np
import icfrr
from jobs.sweep_runner import run_config
from store.writes import RunConfig
from tests.jobs.toy import toy_distances


def test_outcome_matches_engine() -> None:
    qg, gg, labels_q, labels_g = toy_distances()
    graph = icfrr.neighbor_graph(gg, 39)
    cfg = RunConfig(kg=10, kq=6, beta=0.8, n_iter=6, variant="paper")
    seen: list[int] = []
    out = run_config(qg, graph, labels_q, labels_g, cfg, device="cpu", top_n=7,
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
    # iteration 0's scores are the negated distances of the items in that order
    np.testing.assert_allclose(out.kept[0].top_scores,
                               -np.take_along_axis(qg.numpy(), direct[0][:, :7].numpy(), 1))
