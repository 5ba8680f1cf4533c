"""How the engine's compiled functions are declared (numba, releasing the GIL).

- :func:`kernel`: called from Python (the row kernels ``on_row_slices`` runs on
  threads); compiled once per signature and cached on disk.
- :func:`helper`: called only from other compiled code. numba links a callee's
  LLVM IR into every caller's module and optimises and compiles it there again,
  so a helper gets no Python entry point, no C-callable wrapper and no
  optimisation or machine code of its own (:class:`LinkOnlyLibrary`): on a fresh
  cache those were work thrown away. Its IR stays in memory for this process's
  callers; a kernel loaded from the disk cache carries its helpers' code. Called
  from Python, a helper raises ``TypeError`` (numba would otherwise jump into the
  missing entry point and crash the interpreter); tests reach helpers through a
  compiled shim.

Both are optimised with :data:`PASSES`, set on their own code libraries, not in
numba's process-wide configuration: user code compiled in the same process keeps
numba's defaults. The measurements behind these choices are in the README's
cold-start section (``python -m jobs.bench --cold-start --repeat 5``).
"""

from __future__ import annotations

from collections.abc import Callable

from numba import config
from numba.core.codegen import JITCodeLibrary
from numba.core.compiler import Compiler
from numba.core.registry import CPUDispatcher
from numba.core.targetconfig import ConfigStack

#: LLVM pipeline of the engine's compiled code: -O1 with the loop vectoriser, without the SLP one.
#: Against numba's default (a cheap then an -O3 pipeline, both vectorisers) it compiles the first
#: configuration in about 0.2 s less and runs the kernels as fast, the initial sort a few percent slower.
PASSES = {"opt": 1, "loop_vectorize": True, "slp_vectorize": False}


class KernelLibrary(JITCodeLibrary):
    """A numba code library optimised with :data:`PASSES` (one module pipeline, NRT reference
    pruning included, instead of numba's cheap and full pipelines at its global settings)."""

    def _optimize_functions(self, ll_module) -> None:
        ll_module.data_layout = self._codegen._data_layout
        for func in ll_module.functions:
            manager, builder = self._codegen._function_pass_manager(**PASSES)
            manager.run(func, builder)

    def _optimize_final_module(self) -> None:
        manager, builder = self._codegen._module_pass_manager(**PASSES)
        manager.run(self._final_module, builder)


class _LinkOnlyCodegen:
    """The codegen as a link-only library shows it: nothing is loaded, so no environment to set."""

    def __init__(self, codegen) -> None:
        self._codegen = codegen

    def set_env(self, env_name, env) -> None:
        pass

    def __getattr__(self, name):
        return getattr(self._codegen, name)


class LinkOnlyLibrary(KernelLibrary):
    """A code library only ever linked into its callers' modules: finalising it links its own
    callees and stops there (each caller optimises and compiles the linked code itself)."""

    @property
    def codegen(self):
        return _LinkOnlyCodegen(self._codegen)

    def finalize(self) -> None:
        self._raise_if_finalized()
        seen = set()
        for library in self._linking_libraries:
            if library not in seen:
                seen.add(library)
                self._final_module.link_in(library._get_module_for_linking(), preserve=True)
        self._final_module.verify()
        self._finalized = True

    def get_pointer_to_function(self, name) -> int:
        return 0  # no machine code: the dispatcher's (unused) Python entry is a null pointer


def _compiler(library_class: type) -> type:
    """A numba compiler pipeline whose functions get a ``library_class`` code library."""

    class _Compiler(Compiler):
        def compile_extra(self, func):
            codegen = self.state.targetctx.codegen()
            if self.state.library is None:
                self.state.library = library_class(codegen, func.__qualname__)
                self.state.library.enable_object_caching()  # as numba's own lowering does (the disk cache)
            # numba's overloads compiled for this function (np.empty, ...) are only ever linked into
            # compiled callers too: link-only libraries for them, for the length of this compile
            # (numba's global compiler lock is held).
            default = codegen._library_class
            codegen._library_class = LinkOnlyLibrary
            try:
                return super().compile_extra(func)
            finally:
                codegen._library_class = default

        def define_pipelines(self):
            # numba keys the overloads a function calls (np.empty, ...) by the caller's flags, as pushed
            # on its ConfigStack for this compile. There a helper's flags read as a kernel's, so a
            # helper and a kernel share each overload instead of compiling it twice.
            ConfigStack().top().no_cpython_wrapper = False
            return super().define_pipelines()

    return _Compiler


_KernelCompiler = _compiler(KernelLibrary)
_HelperCompiler = _compiler(LinkOnlyLibrary)


class HelperDispatcher(CPUDispatcher):
    """A numba dispatcher for a function compiled without a Python entry point: calls from
    compiled code work as for any ``njit`` function, calls from Python raise ``TypeError``."""

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self.py_func.__module__}.{self.py_func.__qualname__} is compiled for compiled "
                        "callers only (no Python entry point); call it from a kernel")


def kernel(fn: Callable) -> CPUDispatcher | Callable:
    """Compile ``fn`` lazily for calls from Python (cached on disk, releasing the GIL)."""
    if config.DISABLE_JIT:
        return fn
    dispatcher = CPUDispatcher(py_func=fn, locals={}, pipeline_class=_KernelCompiler, targetoptions={
        "nopython": True, "nogil": True, "no_cfunc_wrapper": True})
    dispatcher.enable_caching()
    return dispatcher


def helper(fn: Callable) -> HelperDispatcher | Callable:
    """Compile ``fn`` lazily for compiled callers only (releasing the GIL; not cached on its own)."""
    if config.DISABLE_JIT:
        return fn
    return HelperDispatcher(py_func=fn, locals={}, targetoptions={
        "nopython": True, "nogil": True, "no_cpython_wrapper": True, "no_cfunc_wrapper": True},
        pipeline_class=_HelperCompiler)
