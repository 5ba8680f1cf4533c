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

Issue 18's views are timed on their own too: the inspector's "why did it move"
(which replays the votes from the run's artifact files: the bench writes
random TU-Berlin-sized ``qg_dists.parquet`` and ``neighbors.parquet`` files,
``add_artifact_files``, once) and the confusion heatmap, each as its reads and
computation on a cold connection and as the full page render.
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


def add_artifact_files(db: Path, folder: Path, k: int = 512, seed: int = 0) -> None:
    """Give the store's first artifact random distance and graph files (unless it has them).

    The votes replayed from them do not reproduce the stored rankings (the
    inspector says so); their sizes are a TU-Berlin run's, which is what the
    timing needs.
    """
    import numpy as np

    from store.parquet_rows import write_rows

    con = duckdb.connect(str(db))
    try:
        aid, key, path, n_q, n_g = con.execute(
            "SELECT a.artifact_id, a.cache_key, a.neighbors_path, d.n_query, d.n_gallery FROM artifacts a "
            "JOIN datasets d USING (dataset_id) ORDER BY a.artifact_id LIMIT 1").fetchone()
        if path and Path(path).is_file():
            return
        out = folder / "artifacts"
        out.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        k = min(k, n_g - 1)
        qg = rng.uniform(0.5, 1.5, size=(n_q, n_g)).astype(np.float32)
        write_rows(out / "qg_dists.parquet", "query_idx", {"dists": qg}, {"kind": "qg_dists", "cache_key": key})
        del qg
        nbr = (np.arange(n_g)[:, None] + 1 + rng.integers(0, n_g - 1, size=(n_g, k))) % n_g   # never itself
        dist = np.sort(rng.uniform(0.1, 1.0, size=(n_g, k)).astype(np.float32), axis=1)
        write_rows(out / "neighbors.parquet", "gallery_idx", {"neighbors": nbr.astype(np.int32), "distances": dist},
                   {"kind": "neighbors", "cache_key": key, "k": k})
        con.execute("UPDATE artifacts SET cache_dir = ?, qg_dists_path = ?, neighbors_path = ?, neighbors_k = ? "
                    "WHERE artifact_id = ?", [str(out), str(out / "qg_dists.parquet"),
                                              str(out / "neighbors.parquet"), k, aid])
    finally:
        con.close()


def time_why(db: Path, run_id: int, query: int) -> float:
    """Seconds for the why-view's cold work: the run's reads, one query's distances, the graph,
    ``icfrr.explain``."""
    from icfrr import explain
    from store import artifacts, read
    from store.db import connect_reader

    t = time.perf_counter()
    with closing(connect_reader(db)) as con:
        info, files = read.run_info(con, run_id), read.artifact_files(con, run_id)
        read.dataset_items(con, run_id, "gallery")
    graph = artifacts.read_graph(files["neighbors_path"], files["cache_key"])
    row = artifacts.read_query_distances(files, query)
    explain(row, graph, kg=int(info["kg"]), kq=int(info["kq"]), beta=float(info["beta"]),
            n_iter=int(info["n_iter"]), variant=str(info["variant"]))
    return time.perf_counter() - t


def time_confusions(db: Path, run_id: int, it: int, k: int = 10) -> float:
    """Seconds for the confusion heatmap's cold work: the stored rankings, the items, ``confusions``."""
    from icfrr.failures import confusions
    from store import read
    from store.db import connect_reader

    t = time.perf_counter()
    with closing(connect_reader(db)) as con:
        q_idx, before = read.top_rankings(con, run_id, 0)
        after = read.top_rankings(con, run_id, it)[1]
        items = {s: read.dataset_items(con, run_id, s).set_index("idx").label.sort_index().to_numpy()
                 for s in ("query", "gallery")}
    confusions(before, after, items["query"][q_idx], items["gallery"], k)
    return time.perf_counter() - t


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
    from icfrr.registry import HEADLINE
    from store import read
    from store.db import connect_reader

    with closing(connect_reader(db)) as con:
        runs = read.runs(con)
        run_id = int(runs.loc[runs[read.gain_column(HEADLINE)].idxmax(), "run_id"])
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
        add_artifact_files(db, db.parent)
        if args.browser:
            return browser_main(db, db.parent, args.repeats, Path(tmp) / "browser",
                                args.timeout)
        return _apptest_main(db, args.repeats)


def _apptest_main(db: Path, repeats: int) -> int:
    """Store queries and AppTest renders of every page; print a table."""
    params, other, summary = page_state(db)
    run_id, it, query = int(params["run"]), int(params["iteration"]), int(params["query"])
    from store import read
    from store.db import connect_reader

    with closing(connect_reader(db)) as con:
        runs = read.runs(con)
        n_query = read.n_queries(con, run_id)
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
    print()
    print("| issue 18 view | reads and computation, cold (ms) |")
    print("|---|---:|")
    n_iter = int(runs.set_index("run_id").n_iter[run_id])
    first = time_why(db, run_id, query)   # in a fresh process this includes loading the compiled kernel
    print(f"| why did it move (one query, {n_iter} updates), first call | {first * 1e3:.0f} |")
    print(f"| why did it move, another query | {time_why(db, run_id, (query + 1) % n_query) * 1e3:.0f} |")
    print(f"| confusion heatmap (k 10) | {time_confusions(db, run_id, it) * 1e3:.0f} |")
    print("(the Query inspector and Failure cases rows above include these views)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
