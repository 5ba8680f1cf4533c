"""The real app in a real browser: `streamlit run` on a free port, every page
opened in Debian's headless Chromium through Playwright, screenshots saved
under test-artifacts/dashboard/ (or $ICFRR_SCREENSHOT_DIR: docs/img holds the README's).

Skips when Chromium (or Playwright) is missing, except under CI (env CI set),
where it must run: `.ci/run` installs Chromium first. $ICFRR_CHROMIUM names
another Chromium binary (never downloaded: Playwright's own browsers are not used).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from dashboard.bench_browser import (CHROMIUM, CHROMIUM_ARGS, ServerDidNotStart, chromium_path,
                                     serve)
from dashboard.data import NEUTRAL
from tests.dashboard.fixture_store import LEAK, SECRET, build_injected, corrupt_copies

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
#: Where the screenshots go ($ICFRR_SCREENSHOT_DIR=docs/img refreshes the README's).
ARTIFACTS = Path(os.environ.get("ICFRR_SCREENSHOT_DIR") or REPO / "test-artifacts" / "dashboard")
# Streamlit is idle: no "running" status widget, no loading skeletons, a title drawn.
IDLE = """() => !document.querySelector('[data-testid="stStatusWidget"]')
    && document.querySelectorAll('[data-testid="stSkeleton"]').length === 0
    && document.querySelector('h1') !== null"""


def _need(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(f"{reason}; install it with `apt-get install -y chromium` "
                "(and the playwright Python package) to run the browser test")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    path = chromium_path()
    _need(path is not None,
          f"Chromium is not installed at {os.environ.get('ICFRR_CHROMIUM') or CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright Python package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _serve(launch: list[str], log: Path) -> Iterator[str]:
    """`streamlit run dashboard/app.py -- <launch>` on a free port; yields its base URL."""
    try:
        with serve(launch, log) as base:
            yield base
    except ServerDidNotStart as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def server(fixture_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _serve(["--db", str(fixture_db), "--image-root", str(fixture_db.parent)],
                      tmp_path_factory.mktemp("streamlit") / "server.log")


@pytest.fixture(scope="module")
def page(browser, server) -> Iterator[object]:
    """One tab for all pages (one browser context, so Streamlit's scripts stay cached)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    tab = context.new_page()
    yield tab
    context.close()


def _settle(page, timeout_s: float = 30.0) -> None:
    """Wait until Streamlit has been idle for three polls in a row (reruns can follow)."""
    deadline, calm = time.monotonic() + timeout_s, 0
    while calm < 3:
        if time.monotonic() > deadline:
            pytest.fail(f"{page.url} did not settle in {timeout_s:g} s")
        calm = calm + 1 if page.evaluate(f"({IDLE})()") else 0
        page.wait_for_timeout(250)


def _open(page, url: str, shot: str) -> None:
    page.goto(url)
    _settle(page)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=True)


PAGES = [
    ("overview", "/?run=5", "Overview"),
    ("per_class", "/per-class?run=5", "Per class"),
    ("failures", "/failures?run=5", "Failure cases"),
    ("inspector", "/inspector?run=5&query=3", "Query inspector"),
    ("compare", "/compare?run=5", "Compare"),
]


@pytest.mark.parametrize(("shot", "path", "title"), PAGES, ids=[p[0] for p in PAGES])
def test_page_shows_title_and_no_exception(page, server, shot, path, title) -> None:
    _open(page, server + path, shot)
    assert page.locator("h1").first.inner_text().strip() == title
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stSidebarNav"]').count() == 1


def test_failure_case_link_opens_the_inspector(page, server) -> None:
    _open(page, server + "/failures?run=5", "failures_link")
    link = page.get_by_text("Inspect query", exact=False).first
    query = link.inner_text().split()[2]
    link.click()
    page.wait_for_url("**/inspector?**", timeout=30_000)
    page.get_by_role("heading", name=f"Query {query}:").wait_for(timeout=30_000)
    _settle(page)
    assert page.locator("h1").first.inner_text().strip() == "Query inspector"
    assert f"query={query}" in page.url


def test_methods_section_shows_the_table_and_its_downloads(page, server) -> None:
    _open(page, server + "/?run=11", "overview_methods")
    heading = page.get_by_role("heading", name="Methods")
    heading.scroll_into_view_if_needed()
    assert heading.count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    buttons = page.locator('[data-testid="stDownloadButton"]')
    assert [t.strip() for t in buttons.all_inner_texts()] == ["Download CSV"]
    assert "--format latex" in page.locator('[data-testid="stCode"]').first.inner_text()
    with page.expect_download() as download:
        buttons.first.locator("button").click()
    text = Path(download.value.path()).read_text()
    assert text.splitlines()[0].startswith("role,method,label,run_id")
    assert ",Initial ranking," in text and ",k-reciprocal," in text and ",DBA," in text
    assert ",holdout," in text   # the downloads carry the protocol (the default: holdout)


def _grid_rows(page, header: str) -> list[dict[str, str]]:
    """The rows the dataframe with column ``header`` shows (its accessible table: the
    columns in view), each a dict by header."""
    grid = page.locator('[data-testid="stDataFrame"]').filter(
        has=page.locator("th", has_text=header))
    heads = [h.strip() for h in grid.first.locator("th").all_inner_texts()]
    cells = [c.strip() for c in grid.first.locator("td").all_inner_texts()]
    return [dict(zip(heads, cells[i:i + len(heads)])) for i in range(0, len(cells), len(heads))]


def _choose(page, label: str, option: str, url_part: str | None = None) -> None:
    """Pick ``option`` in the selectbox ``label``; with ``url_part``, wait until the URL
    carries the choice first (on a loaded machine the rerun may not have begun when
    the first idle poll runs)."""
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).first.click()
    page.get_by_role("option", name=option).first.click()
    if url_part is not None:
        page.wait_for_url(lambda url: url_part in url, timeout=30_000)
    _settle(page)


def test_methods_protocol_switch_shows_the_store_protocol_table(page, server, fixture_db) -> None:
    from icfrr.protocols import TEST_LABEL
    from store.db import connect_reader
    from store.protocol_report import protocol_comparison

    _open(page, server + "/?run=11", "overview_protocols")
    for protocol, folds in (("test", 5), ("holdout", 5), ("cv", 3)):
        _choose(page, "Selection protocol", protocol + ":", url_part=f"protocol={protocol}")
        if protocol == "cv":   # the demo store has 3 query classes: 5 folds get a reason
            reason = page.get_by_text("Folds 5 is more than the 3 query classes")
            reason.first.wait_for(timeout=30_000)
            box = page.locator('[data-testid="stNumberInput"]').filter(has_text="Folds")
            box = box.locator("input")
            box.fill(str(folds))
            box.press("Enter")
            reason.first.wait_for(state="detached", timeout=30_000)
            _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        with connect_reader(fixture_db) as con:
            pc = protocol_comparison(con, protocol=protocol, dataset=1, backbone=1, folds=folds,
                                     seed=0)
        rows = _grid_rows(page, "95% CI")
        assert [r["method"] for r in rows] == [r.label for r in pc.rows]
        for shown, want in zip(rows, pc.rows):
            assert shown["run"] == str(want.run_id) and shown["it"] == str(want.iteration)
            assert shown["mAP@all"] == f"{want.values['map_all']:.4f}{want.mark}"
            lo, hi = want.ci
            assert shown["95% CI"] == ("n/a" if lo != lo else f"[{lo:.4f}, {hi:.4f}]")
            if protocol == "test":
                assert "optimism" not in shown
            elif want.method is not None:
                assert shown["optimism"] == f"{want.optimism:+.4f}"
        body = page.locator("body").inner_text()
        if protocol == "test":   # labelled wherever it shows
            assert f"test: {TEST_LABEL}" in body
        assert pc.split.split(";")[0] in body
        if protocol == "cv":   # the README's screenshot: the Methods section, with intervals
            page.get_by_role("heading", name="Methods").evaluate("h => h.scrollIntoView()")
            page.wait_for_timeout(500)
            box = page.locator('[data-testid="stMain"]').bounding_box()
            page.screenshot(path=str(ARTIFACTS / "methods.png"),
                            clip={"x": box["x"], "y": 0, "width": box["width"], "height": 1100})
    assert "protocol=cv" in page.url   # (the folds' URL value: tests/dashboard/test_app.py)
    heading = page.get_by_role("heading", name="ICFRR sensitivity")
    heading.scroll_into_view_if_needed()
    assert heading.count() == 1
    page.wait_for_timeout(500)
    page.screenshot(path=str(ARTIFACTS / "overview_sensitivity.png"))


def test_missing_database_page(browser, tmp_path) -> None:
    for base in _serve(["--db", str(tmp_path / "none.duckdb")], tmp_path / "server.log"):
        tab = browser.new_page()
        _open(tab, base + "/", "empty_database")
        assert tab.locator("h1").first.inner_text().strip() == "icfrr-lab dashboard"
        assert "python -m jobs.sweep --dataset demo" in tab.locator("body").inner_text()
        assert tab.locator('[data-testid="stException"]').count() == 0
        tab.close()


# --- misuse: a hostile results folder (injected and damaged stores) ---

@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A server on a results folder holding an injected store and damaged ones."""
    folder = tmp_path_factory.mktemp("hostile")
    secret_dir = tmp_path_factory.mktemp("private")
    store = build_injected(folder, secret_dir / "secret.txt")
    corrupt_copies(store, folder)
    for base in _serve(["--results-dir", str(folder), "--db", str(store)],
                       tmp_path_factory.mktemp("streamlit") / "hostile.log"):
        yield base, folder


@pytest.fixture()
def watched(browser) -> Iterator[tuple[object, list[str]]]:
    """A fresh tab that records the URL of every request it makes."""
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    tab = context.new_page()
    urls: list[str] = []
    tab.on("request", lambda r: urls.append(r.url))
    yield tab, urls
    context.close()


def _hosts(urls: list[str]) -> set[str]:
    return {urlsplit(u).netloc for u in urls if urlsplit(u).scheme in ("http", "https", "ws",
                                                                       "wss")}


@pytest.mark.parametrize(("shot", "path", "title"), PAGES, ids=[p[0] for p in PAGES])
def test_injected_store_sends_nothing_out_and_shows_no_secret(hostile, watched, shot, path,
                                                              title) -> None:
    base, _ = hostile
    tab, urls = watched
    sep = "&" if "?" in path else "?"
    _open(tab, f"{base}{path}{sep}db=injected.duckdb", f"injected_{shot}")
    assert tab.locator("h1").first.inner_text().strip() == title
    assert tab.locator('[data-testid="stException"]').count() == 0
    tab.wait_for_timeout(500)   # let any image a Markdown name asked for be requested
    assert _hosts(urls) == {urlsplit(base).netloc}, sorted(u for u in set(urls) if "localhost" not in u)
    assert SECRET not in tab.content()
    if shot != "overview":   # names from data are shown as they are (the runs table is a canvas)
        assert LEAK in tab.locator("body").inner_text()


@pytest.mark.parametrize("value", ["truncated.duckdb", "flipped.duckdb", "sqlite.duckdb",
                                   "foreign.duckdb", "/etc/passwd", "../private/secret.txt",
                                   "missing.duckdb"])
def test_damaged_or_outside_store_shows_the_one_message(hostile, watched, value) -> None:
    base, folder = hostile
    tab, _ = watched
    _open(tab, f"{base}/?db={quote(value)}", f"refused_{value.strip('./').replace('/', '_')}")
    assert tab.locator("h1").first.inner_text().strip() == "icfrr-lab dashboard"
    assert tab.locator('[data-testid="stException"]').count() == 0
    alerts = tab.locator('[data-testid="stAlertContainer"]')
    assert [a.strip() for a in alerts.all_inner_texts()] == [NEUTRAL]
    assert str(folder) not in tab.content()
