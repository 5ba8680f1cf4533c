"""store.writes: rows written equal what was passed in; one run is all or nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import store.writes as w
from icfrr.run_config import RunConfig
from store.db import connect_writer

Q, G, N = 6, 9, 4


def _kept(rng: np.random.Generator, labels_q: np.ndarray) -> w.KeptIteration:
    ap = rng.random(Q)
    ap[labels_q == -1] = np.nan
    first = rng.integers(1, G + 1, Q)
    first[labels_q == -1] = -1
    first[0] = -1  # a query with nothing relevant
    per_query = {"query_idx": np.arange(Q), "label": labels_q, "ap": ap, "ap_200": ap / 2,
                 "p_25": ap / 3, "p_100": ap / 4, "p_200": ap / 5, "first_relevant_rank": first}
    top = np.stack([rng.permutation(G)[:N] for _ in range(Q)])
    return w.KeptIteration(per_query, top, -np.sort(rng.random((Q, N)), axis=1))


@pytest.fixture()
def setup(tmp_path: Path):
    rng = np.random.default_rng(0)
    labels_q = np.array([0, 1, 2, 0, -1, 1])
    labels_g = rng.integers(0, 3, G)
    items = w.items_table(labels_q, labels_g, paths_q=[f"q/{i}.png" for i in range(Q)],
                          class_names={0: "cat", 1: "dog", 2: "owl"})
    con = connect_writer(tmp_path / "w.duckdb")
    dataset_id = w.upsert_dataset(con, name="toy", root="/data/toy", items=items)
    info = w.ArtifactInfo(key="dists-1", backbone="toy-net", checkpoint_sha256=None, per_class=-1)
    artifact_id = w.upsert_artifact(con, dataset_id, info)
    sweep_id = w.start_sweep(con, dataset_id=dataset_id, artifact_id=artifact_id, command="t")
    metrics = [{m: float(rng.random()) for m in w.METRICS} for _ in range(4)]
    metrics[2]["map_all"] = 2.0  # best iteration
    kept = {0: _kept(rng, labels_q), 2: _kept(rng, labels_q), 3: _kept(rng, labels_q)}
    yield con, dict(sweep_id=sweep_id, artifact_id=artifact_id, artifact_key=info.key,
                    device="cpu", seconds=1.5, metrics=metrics, kept=kept), labels_q, labels_g
    con.close()


def _write(con, args, **over):
    cfg = over.pop("config", RunConfig(kg=5, kq=3, beta=0.5, n_iter=3, extra={"asked_kg": 64}))
    return w.write_run(con, config=cfg, **{**args, **over})


def test_dataset_and_items(setup) -> None:
    con, _, labels_q, labels_g = setup
    assert con.execute("SELECT name, root, n_query, n_gallery, n_classes FROM datasets").fetchall() \
        == [("toy", "/data/toy", Q, G, len(set(labels_q.tolist() + labels_g.tolist()) - {-1}))]
    got = con.execute("SELECT side, idx, path, label, class_name FROM items "
                      "ORDER BY side DESC, idx").fetchall()
    names = {0: "cat", 1: "dog", 2: "owl"}
    want = [("query", i, f"q/{i}.png", int(x), names.get(int(x))) for i, x in enumerate(labels_q)]
    want += [("gallery", i, None, int(x), names[int(x)]) for i, x in enumerate(labels_g)]
    assert got == want
    # same lists: same row; another root: a new row
    items = w.items_table(labels_q, labels_g, paths_q=[f"q/{i}.png" for i in range(Q)],
                          class_names=names)
    assert w.upsert_dataset(con, name="toy", root="/data/toy", items=items) == 1
    assert w.upsert_dataset(con, name="toy", root="/elsewhere", items=items) == 2
    assert con.execute("SELECT count(*) FROM items").fetchone() == (2 * (Q + G),)


def test_artifact_reused_by_key_and_refreshed(setup) -> None:
    con, args, *_ = setup
    info = w.ArtifactInfo(key="dists-1", backbone="toy-net", checkpoint_sha256=None, per_class=-1,
                          neighbors_path="/c/nn.parquet", neighbors_k=32)
    assert w.upsert_artifact(con, 1, info) == args["artifact_id"]
    assert con.execute("SELECT count(*), any_value(neighbors_k), any_value(neighbors_path) "
                       "FROM artifacts").fetchone() == (1, 32, "/c/nn.parquet")
    other = w.upsert_artifact(con, 1, w.ArtifactInfo("dists-2", "toy-net", None, 5))
    assert other != args["artifact_id"]


def test_write_run_round_trip(setup) -> None:
    con, args, labels_q, _ = setup
    run_id = _write(con, args)
    run = con.execute("SELECT sweep_id, method, variant, kg, kq, beta, n_iter, params, device, "
                      "seconds, status, artifact_id FROM runs").fetchall()
    assert len(run) == 1
    sweep_id, method, variant, kg, kq, beta, n_iter, params, device, secs, status, art = run[0]
    assert (sweep_id, method, variant, kg, kq, beta, n_iter, device, secs, status, art) == (
        args["sweep_id"], "icfrr", "reference", 5, 3, 0.5, 3, "cpu", 1.5, "done",
        args["artifact_id"])
    assert json.loads(params) == {"method": "icfrr", "variant": "reference", "kg": 5, "kq": 3,
                                  "beta": 0.5, "n_iter": 3, "asked_kg": 64, "best_iteration": 2,
                                  "top_n": N}
    rm = con.execute(f"SELECT iteration, {', '.join(w.METRICS)} FROM run_metrics "
                     "WHERE run_id = ? ORDER BY iteration", [run_id]).fetchall()
    assert rm == [(i, *(m[k] for k in w.METRICS)) for i, m in enumerate(args["metrics"])]
    for it, kept in args["kept"].items():
        qm = con.execute("SELECT query_idx, ap, ap_200, p_25, p_100, p_200, first_relevant_rank "
                         "FROM query_metrics WHERE run_id = ? AND iteration = ? "
                         "ORDER BY query_idx", [run_id, it]).fetchall()
        pq = kept.per_query
        for q, row in enumerate(qm):
            assert row[0] == q
            if labels_q[q] == -1:
                assert row[1:] == (None,) * 6  # unknown label: NULL, not NaN
            else:
                assert row[1:6] == pytest.approx([pq[m][q] for m in w.QUERY_METRICS])
                first = pq["first_relevant_rank"][q]
                assert row[6] == (None if first == -1 else first)
        rk = con.execute("SELECT query_idx, rank, gallery_idx, score FROM rankings "
                         "WHERE run_id = ? AND iteration = ? ORDER BY query_idx, rank",
                         [run_id, it]).fetchall()
        want = [(q, r + 1, int(kept.top_gallery[q, r]), float(kept.top_scores[q, r]))
                for q in range(Q) for r in range(N)]
        assert rk == want


def test_class_metrics_view(setup) -> None:
    con, args, labels_q, _ = setup
    run_id = _write(con, args)
    got = con.execute("SELECT label, class_name, n_queries, map FROM class_metrics "
                      "WHERE run_id = ? AND iteration = 0 ORDER BY label", [run_id]).fetchall()
    ap = args["kept"][0].per_query["ap"]
    want = [(c, n, int((labels_q == c).sum()), pytest.approx(ap[labels_q == c].mean()))
            for c, n in ((0, "cat"), (1, "dog"), (2, "owl"))]
    assert got == want


def test_finished_run_skipped_and_force_replaces(setup) -> None:
    con, args, *_ = setup
    first = _write(con, args)
    assert _write(con, args) is None  # same key: skipped, nothing written
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    other = _write(con, args, config=RunConfig(kg=5, kq=3, beta=1.0, n_iter=3))
    assert other not in (None, first)
    again = _write(con, args, force=True)
    assert again not in (None, first, other)
    runs = con.execute("SELECT run_id FROM runs ORDER BY run_id").fetchall()
    assert runs == [(other,), (again,)]
    for table in ("run_metrics", "query_metrics", "rankings"):
        ids = {r[0] for r in con.execute(f"SELECT DISTINCT run_id FROM {table}").fetchall()}
        assert ids == {other, again}, table
    key = RunConfig(kg=5, kq=3, beta=0.5, n_iter=3).config_key(args["artifact_key"])
    assert w.finished_config_keys(con, [key, "nope"]) == {key}


def test_failure_inside_run_leaves_nothing(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    con, args, *_ = setup

    def broken(*_a, **_k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(w, "_rankings_table", broken)  # fails after runs/metrics were inserted
    with pytest.raises(RuntimeError, match="disk full"):
        _write(con, args)
    for table in ("runs", "run_metrics", "query_metrics", "rankings"):
        assert con.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_write_run_checks_shapes(setup) -> None:
    con, args, *_ = setup
    with pytest.raises(ValueError, match="expected 4"):
        _write(con, args, metrics=args["metrics"][:3])
    with pytest.raises(ValueError, match="outside"):
        _write(con, args, kept={7: args["kept"][0]})
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_best_iteration() -> None:
    m = [{"map_all": v} for v in (0.2, 0.5, float("nan"), 0.5, 0.1)]
    assert w.best_iteration(m) == 1
    assert w.best_iteration([{"map_all": float("nan")}] * 3) == 0


def test_sweep_status(setup) -> None:
    con, args, *_ = setup
    assert con.execute("SELECT status, finished_at FROM sweeps").fetchone() == ("running", None)
    w.finish_sweep(con, args["sweep_id"], "done")
    status, finished = con.execute("SELECT status, finished_at FROM sweeps").fetchone()
    assert status == "done" and finished is not None
    with pytest.raises(ValueError):
        w.finish_sweep(con, args["sweep_id"], "half")


def test_finished_runs_gives_stored_metrics(setup) -> None:
    con, args, *_ = setup
    args["metrics"][1]["p_25"] = float("nan")
    run_id = _write(con, args)
    key = RunConfig(kg=5, kq=3, beta=0.5, n_iter=3).config_key(args["artifact_key"])
    got = w.finished_runs(con, [key, "other"])
    assert list(got) == [key] and got[key][0] == run_id
    for stored, given in zip(got[key][1], args["metrics"], strict=True):
        assert stored == pytest.approx(given, nan_ok=True)


def test_every_iterations_query_metrics_rankings_only_kept(setup) -> None:
    con, args, labels_q, _ = setup
    rng = np.random.default_rng(5)
    every = [_kept(rng, labels_q).per_query for _ in range(4)]
    run_id = _write(con, args, per_query=every)
    got = con.execute("SELECT iteration, query_idx, ap, p_25 FROM query_metrics WHERE run_id = ? "
                      "ORDER BY iteration, query_idx", [run_id]).fetchall()
    want = [(it, q, *(None if labels_q[q] == -1 else pytest.approx(every[it][c][q])
                      for c in ("ap", "p_25")))
            for it in range(4) for q in range(Q)]
    assert got == want
    ranked = con.execute("SELECT DISTINCT iteration FROM rankings WHERE run_id = ? ORDER BY 1",
                         [run_id]).fetchall()
    assert ranked == [(0,), (2,), (3,)]
    with pytest.raises(ValueError, match="3 per-query rows"):
        _write(con, args, per_query=every[:3], force=True)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (1,)
