"""One configuration of a re-ranking method: its registry key and typed parameter values.

A :class:`RunConfig` is what identifies a run besides its distances: the
method key of :data:`icfrr.registry.METHODS`, a value for each of its
parameters (checked and typed by the registry's :class:`~icfrr.registry.Param`,
once, when the config is made), and the few settings that change results for
every method (``skip_unanswerable``, the identity of extra inputs). Its
:meth:`RunConfig.config_key` is the sha256 the store keys finished runs by.

This module imports neither torch nor the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from icfrr.registry import Method
from icfrr.registry import method as registry_method


def sha256_json(obj: object) -> str:
    """sha256 hex of ``obj`` as compact JSON with sorted keys (non-JSON values as ``str``)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _entry(key: str) -> Method:
    try:
        return registry_method(key)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None


@dataclass(frozen=True, init=False)
class RunConfig:
    """One configuration of a sweep: a method and its parameters.

    ``RunConfig("k_reciprocal", {"k1": 20, "k2": 6, "lambda_value": 0.3})``, or
    with the parameters as keywords: ``RunConfig(kg=8, kq=10, beta=0.5,
    n_iter=3)`` (method ``"icfrr"``, the default). Parameters not given take
    the first value of the registry's default grid.

    Attributes:
        method: Registry method key (``runs.method``).
        params: Parameter name -> typed value, in registry order.
        extra: Further entries of ``runs.params`` that do not change the results
            (e.g. ``asked_kg``, the value asked before clamping).
        inputs_key: Identity of inputs beyond the artifact (imported query-query
            distances); part of the config key when given.
        skip_unanswerable: Queries no gallery item answers are left out of the means.
    """

    method: str
    params: Mapping[str, object]
    extra: Mapping[str, object]
    inputs_key: str | None
    skip_unanswerable: bool

    def __init__(self, method: str = "icfrr", params: Mapping[str, object] | None = None, *,
                 extra: Mapping[str, object] | None = None, inputs_key: str | None = None,
                 skip_unanswerable: bool = False, **values: object) -> None:
        """Check every value against the registry (:meth:`Param.parse`) and keep it typed.

        Raises:
            ValueError: Unknown method or parameter, or a value the registry refuses.
        """
        entry = _entry(method)
        given = {**dict(params or {}), **values}
        names = [p.name for p in entry.params]
        unknown = [k for k in given if k not in names]
        if unknown:
            raise ValueError(f"{method} has no parameter {', '.join(unknown)}; its parameters: {', '.join(names)}")
        typed = {p.name: p.parse(given[p.name]) if p.name in given else p.default[0] for p in entry.params}
        self._fill(method, typed, extra, inputs_key, skip_unanswerable)

    def _fill(self, method: str, params: Mapping[str, object], extra: Mapping[str, object] | None,
              inputs_key: str | None, skip_unanswerable: bool) -> None:
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "params", dict(params))
        object.__setattr__(self, "extra", dict(extra or {}))
        object.__setattr__(self, "inputs_key", inputs_key)
        object.__setattr__(self, "skip_unanswerable", bool(skip_unanswerable))

    @classmethod
    def for_method(cls, key: str, params: Mapping[str, object], *, inputs_key: str | None = None,
                   extra: Mapping[str, object] | None = None, skip_unanswerable: bool = False) -> RunConfig:
        """A configuration that names every parameter of its method.

        Raises:
            ValueError: Unknown method, parameters missing or not the method's, or a refused value.
        """
        names = [p.name for p in _entry(key).params]
        if set(params) != set(names):
            raise ValueError(f"{key} takes exactly the parameters {', '.join(names)}, got {', '.join(params)}")
        return cls(key, params, inputs_key=inputs_key, extra=extra, skip_unanswerable=skip_unanswerable)

    @classmethod
    def parsed(cls, key: str, params: Mapping[str, object], *, inputs_key: str | None = None,
               extra: Mapping[str, object] | None = None, skip_unanswerable: bool = False) -> RunConfig:
        """A configuration from every parameter of method ``key``, each value already typed and checked
        by its :meth:`Param.parse` (the sweep's flags): nothing is checked again."""
        out = object.__new__(cls)
        out._fill(key, {p.name: params[p.name] for p in _entry(key).params}, extra, inputs_key, skip_unanswerable)
        return out

    @property
    def entry(self) -> Method:
        """The method's registry entry."""
        return registry_method(self.method)

    # read-only views of the parameters the engine and the runs columns know by name
    @property
    def n_iter(self) -> int:
        """Iterations: an iterative method's ``n_iter`` parameter, 1 for single-shot methods."""
        return int(self.params.get("n_iter", 1))  # type: ignore[call-overload]

    @property
    def kg(self) -> int | None:
        """ICFRR's KG (None for methods without it)."""
        return self.params.get("kg")  # type: ignore[return-value]

    @property
    def kq(self) -> int | None:
        """ICFRR's KQ (None for methods without it)."""
        return self.params.get("kq")  # type: ignore[return-value]

    @property
    def beta(self) -> float | None:
        """ICFRR's beta (None for methods without it)."""
        return self.params.get("beta")  # type: ignore[return-value]

    @property
    def variant(self) -> str | None:
        """ICFRR's variant (None for methods without it)."""
        return self.params.get("variant")  # type: ignore[return-value]

    def columns(self) -> dict[str, object]:
        """The parameters mirrored into ``runs`` columns (:attr:`Method.columns`) -> value."""
        return {name: self.params[name] for name in self.entry.columns}

    def with_params(self, params: Mapping[str, object], extra: Mapping[str, object] | None = None) -> RunConfig:
        """A copy with ``params`` replaced (values already typed and checked) and ``extra`` added."""
        out = object.__new__(type(self))
        out._fill(self.method, {**self.params, **params}, {**self.extra, **dict(extra or {})},
                  self.inputs_key, self.skip_unanswerable)
        return out

    def clamped(self, n_gallery: int) -> RunConfig:
        """The parameters with a gallery cap (:attr:`Param.gallery_cap`) clamped to a gallery of
        ``n_gallery`` items, the asked values kept in ``extra`` as ``asked_<name>``."""
        capped = [p for p in self.entry.params if p.gallery_cap is not None]
        return self.with_params({p.name: p.clamp(self.params[p.name], n_gallery) for p in capped},
                                {f"asked_{p.name}": self.params[p.name] for p in capped})

    def key_params(self) -> dict[str, object]:
        """The parameters that determine the results.

        The method, its iterations and its parameters; ``inputs_key`` when set
        and ``skip_unanswerable`` only when set, so runs stored before either
        existed keep their keys.
        """
        more: dict[str, object] = {} if self.inputs_key is None else {"inputs_key": self.inputs_key}
        if self.skip_unanswerable:
            more["skip_unanswerable"] = True
        return {"method": self.method, "n_iter": self.n_iter, **self.params, **more}

    def config_key(self, artifact_key: str) -> str:
        """Identity of this run on these distances: finished runs with it are skipped."""
        return sha256_json({"artifact": artifact_key, **self.key_params()})

    def params_json(self, **more: object) -> str:
        """``runs.params``: JSON text of every parameter."""
        return json.dumps({**self.key_params(), **dict(self.extra), **more}, sort_keys=True, default=str)
