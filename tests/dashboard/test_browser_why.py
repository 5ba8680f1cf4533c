"""Issue 18's views in a real browser, on a real demo sweep (``python -m jobs.sweep --dataset
demo``, small KG/KQ, plus a k-reciprocal baseline): the inspector's "why did it move", the
retrieval-confusion heatmap and the failure signature open with no exception box, and what
they say is checked against the engine (``icfrr.explain`` on the artifact files read with
DuckDB, ``icfrr.failures`` on the stored rankings). Screenshots: why.png, confusions.png,
signature.png under test-artifacts/dashboard/ ($ICFRR_SCREENSHOT_DIR=docs/img refreshes the
README's).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest

import icfrr
from dashboard.data import PAGE_FAILED
from icfrr.failures import confusions
from store import read
from store.db import connect_reader
from tests.dashboard.test_browser import ARTIFACTS, REPO, _serve, _settle, browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]
KG, KQ, BETA, T = 8, 6, 0.5, 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("whydemo")
    db = folder / "icfrr.duckdb"
    done = subprocess.run(
        [sys.executable, "-m", "jobs.sweep", "--dataset", "demo", "--data_root", str(folder / "data"),
         "--cache_root", str(folder / "cache"), "--db", str(db), "--method", "icfrr", "k_reciprocal",
         "--kg", str(KG), "--kq", str(KQ), "--beta", str(BETA), "--n-times", str(T)],
        cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return db


@pytest.fixture(scope="module")
def site(browser, demo: Path, tmp_path_factory) -> Iterator[tuple[object, str]]:  # noqa: F811
    for base in _serve(["--db", str(demo), "--image-root", str(demo.parent)],
                       tmp_path_factory.mktemp("streamlit") / "why.log"):
        context = browser.new_context(viewport={"width": 1400, "height": 2200})
        yield context.new_page(), base
        context.close()


def _open(tab, url: str) -> None:
    tab.goto(url)
    _settle(tab, 120)
    assert tab.locator('[data-testid="stException"]').count() == 0
    assert PAGE_FAILED not in tab.locator("body").inner_text()


def _shot(tab, top, bottom, name: str, extra: int = 0) -> None:
    """A screenshot from the top of ``top`` to the bottom of ``bottom`` (locators), plus ``extra``
    pixels; ``top`` is scrolled to the top of the view first (Streamlit scrolls its main block,
    not the window, so a shot holds what the view shows)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    top.evaluate("e => e.scrollIntoView({block: 'start'})")
    tab.wait_for_timeout(500)
    a, b = top.bounding_box(), bottom.bounding_box()
    main = tab.locator('[data-testid="stMain"]').bounding_box()
    view = tab.viewport_size["height"]
    y = max(a["y"] - 16, 0)
    height = min(b["y"] + b["height"] + extra + 16, view) - y
    tab.screenshot(path=str(ARTIFACTS / name),
                   clip={"x": main["x"], "y": y, "width": main["width"], "height": height})


def _icfrr_run(db: Path) -> int:
    with connect_reader(db) as con:
        runs = read.runs(con)
    return int(runs.run_id[runs.method == "icfrr"].iloc[0])


def _engine_votes(db: Path, run: int, q: int) -> list:
    """``icfrr.explain`` for query ``q`` on the run's artifact files, read here with DuckDB."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        qg, nb = con.execute(
            "SELECT a.qg_dists_path, a.neighbors_path FROM runs r JOIN sweeps s USING (sweep_id) "
            "JOIN artifacts a ON a.artifact_id = s.artifact_id WHERE r.run_id = ?", [run]).fetchone()
        row = np.array(con.execute(f"SELECT dists FROM read_parquet('{qg}') WHERE query_idx = ?",
                                   [q]).fetchone()[0], dtype=np.float32)
        nbr = con.execute(f"SELECT neighbors, distances FROM read_parquet('{nb}') ORDER BY gallery_idx").fetchall()
    finally:
        con.close()
    import torch
    graph = icfrr.NeighborGraph(torch.tensor([n for n, _ in nbr], dtype=torch.int64),
                                torch.tensor([d for _, d in nbr], dtype=torch.float32))
    return icfrr.explain(row, graph, kg=KG, kq=KQ, beta=BETA, n_iter=T)


def test_why_view_shows_the_engines_votes(site, demo) -> None:
    tab, base = site
    run = _icfrr_run(demo)
    _open(tab, f"{base}/inspector?run={run}&iteration={T}")
    q = int(re.match(r"Query (\d+):", tab.get_by_role("heading", name=re.compile(r"^Query \d+:")).first
                     .inner_text()).group(1))
    heading = tab.get_by_role("heading", name="Why did it move")
    heading.scroll_into_view_if_needed()
    steps = _engine_votes(demo, run, q)
    text = tab.locator("body").inner_text()
    found = re.search(r"Item (\d+): total bonus ([0-9.]+) in update (\d+) from (\d+) voters", text)
    assert found, text[-2000:]
    j, shown, t, n = int(found[1]), float(found[2]), int(found[3]), int(found[4])
    assert t == T
    step = steps[T - 1]
    assert shown == pytest.approx(step.amount[step.item == j].sum(), abs=5e-7)
    assert n == int((step.item == j).sum())
    assert j == int(step.ranking[0])                 # the first item of the after list
    # the purity line: each update's share of the vote mass on the query's class
    with connect_reader(demo) as con:
        items = read.dataset_items(con, run, "gallery")
        q_label = int(read.query_item(con, run, q)["label"])
    labels_g = items.set_index("idx").label.sort_index().to_numpy()
    want = " · ".join(f"{s.iteration}: {s.amount[labels_g[s.item] == q_label].sum() / s.amount.sum():.1%}"
                      for s in steps)
    assert want in text
    _shot(tab, heading, tab.get_by_text(re.compile(r"^Item \d+: total bonus")), "why.png", extra=260)


def test_confusion_heatmap_and_signature_match_the_engine(site, demo) -> None:
    tab, base = site
    run = _icfrr_run(demo)
    _open(tab, f"{base}/failures?run={run}&iteration={T}")
    heading = tab.get_by_role("heading", name="Retrieval confusions")
    heading.scroll_into_view_if_needed()
    charts = tab.locator('[data-testid="stVegaLiteChart"]')
    charts.first.wait_for(timeout=60_000)
    assert charts.count() == 2
    with connect_reader(demo) as con:
        q_idx, before = read.top_rankings(con, run, 0)
        after = read.top_rankings(con, run, T)[1]
        lq = read.dataset_items(con, run, "query").set_index("idx").label.sort_index().to_numpy()
        lg = read.dataset_items(con, run, "gallery").set_index("idx").label.sort_index().to_numpy()
    c = confusions(before, after, lq[q_idx], lg, 10)
    # the pair list's first entry: the largest share after (the heatmap's default value)
    best = np.lexsort((c.other_label, c.query_label, -c.share_after))[0]
    line = (f"{c.share_before[best]:.3f} of their top-10 slots before, {c.share_after[best]:.3f} after "
            f"({c.change[best]:+.3f})")
    caption = tab.get_by_text(line)
    assert caption.count() == 1, tab.locator("body").inner_text()[-3000:]
    _shot(tab, heading, caption, "confusions.png")

    sig = tab.get_by_role("heading", name="Failure signature")
    sig.scroll_into_view_if_needed()
    assert charts.nth(1).locator("canvas, svg").count() >= 1
    sentence = tab.get_by_text(re.compile(r"^(Queries whose initial top-|No initial top-)")).first
    assert sentence.count() == 1
    _shot(tab, sig, sentence, "signature.png")


def test_baseline_run_says_provenance_is_an_icfrr_view(site, demo) -> None:
    tab, base = site
    with connect_reader(demo) as con:
        runs = read.runs(con)
    baseline = int(runs.run_id[runs.method == "k_reciprocal"].iloc[0])
    _open(tab, f"{base}/inspector?run={baseline}&query=0")
    assert "Vote provenance is an ICFRR view" in tab.locator("body").inner_text()
