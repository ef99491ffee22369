"""Address columns as numbers, computed over Arrow's string buffers without a Python object
per value: a 64-bit id per string (for grouping) and the IPv4 value of dotted-quad strings
(for network membership).

Flow records carry addresses as text, and a flood from millions of spoofed sources has
millions of distinct ones: parsing or hashing them one Python call at a time cost 5 µs each
(15 s for a 3M-source SYN flood). Here every character column of the padded strings is one
NumPy operation. Text that is not a dotted quad (IPv6, IPv4-mapped IPv6) is left to the
caller's Python path; sites see few distinct IPv6 addresses in comparison.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa

from kernels.xp_ops import mix64

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


class Padded(NamedTuple):
    """Strings as rows of a zero-padded byte matrix, and their lengths (nulls: -1)."""

    mat: np.ndarray
    lengths: np.ndarray


def _padded(strings: pa.Array | Padded, width: int | None = None) -> Padded:
    """``strings`` padded (at least ``width`` wide), reusing a matrix made before."""
    if not isinstance(strings, Padded):
        return padded(strings, width)
    if width is None or strings.mat.shape[1] == width:
        return strings
    if strings.mat.shape[1] > width:
        return Padded(strings.mat[:, :width], strings.lengths)
    return Padded(np.pad(strings.mat, ((0, 0), (0, width - strings.mat.shape[1]))), strings.lengths)


def padded(arr: pa.Array, width: int | None = None) -> Padded:
    """The strings of ``arr`` as rows of a zero-padded byte matrix (width a multiple of 8, at
    least the longest value; cut to ``width`` when given) and their lengths. Nulls are empty
    rows of length -1. The functions below take its result in place of the array, so that
    several of them read one matrix."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if pa.types.is_large_string(arr.type):
        arr = arr.cast(pa.string())
    n = len(arr)
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], np.int32, n + 1, arr.offset * 4) if n else np.zeros(1, np.int32)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets).astype(np.int64)
    longest = int(lengths.max()) if n else 0
    w = width or max(8, -(-longest // 8) * 8)
    mat = np.zeros((n, w), np.uint8)
    starts = offsets[:-1].astype(np.int64)
    for j in range(min(w, longest)):  # one character position at a time: no rows x width index array
        rows = np.flatnonzero(lengths > j)
        mat[rows, j] = data[starts[rows] + j]
    if arr.null_count:
        lengths[~np.asarray(arr.is_valid())] = -1
    return Padded(mat, lengths)


def string_ids(arr: pa.Array | Padded) -> np.ndarray:
    """A 64-bit id of each string (of its bytes and length), equal for equal strings in any
    batch or process. Two distinct strings share an id with odds of about n²/2⁶⁵ (one in three
    million for 3M distinct addresses); nulls all get one id."""
    mat, lengths = _padded(arr)
    words = mat.view(np.uint64) if mat.shape[1] else np.zeros((len(lengths), 0), np.uint64)
    h = mix64(np, lengths.astype(np.uint64) + _GOLDEN)
    for k in range(words.shape[1]):  # only a string's own words: the same id at any matrix width
        h = np.where(8 * k < lengths, mix64(np, h ^ words[:, k]) + _GOLDEN, h)
    return h


def ipv4_values(arr: pa.Array | Padded) -> tuple[np.ndarray, np.ndarray]:
    """For each string, whether it is a dotted-quad IPv4 address (four decimal octets, each at
    most 255, without leading signs or spaces) and its value as an integer (0 otherwise)."""
    mat, lengths = _padded(arr, 16)
    n = len(lengths)
    ok = (lengths >= 7) & (lengths <= 15)
    value = np.zeros(n, np.int64)
    octet = np.zeros(n, np.int64)
    digits = np.zeros(n, np.int64)
    dots = np.zeros(n, np.int64)
    for j in range(16):
        c = mat[:, j].astype(np.int64)
        live = j < lengths
        digit = live & (c >= 48) & (c <= 57)
        dot = live & (c == 46)
        ok &= ~live | digit | dot
        ok &= ~(digit & (digits >= 1) & (octet == 0))  # no leading zeros, as inet_pton
        octet = np.where(digit, octet * 10 + (c - 48), octet)
        digits = np.where(digit, digits + 1, digits)
        ends = dot | (j == lengths)  # an octet ends at a dot or at the string's end
        ok &= ~ends | ((digits >= 1) & (digits <= 3) & (octet <= 255))
        value = np.where(ends, value * 256 + octet, value)
        octet = np.where(ends, 0, octet)
        digits = np.where(ends, 0, digits)
        dots += dot
    ok &= lengths != 16  # (a 16-character string never ends inside the matrix)
    ok &= dots == 3
    return ok, np.where(ok, value, 0).astype(np.uint32)


def _crc_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> np.uint32(1)) ^ np.uint32(0xEDB88320), t >> np.uint32(1))
    return t.astype(np.uint32)


_CRC = _crc_table()


def crc32_column(arr: pa.Array | Padded) -> np.ndarray:
    """``zlib.crc32`` of each string's UTF-8 bytes (the stable hash :class:`DistinctSample`
    ranks by), one NumPy step per character position; nulls give 0."""
    mat, lengths = _padded(arr)
    crc = np.full(len(lengths), 0xFFFFFFFF, np.uint32)
    for j in range(mat.shape[1]):
        live = j < lengths
        if not live.any():
            break
        step = _CRC[(crc ^ mat[:, j]) & np.uint32(0xFF)] ^ (crc >> np.uint32(8))
        crc = np.where(live, step, crc)
    return np.where(lengths >= 0, crc ^ np.uint32(0xFFFFFFFF), 0).astype(np.uint32)
