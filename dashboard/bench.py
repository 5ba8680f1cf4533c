"""Time the dashboard on a TU-Berlin-sized store: ``python -m dashboard.bench``.

Generates (once, reused when present) a synthetic store (``dashboard.synthetic``:
written by ``store.writes``, every iteration evaluated by ``icfrr.metrics`` on its
full ranking; a few minutes) of the size of the TU-Berlin zero-shot test split: 2,400 queries, 27,989 gallery photos, 30
classes, a 36-configuration grid (KG x KQ x beta), 5 iterations each, top-100
rankings kept for 3 iterations per run, tiny images on disk. Then, for every
page, it prints the time of the page's store queries on a cold connection
and of a full AppTest render, first (cold cache) and warm (median of
repeats). Nothing here is asserted; the numbers go into the README.

``--browser`` times what a user waits for instead: each page's cold and warm
load in headless Chromium, until its content has rendered, with a profile of
where a load goes (``dashboard.bench_browser``). ``--store demo`` runs either
mode on a small demo-sized store (the tests' shape, generated in seconds into
a temporary folder) instead of the TU-Berlin-sized one.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from functools import partial
from pathlib import Path

import duckdb

from dashboard.synthetic import SyntheticSpec, generate

APP = Path(__file__).resolve().parent / "app.py"
PAGES = {
    "Overview": None,
    "Per class": "views/per_class.py",
    "Failure cases": "views/failures.py",
    "Query inspector": "views/inspector.py",
    "Compare": "views/compare.py",
}

TUBERLIN = SyntheticSpec(
    name="tuberlin-sized",
    n_query=2400,
    n_gallery=27_989,
    n_classes=30,
    n_unknown=0,
    configs=tuple(("reference", kg, kq, beta) for beta, kg, kq in
                  itertools.product((0.25, 0.5, 1.0), (64, 128, 256, 512), (50, 100, 250))),
    n_iter=5,
    top_n=100,
    pool=150,
    missing=(),
    keep_iterations=(2,),
    seed=0,
)


#: The small store (the shape of the tests' fixture demo sweep): 12 queries, 30 gallery items.
DEMO = SyntheticSpec(
    name="demo",
    configs=tuple(("reference", kg, kq, beta)
                  for beta, kg, kq in itertools.product((0.5, 1.0), (4, 8), (3, 6))),
)


def build_demo(folder: Path) -> Path:
    """Generate the demo-sized store under ``folder`` (seconds)."""
    db = folder / "demo.duckdb"
    generate(db, DEMO, folder / "data")
    return db


def build(folder: Path, images: bool) -> Path:
    """Generate the benchmark store under ``folder`` unless it is already there."""
    db = folder / "bench.duckdb"
    if db.exists():
        print(f"reusing {db}")
        return db
    folder.mkdir(parents=True, exist_ok=True)
    spec = TUBERLIN if images else SyntheticSpec(**{**TUBERLIN.__dict__, "images": False})
    t = time.perf_counter()
    generate(db.with_suffix(".tmp"), spec, folder / "data" if images else None)
    db.with_suffix(".tmp").rename(db)
    print(f"generated {db} in {time.perf_counter() - t:.1f} s "
          f"({db.stat().st_size / 2**20:.0f} MiB)")
    return db


def _queries(db: Path, run_id: int, query: int, it: int, other: int
             ) -> dict[str, list[Callable[[duckdb.DuckDBPyConnection], object]]]:
    """The store.read calls each page makes (as the pages make them), each taking a connection."""
    from store import read

    return {
        "Overview": [read.has_results, read.runs, read.sweeps,
                     partial(read.metrics_by_iteration, run_ids=(run_id,)),
                     partial(read.sweep_grid, sweep_id=1)],
        "Per class": [partial(read.stored_iterations, run_id=run_id),
                      partial(read.class_before_after, run_id=run_id, iteration=it)],
        "Failure cases": [partial(read.classes, run_id=run_id),
                          partial(read.query_changes, run_id=run_id, iteration=it),
                          partial(read.dataset_root, run_id=run_id)],
        "Query inspector": [partial(read.n_queries, run_id=run_id),
                            partial(read.query_item, run_id=run_id, query_idx=query),
                            partial(read.query_metrics_by_iteration, run_id=run_id,
                                    query_idx=query),
                            partial(read.query_topn, run_id=run_id, query_idx=query,
                                    iteration=it)],
        "Compare": [partial(read.paired_ap, run_a=run_id, iteration_a=it, run_b=other,
                            iteration_b=it)],
    }


def time_queries(db: Path, calls: list[Callable[[duckdb.DuckDBPyConnection], object]]) -> float:
    """Seconds to run ``calls`` on one fresh read-only connection."""
    from store.db import connect_reader

    t = time.perf_counter()
    with closing(connect_reader(db)) as con:
        for call in calls:
            call(con)
    return time.perf_counter() - t


def time_page(db: Path, title: str, params: dict[str, str], repeats: int) -> tuple[float, float]:
    """(first, median warm) seconds of a full AppTest render of one page."""
    from streamlit.testing.v1 import AppTest

    os.environ["ICFRR_DB"] = str(db)
    at = AppTest.from_file(str(APP), default_timeout=600)
    at.query_params.update(params)
    at.run()
    if PAGES[title]:
        at.switch_page(PAGES[title])
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(f"{title}: {at.exception[0].value}")
    warm = []
    for _ in range(repeats):
        t = time.perf_counter()
        at.run()
        warm.append(time.perf_counter() - t)
    return first, statistics.median(warm)


def page_state(db: Path) -> tuple[dict[str, str], int, str]:
    """The URL state every page is timed with (the run that gains most, its last
    iteration, its first changed query), another run for Compare, and a summary line."""
    from store import read
    from store.db import connect_reader

    with closing(connect_reader(db)) as con:
        runs = read.runs(con)
        run_id = int(runs.loc[runs.map_all_gain.idxmax(), "run_id"])
        it = int(runs.set_index("run_id").loc[run_id, "last_iteration"])
        query = int(read.query_changes(con, run_id, it).query_idx.iloc[0])
        n_rank = con.execute("SELECT count(*) FROM rankings").fetchone()[0]
    other = int(runs.run_id[runs.run_id != run_id].iloc[0])
    params = {"run": str(run_id), "iteration": str(it), "query": str(query)}
    return params, other, f"{len(runs)} runs, {n_rank:,} ranking rows; page state: {params}"


def _machine() -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average {load}, Python {sys.version.split()[0]}")


def browser_main(db: Path, image_root: Path, repeats: int, workdir: Path,
                 timeout_s: float = 60.0,
                 pages: tuple[tuple[str, str], ...] | None = None) -> int:
    """Time every page in headless Chromium; print the table and the profile.
    Returns 1 when a page failed to render, else 0."""
    from dashboard import bench_browser

    params, _, summary = page_state(db)
    print(summary)
    print(_machine())
    print(f"cold: first load in a fresh server and browser context; warm: median of "
          f"{repeats} reloads; until the page's content has rendered")
    results, records = bench_browser.measure_pages(
        ["--db", str(db), "--image-root", str(image_root)], params, workdir, repeats,
        pages=pages or bench_browser.PAGES, timeout_s=timeout_s)
    print()
    return 1 if bench_browser.report(results, records) else 0


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the store, time every page, print a table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path("results/bench-dashboard"),
                   help="where the benchmark store and images go (reused when present)")
    p.add_argument("--store", choices=("tuberlin", "demo"), default="tuberlin",
                   help="the TU-Berlin-sized store under --dir (default) or a demo-sized one "
                        "generated into a temporary folder")
    p.add_argument("--no-images", action="store_true", help="items without image files")
    p.add_argument("--repeats", type=int, default=5, help="warm renders (reloads) per page")
    p.add_argument("--browser", action="store_true",
                   help="time page loads in headless Chromium (cold and warm) with a profile")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds a page may take to render before it counts as failed "
                        "(--browser)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="icfrr-bench-") as tmp:
        if args.store == "demo":
            db = build_demo(Path(tmp))
        else:
            db = build(args.dir, not args.no_images)
        if args.browser:
            return browser_main(db, db.parent, args.repeats, Path(tmp) / "browser",
                                args.timeout)
        return _apptest_main(db, args.repeats)


def _apptest_main(db: Path, repeats: int) -> int:
    """Store queries and AppTest renders of every page; print a table."""
    params, other, summary = page_state(db)
    run_id, it, query = int(params["run"]), int(params["iteration"]), int(params["query"])
    print(summary)
    print(_machine())

    rows = []
    for title in PAGES:
        q = time_queries(db, _queries(db, run_id, query, it, other)[title])
        first, warm = time_page(db, title, params, repeats)
        rows.append((title, q, first, warm))
    print()
    print("| page | store queries, cold (ms) | first render (ms) | warm render, median (ms) |")
    print("|---|---:|---:|---:|")
    for title, q, first, warm in rows:
        print(f"| {title} | {q * 1e3:.0f} | {first * 1e3:.0f} | {warm * 1e3:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
