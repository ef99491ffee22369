"""The one place that decides how kernels are compiled for the CPU.

Every per-element function in :mod:`kernels` is a plain Numba ``njit`` function with no
Python objects, no exceptions and no allocation, so the GPU backend can call the very same
function from a ``numba.cuda`` kernel. Drivers (the loops over a batch) use :func:`cpu_kernel`,
which adds ``nogil`` so several threads can run them at once.

``cache=True`` keeps start-up short: compiled code is stored next to the sources (or in
``NUMBA_CACHE_DIR``) and loaded on the next run instead of being compiled again.
"""

from __future__ import annotations

import numba

__all__ = ["device_fn", "row_fn", "cpu_kernel"]


def device_fn(fn):
    """Compile a per-element helper: callable from CPU drivers and from CUDA kernels.

    LLVM inlines the small ones where it pays; Numba's own inlining is kept for :func:`row_fn`
    because it multiplies compile time.
    """
    return numba.njit(cache=True)(fn)


def row_fn(fn):
    """A per-element function that takes a whole column tuple (``PacketColumns``).

    Inlined by Numba into its caller: passed to a real call, the tuple of ~40 array structs
    would be copied at every packet.
    """
    return numba.njit(cache=True, inline="always")(fn)


def cpu_kernel(fn):
    """Compile a CPU driver loop; it releases the GIL so threads can share a batch.

    Kernels allocate nothing, so they run without Numba's reference counting (``_nrt=False``):
    with it, every array of a column tuple is reference-counted at each inlined call, which
    made decoding ten times slower.
    """
    return numba.njit(cache=True, nogil=True, _nrt=False)(fn)
