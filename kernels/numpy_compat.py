"""NumPy names that the GPU toolchain still asks for (no Numba import here: it runs first)."""

from __future__ import annotations

import numpy as np


def numpy_aliases_for_numba_cuda() -> None:
    """numba-cuda (0.30) registers an overload of ``np.row_stack`` when it compiles its first
    kernel; NumPy 2.5 removed that alias of ``np.vstack``, so every kernel compile failed with
    an AttributeError (seen on an H200 machine: numba-cuda with NumPy 2.5.2). Restore the alias
    until numba-cuda stops asking for it."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
