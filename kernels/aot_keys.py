"""Type keys: which ahead-of-time compiled variant of a kernel fits a call's arguments.

Numba picks a compiled overload by typing every argument (``numba.typeof``). A kernel compiled
ahead of time is a plain function with one signature, and it must be picked without importing
Numba, whose import is most of a process's start-up. A key describes an argument as Numba would
type it, for the kinds of argument kernels take: arrays (dtype, dimensions, layout, writable),
scalars, and tuples (named tuples by their class) of those. :func:`value_key` computes it from a value at call time;
:func:`numba_type_key` computes the same key from a Numba type when the kernels are compiled.
Values of any other kind have no key (``None``), so no variant matches them and the call goes to
Numba. A wrong match would be worse than a slow call: the compiled code does not check what it
is given, so the key is strict (an array that is only readable never matches a signature that
writes it).
"""

from __future__ import annotations

import numpy as np

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_BOOL, _INT64, _FLOAT64 = np.dtype(np.bool_).str, np.dtype(np.int64).str, np.dtype(np.float64).str


def value_key(value):
    """The key of an argument, as ``numba.typeof`` would type it; None for unsupported values."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "V" or type(value).__name__ == "MaskedArray":  # records: not told apart by str
            return None
        flags = value.flags
        layout = "C" if flags.c_contiguous else "F" if flags.f_contiguous else "A"
        return ("a", value.dtype.str, value.ndim, layout, bool(flags.writeable))
    if isinstance(value, tuple):
        items = tuple(value_key(item) for item in value)
        cls = type(value)
        return ("t", *items) if cls is tuple else ("n", f"{cls.__module__}.{cls.__qualname__}", *items)
    if isinstance(value, bool):  # before int: bool is an int
        return _BOOL
    if isinstance(value, int):
        return _INT64 if _INT64_MIN <= value <= _INT64_MAX else None
    if isinstance(value, float):
        return _FLOAT64
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.dtype.str
    return None


def numba_type_key(typ):
    """The key of a Numba argument type (at build time, Numba imported); None when a value of
    that type has no key."""
    from numba.core import types
    from numba.np.numpy_support import as_dtype

    if isinstance(typ, types.Array):
        try:
            dtype = as_dtype(typ.dtype)
        except Exception:  # dtypes without a plain NumPy equivalent
            return None
        if dtype.kind == "V":
            return None
        return ("a", dtype.str, typ.ndim, typ.layout, bool(typ.mutable))
    if isinstance(typ, types.BaseTuple):
        items = tuple(numba_type_key(t) for t in typ.types)
        if None in items:
            return None
        if isinstance(typ, types.BaseNamedTuple):  # fields are read by position: the class must match
            cls = typ.instance_class
            return ("n", f"{cls.__module__}.{cls.__qualname__}", *items)
        return ("t", *items)
    if isinstance(typ, types.Literal):
        return None
    if isinstance(typ, types.Boolean):
        return _BOOL
    if isinstance(typ, (types.Integer, types.Float)):
        return as_dtype(typ).str
    return None


def from_json(key):
    """Keys are stored as JSON lists; calls compare tuples."""
    return tuple(from_json(k) for k in key) if isinstance(key, list) else key
