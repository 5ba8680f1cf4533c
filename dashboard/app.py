"""icfrr-lab evaluation dashboard: ``streamlit run dashboard/app.py -- --db results/icfrr.duckdb``.

The entry point draws the shared sidebar (database, run), routes to one page
module under ``dashboard/views/`` and keeps the selection in the URL. The
launch store is ``--db`` after ``--``, else $ICFRR_DB, else ``icfrr.duckdb`` in
the results folder, else ``results/icfrr.duckdb``. The URL's ``db`` and the
sidebar choose only among the DuckDB files of the results folder
(``--results-dir DIR`` or $ICFRR_RESULTS_DIR, else the launch store's
folder); anything else, and any store that cannot be read, shows one neutral
message (``dashboard.data.NEUTRAL``); a page that fails on what a store holds
shows one neutral line (``dashboard.data.PAGE_FAILED``) and logs the traceback
on the server; ``--debug`` after ``--`` shows tracebacks in the page instead
(``client.showErrorDetails`` is off otherwise, here and in
``.streamlit/config.toml``). Stores are only ever read, through locked-down connections (``store.db.connect_reader``), by the typed cached
reads of ``dashboard.queries``. Thumbnails read images only under the launch
working directory and the folders given with ``--image-root DIR``
(repeatable) or $ICFRR_IMAGE_ROOTS (``os.pathsep``-separated); a dataset root
a store records anywhere else shows placeholders.

The page modules live in ``views/``, not ``pages/``: Streamlit treats a
``pages/`` folder beside the entry point as the old automatic multipage mode
(the entry point is then skipped for those pages), which fights ``st.navigation``.
"""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, _ROOT)

import logging  # noqa: E402

import streamlit as st  # noqa: E402

from dashboard import sidebar, state  # noqa: E402
from dashboard.data import (NEUTRAL, PAGE_FAILED, StoreError, debug_from_args,  # noqa: E402
                            store_problem)

_log = logging.getLogger("icfrr.dashboard")

# No page icons: Streamlit turns a page's ":material/...:" icon into the tab's favicon,
# fetched from fonts.gstatic.com, and the dashboard requests nothing from other hosts.
PAGES = (
    ("views/overview.py", "Overview", "overview"),
    ("views/per_class.py", "Per class", "per-class"),
    ("views/failures.py", "Failure cases", "failures"),
    ("views/inspector.py", "Query inspector", "inspector"),
    ("views/compare.py", "Compare", "compare"),
)


def _not_shown() -> None:
    st.title("icfrr-lab dashboard")
    st.warning(NEUTRAL)


def _getting_started(db_path: str, problem: str) -> None:
    st.title("icfrr-lab dashboard")
    st.info(f"Nothing to show yet: {problem}")
    st.markdown("Run a sweep to fill the database, for example on the built-in demo data:")
    st.code(f"python -m jobs.sweep --dataset demo --db {db_path}", language="bash")
    st.markdown("then open the dashboard on it (or just reload this page):")
    st.code(f"streamlit run dashboard/app.py -- --db {db_path}", language="bash")


def main() -> None:
    """Route one rerun of the app."""
    st.set_page_config(page_title="icfrr-lab", layout="wide")
    debug = debug_from_args()
    st.set_option("client.showErrorDetails", "full" if debug else "none")
    state.adopt_url()
    db, ctx, problem = sidebar.render()
    try:
        if ctx is None and (db is None or problem == NEUTRAL):
            page = st.navigation([st.Page(_not_shown, title="Not shown", url_path="start",
                                          default=True)])
        elif ctx is None:
            page = st.navigation([st.Page(lambda: _getting_started(db.path, problem),
                                          title="Getting started", url_path="start",
                                          default=True)])
        else:
            page = st.navigation([st.Page(path, title=title, url_path=url, default=i == 0)
                                  for i, (path, title, url) in enumerate(PAGES)])
        try:
            page.run()
        except StoreError as exc:  # damaged mid-way, or a sweep held it past the retries
            st.warning(store_problem(exc))
        except Exception:  # a store holding what no page expects: one line here, details in the log
            if debug:
                raise
            _log.exception("page %s failed", getattr(page, "url_path", "?"))
            st.warning(PAGE_FAILED)
    finally:
        state.write_url()


main()
