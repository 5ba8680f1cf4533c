"""A run re-ranked on an approximate gallery graph (``jobs.sweep --graph ivf``) says so wherever
it is named: its sidebar label, the Overview's runs table and the Query inspector's heading show
``graph: ivf, recall@KG R`` with the recall its sweep stored in ``runs.params``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from dashboard.format import plain
from jobs import sweep
from tests.dashboard.test_app import open_page
from tests.jobs.test_sweep_large import _features

pytest.importorskip("faiss")


def _stored_params(db: Path) -> dict[int, dict]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {int(r): json.loads(p) for r, p in
                con.execute("SELECT run_id, params FROM runs WHERE status = 'done'").fetchall()}
    finally:
        con.close()


def _with_recalls(db: Path, folder: Path) -> Path:
    """A copy of ``db`` whose runs record distinct recalls (0.9 + run_id / 100): a page that showed
    another run's recall, or none, would not match."""
    copy = folder / "varied.duckdb"
    shutil.copy(db, copy)
    con = duckdb.connect(str(copy))
    try:
        for run_id, params in _stored_params(db).items():
            params["graph_recall_at_kg"] = 0.9 + run_id / 100
            con.execute("UPDATE runs SET params = ? WHERE run_id = ?", [json.dumps(params), run_id])
    finally:
        con.close()
    return copy


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two stores of the same features and grid (KG 6 and 12): one on the exact gallery graph,
    one on an IVF graph."""
    out = {}
    for kind in ("exact", "ivf"):
        folder = tmp_path_factory.mktemp(kind)
        argv = [*_features(folder), "--cache_root", str(folder / "cache"), "--db", str(folder / "runs.duckdb")]
        assert sweep.main([*argv, "--graph", kind, "--graph-recall-sample", "60"] if kind == "ivf"
                          else argv) == 0
        out[kind] = folder / "runs.duckdb"
    out["varied"] = _with_recalls(out["ivf"], tmp_path_factory.mktemp("varied"))
    return out


def _expected(params: dict) -> str:
    return f"graph: ivf, recall@KG {params['graph_recall_at_kg']:.4f}"


@pytest.mark.parametrize("store", ["ivf", "varied"])
def test_overview_and_sidebar_name_the_approximate_graph_and_its_recall(sweeps, monkeypatch, store) -> None:
    stored = _stored_params(sweeps[store])
    assert {p["graph"]["kind"] for p in stored.values()} == {"ivf"}
    at = open_page(sweeps[store], "Overview", monkeypatch, run=min(stored))
    table = at.dataframe[0].value.set_index("run_id")
    assert sorted(table.index) == sorted(stored)
    for run_id, params in stored.items():
        assert table.graph[run_id] == _expected(params)
        assert any(o.startswith(f"#{run_id} ") and o.endswith(f" · {_expected(params)}")
                   for o in at.sidebar.selectbox(key="_w_run").options)


def test_inspector_heading_names_the_graph(sweeps, monkeypatch) -> None:
    stored = _stored_params(sweeps["varied"])
    run_id = max(stored)
    at = open_page(sweeps["varied"], "Query inspector", monkeypatch, run=run_id, query=0)
    assert plain(f"#{run_id} ") in at.caption[0].value
    assert at.caption[0].value.endswith(plain(f" · {_expected(stored[run_id])}"))


def test_exact_graph_runs_show_no_graph(sweeps, monkeypatch) -> None:
    stored = _stored_params(sweeps["exact"])
    assert {p["graph"]["kind"] for p in stored.values()} == {"exact"}
    at = open_page(sweeps["exact"], "Overview", monkeypatch, run=min(stored))
    assert "graph" not in at.dataframe[0].value.columns
    assert not any("recall@KG" in o for o in at.sidebar.selectbox(key="_w_run").options)
