"""Every store read of the dashboard: one typed, cached function per read.

Each function takes the store (:class:`dashboard.data.Db`) and the read's own
arguments, and returns what the ``store.read`` (or ``store.report``) function
of the same name returns. Under ``st.cache_data`` the cache key is every
argument, and ``Db`` carries the store file's (and its write-ahead log's)
change time and size: a finished sweep changes them, so it shows on the next
rerun, while an unchanged store is read once.

Each call that misses the cache opens a read-only connection
(``store.db.connect_reader``, locked down, retrying briefly while a sweep
writes), runs one read and closes the connection again, so the dashboard never
holds a running sweep up. Any DuckDB failure becomes a :class:`StoreError`,
which the pages show as the one ``NEUTRAL`` message.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

import duckdb
import pandas as pd
import streamlit as st

from dashboard.data import Db, store_problem
from dashboard.format import class_label
from icfrr.stats import PairedComparison, compare_paired
from store import read, report
from store.db import StoreError, connect_reader

P = ParamSpec("P")
R = TypeVar("R")
_CACHE = {"show_spinner": False, "max_entries": 512}


def _read(db: Db, fn: Callable[Concatenate[duckdb.DuckDBPyConnection, P], R],
          *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(con, *args, **kwargs)`` on a fresh reader of ``db``; DuckDB failures -> StoreError."""
    try:
        with closing(connect_reader(db.path)) as con:
            return fn(con, *args, **kwargs)
    except duckdb.Error as exc:  # e.g. a block found damaged half-way through a query
        raise StoreError(f"cannot read {db.path}: {(str(exc).splitlines() or [''])[0]}") from None


def _named(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every class_name shown as :func:`dashboard.format.class_label` makes it
    ("class N" where the store has no name): no page ever shows a missing name."""
    if "class_name" in df.columns and "label" in df.columns:
        df = df.assign(class_name=[class_label(n, v) for n, v in zip(df.class_name, df.label)])
    return df


@st.cache_data(**_CACHE)
def has_results(db: Db) -> bool:
    """Whether the store holds a finished run (``store.read.has_results``)."""
    return _read(db, read.has_results)


@st.cache_data(**_CACHE)
def runs(db: Db) -> pd.DataFrame:
    """Every finished run with its parameters and metrics (``store.read.runs``)."""
    return _read(db, read.runs)


@st.cache_data(**_CACHE)
def sweeps(db: Db) -> pd.DataFrame:
    """Every sweep, newest first (``store.read.sweeps``)."""
    return _read(db, read.sweeps)


@st.cache_data(**_CACHE)
def sweep_grid(db: Db, sweep_id: int) -> pd.DataFrame:
    """A sweep's configurations and gains (``store.read.sweep_grid``)."""
    return _read(db, read.sweep_grid, sweep_id)


@st.cache_data(**_CACHE)
def metrics_by_iteration(db: Db, run_ids: tuple[int, ...]) -> pd.DataFrame:
    """Every iteration's metrics of the runs (``store.read.metrics_by_iteration``)."""
    return _read(db, read.metrics_by_iteration, run_ids)


@st.cache_data(**_CACHE)
def stored_iterations(db: Db, run_id: int) -> list[int]:
    """Iterations of a run whose per-query results were kept (``store.read.stored_iterations``)."""
    return _read(db, read.stored_iterations, run_id)


@st.cache_data(**_CACHE)
def dataset_root(db: Db, run_id: int) -> str | None:
    """The dataset root the store records for a run (``store.read.dataset_root``).

    Untrusted: thumbnails read under it only when the operator allows it
    (``dashboard.data.image_roots``).
    """
    return _read(db, read.dataset_root, run_id)


@st.cache_data(**_CACHE)
def classes(db: Db, run_id: int) -> pd.DataFrame:
    """The known query classes of a run's dataset (``store.read.classes``), named."""
    return _named(_read(db, read.classes, run_id))


@st.cache_data(**_CACHE)
def class_before_after(db: Db, run_id: int, iteration: int) -> pd.DataFrame:
    """Per-class mAP before and after (``store.read.class_before_after``), named."""
    return _named(_read(db, read.class_before_after, run_id, iteration))


@st.cache_data(**_CACHE)
def query_changes(db: Db, run_id: int, iteration: int, label: int | None = None) -> pd.DataFrame:
    """Queries ranked by AP change, largest loss first (``store.read.query_changes``), named."""
    return _named(_read(db, read.query_changes, run_id, iteration, label=label))


@st.cache_data(**_CACHE)
def query_item(db: Db, run_id: int, query_idx: int) -> dict | None:
    """One query's label, class and path, or None (``store.read.query_item``), named;
    ``full_class_name`` keeps the stored name uncut (None when there is none)."""
    item = _read(db, read.query_item, run_id, query_idx)
    return None if item is None else item | {"class_name": class_label(item["class_name"], item["label"]),
                                             "full_class_name": item["class_name"]}


@st.cache_data(**_CACHE)
def n_queries(db: Db, run_id: int) -> int:
    """Number of queries of a run's dataset (``store.read.n_queries``)."""
    return _read(db, read.n_queries, run_id)


@st.cache_data(**_CACHE)
def query_metrics_by_iteration(db: Db, run_id: int, query_idx: int) -> pd.DataFrame:
    """One query's per-iteration metrics (``store.read.query_metrics_by_iteration``)."""
    return _read(db, read.query_metrics_by_iteration, run_id, query_idx)


@st.cache_data(**_CACHE)
def query_topn(db: Db, run_id: int, query_idx: int, iteration: int, top_n: int,
               baseline_iteration: int = 0) -> pd.DataFrame:
    """One query's top ``top_n`` at ``baseline_iteration`` and ``iteration``
    (``store.read.query_topn``), named."""
    return _named(_read(db, read.query_topn, run_id, query_idx, iteration,
                        baseline_iteration=baseline_iteration, top_n=top_n))


@st.cache_data(show_spinner=False, max_entries=64)
def compare(db: Db, a: tuple[int, int], b: tuple[int, int]
            ) -> tuple[pd.DataFrame, PairedComparison]:
    """Per-query AP of (run, iteration) ``a`` against ``b`` (``store.read.paired_ap``)
    and their paired statistics (``icfrr.stats.compare_paired``)."""
    pairs = _named(_read(db, read.paired_ap, a[0], a[1], b[0], b[1]))
    return pairs, compare_paired(pairs.ap_a.to_numpy(), pairs.ap_b.to_numpy())


@st.cache_data(show_spinner=False, max_entries=64)
def comparison(db: Db, dataset_id: int, artifact_id: int, baseline: str | int | None,
               test: str) -> report.Comparison:
    """The methods comparison table of one dataset's distances (``store.report.comparison``).

    Raises:
        store.report.ReportError: E.g. a baseline that has no runs there.
    """
    return _read(db, report.comparison, dataset=dataset_id, backbone=artifact_id,
                 baseline=baseline, test=test)


def probe(db: Db) -> str | None:
    """Why ``db`` cannot be shown, None when it can.

    A missing file or a store without finished runs gets a "nothing yet"
    reason (the page then shows how to make one); anything else that stops
    the read gets ``NEUTRAL``.
    """
    if not Path(db.path).exists():
        return "there is no results database yet."
    try:
        if not has_results(db):
            return "the database holds no finished runs yet."
    except StoreError as exc:
        return store_problem(exc)
    return None
