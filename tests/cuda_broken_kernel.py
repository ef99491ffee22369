"""A kernel that Numba's CUDA simulator runs and the real compiler rejects (it sorts, which needs
an allocation): ``tests/test_cuda_compile.py`` checks that the compile check reports it. Registered
only when the check is told to import this module (``--module tests.cuda_broken_kernel``)."""

from __future__ import annotations

import numpy as np

from kernels.cuda_registry import arg, register


def _build():
    from numba import cuda

    @cuda.jit
    def sorts(a):
        a[:] = np.sort(a)

    return sorts


register("tests.cuda_broken_kernel.sorts", _build, lambda: (arg(np.int64),))
