"""The one place that decides how kernels are compiled for the CPU.

Every per-element function in :mod:`kernels` is a plain Numba ``njit`` function with no
Python objects, no exceptions and no allocation, so the GPU backend can call the very same
function from a ``numba.cuda`` kernel. Drivers (the loops over a batch) use :func:`cpu_kernel`,
which adds ``nogil`` so several threads can run them at once.

``cache=True`` keeps start-up short: compiled code is stored next to the sources (or in
``NUMBA_CACHE_DIR``) and loaded on the next run instead of being compiled again. Shorter still
with an ahead-of-time build (``detector aot``, :mod:`kernels.aot_load`): then the decorators
return :class:`_Kernel` objects that call the compiled-ahead code, and Numba is imported only
if a call needs a signature the build lacks.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading


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

from kernels import aot_load  # noqa: E402  (after the cache folder is chosen)
from kernels._plain import literal_unroll, load_acquire, store_release  # noqa: E402  (until Numba's are needed)
from kernels.aot_keys import value_key  # noqa: E402

_AOT = aot_load.variants()  # compiled ahead of time and fitting these sources, or None
_placeholders = {} if _AOT is None else {id(f): f.__name__ for f in (literal_unroll, load_acquire, store_release)}
if _AOT is None:  # Numba's kernels from the start, as plain dispatchers
    from kernels._numba_dispatch import literal_unroll, load_acquire, make_dispatcher, store_release  # noqa: E402

_lock = threading.RLock()
_kernels: list[_Kernel] = []  # every kernel made before Numba was needed, in definition order
_numba_ready = _AOT is None


class _Kernel:
    """A kernel while Numba is not imported: its compiled-ahead variants, and the Numba
    dispatcher made the first time a call has no variant (or Numba's attributes are asked for).

    The variant is chosen by the arguments' type keys (:mod:`kernels.aot_keys`). Tuples of
    column arrays are keyed once per tuple object (the engine passes the same column tuple to
    every chunk's kernels, and keying its 39 arrays costs about 50 us a call).
    """

    def __init__(self, fn, options: dict, variants: dict | None):
        self.py_func = fn
        self.options = options
        self.variants = variants or {}
        self.dispatcher = None
        self.__name__, self.__qualname__ = fn.__name__, fn.__qualname__
        self.__module__, self.__doc__, self.__wrapped__ = fn.__module__, fn.__doc__, fn

    def __call__(self, *args, **kwargs):
        if self.variants and not kwargs:
            compiled = self.variants.get(tuple(_tuple_key(a) if isinstance(a, tuple) else value_key(a) for a in args))
            if compiled is not None:
                return compiled(*args)
        return (self.dispatcher if _numba_ready else _numba_dispatcher(self))(*args, **kwargs)

    def __getattr__(self, name):  # Numba's attributes (stats, signatures, ...): the dispatcher's
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.dispatcher if _numba_ready else _numba_dispatcher(self), name)

    def __repr__(self):
        return f"<kernel {self.__module__}.{self.__qualname__} ({len(self.variants)} compiled ahead)>"


_tuple_keys: dict[int, tuple] = {}
_tuple_keys_lock = threading.Lock()


def _tuple_key(value: tuple):
    hit = _tuple_keys.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    key = value_key(value)
    with _tuple_keys_lock:  # kernels are called from several threads
        while len(_tuple_keys) >= 4:  # a few: each entry keeps its tuple's arrays alive
            del _tuple_keys[next(iter(_tuple_keys))]
        _tuple_keys[id(value)] = (value, key)  # holds the tuple, so that its id is not reused meanwhile
    return key


def _numba_dispatcher(kernel: _Kernel):
    materialize()
    return kernel.dispatcher


def materialize() -> None:
    """Import Numba and give every kernel its dispatcher, in definition order.

    Numba compiles a kernel by resolving the names it calls in its module's globals, so in the
    kernel modules each name bound to a :class:`_Kernel` (or to a stand-in: ``literal_unroll``,
    ``load_acquire``, ``store_release``) is rebound to Numba's object. Python callers elsewhere keep the
    :class:`_Kernel` and its compiled-ahead variants. A no-op without an ahead-of-time build.
    """
    global _numba_ready
    if _numba_ready:
        return
    with _lock:
        if _numba_ready:
            return
        from kernels import _numba_dispatch

        made = {id(k): _numba_dispatch.make_dispatcher(k.py_func, k.options) for k in _kernels}
        namespaces = {id(k.py_func.__globals__): k.py_func.__globals__ for k in _kernels}
        for name, module in list(sys.modules.items()):
            if name.startswith("kernels.") and module is not None:
                namespaces.setdefault(id(module.__dict__), module.__dict__)
        for namespace in namespaces.values():
            for name, value in list(namespace.items()):
                if isinstance(value, _Kernel) and id(value) in made:
                    namespace[name] = made[id(value)]
                elif id(value) in _placeholders:
                    namespace[name] = getattr(_numba_dispatch, _placeholders[id(value)])
        # published last: a thread that sees _numba_ready finds every name already Numba's
        for kernel in _kernels:
            kernel.dispatcher = made[id(kernel)]
        _numba_ready = True


_registered: list[tuple] = []  # (function, options, dispatcher) of every kernel, without a build


def registered() -> list[tuple]:
    """Every kernel made as a Numba dispatcher (what ``detector aot`` compiles)."""
    return list(_registered)


def aot_in_use() -> bool:
    """Whether kernels come from an ahead-of-time build in this process."""
    return _AOT is not None


def _jit(fn, **options):
    """A Numba dispatcher (``njit(cache=True, **options)``, cached code loaded as in
    :mod:`kernels._numba_dispatch`), or, with an ahead-of-time build, a :class:`_Kernel`."""
    if _AOT is None:
        dispatcher = make_dispatcher(fn, options)
        _registered.append((fn, options, dispatcher))
        return dispatcher
    with _lock:
        if _numba_ready:  # a module imported after Numba was needed: its names must be Numba's
            from kernels._numba_dispatch import make_dispatcher as make

            return make(fn, options)
        kernel = _Kernel(fn, options, _AOT.get(f"{fn.__module__}.{fn.__qualname__}"))
        _kernels.append(kernel)
    return kernel


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
