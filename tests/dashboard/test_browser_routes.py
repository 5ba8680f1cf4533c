"""Every page, for every run, in a real browser, on a store made by the README's routes
(``tests.dashboard.route_store``: features with labels, the published example cache,
features without labels), without and with class names.

Nothing may fail: no exception box, no page-failed line, never the text "None", the run
asked for in the URL is the run shown; "class N" where the store has no class names, the
names where it has them; runs without labels are listed, marked and browsable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.data import PAGE_FAILED
from store import read
from store.db import connect_reader
from tests.dashboard.route_store import CUSTOM_CLASSES, FEATS_CLASSES, build_routes, gallery_name
from tests.dashboard.test_browser import ARTIFACTS, _serve, _settle, browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = (("", "Overview"), ("per-class", "Per class"), ("failures", "Failure cases"),
         ("inspector", "Query inspector"), ("compare", "Compare"))


def _runs(db: Path) -> dict[int, str]:
    """Run id -> dataset name, read from the store."""
    with connect_reader(db) as con:
        runs = read.runs(con)
    return {int(r.run_id): str(r.dataset) for r in runs.itertuples()}


def _site(tmp_path_factory: pytest.TempPathFactory, browser, named: bool  # noqa: F811
          ) -> Iterator[tuple[object, str, dict[int, str]]]:
    folder = tmp_path_factory.mktemp("named" if named else "unnamed")
    db = build_routes(folder, named=named)
    runs = _runs(db)
    assert sorted(set(runs.values())) == ["custom", "feats", "nolabels"]
    for base in _serve(["--db", str(db)], folder / "server.log"):
        context = browser.new_context(viewport={"width": 1400, "height": 1600})
        yield context.new_page(), base, runs
        context.close()


@pytest.fixture(scope="module")
def unnamed(tmp_path_factory, browser):  # noqa: F811
    yield from _site(tmp_path_factory, browser, named=False)


@pytest.fixture(scope="module")
def named(tmp_path_factory, browser):  # noqa: F811
    yield from _site(tmp_path_factory, browser, named=True)


def _visit(tab, url: str, title: str, run_id: int, shot: str) -> str:
    """Open ``url``, check that it shows ``title`` for run ``run_id`` with nothing failed;
    return the main area's text."""
    tab.goto(url)
    _settle(tab)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"routes_{shot}.png"), full_page=True)
    assert tab.locator("h1").first.inner_text().strip() == title, url
    assert tab.locator('[data-testid="stException"]').count() == 0, url
    main = tab.locator('[data-testid="stMain"]').inner_text()
    assert PAGE_FAILED not in main, url
    assert not re.search(r"\bNone\b", main), (url, main)
    first = re.search(r"#(\d+) ", main)   # the run each page names first: the one asked for
    assert first is not None and int(first.group(1)) == run_id, (url, main)
    return main


def _class_filter(tab) -> str:
    """What the Failure cases' class filter shows as chosen."""
    box = tab.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').nth(1)
    return box.evaluate("e => e.textContent + ' ' + Array.from(e.querySelectorAll('input'))"
                        ".map(i => i.value).join(' ')")


def test_every_page_of_every_run_without_class_names(unnamed) -> None:
    tab, base, runs = unnamed
    for run_id, dataset in runs.items():
        for path, title in PAGES:
            main = _visit(tab, f"{base}/{path}?run={run_id}", title, run_id,
                          f"{dataset}_{run_id}_{path or 'overview'}")
            if dataset == "nolabels":
                if title in ("Per class", "Failure cases", "Compare"):
                    assert f"Run #{run_id} has no metrics" in main
                if title == "Overview":
                    assert "no labels" in main and f"Run #{run_id} has no metrics" in main
                if title == "Query inspector":
                    assert "without relevance marks" in main
                    assert tab.locator('[data-testid="stImage"]').count() > 1
                continue
            if title == "Per class":
                assert re.search(r"Largest (gain|loss): class \d", main), main
            if title == "Query inspector":
                assert re.search(r"Query \d+: class \d \(label \d\)", main), main
            if title == "Compare":   # the class chart has its classes
                assert re.search(r"^class \d$", main, re.M), main
    # the Failure cases' class filter names the class too
    for run_id in [r for r, d in runs.items() if d != "nolabels"]:
        _visit(tab, f"{base}/failures?run={run_id}&class=2", "Failure cases", run_id,
               f"failures_class_{run_id}")
        assert "class 2 (" in _class_filter(tab)


def test_class_names_show_on_per_class_failures_and_inspector(named) -> None:
    tab, base, runs = named
    for run_id, dataset in runs.items():
        if dataset == "nolabels":
            continue
        names = FEATS_CLASSES if dataset == "feats" else CUSTOM_CLASSES
        main = _visit(tab, f"{base}/per-class?run={run_id}", "Per class", run_id,
                      f"named_{run_id}_per_class")
        assert re.search(rf"Largest (gain|loss): ({'|'.join(names)})", main), main
        assert not re.search(r"class \d", main), main
        _visit(tab, f"{base}/failures?run={run_id}&class=2", "Failure cases", run_id,
               f"named_{run_id}_failures")
        assert f"{names[2]} (" in _class_filter(tab)
        main = _visit(tab, f"{base}/inspector?run={run_id}&query=7", "Query inspector", run_id,
                      f"named_{run_id}_inspector")
        assert re.search(rf"Query 7: {names[7 // (3 if dataset == 'feats' else 4)]} \(label \d\)",
                         main), main
        if dataset == "feats":   # names from labels.npz, no --data_root: captions
            captions = tab.locator('[data-testid="stImageCaption"]').all_inner_texts()
            assert any(gallery_name(j) in c for c in captions for j in range(32)), captions
