"""The metric and method registries: kernels against literal definitions, the
best-iteration rule, parameter checks, and the guard that a metric added to the
registry reaches the store, the report and the dashboard with no other edit."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from icfrr import registry
from icfrr.registry import Hits, average_precision, best_iteration, precision_at
from tests.guard import REPO, run_guard
from tests.icfrr.test_metrics import brute_ap


def _literal_ap(rel_row: np.ndarray, cutoff: int | None) -> float:
    return brute_ap(list(rel_row if cutoff is None else rel_row[:cutoff]))


@pytest.mark.parametrize("seed", range(4))
def test_kernels_match_the_literal_definitions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rel = rng.random((7, 300)) < rng.uniform(0.0, 0.2, size=(7, 1))
    rel[0] = False  # a query with nothing relevant
    hits = Hits.from_relevance(rel)
    for cutoff in (None, 200, 1):
        np.testing.assert_allclose(average_precision(hits, cutoff), [_literal_ap(r, cutoff) for r in rel])
    for k in (1, 25, 100, 200, 400):
        np.testing.assert_allclose(precision_at(hits, k), rel[:, :k].sum(1) / k)


def test_every_metric_is_named_once_and_the_headline_leads() -> None:
    keys = [m.key for m in registry.METRICS]
    columns = [m.column for m in registry.METRICS]
    assert len(set(keys)) == len(keys) and len(set(columns)) == len(columns)
    assert registry.HEADLINE is registry.METRICS[0]
    assert registry.metric("ap") is registry.metric("map_all")
    with pytest.raises(KeyError, match="unknown metric"):
        registry.metric("ndcg")


def test_best_iteration_is_the_earliest_highest_headline() -> None:
    h = registry.HEADLINE.key
    assert best_iteration([{h: 0.2}, {h: 0.5}, {h: 0.5}, {h: 0.1}]) == 1
    assert best_iteration([{h: float("nan")}, {h: 0.3}]) == 1
    assert best_iteration([{h: float("nan")}]) == 0


def test_params_check_their_bounds_and_choices() -> None:
    kg = registry.method("icfrr").params[0]
    assert kg.check(1) is None and "must be >= 1" in kg.check(0)
    lam = registry.method("k_reciprocal").params[2]
    assert lam.check(0.3) is None and "<= 1" in lam.check(1.5) and "finite" in lam.check(float("nan"))
    variant = registry.method("icfrr").params[-1]
    assert variant.check("paper") is None and "one of" in variant.check("other")
    assert registry.METHOD_KEYS[0] == "icfrr" and len(set(registry.METHOD_KEYS)) == len(registry.METHODS)


def test_parse_types_and_checks_once_and_clamp_caps_at_the_gallery() -> None:
    kg, kq, beta = registry.method("icfrr").params[:3]
    assert kg.parse(np.int64(7)) == 7 and type(kg.parse(np.int64(7))) is int
    assert type(beta.parse(1)) is float
    with pytest.raises(ValueError, match="--kg values must be >= 1, got 0"):
        kg.parse(0)
    with pytest.raises(ValueError, match="--kg takes int values"):
        kg.parse("many")
    assert [kg.clamp(v, 40) for v in (3, 39, 40, 500)] == [3, 39, 39, 39]   # KG: at most G - 1
    assert [kq.clamp(v, 40) for v in (3, 40, 500)] == [3, 40, 40]           # KQ: at most G
    assert kg.clamp(5, 1) == 1 and beta.clamp(7.5, 2) == 7.5                # never below 1; no cap: as is


def test_capabilities_name_real_parameters() -> None:
    from store.schema import PARAM_COLUMNS

    for m in registry.METHODS:
        names = [p.name for p in m.params]
        assert set(m.columns) <= set(PARAM_COLUMNS), m.key        # mirrored only into existing runs columns
        assert m.graph_param in (None, *names) and m.batch_param in (None, *names), m.key
        assert sorted(m.grid_order) in ([], sorted(names)), m.key
        assert m.iterative == ("n_iter" in names), m.key           # the engine's iterations are a parameter
        assert m.iterative or m.function, m.key                    # a single-shot method names its function


# One new entry, recall@100, registered before anything else is imported: the
# store gets its column, the report its column and the dashboard its label.
_GUARD = textwrap.dedent('''
    import sys
    from pathlib import Path
    import numpy as np
    import icfrr.registry as reg

    def recall_100(h):
        total = h.count()
        return np.divide(h.count(h.positions < 100), total, out=np.zeros(h.n_rows), where=total > 0)

    reg.METRICS = reg.METRICS + (reg.Metric("recall_100", "recall_100", "R@100", 100, recall_100,
                                            "relevant items in the top 100 over all relevant items"),)
    reg.METRIC_KEYS = tuple(m.key for m in reg.METRICS)
    reg.QUERY_COLUMNS = tuple(m.column for m in reg.METRICS)
    reg.LABELS = {m.key: m.label for m in reg.METRICS}

    import icfrr
    from store import report, writes
    from icfrr.run_config import RunConfig
    from store.db import connect_reader, connect_writer

    db = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    lq, lg = rng.integers(0, 3, 20), rng.integers(0, 3, 150)
    rankings = [np.argsort(rng.random((20, 150)), axis=1) for _ in range(3)]
    with connect_writer(db) as con:
        ds = writes.upsert_dataset(con, name="guard", root=None, items=writes.items_table(lq, lg))
        art = writes.upsert_artifact(con, ds, writes.ArtifactInfo(key="k", backbone="import",
                                                                   checkpoint_sha256=None, per_class=-1))
        sweep = writes.start_sweep(con, dataset_id=ds, artifact_id=art, command="guard")
        pqs = [icfrr.per_query(r, lq, lg) for r in rankings]
        kept = {t: writes.KeptIteration(pq, r[:, :5], -np.arange(5.0)[None].repeat(20, 0))
                for t, (pq, r) in enumerate(zip(pqs, rankings))}
        writes.write_run(con, sweep_id=sweep, artifact_id=art, artifact_key="k",
                         config=RunConfig(kg=4, kq=4, beta=0.5, n_iter=2), device="cpu",
                         seconds=1.0, metrics=[icfrr.summarize(pq) for pq in pqs], kept=kept)
    want = [float(np.mean([(lg[r[q, :100]] == lq[q]).sum() / (lg == lq[q]).sum() for q in range(20)]))
            for r in rankings]
    with connect_reader(db) as con:
        stored = [v for (v,) in con.execute("SELECT recall_100 FROM run_metrics ORDER BY iteration").fetchall()]
        per_query = con.execute("SELECT count(recall_100) FROM query_metrics").fetchone()[0]
        from jobs.report_format import to_csv
        csv_text = to_csv(report.comparison(con, dataset="guard"))
    assert np.allclose(stored, want), (stored, want)
    assert per_query == 3 * 20
    assert "recall_100" in csv_text.splitlines()[0], csv_text.splitlines()[0]

    import os
    from streamlit.testing.v1 import AppTest
    os.environ["ICFRR_DB"] = str(db)
    at = AppTest.from_file(sys.argv[2], default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    labels = [m.label for m in at.metric]
    assert "R@100 after" in labels, labels
    print("guard ok")
''')


@pytest.mark.slow
def test_a_metric_added_to_the_registry_reaches_store_report_and_dashboard(tmp_path: Path) -> None:
    assert "guard ok" in run_guard(_GUARD, tmp_path, tmp_path / "g.duckdb", REPO / "dashboard" / "app.py")
