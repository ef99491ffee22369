"""The CUDA kernels' on-disk cache: compiled once per kernel sources and GPU, not once per process.

Compiling the GPU kernels takes about 35 s a process (measured on an H200). Numba can cache a
``numba.cuda`` kernel on disk, but it checks only the kernel's own source file, and these
kernels compile in functions of many modules (``decode_record``, ``update_flow``, ...): an edit
there would load stale code. So each kernel's cache lives in a folder named by the fingerprint
of the kernel sources (the one the CPU ahead-of-time build uses, :func:`kernels.aot_load.fingerprint`,
over ``kernels/*.py`` and the project modules they import) and the GPU's compute capability:
any edit, or another GPU model, gives a new folder. Numba's own key within the folder still
adds the signature, the CUDA runtime, the compute capability and numba-cuda's version.

The folder is ``$DETECTOR_CUDA_CACHE/<fingerprint>-sm<cc>`` or else ``cuda/`` in the
ahead-of-time build's folder (:func:`kernels.aot_load.aot_dir`), falling back to the user's cache
folder when that cannot be written. ``detector aot`` fills it on a GPU machine
(:mod:`kernels.cuda_warm`). The CPU kernels' cache (``NUMBA_CACHE_DIR``) is not touched.

Under Numba's CUDA simulator nothing is compiled, so nothing is cached.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

log = logging.getLogger("detector.cuda_cache")

ENV = "DETECTOR_CUDA_CACHE"
_KERNELS_DIR = Path(__file__).resolve().parent


def cached_jit(fn):
    """``numba.cuda.jit(fn)``, cached in :func:`cache_folder` when a GPU is in use."""
    from numba import cuda

    dispatcher = cuda.jit(fn)
    cc = _device_cc()
    folder = None if cc is None else cache_folder(inspect.getsourcefile(fn), cc)
    if folder is not None:
        dispatcher._cache = _cache_class(str(folder), folder.name)(fn)  # what cache=True does, with our folder
    return dispatcher


def _device_cc() -> tuple[int, int] | None:
    """The current GPU's compute capability; None under the simulator or without a GPU (a
    process that only compiles for another machine, see kernels.cuda_compile_check)."""
    import numba
    from numba import cuda

    if numba.config.ENABLE_CUDASIM or not cuda.is_available():
        return None
    return tuple(cuda.get_current_device().compute_capability)


def folder_name(module_file: str, cc: tuple[int, int]) -> str:
    """``<fingerprint>-sm<major><minor>``: changes with any kernel source and with the GPU."""
    return f"{sources_fingerprint(module_file)[:24]}-sm{cc[0]}{cc[1]}"


@functools.lru_cache(maxsize=None)
def sources_fingerprint(module_file: str) -> str:
    """The ahead-of-time build's fingerprint over ``kernels/*.py``, the kernel's module and the
    project modules they import (not the CPU model: GPU code does not depend on it)."""
    from kernels import aot_build, aot_load

    files = set(_KERNELS_DIR.glob("*.py")) - {Path(aot_build.__file__).resolve()}
    module = Path(module_file).resolve()
    if module.is_relative_to(aot_build.ROOT):
        files.add(module)
    return aot_load.fingerprint(sorted(aot_build.project_sources(files)), portable=True)


def cache_root() -> Path:
    from kernels import aot_load

    chosen = os.environ.get(ENV)
    return Path(chosen) if chosen else aot_load.aot_dir() / "cuda"


def cache_folder(module_file: str, cc: tuple[int, int]) -> Path | None:
    """The kernel's cache folder: an existing one (filled by ``detector aot``, perhaps read-only)
    or one this process can create; None when there is neither (kernels are then compiled in
    every process)."""
    name = folder_name(module_file, cc)
    roots = [cache_root()]
    if not os.environ.get(ENV):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
        roots.append(Path(base if os.path.isabs(base) else tempfile.gettempdir()) / f"detector-cuda-{os.getuid()}")
    for root in roots:
        folder = root / name
        if folder.is_dir():
            return folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError:
            continue
    log.info("no writable folder for the CUDA kernel cache (tried %s): kernels compile in every process",
             ", ".join(str(r) for r in roots))
    return None


@functools.lru_cache(maxsize=None)
def _cache_class(folder: str, stamp: str):
    """numba-cuda's kernel cache, in ``folder``, its entries valid while the sources fingerprint
    (``stamp``) is the folder's."""
    from numba.cuda.dispatcher import CUDACache, CUDACacheImpl

    try:
        from numba.cuda.core.caching import _CacheLocator
    except ImportError:  # numba-cuda before it vendored Numba's core
        from numba.core.caching import _CacheLocator

    class Locator(_CacheLocator):
        def __init__(self, py_func):
            self._lineno = py_func.__code__.co_firstlineno

        def get_cache_path(self):
            return folder

        def get_source_stamp(self):
            return stamp  # the sources' fingerprint, not one file's modification time

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            return cls(py_func)

    class Impl(CUDACacheImpl):
        _locator_classes = [Locator]

    class FingerprintCache(CUDACache):
        _impl_class = Impl

        def __init__(self, py_func):
            super().__init__(py_func)
            # Numba's key hashes the pickled closure cells too; a cell holding a device function
            # that calls an njit function pickles differently in every process, so the kernel
            # would never be found again. The folder's fingerprint already covers their source.
            self._py_func = SimpleNamespace(__code__=py_func.__code__, __closure__=None)

        def save_overload(self, sig, data):
            try:
                super().save_overload(sig, data)
            except OSError as exc:  # a folder filled by another user, read-only here: still usable
                log.info("CUDA kernel cache %s not written: %s", folder, exc)

    return FingerprintCache
