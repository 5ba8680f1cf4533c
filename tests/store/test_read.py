"""store.read against the raw tables: every answer is recomputed with pandas
from plain ``SELECT *`` dumps of the fixture store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from store import read
from store.db import connect_reader
from tests.dashboard.fixture_store import BASELINES, DEMO, build_fixture, raw_tables


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("read"))


@pytest.fixture()
def con(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = connect_reader(db)
    yield c
    c.close()


@pytest.fixture(scope="module")
def raw(db: Path) -> dict[str, pd.DataFrame]:
    return raw_tables(db)


def _dataset_of_run(raw: dict[str, pd.DataFrame], run_id: int) -> int:
    sweep = raw["runs"].set_index("run_id").loc[run_id, "sweep_id"]
    return int(raw["sweeps"].set_index("sweep_id").loc[sweep, "dataset_id"])


def _query_items(raw: dict[str, pd.DataFrame], dataset_id: int) -> pd.DataFrame:
    it = raw["items"]
    return it[(it.dataset_id == dataset_id) & (it.side == "query")].set_index("idx")


def test_runs_report_first_last_and_best_iteration(con, raw) -> None:
    got = read.runs(con).set_index("run_id")
    done = raw["runs"][raw["runs"].status == "done"]
    assert sorted(got.index) == sorted(done.run_id)  # the unfinished run is left out
    for run_id, m in raw["run_metrics"].groupby("run_id"):
        m = m.sort_values("iteration")
        row = got.loc[run_id]
        assert row.map_all_before == pytest.approx(m.map_all.iloc[0])
        assert row.map_all_after == pytest.approx(m.map_all.iloc[-1])
        assert row.p_100_after == pytest.approx(m.p_100.iloc[-1])
        assert row.last_iteration == m.iteration.max()
        best = m.iteration.iloc[int(np.argmax(m.map_all.to_numpy()))]
        assert row.best_iteration == best
        assert row.map_all_gain == pytest.approx(m.map_all.iloc[-1] - m.map_all.iloc[0])
    assert set(got.dataset) == {"demo", "imported"}
    assert set(got.backbone) == set(raw["artifacts"].backbone) == {"synthetic"}


def test_sweeps_count_finished_runs_only(con, raw) -> None:
    sw = read.sweeps(con).set_index("sweep_id")
    assert list(sw.dataset) == ["demo", "imported", "demo"][::-1]   # newest first
    runs = raw["runs"]
    done = runs[runs.status == "done"].groupby("sweep_id").size()
    assert sw.n_runs.to_dict() == done.to_dict()
    assert done.to_dict() == {1: len(DEMO.configs), 2: 1, 3: len(BASELINES)}
    assert (runs.status != "done").sum() == 1       # the unfinished run is not counted


def test_metrics_by_iteration_is_the_raw_table(con, raw) -> None:
    got = read.metrics_by_iteration(con, [1, 3])
    rm = raw["run_metrics"]
    want = rm[rm.run_id.isin([1, 3])].sort_values(["run_id", "iteration"])
    np.testing.assert_allclose(got.map_all, want.map_all)
    assert list(got.iteration) == list(want.iteration)
    assert read.metrics_by_iteration(con, []).empty


def test_stored_iterations_and_dataset_root(con, raw, db) -> None:
    for run_id in (1, 2):
        rk, qm = raw["rankings"], raw["query_metrics"]
        kept = sorted(rk[rk.run_id == run_id].iteration.unique())
        assert read.stored_iterations(con, run_id) == kept
        assert set(kept) <= set(qm[qm.run_id == run_id].iteration)  # per-query metrics too
    assert read.stored_iterations(con, 1)[0] == 0
    assert read.dataset_root(con, 1) == str((db.parent / "data").resolve())
    imported = int(read.runs(con).query("dataset == 'imported'").run_id.iloc[0])
    assert read.dataset_root(con, imported) is None
    assert read.query_item(con, imported, 0)["path"] is None


def test_class_before_after_is_mean_ap_per_known_class(con, raw) -> None:
    run_id, it = 2, read.stored_iterations(con, 2)[-1]
    items = _query_items(raw, _dataset_of_run(raw, run_id))
    qm = raw["query_metrics"]
    qm = qm[qm.run_id == run_id].join(items[["label"]], on="query_idx")
    qm = qm[qm.label != -1]
    before = qm[qm.iteration == 0].groupby("label").ap.mean()
    after = qm[qm.iteration == it].groupby("label").ap.mean()
    got = read.class_before_after(con, run_id, it).set_index("label")
    assert sorted(got.index) == sorted(before.index)
    np.testing.assert_allclose(got.map_before, before[got.index])
    np.testing.assert_allclose(got.map_after, after[got.index])
    assert list(got.gain) == sorted(got.gain)


def test_query_changes_sorted_filtered_and_known_only(con, raw) -> None:
    run_id, it = 1, read.stored_iterations(con, 1)[-1]
    got = read.query_changes(con, run_id, it)
    items = _query_items(raw, _dataset_of_run(raw, run_id))
    known = items[items.label != -1].index
    assert sorted(got.query_idx) == sorted(known)
    assert list(got.delta) == sorted(got.delta)
    qm = raw["query_metrics"].set_index(["run_id", "iteration", "query_idx"]).ap
    for r in got.itertuples():
        assert r.ap_before == pytest.approx(qm[(run_id, 0, r.query_idx)])
        assert r.ap_after == pytest.approx(qm[(run_id, it, r.query_idx)])
        assert r.path == items.loc[r.query_idx, "path"]
    one = read.query_changes(con, run_id, it, label=2)
    assert set(one.label) == {2}
    assert sorted(one.query_idx) == sorted(items[items.label == 2].index)


def test_query_topn_marks_relevance_and_both_ranks(con, raw) -> None:
    run_id, q, it = 3, 4, read.stored_iterations(con, 3)[-1]
    got = read.query_topn(con, run_id, q, it, top_n=6)
    ds = _dataset_of_run(raw, run_id)
    gal = raw["items"][(raw["items"].dataset_id == ds) & (raw["items"].side == "gallery")]
    gal = gal.set_index("idx")
    q_label = _query_items(raw, ds).loc[q, "label"]
    rk = raw["rankings"]
    lists = {name: rk[(rk.run_id == run_id) & (rk.query_idx == q) & (rk.iteration == t)]
             .set_index("gallery_idx")["rank"] for name, t in (("before", 0), ("after", it))}
    for side in ("before", "after"):
        part = got[got.side == side]
        assert list(part["rank"]) == list(range(1, 7))
        want = lists[side].sort_values().index[:6]
        assert list(part.gallery_idx) == list(want)
        for r in part.itertuples():
            assert r.relevant == (gal.loc[r.gallery_idx, "label"] == q_label)
            assert r.path == gal.loc[r.gallery_idx, "path"]
            for other in ("before", "after"):
                rank = getattr(r, f"rank_{other}")
                if r.gallery_idx in lists[other].index:
                    assert rank == lists[other][r.gallery_idx]
                else:
                    assert pd.isna(rank)
    full = read.query_topn(con, run_id, q, it)
    stored = rk[(rk.run_id == run_id) & (rk.query_idx == q) & rk.iteration.isin([0, it])]
    assert len(full) == len(stored) == 2 * DEMO.top_n


def test_sweep_grid_has_one_row_per_configuration(con) -> None:
    grid = read.sweep_grid(con, 1)
    assert len(grid) == len(DEMO.configs)
    assert set(zip(grid.kg, grid.kq, grid.beta)) == {(kg, kq, b) for _, kg, kq, b in DEMO.configs}
    np.testing.assert_allclose(grid.map_all_gain, grid.map_all_after - grid.map_all_before)
    assert (grid.best_gain >= grid.map_all_gain - 1e-12).all()


def test_paired_ap_aligns_queries_and_refuses_other_datasets(con, raw) -> None:
    it = read.stored_iterations(con, 1)[-1]
    got = read.paired_ap(con, 1, it, 1, 0)
    qm = raw["query_metrics"].set_index(["run_id", "iteration", "query_idx"]).ap
    items = _query_items(raw, _dataset_of_run(raw, 1))
    assert len(got) == (items.label != -1).sum() == DEMO.n_query - DEMO.n_unknown
    for r in got.itertuples():
        assert r.ap_a == pytest.approx(qm[(1, it, r.query_idx)])
        assert r.ap_b == pytest.approx(qm[(1, 0, r.query_idx)])
    imported = int(read.runs(con).query("dataset == 'imported'").run_id.iloc[0])
    with pytest.raises(ValueError, match="different datasets"):
        read.paired_ap(con, 1, 0, imported, 0)


def test_class_before_after_ignores_a_replaced_stored_view(tmp_path: Path) -> None:
    from tests.dashboard.fixture_store import LEAK, SECRET, build_injected

    store = build_injected(tmp_path, tmp_path / "secret.txt")
    raw = raw_tables(store)
    with connect_reader(store) as c:
        got = read.class_before_after(c, 1, DEMO.n_iter).set_index("label")
    names = _query_items(raw, _dataset_of_run(raw, 1)).groupby("label").class_name.first()
    assert got.class_name.to_dict() == names.drop(-1, errors="ignore").to_dict()
    assert all(n.startswith(LEAK) and SECRET not in n for n in got.class_name)


# --- the failure analysis's reads (run_info, ranking_iterations, top_rankings, dataset_items) ---


def test_run_info_is_the_runs_row_with_its_dataset(con, raw):
    runs = raw["runs"].merge(raw["sweeps"][["sweep_id", "dataset_id"]], on="sweep_id")
    for r in runs.itertuples():
        info = read.run_info(con, int(r.run_id))
        assert info["dataset_id"] == r.dataset_id and info["method"] == r.method
        assert info["status"] == r.status and info["n_iter"] == r.n_iter
        assert (info["kq"] is None) == pd.isna(r.kq)
    assert read.run_info(con, int(runs.run_id.max()) + 1) is None


def test_top_rankings_are_the_table_in_rank_order(con, raw):
    rankings = raw["rankings"]
    for (run_id, iteration), part in rankings.groupby(["run_id", "iteration"]):
        query_idx, top = read.top_rankings(con, int(run_id), int(iteration))
        want = part.sort_values(["query_idx", "rank"])
        n = int(want.groupby("query_idx").size().min())
        assert query_idx.tolist() == sorted(want.query_idx.unique().tolist())
        assert top.shape == (len(query_idx), n) and top.dtype == np.int64
        for q, row in zip(query_idx.tolist(), top):
            assert row.tolist() == want[want.query_idx == q].gallery_idx.tolist()[:n]
        assert int(iteration) in read.ranking_iterations(con, int(run_id))
    assert sorted(read.ranking_iterations(con, 1)) == sorted(rankings[rankings.run_id == 1].iteration.unique())
    query_idx, top = read.top_rankings(con, 1, 2)  # an iteration that was not kept
    assert query_idx.shape == (0,) and top.shape == (0, 0)


def test_dataset_items_are_the_run_datasets_items(con, raw):
    ds = int(raw["sweeps"].set_index("sweep_id").loc[raw["runs"].set_index("run_id").loc[1, "sweep_id"], "dataset_id"])
    for side in ("query", "gallery"):
        got = read.dataset_items(con, 1, side)
        want = raw["items"][(raw["items"].dataset_id == ds) & (raw["items"].side == side)].sort_values("idx")
        assert got.idx.tolist() == want.idx.tolist()
        assert got.label.tolist() == want.label.tolist()
        assert got.class_name.fillna("").tolist() == want.class_name.fillna("").tolist()


def test_method_questions_follow_the_registry_entries_not_their_names() -> None:
    from icfrr.registry import METHODS

    for m in METHODS:
        names = {p.name for p in m.params}
        assert read.registered(m.key) is m
        assert read.explainable(m.key) is m.explainable and read.iterative(m.key) is m.iterative
        assert read.has_params(m.key, *read.GRID_AXES) is ({"kg", "kq"} <= names)
        assert read.has_params(m.key, "kq") is ("kq" in names) and read.has_params(m.key)
    assert [m.key for m in METHODS if m.explainable] == ["icfrr"]
    assert [m.key for m in METHODS if read.has_params(m.key, "kq")] == ["icfrr"]
    for unknown in ("mine", None, float("nan")):   # a method outside the registry is none of these
        assert read.registered(unknown) is None
        assert not read.explainable(unknown) and not read.iterative(unknown) and not read.has_params(unknown)


def test_derived_columns_are_named_from_the_headline_metric(con, raw) -> None:
    from icfrr.registry import HEADLINE, METRICS

    got = read.runs(con)
    assert read.gain_column(HEADLINE) == f"{HEADLINE.key}_gain" == "map_all_gain"
    assert read.best_column(HEADLINE) == "best_map_all"
    for m in METRICS:
        assert {read.before_column(m), read.after_column(m)} <= set(got.columns)
    assert {read.gain_column(HEADLINE), read.best_column(HEADLINE)} <= set(got.columns)
    grid = read.sweep_grid(con, 1)
    icfrr = [p.name for p in read.registered("icfrr").params]
    assert read.PARAM_COLUMNS == tuple(icfrr) and set(icfrr) <= set(got.columns)
    assert set(read.PARAM_COLUMNS) <= set(raw["runs"].columns)   # the store's own columns
    assert list(grid.columns) == ["run_id", *icfrr, "map_all_before", "map_all_after", "map_all_gain",
                                  "best_iteration", "best_map_all", "best_gain"]
    baselines = read.sweep_grid(con, 3)   # the fixture's baseline sweep: no KG, no KQ
    assert set(got.method[got.sweep_id == 3]) == {b[0] for b in BASELINES}
    assert baselines.empty and list(baselines.columns) == list(grid.columns)
