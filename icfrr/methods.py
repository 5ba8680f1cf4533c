"""One call for every single-shot re-ranking method of the registry (the baselines).

:func:`apply_method` takes a method key of :data:`icfrr.registry.METHODS`, the
inputs (:class:`MethodInputs`) and the registry's parameters, and calls the
method's function (:attr:`icfrr.registry.Method.function`, by default in
``icfrr.baselines``) with them as keywords: a parameter's name is its keyword. The
gallery-gallery and query-query matrices are large ([G, G] is 3.1 GB at the
TU-Berlin size), so the inputs hold callables that load them on first use: a
method that does not need one never loads it.

ICFRR is iterative and runs through :func:`icfrr.iter_rerank` instead.
:func:`ranking_from_distances` turns a method's distances into a ranking with the
engine's order (ascending, ties by gallery index).
"""

from __future__ import annotations

import importlib
import inspect
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icfrr.chunks import CHUNK_BYTES
from icfrr.registry import Method, method

Loader = Callable[[], np.ndarray]


@dataclass
class MethodInputs:
    """What a method may read: query-gallery distances, and the rest on demand.

    Attributes:
        qg: float [Q, G] query-gallery distances, smaller = closer; None when they are
            only computed per chunk from the features (the methods then stream).
        gg: Loads float [G, G] gallery-gallery distances (called at most once).
        qq: Loads float [Q, Q] query-query distances (called at most once); None
            when none exist (methods that need them then refuse).
        fq: float [Q, D] L2-normalised query features, None for imported distances.
        fg: float [G, D] L2-normalised gallery features, None for imported distances.
        neighbours: Rank lists from an approximate index (``icfrr.ann.item_neighbours``) for the
            streamed k-reciprocal and ECN; None: they rank every item's full row (exact).
    """

    qg: np.ndarray | None
    gg: Loader | None = None
    qq: Loader | None = None
    fq: np.ndarray | None = None
    fg: np.ndarray | None = None
    neighbours: Callable[[Any, int], np.ndarray] | None = None
    _loaded: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _per_chunk: Any = field(default=None, repr=False)   # FeatureDistances, made on first use

    @property
    def shape(self) -> tuple[int, int]:
        """(Q, G)."""
        if self.qg is not None:
            return tuple(self.qg.shape)
        if self.fq is None or self.fg is None:
            raise ValueError("inputs without query-gallery distances need both sides' features")
        return (int(self.fq.shape[0]), int(self.fg.shape[0]))

    def query_rows(self, rows: slice) -> np.ndarray:
        """float [B, G] query-gallery distances of the queries ``rows`` (from the features when qg is None)."""
        if self.qg is not None:
            return self.qg[rows]
        if self._per_chunk is None:
            from icfrr.neighbors import FeatureDistances

            self._per_chunk = FeatureDistances(self.fq, self.fg)
        return self._per_chunk(rows).cpu().numpy()

    @property
    def has_features(self) -> bool:
        """Whether both sides' features are present."""
        return self.fq is not None and self.fg is not None

    def load(self, name: str) -> np.ndarray:
        """``"gg"`` [G, G] or ``"qq"`` [Q, Q], loaded once and kept, shape-checked.

        Raises:
            ValueError: No loader for it, or the loaded matrix has the wrong shape.
        """
        if name not in self._loaded:
            loader = {"gg": self.gg, "qq": self.qq}[name]
            if loader is None:
                raise ValueError(f"no {name} distances were given")
            n = self.shape[1] if name == "gg" else self.shape[0]
            matrix = loader()
            if tuple(matrix.shape) != (n, n):
                raise ValueError(f"{name} distances are {list(matrix.shape)}, expected [{n}, {n}]")
            self._loaded[name] = matrix
        return self._loaded[name]

    def release(self) -> None:
        """Forget the loaded gg/qq matrices (they are loaded again when needed)."""
        self._loaded.clear()


#: Where functions named without a module live (imported on first use, so ``icfrr`` stays light).
BASELINES_PACKAGE = "icfrr.baselines"


def baseline_function(name: str) -> Callable[..., Any]:
    """The function ``name`` of ``icfrr.baselines`` (exported by the package or its module ``name``),
    or of another module when written ``"module:function"`` (a :attr:`Method.function`)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    package = importlib.import_module(BASELINES_PACKAGE)
    found = getattr(package, name, None)
    if found is None:
        found = importlib.import_module(f"{BASELINES_PACKAGE}.{name}")
    if isinstance(found, types.ModuleType):
        found = getattr(found, name)
    return found


def method_keywords(key: str, params: Mapping[str, object]) -> dict[str, object]:
    """The registry parameters of method ``key`` (its function's keywords), typed and checked.

    Missing parameters take the first value of the registry's default grid.

    Raises:
        ValueError: ICFRR or an unknown method, an unknown parameter, or a value
            outside the registry's bounds.
    """
    entry = _entry(key)
    unknown = sorted(set(params) - {p.name for p in entry.params})
    if unknown:
        raise ValueError(f"{key} has no parameter {', '.join(unknown)}; "
                         f"its parameters: {', '.join(p.name for p in entry.params)}")
    return {p.name: p.parse(params[p.name]) if p.name in params else p.default[0] for p in entry.params}


def _entry(key: str) -> Method:
    try:
        entry = method(key)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    if entry.iterative or not entry.function:
        raise ValueError(f"{key} is not a single-shot method; ICFRR runs through icfrr.iter_rerank")
    return entry


def needs(key: str, inputs: MethodInputs) -> tuple[str, ...]:
    """Which of ``"gg"``/``"qq"`` method ``key`` will load from these inputs."""
    entry = _entry(key)
    wanted = () if entry.feature_form and inputs.has_features else ("gg",)
    return wanted + (("qq",) if entry.needs_qq else ())


def apply_method(key: str, inputs: MethodInputs, params: Mapping[str, object]) -> np.ndarray:
    """Re-ranked query-gallery distances of one baseline configuration.

    Args:
        key: A registry method key other than ``"icfrr"`` (e.g. ``"k_reciprocal"``).
        inputs: The distances (and features) to re-rank.
        params: Registry parameter name -> value (e.g. ``{"k1": 20, "k2": 6,
            "lambda_value": 0.3}``); missing ones take the registry default.

    Returns:
        float [Q, G] numpy distances, smaller = closer.

    Raises:
        ValueError: Bad key, parameters or inputs, or a result of the wrong shape.
    """
    keywords = method_keywords(key, params)
    if inputs.qg is None:
        raise ValueError(f"no whole [Q, G] distances to re-rank with {key}: run it by query chunks (method_chunks)")
    entry = _entry(key)
    fn = baseline_function(entry.function)
    wanted = needs(key, inputs)
    gg = inputs.load("gg") if "gg" in wanted else None
    if entry.needs_qq:
        out = fn(inputs.qg, gg, inputs.load("qq"), **keywords)
    elif entry.feature_form and inputs.has_features:
        out = fn(inputs.qg, gg, fq=inputs.fq, fg=inputs.fg, **keywords)
    else:
        out = fn(inputs.qg, gg, **keywords)
    out = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
    if out.shape != inputs.qg.shape:
        raise ValueError(f"{key} returned distances of shape {list(out.shape)}, "
                         f"expected {list(inputs.qg.shape)}")
    return out


def can_stream(key: str, inputs: MethodInputs) -> bool:
    """Whether method ``key`` has a form streamed by query chunks and these inputs have its features."""
    return bool(_entry(key).streamed) and inputs.has_features


def streams(key: str, inputs: MethodInputs, max_dense_bytes: int | None = None) -> bool:
    """Whether method ``key`` runs by query chunks on these inputs.

    It does when there are no whole query-gallery distances, or when its float32
    [Q, G] result would exceed ``max_dense_bytes`` (None: no limit) and it can
    stream (:func:`can_stream`).

    Raises:
        ValueError: It must stream (no whole distances) but cannot.
    """
    if inputs.qg is None:
        if not can_stream(key, inputs):
            raise ValueError(f"{key} has no form streamed from features; it needs the whole [Q, G] distances")
        return True
    n_query, n_gallery = inputs.shape
    return max_dense_bytes is not None and 4 * n_query * n_gallery > max_dense_bytes and can_stream(key, inputs)


def method_chunks(
    key: str, inputs: MethodInputs, params: Mapping[str, object], *, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[slice, np.ndarray]]:
    """Re-ranked distances of one baseline configuration, one chunk of queries at a time, from features.

    Args:
        key: A registry method key with a streamed form (:func:`can_stream`).
        inputs: Inputs with both sides' features (qg is not read).
        params: As in :func:`apply_method`.
        chunk_bytes: Bytes a chunk's temporaries may use.

    Returns:
        An iterator of (query slice, float [B, G] numpy distances), in query order.

    Raises:
        ValueError: Bad key or parameters, a method without a streamed form, or no features.
    """
    keywords = method_keywords(key, params)
    if not can_stream(key, inputs):
        raise ValueError(f"{key} cannot run by query chunks here: it needs its streamed form and the features")
    fn = baseline_function(_entry(key).streamed)
    if inputs.neighbours is not None and reads_item_neighbours(key):
        keywords["neighbours"] = inputs.neighbours   # k-NN sets from the sweep's graph index
    return fn(inputs.fq, inputs.fg, **keywords, chunk_bytes=chunk_bytes)


def reads_item_neighbours(key: str) -> bool:
    """Whether method ``key``'s streamed form takes its k-NN sets from an index (a ``neighbours``
    keyword, :attr:`MethodInputs.neighbours`): k-reciprocal and ECN; False without a streamed form."""
    name = _entry(key).streamed
    return bool(name) and "neighbours" in inspect.signature(baseline_function(name)).parameters


def ranking_from_distances(d: np.ndarray, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Each row's gallery indices by ascending distance, ties by index (the engine's order).

    float32 rows go through the engine's radix sort; other dtypes are sorted
    stably in their own precision (no rounding that could merge near-ties).

    Args:
        d: float [Q, G] distances, smaller = closer.
        chunk: Rows sorted at once.

    Returns:
        (ranking int64 [Q, G], the sorted distances [Q, G] in ``d``'s dtype).

    Raises:
        ValueError: ``d`` is not 2-D or holds NaN.
    """
    from icfrr._sorting import stable_argsort_rows   # numba: compiled on first use

    d = np.asarray(d)
    if d.ndim != 2:
        raise ValueError(f"distances must be [Q, G], got shape {list(d.shape)}")
    ranking = np.empty(d.shape, dtype=np.int64)
    values = np.empty(d.shape, dtype=d.dtype)
    for start in range(0, d.shape[0], max(1, chunk)):
        rows = d[start:start + chunk]
        if np.isnan(rows).any():
            raise ValueError("distances hold NaN; a ranking needs comparable values")
        if rows.dtype == np.float32:
            ranking[start:start + chunk], values[start:start + chunk] = stable_argsort_rows(rows)
        else:
            order = np.argsort(rows, axis=1, kind="stable")
            ranking[start:start + chunk] = order
            values[start:start + chunk] = np.take_along_axis(rows, order, axis=1)
    return ranking, values
