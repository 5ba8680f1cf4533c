"""Small text formatters shared by the pages (pure functions)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from icfrr.labels import approximate_neighbours, params_text
from icfrr.registry import HEADLINE, LABELS
from store.read import after_column, before_column, best_column, gain_column, registered

#: Display names of the metric columns.
METRIC_NAMES = LABELS
#: The headline metric's key (``icfrr.registry.HEADLINE``): the methods table's column, and
#: its columns of ``store.read.runs``: before, after, gain (after - before) and at the best iteration.
HEAD = HEADLINE.key
BEFORE, AFTER = before_column(HEADLINE), after_column(HEADLINE)
GAIN, BEST = gain_column(HEADLINE), best_column(HEADLINE)


_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character
_BREAKS = re.compile(r"[\r\n\t\v\f\u2028\u2029\x85]+")


def plain(text: object) -> str:
    """``text`` escaped so that Streamlit's Markdown shows it literally, on one line.

    For every name that comes from data (class, dataset and file names,
    commands) placed into an element that renders Markdown (``st.markdown``,
    ``st.caption``, headers, alerts, image captions, link and widget labels):
    every ASCII punctuation character gets a backslash (so no link, image,
    emphasis, HTML, math or directive can form) and line breaks become spaces.
    Plain-text places (selectbox options, table cells, chart labels) take the
    name as it is.
    """
    return _MD_PUNCT.sub(r"\\\1", _BREAKS.sub(" ", str(text)))


#: Names from data longer than this are cut for display (the whole text goes in a tooltip).
NAME_LIMIT = 200


def short(text: object, limit: int = NAME_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis when longer.

    For names from data (class, item and dataset names) shown in the page;
    pass it through :func:`plain` as well where Markdown renders.
    """
    one = _BREAKS.sub(" ", str(text))
    return one if len(one) <= limit else one[: limit - 1] + "…"


def class_label(name: object, label: object) -> str:
    """How a class is shown: its name (cut by :func:`short`), else ``"class N"``
    (``"unknown class"`` for label -1); never ``"None"``."""
    if isinstance(name, str) and name.strip():
        return short(name)
    if _missing(label):
        return "unknown class"
    return "unknown class" if int(label) == -1 else f"class {int(label)}"


def _missing(x: object) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def movement(side: str, rank_before: object, rank_after: object) -> str:
    """How an item moved between the two stored top-N lists.

    Args:
        side: ``'after'`` (describe where the item came from) or ``'before'``
            (describe where it went).
        rank_before: Its 1-based rank before, missing when outside the stored top-N.
        rank_after: Its 1-based rank after, missing when outside the stored top-N.

    Returns:
        ``"up 14"``, ``"down 3"``, ``"same"``, ``"new"`` (an item of the
        after list that was not in the stored top-N before) or ``"dropped"``
        (an item of the before list that left the stored top-N).
    """
    if side == "after" and _missing(rank_before):
        return "new"
    if side == "before" and _missing(rank_after):
        return "dropped"
    if _missing(rank_before) or _missing(rank_after):
        raise ValueError(f"the item's own rank on side {side!r} is missing")
    d = int(rank_before) - int(rank_after)
    return f"up {d}" if d > 0 else f"down {-d}" if d < 0 else "same"


def method_label(key: object) -> str:
    """The registry label of a method key (``"k_reciprocal"`` -> ``"k-reciprocal"``),
    the key itself for a method outside the registry."""
    entry = registered(key)
    return str(key) if entry is None else entry.label


def _scalar(value: object) -> bool:
    return isinstance(value, (str, int, float, np.generic)) and not pd.isna(value)


def _stored_params(row: object) -> dict[str, object]:
    """A row's ``runs.params`` JSON text as a dict ({} when missing or unreadable)."""
    try:
        params = json.loads(getattr(row, "params", None) or "{}")
    except (TypeError, ValueError):
        return {}
    return params if isinstance(params, dict) else {}


def run_params(row: object) -> dict[str, object]:
    """A run's parameters: ``runs.params`` (JSON text; unreadable -> none), completed from the
    row's own columns (ICFRR's kg, kq, beta, n_iter and variant) for every registry parameter
    of its method that the JSON lacks and the row holds (not NULL)."""
    params = _stored_params(row)
    entry = registered(getattr(row, "method", None))
    for p in entry.params if entry is not None else ():
        value = getattr(row, p.name, None)
        if p.name not in params and _scalar(value):
            params[p.name] = value
    return params


def graph_text(row: object) -> str:
    """How a run's gallery graph is named when it is approximate (``runs.params`` records
    ``graph.kind`` and ``graph_recall_at_kg``, written by ``jobs.sweep --graph``):
    ``"graph: ivf, recall@KG 0.9312"``; for k-reciprocal and ECN, whose k-NN sets came from an
    approximate index (``knn_index``, ``knn_recall_at_k``), ``"k-NN index: ivf, recall@20 0.9800"``;
    ``""`` for an exact graph or none recorded.

    Args:
        row: A row of ``store.read.runs`` (its ``params`` JSON text).
    """
    found = approximate_neighbours(_stored_params(row))
    if found is None:
        return ""
    recall = "n/a" if found.recall is None else f"{found.recall:.4f}"
    return f"{found.what}: {short(found.kind, 40)}, recall{found.at} {recall}"


def run_label(row: object) -> str:
    """One line naming a run, any method, NULL parameters left out:
    ``#3 demo · ICFRR · KG 8, KQ 6, β 0.5, T 4`` or ``#11 demo · k-reciprocal · k1 20, k2 6, λ 0.3``;
    a run on an approximate gallery graph adds ``· graph: ivf, recall@KG 0.9312``
    (:func:`graph_text`), a run without metrics ends with ``· no labels``, and a long
    dataset name is cut.

    Args:
        row: A row of ``store.read.runs`` (run_id, dataset, method, params and
            the ICFRR columns).
    """
    label, text = method_and_params(row)
    graph = graph_text(row)
    return (f"#{row.run_id} {short(row.dataset, 60)} · {label}" + (f" · {text}" if text else "")
            + (f" · {graph}" if graph else "") + ("" if has_metrics(row) else f" · {NO_LABELS}"))


#: How a run without metrics (its dataset has no labels) is marked.
NO_LABELS = "no labels"
#: The one-line reason a view that needs metrics gives for such a run (``.format(run=ID)``).
NO_METRICS = ("Run #{run} has no metrics: its dataset has no labels, so it has rankings only "
              "(see them in the Query inspector). Sweep with --labels to get metrics.")


def has_metrics(row: object) -> bool:
    """Whether a run (a row of ``store.read.runs``) has metrics: its initial ranking's
    headline metric (mAP@all) is known. Runs of a dataset without labels have rankings only."""
    return not _missing(getattr(row, BEFORE, 0.0))


def method_and_params(row: object) -> tuple[str, str]:
    """A run's method label and compact parameter text (``icfrr.labels.params_text``):
    ``("k-reciprocal", "k1 20, k2 6, λ 0.3")``."""
    return method_label(row.method), params_text(str(row.method), run_params(row))


def p_value(p: float) -> str:
    """A p-value for display: ``"n/a"`` when undefined, scientific when tiny."""
    if _missing(p):
        return "n/a"
    return f"{p:.2e}" if p < 1e-4 else f"{p:.4f}"


def signed(x: float, digits: int = 4) -> str:
    """A difference with its sign: ``+0.0123`` / ``-0.0040``."""
    return "n/a" if _missing(x) else f"{x:+.{digits}f}"
