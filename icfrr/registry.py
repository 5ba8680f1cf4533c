"""The one place where metrics and re-ranking methods are defined (docs/SPEC.md sections 4 and 5).

Every metric the lab reports is one :class:`Metric` entry of :data:`METRICS`:
its summary key (a ``run_metrics`` column), its per-query column (a
``query_metrics`` column), its label, its cut-off and a kernel that computes
it from the positions of the relevant items. ``icfrr.metrics`` evaluates the
entries, ``store`` makes a column for each, and the sweep table, the report
and the dashboard list them from here. Adding a metric is adding an entry.

The rule that picks a run's best iteration (:func:`best_iteration`) lives here
too, so the store, the sweep and the dashboard agree on it.

Methods are built alike: each :class:`Method` of :data:`METHODS` names its
key (``runs.method``), label, paper, grid parameters (:class:`Param`, with
their command-line flags, defaults and bounds; a parameter's name is its
function's keyword), its function and what it needs, so the sweep's flags,
its checks, the way it runs and the report's rows all come from here. Adding a
method is adding an entry (and its function).

This module imports neither torch nor the database: it is cheap to import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Hits:
    """Where the relevant items sit in a chunk of rankings.

    Attributes:
        rows: int64 [H] the query row (0..n_rows-1) of each relevant hit, ascending.
        positions: int64 [H] its 0-based position in that query's ranking,
            ascending within a row.
        order: int64 [H] how many relevant items sit at or above it (1-based).
        n_rows: Number of queries in the chunk.
    """

    rows: np.ndarray
    positions: np.ndarray
    order: np.ndarray
    n_rows: int

    @classmethod
    def from_relevance(cls, rel: np.ndarray) -> Hits:
        """The hits of a boolean relevance matrix [B, G] in rank order."""
        rows, cols = np.nonzero(rel)  # row-major: each row's positions ascending
        return cls.from_positions(rows, cols, rel.shape[0])

    @classmethod
    def from_positions(cls, rows: np.ndarray, positions: np.ndarray, n_rows: int) -> Hits:
        """The hits from (row, position) pairs sorted by row, then position."""
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.asarray(positions, dtype=np.int64)
        counts = np.bincount(rows, minlength=n_rows)
        starts = np.cumsum(counts) - counts
        order = np.arange(rows.size, dtype=np.int64) - starts[rows] + 1
        return cls(rows, positions, order, n_rows)

    def count(self, keep: np.ndarray | None = None) -> np.ndarray:
        """float64 [n_rows]: hits per row (only those where ``keep``)."""
        rows = self.rows if keep is None else self.rows[keep]
        return np.bincount(rows, minlength=self.n_rows).astype(np.float64)


def average_precision(hits: Hits, cutoff: int | None = None) -> np.ndarray:
    """AP of each row, over the top ``cutoff`` positions (None: the whole ranking).

    AP = (1/R) sum over relevant positions k of (hits in 1..k) / k, R the
    relevant items inside the cut-off; 0 when R = 0.
    """
    keep = None if cutoff is None else hits.positions < cutoff
    precision = hits.order / (hits.positions + 1.0)
    rows = hits.rows if keep is None else hits.rows[keep]
    total = np.bincount(rows, weights=precision if keep is None else precision[keep],
                        minlength=hits.n_rows)
    count = hits.count(keep)
    return np.divide(total, count, out=np.zeros(hits.n_rows), where=count > 0)


def precision_at(hits: Hits, k: int) -> np.ndarray:
    """Relevant items in the top ``k`` of each row, divided by ``k``."""
    return hits.count(hits.positions < k) / k


@dataclass(frozen=True)
class Metric:
    """One reported metric.

    Attributes:
        key: Summary name: the ``run_metrics`` column and ``icfrr.evaluate`` key.
        column: Per-query name: the ``query_metrics`` column and ``icfrr.per_query`` key.
        label: Human-readable name (tables, charts).
        cutoff: Positions it looks at (None: the whole ranking).
        kernel: Hits -> float64 [n_rows], the per-query values.
        description: One line for help texts and docs.
    """

    key: str
    column: str
    label: str
    cutoff: int | None
    kernel: Callable[[Hits], np.ndarray]
    description: str


def _precision_metric(k: int) -> Metric:
    return Metric(f"p_{k}", f"p_{k}", f"P@{k}", k, lambda h: precision_at(h, k),
                  f"relevant items in the top {k}, divided by {k}")


#: Every metric, in display order. The first is the headline metric.
METRICS: tuple[Metric, ...] = (
    Metric("map_all", "ap", "mAP@all", None, lambda h: average_precision(h),
           "mean average precision over the full ranking"),
    Metric("map_200", "ap_200", "mAP@200", 200, lambda h: average_precision(h, 200),
           "mean average precision over the top 200 (R counts the relevant items there)"),
    _precision_metric(25),
    _precision_metric(100),
    _precision_metric(200),
)

#: Summary keys in display order (``run_metrics`` columns).
METRIC_KEYS: tuple[str, ...] = tuple(m.key for m in METRICS)
#: Per-query columns in display order (``query_metrics`` columns).
QUERY_COLUMNS: tuple[str, ...] = tuple(m.column for m in METRICS)
#: Summary key -> label.
LABELS: dict[str, str] = {m.key: m.label for m in METRICS}
#: The metric that picks the best iteration and the best run, and leads every table.
HEADLINE: Metric = METRICS[0]


def metric(key: str) -> Metric:
    """The registry entry of a summary key or per-query column.

    Raises:
        KeyError: With the known keys, when ``key`` is not a metric.
    """
    for m in METRICS:
        if key in (m.key, m.column):
            return m
    raise KeyError(f"unknown metric {key!r}; known: {', '.join(METRIC_KEYS)}")


def best_iteration(metrics: Sequence[Mapping[str, float]]) -> int:
    """The iteration with the highest headline metric (the earliest on ties; 0 when all NaN).

    Args:
        metrics: One summary per iteration (0 = the initial ranking).
    """
    values = [float(m[HEADLINE.key]) for m in metrics]
    finite = [(v, -i) for i, v in enumerate(values) if not math.isnan(v)]
    return -max(finite)[1] if finite else 0


# ---------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class Param:
    """One parameter of a re-ranking method, swept as a grid flag.

    Attributes:
        name: Key in ``runs.params`` and keyword of the method's function.
        flags: Command-line spellings, the first shown in help (e.g. ``("--k1",)``).
        kind: ``int``, ``float`` or ``str``.
        default: The grid swept when the flag is not given.
        minimum: Smallest allowed value (numbers only; None: no bound).
        maximum: Largest allowed value (numbers only; None: no bound).
        choices: Allowed values (``str`` parameters).
        help: One line for ``--help``.
        column: Whether it is also stored in the ``runs`` column of its name
            (ICFRR's kg, kq, beta, variant; NULL there for methods without it).
        gallery_cap: When set, values above G + ``gallery_cap`` (G the gallery
            size, known once the distances are loaded) change nothing and are
            clamped to it; the asked value is kept as ``asked_<name>`` in
            ``runs.params``.
        symbol: How tables and charts name it (``"β"``); empty: its name.
    """

    name: str
    flags: tuple[str, ...]
    kind: type
    default: tuple
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    column: bool = False
    gallery_cap: int | None = None
    symbol: str = ""

    @property
    def label(self) -> str:
        """Its display name: :attr:`symbol`, else :attr:`name`."""
        return self.symbol or self.name

    def check(self, value: object) -> str | None:
        """None when ``value`` is allowed, else a one-line reason."""
        if self.choices:
            return None if value in self.choices else f"{self.flags[0]} must be one of {', '.join(self.choices)}"
        v = float(value)  # type: ignore[arg-type]
        if not math.isfinite(v):
            return f"{self.flags[0]} values must be finite, got {value}"
        if self.minimum is not None and v < self.minimum:
            finite = "finite and " if self.kind is float else ""
            return f"{self.flags[0]} values must be {finite}>= {self.minimum:g}, got {value}"
        if self.maximum is not None and v > self.maximum:
            return f"{self.flags[0]} values must be <= {self.maximum:g}, got {value}"
        return None

    def parse(self, value: object) -> object:
        """``value`` as this parameter's kind, checked: the one validation of a parameter value.

        Raises:
            ValueError: A value that does not convert or is not allowed (:meth:`check`'s reason).
        """
        try:
            typed = self.kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.flags[0]} takes {self.kind.__name__} values, got {value!r}") from None
        problem = self.check(typed)
        if problem is not None:
            raise ValueError(problem)
        return typed

    def clamp(self, value: object, n_gallery: int) -> object:
        """``value`` clamped to G + ``gallery_cap`` (at least 1), or unchanged without a cap."""
        if self.gallery_cap is None:
            return value
        return min(value, max(n_gallery + self.gallery_cap, 1))  # type: ignore[type-var]


@dataclass(frozen=True)
class Method:
    """One re-ranking method the lab can sweep and report.

    What the sweep does with a method follows from these fields, never from its key.

    Attributes:
        key: ``runs.method`` value and ``--method`` choice.
        label: Human-readable name (tables, charts, the report).
        citation: Short reference of the paper.
        params: Its grid parameters; their names are its function's keywords.
        needs_qq: Whether it needs query-query distances.
        iterative: Whether it yields one ranking per iteration through the
            ICFRR engine (``icfrr.rerank_chunks``; its ``n_iter`` parameter) or a
            single re-ranked result from ``function`` (stored as iteration 1).
        function: Single-shot methods: the function that re-ranks, a name in
            ``icfrr.baselines`` or ``"module:function"``. Called as
            ``function(qg, gg[, qq], **params)`` (and ``fq=, fg=`` when
            ``feature_form``), returning float [Q, G] distances.
        streamed: Its form streamed by query chunks from the features
            (``streamed(fq, fg, **params, chunk_bytes=...)`` yielding (query
            slice, float [B, G] distances)), named like ``function``; "" when none.
        feature_form: Whether ``function`` takes the features (``fq=, fg=``) and
            then needs no gallery-gallery distances.
        graph_param: The parameter that says how many gallery-graph neighbours
            it reads (the graph is built for its largest value); None when it
            does not read the graph.
        batch_param: A parameter whose values run together in one pass of the
            engine (configurations that differ only in it share work exactly);
            None when each configuration runs alone.
        grid_order: The nesting of its grid, outermost parameter first (the
            order of its configurations in the sweep); empty: ``params`` order.
        explainable: Whether its votes can be replayed and shown (``icfrr.explain``)
            and the failure analysis (``jobs.report --signature``) applies: it votes
            with its initial top-KQ.
    """

    key: str
    label: str
    citation: str
    params: tuple[Param, ...]
    needs_qq: bool = False
    iterative: bool = False
    function: str = ""
    streamed: str = ""
    feature_form: bool = False
    graph_param: str | None = None
    batch_param: str | None = None
    grid_order: tuple[str, ...] = ()
    explainable: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        """Its parameters mirrored into ``runs`` columns (:attr:`Param.column`)."""
        return tuple(p.name for p in self.params if p.column)


_DBA = (Param("dba_n", ("--dba-n", "--dba_n"), int, (10,), symbol="DBA n", minimum=0,
              help="gallery neighbours averaged into each gallery item (DBA; default 10)"),
        Param("dba_alpha", ("--dba-alpha", "--dba_alpha"), float, (3.0,), symbol="DBA α", minimum=0,
              help="DBA weight exponent: weights sim^alpha (default 3)"))
_QE = (Param("qe_n", ("--qe-n", "--qe_n"), int, (10,), symbol="QE n", minimum=0,
             help="top gallery items averaged into the query (alpha-QE; default 10)"),
       Param("qe_alpha", ("--qe-alpha", "--qe_alpha"), float, (3.0,), symbol="QE α", minimum=0,
             help="alpha-QE weight exponent: weights sim^alpha (default 3)"))

#: Every method, in report order; ICFRR first.
METHODS: tuple[Method, ...] = (
    Method("icfrr", "ICFRR", "Hudson & Smith, 2023", (
        Param("kg", ("--kg", "--KG"), int, (256,), symbol="KG", minimum=1, column=True, gallery_cap=-1,
              help="gallery neighbours that vote (default 256)"),
        Param("kq", ("--kq", "--KQ"), int, (250,), symbol="KQ", minimum=1, column=True, gallery_cap=0,
              help="top items of the query's ranking whose neighbours vote (default 250)"),
        Param("beta", ("--beta",), float, (0.5,), symbol="β", minimum=0, column=True,
              help="update strength, finite and >= 0 (default 0.5)"),
        Param("n_iter", ("--n-times", "--n_times"), int, (5,), symbol="T", minimum=1, maximum=100,
              help="iterations, 1 to 100 (default 5); every iteration's metrics are stored"),
        Param("variant", ("--variant",), str, ("reference",), choices=("reference", "paper"), column=True,
              help="reference (position-based, default) or paper (accumulating)"),
    ), iterative=True, graph_param="kg", batch_param="beta", explainable=True, grid_order=("variant", "n_iter", "kg", "kq", "beta")),
    Method("k_reciprocal", "k-reciprocal", "Zhong et al., CVPR 2017", (
        Param("k1", ("--k1",), int, (20,), minimum=1, help="k-reciprocal neighbourhood size (default 20)"),
        Param("k2", ("--k2",), int, (6,), minimum=1, help="local query expansion size (default 6)"),
        Param("lambda_value", ("--lambda-value", "--lambda_value"), float, (0.3,), symbol="λ", minimum=0, maximum=1,
              help="weight of the original distance against the Jaccard distance (default 0.3)"),
    ), needs_qq=True, function="k_reciprocal", streamed="k_reciprocal_chunks"),
    Method("ecn", "ECN", "Sarfraz et al., CVPR 2018", (
        Param("t", ("--ecn-t", "--ecn_t"), int, (3,), minimum=1, help="ECN: top neighbours expanded (default 3)"),
        Param("q", ("--ecn-q", "--ecn_q"), int, (8,), minimum=1,
              help="ECN: neighbours taken from each expanded neighbour (default 8)"),
        Param("k", ("--ecn-k", "--ecn_k"), int, (25,), minimum=1, help="ECN: rank-list length (default 25)"),
    ), needs_qq=True, function="ecn", streamed="ecn_chunks"),
    Method("alpha_qe", "αQE", "Radenović, Tolias & Chum, TPAMI 2018", _QE,
           function="alpha_qe", streamed="alpha_qe_chunks", feature_form=True),
    Method("dba", "DBA", "Arandjelović & Zisserman, CVPR 2012", _DBA,
           function="dba", streamed="dba_chunks", feature_form=True),
    Method("dba+alpha_qe", "DBA + αQE", "Arandjelović & Zisserman 2012; Radenović et al. 2018", _DBA + _QE,
           function="dba_alpha_qe", streamed="dba_alpha_qe_chunks", feature_form=True),
)

#: ``--method`` choices in report order.
METHOD_KEYS: tuple[str, ...] = tuple(m.key for m in METHODS)


def method(key: str) -> Method:
    """The registry entry of a method key.

    Raises:
        KeyError: With the known keys.
    """
    for m in METHODS:
        if m.key == key:
            return m
    raise KeyError(f"unknown method {key!r}; known: {', '.join(METHOD_KEYS)}")
