"""How the engine's compiled functions are declared (numba, cached on disk, releasing the GIL).

- :data:`kernel`: called from Python (the row kernels ``on_row_slices`` runs on threads).
- :func:`helper`: called only from other compiled code. It gets no Python entry point
  and no C-callable wrapper: each costs compile time on a fresh cache (together about
  0.2-0.3 s of a first configuration, ``python -m jobs.bench --cold-start --repeat 5``),
  and nothing calls them from outside. Called from Python, a helper raises
  ``TypeError`` (without the guard numba would jump into the missing entry point and
  crash the interpreter); tests reach helpers through a compiled shim.
"""

from __future__ import annotations

from collections.abc import Callable

from numba import config, njit
from numba.core.registry import CPUDispatcher

kernel = njit(cache=True, nogil=True)


class HelperDispatcher(CPUDispatcher):
    """A numba dispatcher for a function compiled without a Python entry point: calls from
    compiled code work as for any ``njit`` function, calls from Python raise ``TypeError``."""

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self.py_func.__module__}.{self.py_func.__qualname__} is compiled for compiled "
                        "callers only (no Python entry point); call it from a kernel")


def helper(fn: Callable) -> HelperDispatcher | Callable:
    """Compile ``fn`` (lazily, cached on disk, releasing the GIL) for compiled callers only."""
    if config.DISABLE_JIT:
        return fn
    dispatcher = HelperDispatcher(py_func=fn, locals={}, targetoptions={
        "nopython": True, "nogil": True, "no_cpython_wrapper": True, "no_cfunc_wrapper": True})
    dispatcher.enable_caching()
    return dispatcher
