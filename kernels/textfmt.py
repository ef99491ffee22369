"""Text for output columns written straight into byte buffers: IP addresses (RFC 5952 for
IPv6), base64 and base62. Output columns are built as one buffer plus offsets, which Arrow
takes as a string array without creating a Python object per value."""

from __future__ import annotations

import numpy as np

from kernels._jit import device_fn

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_B64 = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", dtype=np.uint8)
_B62 = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
_MAPPED_PREFIX = np.uint64(0x0000FFFF00000000)
_HI32 = np.uint64(0xFFFFFFFF00000000)


@device_fn
def _write_dec(dst, pos, v):
    if v >= 100:
        dst[pos] = 48 + v // 100
        dst[pos + 1] = 48 + (v // 10) % 10
        dst[pos + 2] = 48 + v % 10
        return pos + 3
    if v >= 10:
        dst[pos] = 48 + v // 10
        dst[pos + 1] = 48 + v % 10
        return pos + 2
    dst[pos] = 48 + v
    return pos + 1


@device_fn
def write_ipv4(dst, pos, a):
    for k in range(4):
        if k:
            dst[pos] = 46  # '.'
            pos += 1
        pos = _write_dec(dst, pos, (a >> (24 - 8 * k)) & 0xFF)
    return pos


@device_fn
def _group(hi, lo, k):
    if k < 4:
        return np.int64((hi >> np.uint64(48 - 16 * k)) & np.uint64(0xFFFF))
    return np.int64((lo >> np.uint64(48 - 16 * (k - 4))) & np.uint64(0xFFFF))


@device_fn
def write_ipv6(dst, pos, hi, lo):
    # the longest run of two or more zero groups becomes '::' (the first such run on a tie)
    best_start = -1
    best_len = 0
    k = 0
    while k < 8:
        if _group(hi, lo, k) == 0:
            j = k
            while j < 8 and _group(hi, lo, j) == 0:
                j += 1
            if j - k > best_len and j - k >= 2:
                best_start = k
                best_len = j - k
            k = j
        else:
            k += 1
    k = 0
    while k < 8:
        if k == best_start:
            dst[pos] = 58
            dst[pos + 1] = 58
            pos += 2
            k += best_len
            continue
        if k > 0 and k != best_start + best_len:
            dst[pos] = 58
            pos += 1
        g = _group(hi, lo, k)
        started = False
        for sh in (12, 8, 4, 0):
            nib = (g >> sh) & 0xF
            if nib or started or sh == 0:
                dst[pos] = _HEX[nib]
                pos += 1
                started = True
        k += 1
    return pos


@device_fn
def is_v4_mapped(hi, lo):
    return hi == 0 and (lo & _HI32) == _MAPPED_PREFIX


@device_fn
def write_ip(dst, pos, hi, lo):
    if is_v4_mapped(hi, lo):
        return write_ipv4(dst, pos, np.int64(lo & np.uint64(0xFFFFFFFF)))
    return write_ipv6(dst, pos, hi, lo)


@device_fn
def write_base64(dst, pos, src, start, n):
    j = 0
    while j + 3 <= n:
        v = (np.int64(src[start + j]) << 16) | (np.int64(src[start + j + 1]) << 8) | np.int64(src[start + j + 2])
        dst[pos] = _B64[(v >> 18) & 63]
        dst[pos + 1] = _B64[(v >> 12) & 63]
        dst[pos + 2] = _B64[(v >> 6) & 63]
        dst[pos + 3] = _B64[v & 63]
        pos += 4
        j += 3
    rem = n - j
    if rem == 1:
        v = np.int64(src[start + j]) << 16
        dst[pos] = _B64[(v >> 18) & 63]
        dst[pos + 1] = _B64[(v >> 12) & 63]
        dst[pos + 2] = 61
        dst[pos + 3] = 61
        pos += 4
    elif rem == 2:
        v = (np.int64(src[start + j]) << 16) | (np.int64(src[start + j + 1]) << 8)
        dst[pos] = _B64[(v >> 18) & 63]
        dst[pos + 1] = _B64[(v >> 12) & 63]
        dst[pos + 2] = _B64[(v >> 6) & 63]
        dst[pos + 3] = 61
        pos += 4
    return pos


@device_fn
def write_base62_u64(dst, pos, v, width):
    """``v`` in base 62, most significant digit first, padded to ``width`` digits."""
    for k in range(width - 1, -1, -1):
        dst[pos + k] = _B62[np.int64(v % np.uint64(62))]
        v = v // np.uint64(62)
    return pos + width
