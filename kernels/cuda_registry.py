"""Every ``numba.cuda`` kernel of the project, with the arguments it is launched with.

The compile check (:mod:`kernels.cuda_compile_check`) compiles each registered kernel for a
given GPU without one, and ``detector aot`` compiles each on the GPU to warm the kernel cache
(:mod:`kernels.cuda_warm`). A kernel registers itself in one line, next to its definition::

    from kernels.cuda_registry import arg, register

    register("kernels.my_module.histogram", lambda: kernels().histogram,
             lambda: (arg(np.uint32), arg(np.int64, ndim=2), 0, False))

- the name: the module and the kernel, as reports show it;
- a function returning the ``numba.cuda`` dispatcher (kernels are built lazily, so that importing
  a module never imports ``numba.cuda``);
- a function returning example arguments of the types a launch passes: :func:`arg` for an array
  (only dtype, dimensions and contiguity matter), a Python ``int`` for a count or an offset
  (typed ``int64``), a ``bool`` for a flag, a tuple of arrays (a named tuple of columns) as is.

Modules of ``kernels`` and ``models`` that call :func:`register` are found by :func:`registered`
from their source text, so a new module needs no other change (a module elsewhere: the check's
``--module``). Decorate the kernels with :func:`kernels.cuda_cache.cached_jit` instead of
``numba.cuda.jit`` so that a GPU compiles them once, not in every process. Nothing here imports
Numba.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

_PACKAGES = ("kernels", "models")
_MARK = "cuda_registry"  # in the source of every module that registers a kernel


@dataclass(frozen=True)
class CudaKernel:
    name: str
    kernel: Callable[[], object]
    example: Callable[[], tuple]


_entries: dict[str, CudaKernel] = {}


def register(name: str, kernel: Callable[[], object], example: Callable[[], tuple]) -> None:
    """Add a kernel (see the module's docstring); registering a name again replaces it."""
    _entries[name] = CudaKernel(name, kernel, example)


def arg(dtype, ndim: int = 1) -> np.ndarray:
    """An example array argument: a C-contiguous, writable array, as the engines pass."""
    return np.zeros((1,) * ndim, dtype=dtype)


def registered() -> list[CudaKernel]:
    """Every registered kernel, after importing each module that registers one."""
    for module in _registering_modules():
        importlib.import_module(module)
    return list(_entries.values())


def _registering_modules() -> list[str]:
    found = []
    for package in _PACKAGES:
        try:
            pkg = importlib.import_module(package)
        except ImportError:
            continue
        for info in pkgutil.iter_modules(pkg.__path__):
            path = Path(pkg.__path__[0]) / f"{info.name}.py"
            try:
                source = path.read_text(errors="replace")
            except OSError:  # a package or an extension module: none registers kernels
                continue
            if _MARK in source and f"{package}.{info.name}" != __name__:
                found.append(f"{package}.{info.name}")
    return found
