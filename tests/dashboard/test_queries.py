"""The dashboard's typed reads: cached per store stamp, fresh after a write, errors typed."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from dashboard import queries
from dashboard.data import Db
from store.db import StoreError
from tests.dashboard.fixture_store import raw_tables


def test_a_changed_store_is_read_again_an_unchanged_one_is_not(fixture_db, tmp_path) -> None:
    db_path = tmp_path / "icfrr.duckdb"
    shutil.copy(fixture_db, db_path)
    raw = raw_tables(db_path)["runs"]
    before = Db.at(db_path)
    assert sorted(queries.runs(before).run_id) == sorted(raw[raw.status == "done"].run_id)

    con = duckdb.connect(str(db_path))
    con.execute("UPDATE runs SET status = 'done' WHERE status = 'running'")   # a sweep finished
    con.close()
    after = Db.at(db_path)
    assert after.stamp != before.stamp
    assert sorted(queries.runs(after).run_id) == sorted(raw.run_id)
    # the old stamp still names the cached answer: the cache is keyed on the stamp
    assert len(queries.runs(before)) == len(raw) - 1


def test_every_read_names_its_store_function(fixture_db) -> None:
    db = Db.at(fixture_db)
    assert queries.has_results(db) is True
    assert queries.n_queries(db, 1) == 12
    assert queries.stored_iterations(db, 1)[0] == 0
    assert queries.query_item(db, 1, 0)["query_idx"] == 0
    assert queries.dataset_root(db, 1) == str((Path(fixture_db).parent / "data").resolve())


def test_a_damaged_store_raises_store_error(tmp_path) -> None:
    bad = tmp_path / "bad.duckdb"
    bad.write_text("not a database")
    with pytest.raises(StoreError):
        queries.runs(Db.at(bad))
    assert queries.probe(Db.at(tmp_path / "none.duckdb")) == "there is no results database yet."


def test_grid_scores_are_plain_sql_means_over_the_reported_classes(fixture_db) -> None:
    db = Db.at(fixture_db)
    got = queries.grid_scores(db, 1, 1, (0, 2), "icfrr")
    con = duckdb.connect(str(fixture_db), read_only=True)
    want = con.execute("""
        SELECT qm.run_id, qm.iteration, r.kg, r.kq, r.beta, avg(qm.ap) AS map_all
        FROM query_metrics qm JOIN runs r USING (run_id) JOIN sweeps s USING (sweep_id)
        JOIN items i ON i.dataset_id = s.dataset_id AND i.side = 'query' AND i.idx = qm.query_idx
        WHERE r.status = 'done' AND r.method = 'icfrr' AND s.dataset_id = 1 AND qm.iteration >= 1
          AND i.label IN (0, 2)
        GROUP BY ALL ORDER BY 1, 2""").df()
    con.close()
    assert list(got.run_id) == list(want.run_id) and list(got.iteration) == list(want.iteration)
    assert list(got.n_iter) == list(want.iteration)   # ICFRR's T is the iteration
    assert list(got.kg) == list(want.kg) and list(got.beta) == list(want.beta)
    assert list(got.map_all) == pytest.approx(list(want.map_all))
    assert queries.grid_scores(db, 1, 1, (0, 2), "ecn").empty
