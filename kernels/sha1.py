"""SHA-1 of a short message (at most 55 bytes: one 64-byte block), for Community ID.

Written as plain integer code so the CPU and the GPU compute the same digest without a
round trip through Python's ``hashlib``.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import device_fn

_MASK = 0xFFFFFFFF


@device_fn
def _rotl(x, n):
    return ((x << n) | (x >> (32 - n))) & _MASK


@device_fn
def sha1_short(msg, n, w, out, out_pos):
    """Digest of ``msg[:n]`` (``n`` <= 55) into ``out[out_pos:out_pos+20]``.

    ``w`` is an ``int64`` scratch array of 80 words, so the function allocates nothing.
    """
    for t in range(16):
        w[t] = 0
    for j in range(n):
        w[j >> 2] |= np.int64(msg[j]) << (24 - 8 * (j & 3))
    w[n >> 2] |= np.int64(0x80) << (24 - 8 * (n & 3))
    w[15] = n * 8
    for t in range(16, 80):
        w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
    a = 0x67452301
    b = 0xEFCDAB89
    c = 0x98BADCFE
    d = 0x10325476
    e = 0xC3D2E1F0
    for t in range(80):
        if t < 20:
            f = (b & c) | ((~b) & d)
            k = 0x5A827999
        elif t < 40:
            f = b ^ c ^ d
            k = 0x6ED9EBA1
        elif t < 60:
            f = (b & c) | (b & d) | (c & d)
            k = 0x8F1BBCDC
        else:
            f = b ^ c ^ d
            k = 0xCA62C1D6
        temp = (_rotl(a, 5) + (f & _MASK) + e + k + w[t]) & _MASK
        e = d
        d = c
        c = _rotl(b, 30)
        b = a
        a = temp
    h0 = (0x67452301 + a) & _MASK
    h1 = (0xEFCDAB89 + b) & _MASK
    h2 = (0x98BADCFE + c) & _MASK
    h3 = (0x10325476 + d) & _MASK
    h4 = (0xC3D2E1F0 + e) & _MASK
    for j, h in enumerate((h0, h1, h2, h3, h4)):
        for q in range(4):
            out[out_pos + 4 * j + q] = (h >> (24 - 8 * q)) & 0xFF
