"""The one place that decides how kernels are compiled for the CPU.

Every per-element function in :mod:`kernels` is a plain Numba ``njit`` function with no
Python objects, no exceptions and no allocation, so the GPU backend can call the very same
function from a ``numba.cuda`` kernel. Drivers (the loops over a batch) use :func:`cpu_kernel`,
which adds ``nogil`` so several threads can run them at once.

``cache=True`` keeps start-up short: compiled code is stored next to the sources (or in
``NUMBA_CACHE_DIR``) and loaded on the next run instead of being compiled again.
"""

from __future__ import annotations

import os
import sys
import tempfile


def _cache_dir_for_read_only_installs() -> None:
    """Numba stores compiled code next to the sources, or in the user's cache folder when the
    sources are read-only; with neither writable (a system install run by a service user
    without a home, as deploy/detector.service does) it refuses to compile at all. Then the
    cache goes to a folder of our own (also when ``NUMBA_CACHE_DIR`` names one that cannot be
    written, e.g. inside a read-only container image). Set before Numba is imported: it reads
    it once."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        if os.access(chosen, os.W_OK) or (not os.path.exists(chosen) and os.access(os.path.dirname(chosen) or ".",
                                                                                   os.W_OK)):
            return
    elif os.access(os.path.dirname(os.path.abspath(__file__)), os.W_OK):
        return
    for base in (os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), tempfile.gettempdir()):
        path = os.path.join(base, f"detector-numba-{os.getuid()}")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            os.environ["NUMBA_CACHE_DIR"] = path
            return


_cache_dir_for_read_only_installs()


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


import numba  # noqa: E402  (after the cache folder is chosen)
from numba.core.caching import FunctionCache  # noqa: E402
from numba.core.dispatcher import Dispatcher  # noqa: E402
from numba.core.runtime import rtsys  # noqa: E402


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


def _jit(fn, **options):
    """``numba.njit(cache=True, **options)``, its cache loading as above."""
    dispatcher = numba.njit(**options)(fn)
    if isinstance(dispatcher, Dispatcher):  # not a plain function (NUMBA_DISABLE_JIT)
        dispatcher._cache = _CompiledCodeCache(fn)
    return dispatcher


__all__ = ["device_fn", "row_fn", "cpu_kernel"]


def device_fn(fn):
    """Compile a per-element helper: callable from CPU drivers and from CUDA kernels.

    LLVM inlines the small ones where it pays; Numba's own inlining is kept for :func:`row_fn`
    because it multiplies compile time.
    """
    return _jit(fn)


def row_fn(fn):
    """A per-element function that takes a column tuple or flow-state arrays.

    Inlined by Numba into its caller: as a real call, the tuple of ~40 array structs would be
    copied for every packet, and the flow update would lose a factor of four.
    """
    return _jit(fn, inline="always")


def cpu_kernel(fn):
    """Compile a CPU driver loop; it releases the GIL so threads can share a batch.

    Kernels allocate nothing, so they run without Numba's reference counting (``_nrt=False``):
    with it, every array of a column tuple is reference-counted at each inlined call, which
    made decoding ten times slower.
    """
    return _jit(fn, nogil=True, _nrt=False)
