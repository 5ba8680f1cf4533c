"""Each compiled kernel is compiled once per run: no second specialisation for a literal argument.

numba types a variable first set to a literal (``m = 0``) as ``Literal[int](0)`` until its
other assignments are seen, and a helper called with it is compiled for that literal too,
then again for int64: a whole second compile of the helper on a fresh cache. This runs every
kernel group of ``jobs.bench --cold-start`` in a child process with an empty numba cache and
lists the compiled functions that ended up with more than one signature.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_CHILD = """
import gc, json
from jobs.bench_engine import _GROUPS, group_namespace
from numba.core.registry import CPUDispatcher
ns = group_namespace()
for _, code in _GROUPS:
    exec(code, ns)
twice = {f"{d.py_func.__module__}.{d.py_func.__qualname__}": [str(s) for s in d.signatures]
         for d in gc.get_objects() if isinstance(d, CPUDispatcher) and d.py_func.__module__.startswith("icfrr")
         and len(d.signatures) > 1}
print(json.dumps(twice))
"""


def test_every_kernel_is_compiled_for_one_signature(tmp_path) -> None:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True, capture_output=True, text=True)
    twice = json.loads(out.stdout.strip().splitlines()[-1])
    assert twice == {}, f"compiled more than once (a literal argument?): {twice}"


def test_a_helper_called_from_python_raises_instead_of_crashing() -> None:
    """Helpers have no Python entry point; numba alone would jump into it and crash the interpreter."""
    import numpy as np
    import pytest

    from icfrr._sorting import sort_pairs

    with pytest.raises(TypeError, match="sort_pairs is compiled for compiled callers only"):
        sort_pairs(np.zeros(3, dtype=np.uint64), np.arange(3, dtype=np.int32))
