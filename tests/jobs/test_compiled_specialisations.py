"""Each compiled function is compiled once per run, and a warm cache compiles nothing.

- numba types a variable first set to a literal (``m = 0``) as ``Literal[int](0)`` until its
  other assignments are seen, and a helper called with it is compiled for that literal too,
  then again for int64: a whole second compile of the helper on a fresh cache.
- numba keys the overloads a function calls (``np.empty``, ...) by the caller's flags; a
  helper's flags differ from a kernel's, so each overload both call was compiled twice until
  ``icfrr._compiled`` made them read alike there.
- Helpers have no disk cache of their own (``icfrr._compiled.LinkOnlyLibrary``): a kernel
  loaded from the cache must carry their code, so a warm run compiles nothing.

The children run every kernel group of ``jobs.bench --cold-start`` with their own numba cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_CHILD = """
import collections, gc, json
from jobs.bench_engine import _GROUPS, group_namespace
from numba.core import event
from numba.core.registry import CPUDispatcher
compiles = collections.Counter()  # compiles called for by the engine's own functions (numba's nesting aside)
callers = []

class Listener(event.Listener):
    def on_start(self, ev):
        callers.append(ev.data["dispatcher"].py_func.__module__)

    def on_end(self, ev):
        callers.pop()
        func = ev.data["dispatcher"].py_func
        if not callers or callers[-1].startswith("icfrr"):
            compiles[f"{func.__module__}.{func.__qualname__} {ev.data['args']}"] += 1

ns = group_namespace()
with event.install_listener("numba:compile", Listener()):
    for _, code in _GROUPS:
        exec(code, ns)
twice = {f"{d.py_func.__module__}.{d.py_func.__qualname__}": [str(s) for s in d.signatures]
         for d in gc.get_objects() if isinstance(d, CPUDispatcher) and d.py_func.__module__.startswith("icfrr")
         and len(d.signatures) > 1}
print(json.dumps({"twice": twice, "compiles": compiles}))
"""


def _child(cache) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_function_is_compiled_once_and_a_warm_cache_compiles_nothing(tmp_path) -> None:
    fresh = _child(tmp_path / "numba")
    assert fresh["twice"] == {}, f"compiled for more than one signature (a literal argument?): {fresh['twice']}"
    repeated = {name: n for name, n in fresh["compiles"].items() if n > 1}
    assert repeated == {}, f"compiled more than once for the same arguments (the callers' flags?): {repeated}"
    assert any(name.startswith("icfrr._sorting.sort_pairs") for name in fresh["compiles"])  # the listener saw them
    warm = _child(tmp_path / "numba")
    assert warm["compiles"] == {}, f"compiled again with a warm cache: {sorted(warm['compiles'])}"


def test_a_helper_called_from_python_raises_instead_of_crashing() -> None:
    """Helpers have no Python entry point; numba alone would jump into it and crash the interpreter."""
    import numpy as np
    import pytest

    from icfrr._sorting import sort_pairs

    with pytest.raises(TypeError, match="sort_pairs is compiled for compiled callers only"):
        sort_pairs(np.zeros(3, dtype=np.uint64), np.arange(3, dtype=np.int32))
