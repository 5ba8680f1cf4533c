"""``python -m dashboard.bench --browser`` on the demo-sized store, one reload per page:
every page is loaded in headless Chromium until its content has rendered and gets a
row with a cold and a warm time, and a page that does not render is reported as failed,
not timed. No time is asserted beyond being positive (the machine may be busy)."""

from __future__ import annotations

import re

import pytest

from dashboard import bench, bench_browser
from tests.dashboard.test_browser import _need

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOWHERE = ("no-such-page", "Nowhere")


def test_browser_bench_times_every_page_and_reports_a_failed_one(tmp_path, capsys) -> None:
    _need(bench_browser.chromium_path() is not None, "Chromium is not installed")
    pytest.importorskip("playwright")
    db = bench.build_demo(tmp_path / "store")
    status = bench.browser_main(db, db.parent, 1, tmp_path / "browser",
                                pages=(*bench_browser.PAGES, NOWHERE))
    out = capsys.readouterr().out
    assert status == 1, out   # the page that does not exist failed
    table, profile = out.split("profile of a load")
    rows = {m[1]: (m[2], m[3]) for m in re.finditer(r"^\| ([^|]+) \| ([^|]+) \| ([^|]+) \|$",
                                                        table, re.M)}
    assert set(rows) == {"page", *(t for _, t in bench_browser.PAGES), "Nowhere"}, out
    for _, title in bench_browser.PAGES:
        cold, warm = (float(x) for x in rows[title])
        assert cold > 0 and warm > 0, out
    assert rows["Nowhere"][0].startswith("failed: "), out
    # the profile: every rendered page, its script runs seen by the server's timing hook
    prof = {m[1]: m[2] for m in re.finditer(r"^\| ([^|]+) \| (\d+) \(\d+\) \|", profile, re.M)}
    assert set(prof) == {t for _, t in bench_browser.PAGES}, out
    assert all(int(n) >= 1 for n in prof.values()), out
    overview = re.search(r"^\| Overview \|.*$", profile, re.M)[0].split("|")
    charts = overview[7].strip()   # the rows each of its charts sent: the heatmap's are there
    assert charts != "-" and max(int(n) for n in charts.split(", ")) > 0, out
