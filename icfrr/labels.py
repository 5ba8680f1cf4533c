"""Registry-driven labels of runs: a method's name, its order in tables, its parameter text.

Shared by the report (``jobs.report``), the runs listing (``jobs.runs``) and
the dashboard, so a run is named the same everywhere. Cheap to import (the
registry only: no numpy maths, no scipy, no database).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from icfrr.registry import METHOD_KEYS, METHODS, method

#: Short symbols of method parameters in the compact parameter text.
SYMBOLS: dict[str, str] = {p.name: p.label for m in METHODS for p in m.params}
#: runs.params keys that are bookkeeping, not parameters (shown for methods outside the registry):
#: the sweep's notes, and the grid value asked for before it was capped (``asked_<param>``).
BOOKKEEPING = frozenset({"method", "best_iteration", "top_n", "graph", "graph_recall_at_kg",
                         "graph_recall_sample", "knn_index", "knn_recall_at_k", "knn_recall_k",
                         "knn_recall_sample"}
                        | {f"asked_{p.name}" for m in METHODS for p in m.params})


def _fmt_value(v: object) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:g}"


def params_text(method_key: str, params: Mapping[str, object]) -> str:
    """Compact parameter text of a run, e.g. ``"KG 8, KQ 10, β 1, T 5"``.

    Registry methods show their grid parameters in registry order (a ``str``
    parameter only when it differs from its default, e.g. ``variant paper``);
    other methods every non-bookkeeping key of ``runs.params``, sorted.
    """
    try:
        grid = method(method_key).params
    except KeyError:
        names = [k for k in sorted(params) if k not in BOOKKEEPING]
        return ", ".join(f"{SYMBOLS.get(k, k)} {_fmt_value(params[k])}" for k in names)
    parts = []
    for p in grid:
        if p.name not in params or (p.kind is str and params[p.name] == p.default[0]):
            continue
        parts.append(f"{p.label} {_fmt_value(params[p.name])}")
    return ", ".join(parts)


def choice_params(method_key: str, params: Mapping[str, object], iteration: int) -> str:
    """Parameter text of a (run, iteration): an iterative method's ``n_iter`` is the iteration."""
    return params_text(method_key, {**params, "n_iter": iteration}
                       if is_iterative(method_key) else params)


def method_label(method_key: str) -> str:
    """The registry label of a method key; the key itself for a method outside the registry."""
    try:
        return method(method_key).label
    except KeyError:
        return method_key


def method_order(method_key: str) -> tuple[int, str]:
    """Sort key of methods in tables: registry order, then other keys alphabetically."""
    return ((METHOD_KEYS.index(method_key), "") if method_key in METHOD_KEYS
            else (len(METHOD_KEYS), method_key))


def is_iterative(method_key: str) -> bool:
    """Whether the registry marks the method iterative (False outside the registry)."""
    try:
        return method(method_key).iterative
    except KeyError:
        return False


@dataclass(frozen=True)
class ApproximateNeighbours:
    """The approximate neighbours a run was built on, as its ``runs.params`` record them.

    Attributes:
        what: ``"graph"`` (ICFRR's gallery graph) or ``"k-NN index"`` (k-reciprocal's and ECN's k-NN sets).
        kind: The index kind (``"ivf"``, ``"hnsw"``).
        at: Where the recall is cut: ``"@KG"``, ``"@20"``, or ``"@k"`` when k is not recorded.
        recall: Recall against exact neighbours; None when not recorded or not a finite number.
    """

    what: str
    kind: str
    at: str
    recall: float | None


def approximate_neighbours(params: Mapping[str, object]) -> ApproximateNeighbours | None:
    """What :class:`ApproximateNeighbours` a run used, or None for exact neighbours (or none recorded).

    Args:
        params: ``runs.params`` of the run; ``jobs.sweep --graph ivf|hnsw`` stores
            ``graph`` (``{"kind", "params"}``) and ``graph_recall_at_kg`` there, or
            ``knn_index`` and ``knn_recall_at_k``/``knn_recall_k`` for k-reciprocal and ECN.
            Anything malformed (from a shared store) counts as not recorded.
    """
    for key, what, recall_key in (("graph", "graph", "graph_recall_at_kg"),
                                  ("knn_index", "k-NN index", "knn_recall_at_k")):
        entry = params.get(key)
        kind = entry.get("kind") if isinstance(entry, Mapping) else None
        if isinstance(kind, str) and kind != "exact":
            k = params.get("knn_recall_k")
            at = "@KG" if key == "graph" else f"@{k}" if isinstance(k, int) and not isinstance(k, bool) else "@k"
            value = params.get(recall_key)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            return ApproximateNeighbours(what, kind, at, float(value) if finite else None)
    return None


def graph_text(params: Mapping[str, object]) -> str:
    """``"graph ivf, recall@KG 0.9300"`` for a run built on an approximate gallery graph,
    ``"k-NN index ivf, recall@20 0.9800"`` for a baseline whose k-NN sets came from an
    approximate index, else "" (see :func:`approximate_neighbours`).
    """
    found = approximate_neighbours(params)
    if found is None:
        return ""
    recall = "not measured" if found.recall is None else f"{found.recall:.4f}"
    return f"{found.what} {found.kind}, recall{found.at} {recall}"


__all__ = ["BOOKKEEPING", "SYMBOLS", "ApproximateNeighbours", "approximate_neighbours", "choice_params", "graph_text",
           "is_iterative", "method_label", "method_order", "params_text"]
