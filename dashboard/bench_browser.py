"""Page loads in a real browser: ``python -m dashboard.bench --browser``.

Launches ``streamlit run dashboard/app.py`` on a free port (``serve``, the launch
the browser tests use too) and opens each page in Debian's headless Chromium
through Playwright (no browser download). A load counts as done when the page's
content has rendered (``READY``): its own title, no "running" indicator, no
loading skeletons, every chart drawn and every image in the main area decoded,
and it stayed that way for a short quiet window (reruns can follow a load). A
page that shows an exception box or the page-failed line, stays on another
page's title, or never gets there, is reported as failed, not timed.

- cold: the first load of the page in a fresh server process (nothing cached:
  imports, Streamlit's caches, connections) and a fresh browser context (empty
  HTTP cache);
- warm: the median of N reloads of the same page in that context.

The server runs under a timing hook (``python -m dashboard.bench_browser
--serve``): every script run's wall time and the rows each chart or table
serialised for the browser go to a JSON-lines log, read back into the profile
printed with the table (script time against the time before the first run:
HTML, JavaScript, websocket, and after the last: drawing; and the payload
sent, counted in the browser).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "dashboard" / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update"]
#: (URL path, title) of every page, as ``dashboard/app.py`` routes them.
PAGES = (("", "Overview"), ("per-class", "Per class"), ("failures", "Failure cases"),
         ("inspector", "Query inspector"), ("compare", "Compare"))

# 'failed' (an exception box or the page-failed line), true when the page's content is
# drawn, 'other' when Streamlit is idle on another page's title, else false.
# Argument: [title, page-failed line].
READY = """([title, failedLine]) => {
    const main = document.querySelector('[data-testid="stMain"]');
    if (document.querySelector('[data-testid="stException"]')) return 'failed';
    if (main && failedLine && main.innerText.includes(failedLine)) return 'failed';
    if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
    if (document.querySelectorAll('[data-testid="stSkeleton"]').length) return false;
    const h1 = document.querySelector('h1');
    if (!main || !h1) return false;
    if (h1.innerText.trim() !== title) return 'other';
    for (const c of main.querySelectorAll('[data-testid="stVegaLiteChart"]'))
        if (!c.querySelector('canvas, svg')) return false;
    for (const img of main.querySelectorAll('img'))
        if (!img.complete) return false;
    return true;
}"""


#: Seconds an idle page may show another page's title before the load counts as failed.
OTHER_S = 3.0


class ServerDidNotStart(RuntimeError):
    """``streamlit run`` exited or did not answer its health check in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(launch: list[str], log: Path, *, timing_log: Path | None = None,
          timeout_s: float = 60.0) -> Iterator[str]:
    """``streamlit run dashboard/app.py -- <launch>`` on a free port; yields its base URL.

    With ``timing_log`` the server runs under this module's timing hook, which
    appends a JSON line per script run and per serialised chart or table there.
    """
    port = free_port()
    if timing_log is None:
        cmd = [sys.executable, "-m", "streamlit"]
        env = None
    else:
        cmd = [sys.executable, "-m", "dashboard.bench_browser", "--serve"]
        env = os.environ | {"ICFRR_BENCH_TIMING": str(timing_log),
                            "PYTHONPATH": os.pathsep.join(
                                [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd += ["run", str(APP), "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--", *launch]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerDidNotStart(f"streamlit did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def chromium_path() -> str | None:
    """$ICFRR_CHROMIUM, else Debian's Chromium, else ``chromium`` on the PATH (or None)."""
    wanted = os.environ.get("ICFRR_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).is_file() else None
    return CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")


# --- the timing hook, inside the server process ---

def _install_hooks(path: Path) -> None:
    """Log each script run (start, seconds) and each Arrow payload (element, rows, bytes)."""
    import threading

    import pyarrow as pa
    from streamlit import dataframe_util
    from streamlit.runtime.scriptrunner import script_runner

    lock = threading.Lock()

    def write(record: dict) -> None:
        with lock, open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    run_script = script_runner.ScriptRunner._run_script

    def timed_run_script(self, rerun_data):  # noqa: ANN001, ANN202
        t0 = time.time()
        try:
            return run_script(self, rerun_data)
        finally:
            write({"kind": "run", "start": t0, "seconds": time.time() - t0})

    depth = threading.local()

    def counted(convert):  # noqa: ANN001, ANN202 - the outermost conversion of a payload counts
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            outer = not getattr(depth, "n", 0)
            depth.n = getattr(depth, "n", 0) + 1
            try:
                data = convert(*args, **kwargs)
            finally:
                depth.n -= 1
            if outer:
                caller = Path(sys._getframe(1).f_code.co_filename).stem
                try:
                    rows = pa.ipc.open_stream(data).read_all().num_rows
                except Exception:  # noqa: BLE001 - a count we cannot read shows as -1
                    rows = -1
                write({"kind": "arrow", "at": time.time(),
                       "element": "chart" if caller == "vega_charts" else "table",
                       "rows": rows, "bytes": len(data)})
            return data
        return wrapper

    for name in ("convert_anything_to_arrow_bytes", "convert_arrow_table_to_arrow_bytes",
                 "convert_pandas_df_to_arrow_bytes"):
        setattr(dataframe_util, name, counted(getattr(dataframe_util, name)))
    script_runner.ScriptRunner._run_script = timed_run_script


def _serve_main(argv: list[str]) -> int:
    """``python -m dashboard.bench_browser --serve run app.py ...``: streamlit, timed."""
    _install_hooks(Path(os.environ["ICFRR_BENCH_TIMING"]))
    from streamlit.web import cli

    sys.argv = ["streamlit", *argv]
    return cli.main()


# --- the browser side ---

@dataclass
class Load:
    """One page load: wall seconds until ready (None when it failed), and what it cost."""
    start: float
    seconds: float | None
    failed: str | None = None
    ws_bytes: int = 0


@dataclass
class PageResult:
    title: str
    url: str
    cold: Load | None = None
    warm: list[Load] = field(default_factory=list)

    @property
    def failed(self) -> str | None:
        for load in [self.cold, *self.warm]:
            if load is not None and load.failed:
                return load.failed
        return None


def _load(tab, url: str, title: str, timeout_s: float, quiet_s: float,
          reload: bool = False) -> Load:
    """Open (or reload) ``url`` and wait until ``READY`` holds through ``quiet_s`` seconds."""
    from dashboard.data import PAGE_FAILED

    received = [0]

    def on_ws(ws) -> None:  # noqa: ANN001
        ws.on("framereceived", lambda payload: received.__setitem__(
            0, received[0] + len(payload)))

    tab.on("websocket", on_ws)
    t0 = time.time()
    start = time.perf_counter()
    try:
        if reload:
            tab.reload(wait_until="commit")
        else:
            tab.goto(url, wait_until="commit")
        deadline = start + timeout_s
        ready_at = other_at = None
        while True:
            state = tab.evaluate(f"({READY})", [title, PAGE_FAILED])
            now = time.perf_counter()
            if state == "failed":
                return Load(t0, None, "exception or page-failed line shown", received[0])
            if state is True:
                ready_at = ready_at or now
                if now - ready_at >= quiet_s:
                    return Load(t0, ready_at - start, None, received[0])
            else:
                ready_at = None
            if state == "other":
                other_at = other_at or now
                if now - other_at >= OTHER_S:
                    return Load(t0, None, "another page shown", received[0])
            else:
                other_at = None
            if now > deadline:
                return Load(t0, None, f"not rendered in {timeout_s:g} s", received[0])
            tab.wait_for_timeout(20)
    finally:
        tab.remove_listener("websocket", on_ws)


def measure_pages(launch: list[str], params: dict[str, str], workdir: Path, repeats: int, *,
                  pages: tuple[tuple[str, str], ...] = PAGES, timeout_s: float = 60.0,
                  quiet_s: float = 0.5) -> tuple[list[PageResult], list[dict]]:
    """Cold and warm loads of every page; the results and the timing hook's records."""
    from urllib.parse import urlencode

    from playwright.sync_api import sync_playwright

    path = chromium_path()
    if path is None:
        raise RuntimeError("Chromium is not installed (apt-get install -y chromium, or set "
                           "$ICFRR_CHROMIUM)")
    workdir.mkdir(parents=True, exist_ok=True)
    timing = workdir / "timing.jsonl"
    timing.unlink(missing_ok=True)
    results = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            for url_path, title in pages:
                log = workdir / f"server-{url_path or 'overview'}.log"
                with serve(launch, log, timing_log=timing) as base:
                    url = f"{base}/{url_path}?{urlencode(params)}"
                    res = PageResult(title, url)
                    context = browser.new_context(viewport={"width": 1400, "height": 1600})
                    try:
                        tab = context.new_page()
                        res.cold = _load(tab, url, title, timeout_s, quiet_s)
                        if res.cold.failed is None:
                            for _ in range(repeats):
                                res.warm.append(_load(tab, url, title, timeout_s, quiet_s,
                                                      reload=True))
                                if res.warm[-1].failed:
                                    break
                    finally:
                        context.close()
                results.append(res)
        finally:
            browser.close()
    records = [json.loads(line) for line in timing.read_text().splitlines()] \
        if timing.exists() else []
    return results, records


def _within(records: list[dict], kind: str, load: Load, key: str) -> list[dict]:
    end = load.start + (load.seconds or 0.0) + 0.05
    return [r for r in records if r["kind"] == kind and load.start - 0.05 <= r[key] <= end]


def report(results: list[PageResult], records: list[dict], out=None) -> int:  # noqa: ANN001
    """Print the table and the profile; the number of pages that failed."""
    out = out or sys.stdout
    w = out.write
    w("| page | cold (s) | warm, median (s) |\n|---|---:|---:|\n")
    failed = 0
    for r in results:
        if r.failed:
            failed += 1
            w(f"| {r.title} | failed: {r.failed} | failed |\n")
            continue
        warm = statistics.median(x.seconds for x in r.warm) if r.warm else float("nan")
        w(f"| {r.title} | {r.cold.seconds:.2f} | {warm:.2f} |\n")
    w("\nprofile of a load (medians over the warm loads; cold in brackets): script runs and "
      "their seconds inside Streamlit (timing hook in the server); before the first run "
      "(HTML, JavaScript, websocket) and after the last (drawing in the browser); bytes "
      "received on the websocket; rows serialised per chart and per table\n")
    w("| page | script runs | script (s) | before (s) | after (s) | websocket (KiB) | "
      "chart rows | table rows |\n|---|---:|---:|---:|---:|---:|---|---|\n")
    for r in results:
        if r.failed:
            continue
        per = []
        for load in [r.cold, *r.warm]:
            runs = _within(records, "run", load, "start")
            arrow = _within(records, "arrow", load, "at")
            script = sum(x["seconds"] for x in runs)
            before = (min(x["start"] for x in runs) - load.start) if runs else float("nan")
            after = (load.start + load.seconds - max(x["start"] + x["seconds"] for x in runs)
                     if runs else float("nan"))
            per.append((len(runs), script, before, after, load.ws_bytes / 1024,
                        [a["rows"] for a in arrow if a["element"] == "chart"],
                        [a["rows"] for a in arrow if a["element"] != "chart"]))
        cold, warm = per[0], per[1:] or per[:1]

        def med(i: int) -> float:
            return statistics.median(x[i] for x in warm)

        last = warm[-1]
        w(f"| {r.title} | {med(0):.0f} ({cold[0]}) | {med(1):.2f} ({cold[1]:.2f}) | "
          f"{med(2):.2f} ({cold[2]:.2f}) | {med(3):.2f} ({cold[3]:.2f}) | "
          f"{med(4):.0f} ({cold[4]:.0f}) | "
          f"{', '.join(map(str, last[5])) or '-'} | {', '.join(map(str, last[6])) or '-'} |\n")
    return failed


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        raise SystemExit(_serve_main(sys.argv[2:]))
    raise SystemExit("usage: python -m dashboard.bench --browser (this module's --serve is "
                     "the timed server it launches)")
