"""Every store read of the dashboard: one typed, cached function per read.

Each function takes the store (:class:`dashboard.data.Db`) and the read's own
arguments, and returns what the ``store.read`` (or ``store.protocol_report``) function
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
import numpy as np
import pandas as pd
import streamlit as st

from dashboard.data import Db, store_problem
from dashboard.format import class_label
from icfrr import failures
from icfrr.stats import PairedComparison, compare_paired
from store import protocol_report, read
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
def protocol_comparison(db: Db, dataset_id: int, artifact_id: int, protocol: str,
                        baseline: str | None, test: str, tune_fraction: float, folds: int,
                        seed: int) -> protocol_report.ProtocolComparison:
    """The methods table under a selection protocol, with 95% class-bootstrap intervals
    (``store.protocol_report.protocol_comparison``).

    Raises:
        store.report.ReportError: One line: no labels, fewer than 2 query classes, more
            folds than classes, a fraction that leaves a side empty, an unknown baseline.
    """
    return _read(db, protocol_report.protocol_comparison, protocol=protocol, dataset=dataset_id,
                 backbone=artifact_id, baseline=baseline, test=test,
                 tune_fraction=tune_fraction, folds=folds, seed=seed)


@st.cache_data(show_spinner=False, max_entries=64)
def grid_scores(db: Db, dataset_id: int, artifact_id: int, reported_classes: tuple[int, ...],
                method_key: str) -> pd.DataFrame:
    """A method's every stored configuration and its mAP@all on the reported classes'
    queries (``store.protocol_report.grid_scores``)."""
    return _read(db, protocol_report.grid_scores, dataset_id=dataset_id, artifact_id=artifact_id,
                 reported_classes=reported_classes, method_key=method_key)


@st.cache_data(**_CACHE)
def run_row(db: Db, run_id: int) -> dict | None:
    """One run's method and ICFRR parameters, any status (``store.read.run_info``)."""
    return _read(db, read.run_info, run_id)


@st.cache_data(**_CACHE)
def artifact_files(db: Db, run_id: int) -> dict | None:
    """Where the distances a run re-ranked are kept (``store.read.artifact_files``); untrusted paths."""
    return _read(db, read.artifact_files, run_id)


@st.cache_data(**_CACHE)
def dataset_items(db: Db, run_id: int, side: str) -> pd.DataFrame:
    """The query or gallery items of a run's dataset (``store.read.dataset_items``), named."""
    return _named(_read(db, read.dataset_items, run_id, side))


@st.cache_data(**_CACHE)
def top_rankings(db: Db, run_id: int, iteration: int) -> tuple[np.ndarray, np.ndarray]:
    """Every query's stored top-N at one iteration (``store.read.top_rankings``)."""
    return _read(db, read.top_rankings, run_id, iteration)


def item_labels(items: pd.DataFrame) -> np.ndarray:
    """int64 [N] labels by idx (-1 where the store lists no item)."""
    full = np.full(int(items.idx.max()) + 1 if len(items) else 0, -1, dtype=np.int64)
    full[items.idx.to_numpy()] = items.label.to_numpy()
    return full


@st.cache_data(show_spinner=False, max_entries=64)
def confusions(db: Db, run_id: int, iteration: int, k: int) -> pd.DataFrame:
    """Top-``k`` retrieval confusions of a run, iteration 0 against ``iteration``
    (``icfrr.failures.confusions`` on ``store.read.top_rankings``), named.

    Returns:
        query_label, query_class, other_label, other_class, n_queries, share_before,
        share_after, change: one row per pair with a slot on either side.

    Raises:
        ValueError: ``k`` above the stored top-N, or rankings that do not fit the items.
    """
    q_idx, before = top_rankings(db, run_id, 0)
    q_after, after = top_rankings(db, run_id, iteration)
    if not np.array_equal(q_idx, q_after):
        raise ValueError(f"run {run_id} stores rankings of other queries at iterations 0 and {iteration}")
    items_q, items_g = dataset_items(db, run_id, "query"), dataset_items(db, run_id, "gallery")
    c = failures.confusions(before, after, item_labels(items_q)[q_idx], item_labels(items_g), k)
    names = dict(zip(items_g.label, items_g.class_name)) | dict(zip(items_q.label, items_q.class_name))
    return pd.DataFrame({
        "query_label": c.query_label, "query_class": [names[int(v)] for v in c.query_label],
        "other_label": c.other_label, "other_class": [names[int(v)] for v in c.other_label],
        "n_queries": c.n_queries, "share_before": c.share_before, "share_after": c.share_after,
        "change": c.change})


@st.cache_data(show_spinner=False, max_entries=64)
def failure_signature(db: Db, run_id: int, iteration: int, kq: int
                      ) -> tuple[failures.FailureSignature, pd.DataFrame]:
    """Initial top-KQ precision against AP change of a run (``icfrr.failures.failure_signature``
    on ``store.read.top_rankings`` and ``query_changes``).

    Returns:
        (the signature, one row per query it used: query_idx, label, class_name,
        precision, change).
    """
    q_idx, before = top_rankings(db, run_id, 0)
    items_q, items_g = dataset_items(db, run_id, "query"), dataset_items(db, run_id, "gallery")
    changes = query_changes(db, run_id, iteration).set_index("query_idx")
    ap_b = changes.ap_before.reindex(q_idx).to_numpy(np.float64)
    ap_a = changes.ap_after.reindex(q_idx).to_numpy(np.float64)
    s = failures.failure_signature(before, item_labels(items_q)[q_idx], item_labels(items_g), ap_b, ap_a, kq=kq)
    used = q_idx[s.queries]
    named = items_q.set_index("idx").loc[used]
    return s, pd.DataFrame({"query_idx": used, "label": named.label.to_numpy(),
                            "class_name": named.class_name.to_numpy(),
                            "precision": s.precision, "change": s.change})


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
