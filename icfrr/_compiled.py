"""How the engine's compiled functions are declared (numba, cached on disk, releasing the GIL).

- :data:`kernel`: called from Python (the row kernels ``on_row_slices`` runs on threads).
- :data:`helper`: called only from other compiled code. It gets no Python entry point
  and no C-callable wrapper: each costs compile time on a fresh cache (together about
  0.25 s of a first configuration, ``python -m jobs.bench --cold-start --repeat 5``),
  and nothing calls them from outside. **Calling a helper from Python crashes the
  interpreter** instead of raising; tests reach helpers through a compiled shim.
"""

from __future__ import annotations

from numba import njit

kernel = njit(cache=True, nogil=True)
helper = njit(cache=True, nogil=True, no_cpython_wrapper=True, no_cfunc_wrapper=True)
