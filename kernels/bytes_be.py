"""Fixed-width integer loads from a ``uint8`` buffer, for both byte orders.

Bounds are the caller's job: every parse step checks its header fits in the captured length
before reading, so these helpers never check (they must also compile for ``numba.cuda``).
"""

from __future__ import annotations

import numpy as np

from kernels._jit import device_fn


@device_fn
def u8(buf, o):
    """The byte at ``o``. Read through an unsigned index: Numba then leaves out the negative-index
    wraparound it adds to every load, and LLVM can merge neighbouring byte loads into one load
    and a byte swap (decode 15-20 % faster on the 2-core VM, side by side)."""
    return int(buf[np.uint64(o)])


@device_fn
def be16(buf, o):
    return (u8(buf, o) << 8) | u8(buf, o + 1)


@device_fn
def be32(buf, o):
    return (u8(buf, o) << 24) | (u8(buf, o + 1) << 16) | (u8(buf, o + 2) << 8) | u8(buf, o + 3)


@device_fn
def be48(buf, o):
    return (be16(buf, o) << 32) | be32(buf, o + 2)


@device_fn
def be64u(buf, o):
    """Eight bytes big-endian as a non-negative value in a ``uint64``."""
    # both operands must be uint64: numba turns mixed int64/uint64 arithmetic into float64
    return (np.uint64(be32(buf, o)) << np.uint64(32)) | np.uint64(be32(buf, o + 4))


@device_fn
def le16(buf, o):
    return u8(buf, o) | (u8(buf, o + 1) << 8)


@device_fn
def le32(buf, o):
    return u8(buf, o) | (u8(buf, o + 1) << 8) | (u8(buf, o + 2) << 16) | (u8(buf, o + 3) << 24)


@device_fn
def rd16(buf, o, little):
    if little:
        return le16(buf, o)
    return be16(buf, o)


@device_fn
def rd32(buf, o, little):
    if little:
        return le32(buf, o)
    return be32(buf, o)
