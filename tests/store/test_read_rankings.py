"""store.read's reads for the failure analysis (run_info, ranking_iterations, top_rankings,
dataset_items) against plain ``SELECT *`` dumps of the fixture store, recomputed with pandas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from store import read
from store.db import connect_reader
from tests.dashboard.fixture_store import build_fixture, raw_tables


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture(tmp_path_factory.mktemp("read-rankings"))


@pytest.fixture()
def con(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    c = connect_reader(db)
    yield c
    c.close()


@pytest.fixture(scope="module")
def raw(db: Path) -> dict[str, pd.DataFrame]:
    return raw_tables(db)


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
