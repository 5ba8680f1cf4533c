"""The engine's compile settings stay with the engine: user code compiled in the same process gets numba's own."""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.core.caching import NullCache
from numba.core.codegen import JITCodeLibrary
from numba.core.registry import cpu_target

from icfrr._compiled import LinkOnlyLibrary, helper, kernel


@helper
def _fill(out, value):  # pragma: no cover - compiled
    for i in range(out.shape[0]):
        out[i] = value


@kernel
def _filled(n, value):  # pragma: no cover - compiled
    out = np.empty(n, dtype=np.int64)
    _fill(out, value)
    return out


def test_engine_compiles_leave_numba_defaults_to_user_code() -> None:
    _filled._cache = NullCache()  # compile here, not from an earlier run's disk cache
    assert _filled(4, 7).tolist() == [7, 7, 7, 7]  # a kernel through a link-only helper
    assert type(_fill.overloads[_fill.signatures[0]].library) is LinkOnlyLibrary
    codegen = cpu_target.target_context.codegen()
    assert codegen._library_class is JITCodeLibrary  # restored after the engine's compile

    user = njit(lambda n: np.empty(n, dtype=np.float32).shape[0] + 1)  # an overload the engine never asked for
    assert user(5) == 6
    assert type(user.overloads[user.signatures[0]].library) is JITCodeLibrary
