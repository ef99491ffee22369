"""Where to compute: the CPU (NumPy + Numba) or a CUDA GPU (CuPy + numba.cuda).

A :class:`Backend` is chosen once per run and passed explicitly. GPU libraries are imported
only here, inside :func:`select_backend`, and only when the GPU is asked for or probed; CPU mode
never imports them.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, set before Numba is imported) the GPU
backend runs its ``numba.cuda`` kernels in the simulator and uses NumPy for the array glue, so
the GPU code path can be tested on machines without a GPU.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from types import ModuleType

import numpy as np

log = logging.getLogger("detector.backend")


class BackendUnavailable(Exception):
    """The GPU backend was asked for and cannot be used; the message says why."""


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" or "gpu"
    xp: ModuleType  # the array namespace: numpy or cupy
    simulated: bool = False  # numba.cuda kernels run in the CUDA simulator
    device: str = ""  # GPU name, for reports
    reason: str = ""  # why this backend (for the log line)

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"


CPU = Backend("cpu", np, reason="asked for")


def cuda_simulator_enabled() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _probe_gpu() -> Backend:
    """The GPU backend, or :class:`BackendUnavailable` saying what is missing."""
    if cuda_simulator_enabled():
        return Backend("gpu", np, simulated=True, device="CUDA simulator",
                       reason="NUMBA_ENABLE_CUDASIM=1: kernels run in Numba's CUDA simulator")
    try:
        import cupy
    except ImportError as exc:
        raise BackendUnavailable(f"CuPy is not installed ({exc}); install the 'gpu' extra") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver or runtime missing: cupy raises its own error types
        raise BackendUnavailable(f"no usable CUDA device: {exc}") from None
    if count < 1:
        raise BackendUnavailable("no CUDA device found")
    try:
        from numba import cuda

        if not cuda.is_available():
            raise BackendUnavailable("numba.cuda cannot use the CUDA driver (install numba-cuda)")
    except ImportError as exc:
        raise BackendUnavailable(f"numba.cuda is missing: {exc}") from None
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return Backend("gpu", cupy, device=name, reason=f"CUDA device 0: {name}")


def select_backend(requested: str) -> Backend:
    """``cpu``, ``gpu`` (raises :class:`BackendUnavailable` when there is none) or ``auto``
    (the GPU when one is usable, else the CPU; one log line says which and why)."""
    if requested == "cpu":
        return CPU
    if requested == "gpu":
        backend = _probe_gpu()
        log.info("backend gpu: %s", backend.reason)
        return backend
    if requested != "auto":
        raise ValueError(f"unknown backend {requested!r}")
    if cuda_simulator_enabled():
        log.info("backend auto: using the CPU (the CUDA simulator is for tests: ask for gpu explicitly)")
        return Backend("cpu", np, reason="CUDA simulator enabled")
    try:
        backend = _probe_gpu()
    except BackendUnavailable as exc:
        log.info("backend auto: using the CPU (%s)", exc)
        return Backend("cpu", np, reason=str(exc))
    log.info("backend auto: using the GPU (%s)", backend.reason)
    return backend
