"""Arrow arrays straight from NumPy buffers.

``pyarrow.array`` imports pandas when pandas is installed (to check the argument's type),
which costs a third of a second at start-up; building arrays from buffers avoids that and
copies nothing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_TYPES = {
    np.dtype(np.int8): pa.int8(), np.dtype(np.int16): pa.int16(), np.dtype(np.int32): pa.int32(),
    np.dtype(np.int64): pa.int64(), np.dtype(np.uint8): pa.uint8(), np.dtype(np.uint16): pa.uint16(),
    np.dtype(np.uint32): pa.uint32(), np.dtype(np.uint64): pa.uint64(), np.dtype(np.float32): pa.float32(),
    np.dtype(np.float64): pa.float64(),
}


def _validity(valid: np.ndarray | None):
    if valid is None or valid.all():
        return None, 0
    return pa.py_buffer(np.packbits(valid, bitorder="little")), int(len(valid) - valid.sum())


def array(values: np.ndarray, typ: pa.DataType | None = None, valid: np.ndarray | None = None) -> pa.Array:
    """A primitive Arrow array over ``values`` (``valid`` marks non-null rows)."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
        typ = pa.bool_()
    else:
        typ = typ or _TYPES[values.dtype]
        data = pa.py_buffer(values)
    bitmap, nulls = _validity(valid)
    return pa.Array.from_buffers(typ, len(values), [bitmap, data], null_count=nulls)


def strings(data: np.ndarray, offsets: np.ndarray, n: int) -> pa.Array:
    """A string array: value ``i`` is ``data[offsets[i]:offsets[i+1]]``."""
    offs = np.ascontiguousarray(offsets[: n + 1], dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offs), pa.py_buffer(np.ascontiguousarray(data[: offs[-1]])))


def fixed_strings(data: np.ndarray, width: int, n: int) -> pa.Array:
    return strings(data, np.arange(0, (n + 1) * width, width, dtype=np.int32), n)


def string_list(values: list[str]) -> pa.Array:
    encoded = [v.encode() for v in values]
    offsets = np.cumsum([0] + [len(e) for e in encoded]).astype(np.int32)
    return strings(np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8), offsets, len(values))


def dictionary(codes: np.ndarray, names: pa.Array) -> pa.Array:
    return pa.DictionaryArray.from_arrays(array(codes.astype(np.int8)), names)


def nulls(n: int, typ: pa.DataType) -> pa.Array:
    return pa.nulls(n, typ)


_DTYPES = {t: d for d, t in _TYPES.items()}


def to_numpy(arr: pa.Array) -> np.ndarray:
    """A primitive or boolean Arrow array as NumPy, without pyarrow's conversion (which imports
    pandas). Integers with nulls become float64 with NaN, as pyarrow does; booleans with nulls
    are False there."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    bufs = arr.buffers()
    valid = None
    if arr.null_count and bufs[0] is not None:
        valid = np.unpackbits(np.frombuffer(bufs[0], np.uint8), bitorder="little", count=arr.offset + n)[arr.offset:]
        valid = valid.astype(bool)
    if pa.types.is_boolean(arr.type):
        out = np.unpackbits(np.frombuffer(bufs[1], np.uint8), bitorder="little", count=arr.offset + n)[arr.offset:]
        out = out.astype(bool)
        return out & valid if valid is not None else out
    if pa.types.is_timestamp(arr.type) or pa.types.is_duration(arr.type):
        dtype = np.dtype(np.int64)
    else:
        dtype = _DTYPES.get(arr.type)
        if dtype is None:
            raise TypeError(f"not a primitive numeric type: {arr.type}")
    out = np.frombuffer(bufs[1], dtype, count=n, offset=arr.offset * dtype.itemsize) if n else np.empty(0, dtype)
    if valid is not None:
        out = out.astype(np.float64)
        out[~valid] = np.nan
    return out
