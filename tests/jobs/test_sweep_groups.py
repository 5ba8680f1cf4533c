"""Configurations that differ only in beta run together in a sweep: the stored
runs equal those of a sweep that runs every configuration alone."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np

from jobs import sweep, sweep_run
from tests.jobs.toy import toy_distances


def _stored(db: Path) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT r.kg, r.kq, r.beta, r.n_iter, m.iteration, m.map_all, m.map_200, m.p_25 "
            "FROM runs r JOIN run_metrics m USING (run_id) ORDER BY r.kg, r.kq, r.beta, m.iteration").fetchall() + \
            con.execute("SELECT r.kg, r.beta, q.iteration, q.query_idx, q.rank, q.gallery_idx, q.score "
                        "FROM runs r JOIN rankings q USING (run_id) "
                        "ORDER BY r.kg, r.beta, q.iteration, q.query_idx, q.rank").fetchall()
    finally:
        con.close()


def test_beta_groups_store_what_single_runs_store(tmp_path: Path, monkeypatch, capsys) -> None:
    qg, gg, lq, lg = toy_distances(seed=3, q=15, g=60)
    cache = tmp_path / "cache" / "toy" / "-1"
    cache.mkdir(parents=True)
    import torch
    torch.save(qg, cache / "qg_dists.pth")
    torch.save(gg, cache / "gg_dists.pth")
    torch.save({"query": torch.from_numpy(lq), "gallery": torch.from_numpy(lg)}, cache / "labels.pth")
    argv = ["--dataset", "toy", "--cache_root", str(tmp_path / "cache"), "--device", "cpu",
            "--kg", "4", "8", "--kq", "5", "--beta", "0.25", "0.5", "1", "--n-times", "3", "--top-n", "7"]
    grouped_sizes = []
    real = sweep_run.run_group
    monkeypatch.setattr(sweep_run, "run_group", lambda plan, cfgs: grouped_sizes.append(len(cfgs)) or real(plan, cfgs))
    assert sweep.main([*argv, "--db", str(tmp_path / "grouped.duckdb")]) == 0
    assert grouped_sizes == [3, 3]
    monkeypatch.setattr(sweep_run, "batch_groups", lambda plan, todo: [[i] for i in todo])
    assert sweep.main([*argv, "--db", str(tmp_path / "alone.duckdb")]) == 0
    grouped, alone = _stored(tmp_path / "grouped.duckdb"), _stored(tmp_path / "alone.duckdb")
    assert len(grouped) > 6 * 4
    assert grouped == alone
    assert np.isfinite([r[5] for r in grouped[:24]]).all()
