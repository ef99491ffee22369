"""Numba dispatchers for the kernels, their compiled code loaded from Numba's on-disk cache.

Imported at start-up when there is no fitting ahead-of-time build (:mod:`kernels.aot_load`),
otherwise only when a call needs Numba.
"""

from __future__ import annotations

import sys

import numba
from numba.core.caching import FunctionCache
from numba.core.dispatcher import Dispatcher
from numba.core.runtime import rtsys

literal_unroll = numba.literal_unroll


def _atomics():
    """``load_acquire(array, i)`` and ``store_release(array, i, value)``: one element of an
    int64 array, read and written atomically with acquire and release ordering, so that one
    thread may hand rows to another through a progress counter (what it wrote before the store
    is visible to the thread whose load sees the stored value). In plain Python (under
    ``NUMBA_DISABLE_JIT``) indexing is enough: the GIL orders them."""
    if numba.config.DISABLE_JIT:
        from kernels._plain import load_acquire, store_release

        return load_acquire, store_release
    from numba.core import cgutils, types
    from numba.core.extending import intrinsic

    def element(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]], wraparound=False)

    @intrinsic
    def load_acquire(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            return builder.load_atomic(element(context, builder, sig, args), ordering="acquire", align=8)

        return arr.dtype(arr, idx), codegen

    @intrinsic
    def store_release(typingctx, arr, idx, value):
        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[2], sig.args[2], sig.args[0].dtype)
            builder.store_atomic(v, element(context, builder, sig, args), ordering="release", align=8)
            return context.get_dummy_value()

        return types.none(arr, idx, value), codegen

    return load_acquire, store_release


load_acquire, store_release = _atomics()


def _import_array_math_without_blas_probe() -> None:
    """Import numba's array math with SciPy hidden.

    Compiling a kernel makes Numba import ``numba.np.arraymath``, which imports
    ``scipy.linalg`` (0.4 s) only to learn whether ``np.dot`` can use BLAS. No kernel here uses
    BLAS, so SciPy is hidden for that one import unless something already loaded it.
    """
    if "scipy.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return
    sys.modules["scipy.linalg"] = None  # makes "import scipy.linalg..." raise ImportError at once
    try:
        import numba.np.arraymath  # noqa: F401
    finally:
        del sys.modules["scipy.linalg"]


class _CompiledCodeCache(FunctionCache):
    """Numba's on-disk cache, loading compiled code without first readying the compiler.

    Before it loads cached code, Numba refreshes its typing and lowering registries: it imports
    and registers every implementation it has (array math, typed containers, random, ...).
    Only a compilation needs those. Cached code needs the runtime (NRT) it allocates and
    frees memory with, and nothing else. Skipping the refresh takes 0.2 to 0.5 s off every
    process start (measured on the 2-core VM). A cache miss compiles as usual, and Numba's
    compiler refreshes the registries itself.
    """

    def load_overload(self, sig, target_context):
        load = getattr(self, "_load_overload", None)
        guard = getattr(self, "_guard_against_spurious_io_errors", None)
        if load is None or guard is None:  # a Numba whose cache internals differ: its own way
            return super().load_overload(sig, target_context)
        rtsys.initialize(target_context)
        with guard():
            data = load(sig, target_context)
        if data is None:
            _import_array_math_without_blas_probe()
        return data


def make_dispatcher(fn, options: dict):
    """``numba.njit(cache=True, **options)``, its cache loading as above."""
    dispatcher = numba.njit(**options)(fn)
    if isinstance(dispatcher, Dispatcher):  # not a plain function (NUMBA_DISABLE_JIT)
        dispatcher._cache = _CompiledCodeCache(fn)
    return dispatcher


def cached_signatures(dispatcher) -> list[tuple]:
    """Argument types of every overload in the dispatcher's on-disk cache (compiled on this
    machine for the current sources), loaded or not."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    load_index = getattr(cache_file, "_load_index", None)
    if load_index is None:
        return []
    try:
        return [key[0] for key in load_index()]
    except Exception:  # an unreadable or foreign index: nothing to add
        return []
