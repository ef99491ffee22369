"""Many device arrays brought to the host in one copy: each array's bytes side by side in one
device buffer (widest items first, so every array starts aligned to its own item size), one
transfer, and host views cut out of it. Written against ``xp``; on NumPy it is a plain copy."""

from __future__ import annotations

import numpy as np


def to_host(xp, arrays: list) -> list[np.ndarray]:
    """``arrays`` (any shapes and dtypes of ``xp``) as NumPy arrays, in the same order."""
    if not arrays:
        return []
    order = sorted(range(len(arrays)), key=lambda i: -arrays[i].dtype.itemsize)
    flat = [xp.ascontiguousarray(arrays[i]).reshape(-1).view(xp.uint8) for i in order]
    whole = xp.concatenate(flat)
    host = whole.get() if hasattr(whole, "get") else whole
    out: list = [None] * len(arrays)
    at = 0
    for i, f in zip(order, flat):
        a = arrays[i]
        out[i] = host[at: at + f.shape[0]].view(np.dtype(a.dtype.str)).reshape(a.shape)
        at += f.shape[0]
    return out
