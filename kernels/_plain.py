"""Plain-Python stand-ins for the Numba objects that kernels call: used while Numba is not
imported (kernels compiled ahead of time; :func:`kernels._jit.materialize` puts Numba's in their
place) and as the real thing under ``NUMBA_DISABLE_JIT`` (the GIL orders plain reads and writes)."""

from __future__ import annotations


def literal_unroll(container):
    """Numba's ``literal_unroll``."""
    return container


def load_acquire(array, i):
    """``array[i]``, read with acquire ordering (see :mod:`kernels._numba_dispatch`)."""
    return array[i]


def store_release(array, i, value):
    """``array[i] = value``, written with release ordering."""
    array[i] = value
