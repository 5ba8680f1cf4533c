"""Issue 18 in the dashboard: the inspector's "why did it move", the retrieval confusions and
the failure signature on the Failure cases page, under streamlit.testing's AppTest.

Oracles are independent of the code under test: the votes are recomputed from the
features with the literal formula of docs/SPEC.md section 2 (numpy, float64, dense
gallery ranks), the confusions with plain SQL over ``rankings`` and ``items``, the
signature's points from the raw tables.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from dashboard import charts, why
from icfrr.explaining import VoteStep
from tests.dashboard.fixture_store import raw_tables
from tests.dashboard.route_store import build_routes
from tests.dashboard.test_app import open_page

# ------------------------------------------------------------------ pure helpers


def _step() -> VoteStep:
    # voters 5 (best) and 2; 5 votes for 1 and 3, 2 votes for 1
    return VoteStep(iteration=2, voters=np.array([5, 2]), voter=np.array([5, 5, 2]),
                    item=np.array([1, 3, 1]), amount=np.array([0.25, 0.5, 0.125]),
                    ranking=np.arange(6))


def test_purity_is_the_vote_mass_share_of_the_query_class() -> None:
    labels_g = np.array([0, 1, 0, 2, 0, 0])
    assert why.purity(_step(), labels_g, 1) == pytest.approx((0.25 + 0.125) / 0.875)
    assert why.purity(_step(), labels_g, 2) == pytest.approx(0.5 / 0.875)
    assert why.purity(_step(), labels_g, 0) == 0.0


def test_voters_of_an_item_with_their_rank_at_the_time() -> None:
    got = why.voters_of(_step(), 1)
    assert got.to_dict("list") == {"voter": [5, 2], "rank": [1, 2], "amount": [0.25, 0.125]}
    assert why.voters_of(_step(), 4).empty


def test_intruder_sentence_names_the_voters_majority_class() -> None:
    assert why.intruder_sentence(52, 11, ["angel"] * 7 + ["bee"] * 3) == (
        "rose 41 places (#52 → #11): 7 of its 10 voters are 'angel' items that count it among "
        "their nearest neighbours")
    assert why.intruder_sentence(3, 2, []).startswith("rose 1 place (#3 → #2): no voter")
    assert why.intruder_sentence(9, 4, ["cat"]) == (
        "rose 5 places (#9 → #4): its one voter, a 'cat' item, counts it among its nearest neighbours")


# ------------------------------------------------------------------ a store of real sweeps


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m jobs.sweep`` on features (with class names), the published cache, and
    features without labels (tests.dashboard.route_store)."""
    return build_routes(tmp_path_factory.mktemp("why"), named=True)


def _run_id(db: Path, dataset: str, kg: int | None = None) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return int(con.execute(
            "SELECT min(r.run_id) FROM runs r JOIN sweeps s USING (sweep_id) JOIN datasets d "
            "ON d.dataset_id = s.dataset_id WHERE d.name = ? AND (? IS NULL OR r.kg = ?)",
            [dataset, kg, kg]).fetchone()[0])
    finally:
        con.close()


def _spec_bonuses(folder: Path, q: int, kg: int, kq: int, beta: float, n_iter: int) -> list[np.ndarray]:
    """Each update's bonus ``beta * delta`` of query ``q``, by the literal formula of
    docs/SPEC.md section 2 (reference variant), from the route's features."""
    qf, gf = np.load(folder / "q.npy").astype(np.float64), np.load(folder / "g.npy").astype(np.float64)
    qf /= np.linalg.norm(qf, axis=1, keepdims=True)
    gf /= np.linalg.norm(gf, axis=1, keepdims=True)
    d_qg = np.linalg.norm(qf[q][None, :] - gf, axis=1)
    d_gg = np.linalg.norm(gf[:, None, :] - gf[None, :, :], axis=2)
    n = len(gf)
    rank = np.empty((n, n), dtype=np.int64)       # R[i, j]: j's place among i's others
    for i in range(n):
        others = [j for j in np.argsort(d_gg[i], kind="stable") if j != i]
        rank[i, others] = np.arange(n - 1)
        rank[i, i] = -1
    alpha = np.where((rank >= 0) & (rank < kg), 1 - rank / (n - 1), 0.0)
    v = np.sort(-d_qg)[::-1]
    pi = np.argsort(d_qg, kind="stable")
    bonuses = []
    for _ in range(n_iter):
        delta = alpha[pi[:kq]].mean(axis=0)
        bonuses.append(beta * delta)
        u = v + beta * delta[pi]
        pi = pi[np.argsort(-u, kind="stable")]
    return bonuses


def _bonus_line(at) -> tuple[int, float]:
    text = next(m.value for m in at.markdown if "total bonus" in m.value)
    found = re.match(r"Item (\d+): total bonus \*\*([0-9.]+)\*\*", text)
    return int(found[1]), float(found[2])


def test_why_view_shows_the_bonuses_and_purity_the_spec_gives(routes, monkeypatch) -> None:
    run, q, it = _run_id(routes, "feats", kg=4), 2, 2
    at = open_page(routes, "Query inspector", monkeypatch, run=run, query=q, iteration=it)
    assert "Why did it move" in [h.value for h in at.subheader]
    bonus = _spec_bonuses(routes.parent, q, kg=4, kq=3, beta=1.0, n_iter=2)
    table = at.dataframe[-1].value
    assert len(table) == 10
    np.testing.assert_allclose(table.bonus.to_numpy(), bonus[it - 1][table.item.to_numpy()], rtol=1e-6, atol=1e-9)
    item, shown = _bonus_line(at)
    assert item == table.item.iloc[0] and shown == pytest.approx(bonus[it - 1][item], abs=5e-7)
    # vote purity: the share of the bonus mass on items of the query's class, per update
    labels_g = np.load(routes.parent / "labels.npz")["gallery"]
    q_label = int(np.load(routes.parent / "labels.npz")["query"][q])
    want = [f"{t + 1}: {b[labels_g == q_label].sum() / b.sum():.1%}" for t, b in enumerate(bonus)]
    line = next(m.value for m in at.markdown if m.value.startswith("Vote purity"))
    assert [p.replace("*", "") for p in line.split("by update: ")[1].split(" · ")] == want


def test_why_view_on_the_published_cache_route(routes, monkeypatch) -> None:
    run = _run_id(routes, "custom")
    at = open_page(routes, "Query inspector", monkeypatch, run=run, query=0)
    assert not at.info or "unavailable" not in at.info[-1].value
    table = at.dataframe[-1].value
    assert (table.bonus >= 0).all() and (table.voters >= 0).all()
    assert any(m.value.startswith("Vote purity") for m in at.markdown)


def test_why_view_on_a_run_without_labels_shows_votes_without_purity(routes, monkeypatch) -> None:
    run = _run_id(routes, "nolabels")
    at = open_page(routes, "Query inspector", monkeypatch, run=run, query=2)
    table = at.dataframe[-1].value
    bonus = _spec_bonuses(routes.parent, 2, kg=4, kq=3, beta=0.5, n_iter=2)
    np.testing.assert_allclose(table.bonus.to_numpy(), bonus[1][table.item.to_numpy()], rtol=1e-6, atol=1e-9)
    captions = " ".join(c.value for c in at.caption)
    assert "Vote purity needs the query's class" in captions
    assert "Intruders need the query's class: this run has no labels." in captions


def _why_info(at) -> str:
    assert "Why did it move" in [h.value for h in at.subheader]
    return at.info[-1].value


def test_why_view_without_artifact_files_on_disk_says_why(routes, tmp_path, monkeypatch) -> None:
    db = tmp_path / "icfrr.duckdb"
    shutil.copy(routes, db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE artifacts SET cache_dir = ?, qg_dists_path = ?, neighbors_path = ?",
                [str(tmp_path / "gone"), str(tmp_path / "gone" / "qg_dists.parquet"),
                 str(tmp_path / "gone" / "neighbors.parquet")])
    con.close()
    at = open_page(db, "Query inspector", monkeypatch, run=_run_id(db, "feats"), query=1)
    assert _why_info(at).startswith("Vote provenance is unavailable: this run\\'s artifact files in")
    assert "re\\-run its sweep" in at.info[-1].value


def test_why_view_does_not_read_artifacts_outside_the_allowed_folders(routes, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)   # the launch folder is always allowed: make it an unrelated one
    at = open_page(routes, "Query inspector", monkeypatch, run=_run_id(routes, "feats"), query=1)
    monkeypatch.setenv("ICFRR_IMAGE_ROOTS", str(tmp_path))
    at.run()
    assert "lie outside the folders the dashboard may read" in _why_info(at)


def test_why_view_on_the_synthetic_fixture_and_a_baseline(fixture_db, monkeypatch) -> None:
    at = open_page(fixture_db, "Query inspector", monkeypatch, run=5, query=3)
    assert "the store records no artifact files" in _why_info(at)
    at = open_page(fixture_db, "Query inspector", monkeypatch, run=11, query=3)
    assert _why_info(at).startswith("Vote provenance is an ICFRR view: run #11 is a k\\-reciprocal run")
    assert not at.dataframe   # no vote table: rank movement only
    assert len(at.image[2].captions) == 10


# ------------------------------------------------------------------ confusions and signature


def _captured(monkeypatch, name: str) -> list[tuple]:
    """Record the arguments ``dashboard.charts.<name>`` is drawn with (still drawing it)."""
    calls: list[tuple] = []
    real = getattr(charts, name)

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(charts, name, spy)
    return calls


def _sql_confusions(db: Path, run: int, iteration: int, k: int) -> pd.DataFrame:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("""
            WITH ds AS (SELECT s.dataset_id FROM runs r JOIN sweeps s USING (sweep_id) WHERE r.run_id = ?),
            q AS (SELECT i.idx, i.label FROM items i, ds WHERE i.dataset_id = ds.dataset_id
                  AND i.side = 'query' AND i.label <> -1
                  AND i.idx IN (SELECT query_idx FROM rankings WHERE run_id = ? AND iteration = 0)),
            g AS (SELECT i.idx, i.label FROM items i, ds WHERE i.dataset_id = ds.dataset_id AND i.side = 'gallery'),
            n AS (SELECT label, count(*) AS n FROM q GROUP BY label),
            slots AS (SELECT rk.iteration, q.label AS ql, g.label AS gl, count(*) AS c
                      FROM rankings rk JOIN q ON q.idx = rk.query_idx JOIN g ON g.idx = rk.gallery_idx
                      WHERE rk.run_id = ? AND rk.iteration IN (0, ?) AND rk.rank <= ?
                        AND g.label <> -1 AND g.label <> q.label
                      GROUP BY ALL),
            pairs AS (SELECT DISTINCT ql, gl FROM slots)
            SELECT p.ql AS query_label, p.gl AS other_label,
                   coalesce(b.c, 0) / (n.n * ?) AS share_before, coalesce(a.c, 0) / (n.n * ?) AS share_after
            FROM pairs p JOIN n ON n.label = p.ql
            LEFT JOIN slots b ON b.ql = p.ql AND b.gl = p.gl AND b.iteration = 0
            LEFT JOIN slots a ON a.ql = p.ql AND a.gl = p.gl AND a.iteration = ?
            ORDER BY 1, 2
        """, [run, run, run, iteration, k, k, k, iteration]).df()
    finally:
        con.close()


@pytest.mark.parametrize("run", [5, 11])   # an ICFRR run and a baseline
def test_confusion_heatmap_data_is_the_sql_count_of_top_k_slots(fixture_db, monkeypatch, run) -> None:
    heat = _captured(monkeypatch, "confusion_heatmap")
    it = int(raw_tables(fixture_db)["rankings"].query("run_id == @run").iteration.max())
    at = open_page(fixture_db, "Failure cases", monkeypatch, run=run, iteration=it)
    assert [h.value for h in at.header] == ["Retrieval confusions", "Failure signature"]
    for k, shown in ((10, "after"), (3, "change")):
        heat.clear()
        at.number_input(key="confusion_k").set_value(k)
        at.radio(key="confusion_show").set_value(shown)
        at.run()
        conf, got_shown, got_k = heat[-1]
        assert (got_shown, got_k) == (shown, k)
        want = _sql_confusions(fixture_db, run, it, k)
        got = conf.sort_values(["query_label", "other_label"]).reset_index(drop=True)
        assert got.query_label.tolist() == want.query_label.tolist()
        assert got.other_label.tolist() == want.other_label.tolist()
        np.testing.assert_allclose(got.share_before, want.share_before)
        np.testing.assert_allclose(got.share_after, want.share_after)
        np.testing.assert_allclose(got.change, want.share_after - want.share_before)
    # the pair list starts with the largest change; its cases are that query class's queries
    top = want.assign(change=want.share_after - want.share_before).sort_values(
        "change", ascending=False, kind="stable").iloc[0]
    box = at.selectbox(key="confusion_pair")
    assert box.options[0].endswith(f"{top.share_before:.3f} → {top.share_after:.3f} ({top.change:+.3f})")
    assert len(box.options) == len(want)
    pair = box.value
    cases = at.dataframe[-1].value
    items = raw_tables(fixture_db)["items"]
    q_items = items[(items.dataset_id == 1) & (items.side == "query")].set_index("idx").label
    assert set(q_items[cases.query_idx]) == {pair[0]}
    assert cases.inspect.str.startswith("./inspector?").all()


def test_confusion_k_is_capped_by_the_stored_top_n(fixture_db, monkeypatch) -> None:
    raw = raw_tables(fixture_db)
    n = int(raw["rankings"].query("run_id == 5 and iteration == 0").groupby("query_idx").size().min())
    at = open_page(fixture_db, "Failure cases", monkeypatch, run=5)
    assert at.number_input(key="confusion_k").max == n
    assert at.number_input(key="confusion_k").value == min(10, n)


def test_signature_points_and_sentence_come_from_the_stored_rankings(fixture_db, monkeypatch) -> None:
    scatter = _captured(monkeypatch, "signature_scatter")
    raw = raw_tables(fixture_db)
    run, it = 5, int(raw["runs"].set_index("run_id").n_iter[5])
    kq = int(raw["runs"].set_index("run_id").kq[run])
    at = open_page(fixture_db, "Failure cases", monkeypatch, run=run, iteration=it)
    points, bins, cutoff = scatter[-1]
    assert cutoff == kq
    items = raw["items"][raw["items"].dataset_id == 1]
    lq = items[items.side == "query"].set_index("idx").label
    lg = items[items.side == "gallery"].set_index("idx").label
    rk = raw["rankings"].query("run_id == @run and iteration == 0 and rank <= @kq")
    prec = (lg[rk.gallery_idx].to_numpy() == lq[rk.query_idx].to_numpy())
    prec = pd.Series(prec, index=rk.query_idx).groupby(level=0).mean()
    qm = raw["query_metrics"].query("run_id == @run").pivot(index="query_idx", columns="iteration", values="ap")
    change = (qm[it] - qm[0]).dropna()
    got = points.set_index("query_idx").sort_index()
    assert got.index.tolist() == sorted(change.index)
    np.testing.assert_allclose(got.precision, prec[got.index])
    np.testing.assert_allclose(got.change, change[got.index])
    # the binned line: the mean change of each non-empty tenth of precision
    which = np.minimum((got.precision * 10 + 1e-9).astype(int), 9)
    want = got.change.groupby(which).mean()
    np.testing.assert_allclose(bins.mean_change, want.to_numpy())
    np.testing.assert_allclose(bins.mid, (want.index.to_numpy() + 0.5) / 10)
    sentence = at.markdown[-1].value
    assert sentence.startswith(("Queries whose initial top\\-", "No initial top\\-"))


def test_signature_on_a_baseline_says_it_is_an_icfrr_view(fixture_db, monkeypatch) -> None:
    at = open_page(fixture_db, "Failure cases", monkeypatch, run=11)
    assert at.info[-1].value.startswith("The failure signature measures ICFRR's initial top-KQ (its voters): "
                                        "run #11 is a k\\-reciprocal run")


def test_rankings_past_the_gallery_get_one_line_each(fixture_db, tmp_path, monkeypatch) -> None:
    db = tmp_path / "icfrr.duckdb"
    shutil.copy(fixture_db, db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE rankings SET gallery_idx = gallery_idx + 1000000 WHERE run_id = 5")
    con.close()
    at = open_page(db, "Failure cases", monkeypatch, run=5)
    lines = [i.value for i in at.info]
    assert lines[-2].startswith("Confusions cannot be computed for run #5: ")
    assert lines[-1].startswith("The failure signature cannot be computed for run #5: ")


def test_bench_artifact_files_make_the_why_view_replayable(fixture_db, tmp_path, monkeypatch) -> None:
    from dashboard.bench import add_artifact_files

    db = tmp_path / "icfrr.duckdb"
    shutil.copy(fixture_db, db)
    add_artifact_files(db, tmp_path, k=8)
    at = open_page(db, "Query inspector", monkeypatch, run=5, query=3)
    assert not [i.value for i in at.info if "Vote provenance" in i.value]
    assert len(at.dataframe[-1].value) == 10
    # random distances do not give the stored ranking back, and the page says so
    assert any(c.value.startswith("The replayed ranking differs from the stored top-10") for c in at.caption)
