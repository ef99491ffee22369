"""numba-cuda: ``compile_ptx(..., cc=...)`` needs a GPU as soon as the kernel calls a device function.

Self-contained reproduction, to report upstream (https://github.com/NVIDIA/numba-cuda/issues).
Run it on a machine with numba-cuda and its NVVM (``pip install 'numba-cuda[cu12]'``) and no
GPU or no CUDA driver::

    python benchmarks/upstream/numba_cuda_compile_ptx_device_call.py

Seen with numba-cuda 0.30.4 (cuda-bindings 12.9.10, nvidia-cuda-nvcc-cu12 12.9.86, numba 0.68.1,
NumPy 2.4.6, Python 3.11) on Linux x86-64 without a driver:

1. a kernel that calls nothing compiles: ``compile_ptx(k0, sig, cc=(9, 0))`` gives PTX;
2. a kernel that calls a ``@cuda.jit(device=True)`` function fails with ``CudaSupportError:
   Error at driver init: CUDA driver library cannot be found``;
3. so does a kernel that calls a CPU ``@numba.njit`` function (the documented way to share one
   function between CPU and GPU code), which numba-cuda turns into a device function.

Why: typing the call asks the callee's ``CUDADispatcher.compile_device(args)`` to compile it,
and that takes ``cc = get_current_device().compute_capability``
(``numba_cuda/numba/cuda/dispatcher.py``, ``compile_device``), i.e. it initialises the driver
even though the caller gave ``compile_ptx`` an explicit ``cc``. ``_Kernel.__init__``,
``CUDADispatcher.specialize``, ``inspect_asm`` and ``inspect_lto_ptx`` do the same.
(``compile_ptx`` was meant to have nothing to do with devices: numba/numba#5561, #8387.)

What upstream could change: ``compile_device`` should take the compute capability of the
compilation in progress, which ``compile_cuda`` already puts in the flags
(``flags.compute_capability``, readable as ``ConfigStack.top_or_none().compute_capability``), and
ask the current device only when no compilation is in progress; and key its overloads by
``(cc, args)``, since the same device function may be compiled for several targets in one
process. Step 4 below applies that idea from outside (a stand-in for ``get_current_device``
that answers with the flags' compute capability) and then every case compiles, for the
requested target.

A second problem, seen while caching kernels with ``cache=True``: the cache's index key hashes
the pickled contents of the kernel's closure cells; when a cell holds a device function whose
code refers to a CPU ``numba.njit`` dispatcher, the pickle differs from one process to the next
(hash printed in step 5; run the script twice), so such a kernel never hits its on-disk cache.
"""

from __future__ import annotations

import hashlib

import numba
import numpy as np


def main() -> int:
    import numba_cuda
    from numba import cuda
    from numba.cuda import dispatcher
    from numba.cuda.core.targetconfig import ConfigStack
    from numba.cuda.serialize import dumps

    print(f"numba-cuda {numba_cuda.__version__}, numba {numba.__version__}, NumPy {np.__version__}")

    @numba.njit
    def plus_one(x):  # shared CPU/GPU logic
        return x + 1

    @cuda.jit(device=True)
    def twice(x):
        return x * 2

    def calls_nothing(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = a[i] + 1

    def calls_device_function(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = twice(a[i])

    def calls_njit_function(a):
        i = cuda.grid(1)
        if i < a.shape[0]:
            a[i] = plus_one(a[i])

    sig = (numba.typeof(np.zeros(4, np.int64)),)
    kernels = (calls_nothing, calls_device_function, calls_njit_function)

    def attempt(step: str) -> int:
        failed = 0
        for fn in kernels:
            try:
                ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
                print(f"{step} {fn.__name__}: ok, {len(ptx)} bytes of PTX, target sm_90: {'.target sm_90' in ptx}")
            except Exception as exc:  # the failure being reported
                failed += 1
                print(f"{step} {fn.__name__}: FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:120]}")
        return failed

    failed = attempt("1-3")

    class CompilationTarget:
        @property
        def compute_capability(self):
            flags = ConfigStack.top_or_none()
            return flags.compute_capability

    real = dispatcher.get_current_device
    dispatcher.get_current_device = CompilationTarget
    try:
        failed_with_fix = attempt("4 (cc from the compilation's flags)")
    finally:
        dispatcher.get_current_device = real

    def outer():
        @cuda.jit(device=True)
        def via_njit(x):
            return plus_one(x)

        def closure_kernel(a):
            a[0] = via_njit(a[0])

        return closure_kernel

    cells = tuple(c.cell_contents for c in outer().__closure__)
    print(f"5 closure hash of a kernel calling a device function that calls an njit function: "
          f"{hashlib.sha256(dumps(cells)).hexdigest()[:16]} (differs between runs)")
    print("reproduced" if failed and not failed_with_fix else "not reproduced")
    return 0 if failed and not failed_with_fix else 1


if __name__ == "__main__":
    raise SystemExit(main())
