"""A segmented scan as a fixed number of kernel launches, for the GPU: what
:func:`kernels.seg_scan.scan` does with some 160 array operations (a column loop over chunks
and a doubling schedule), done in 9 launches whatever the number of elements.

1. one thread per chunk of ``CHUNK`` elements scans it and writes its total, whether a segment
   starts in it, and where the first such start is;
2. the chunks' totals are scanned the same way, one level up (``LEVELS`` levels: enough for
   :data:`kernels.seg_scan.MAX_ROWS` elements, so that the deepest level is a single chunk);
3. one thread per chunk takes the carry of the chunks before it into its elements before its
   first segment start.

No thread handles more than ``CHUNK`` elements. The per-chunk steps are the functions below,
compiled for the CPU (:class:`HostScan`, which the tests compare with the array version) and
for CUDA (``kernels.cuda_kernels``: ``scan_chunks`` and ``scan_carry``). Values are int64.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kernels._jit import cpu_kernel, device_fn
from kernels.seg_scan import CHUNK, MAX_ROWS

OP_CODES = {"max": 0, "min": 1, "or": 2}
LEVELS = 4  # CHUNK ** (LEVELS + 1) >= MAX_ROWS: the deepest level is one chunk
assert CHUNK ** (LEVELS + 1) >= MAX_ROWS


class Partial(NamedTuple):
    """What the chunk step writes: the chunks' own scans (``out``), each chunk's total
    (``tot_v``), whether a segment starts in it (``tot_f``) and where the first does (``first``,
    ``CHUNK`` for none)."""

    out: np.ndarray
    tot_v: np.ndarray
    tot_f: np.ndarray
    first: np.ndarray


@device_fn
def combine(op, a, b):
    if op == 0:
        return max(a, b)
    if op == 1:
        return min(a, b)
    return a | b


@device_fn
def scan_chunk(values, heads, n, op, part, c):
    """Chunk ``c``: its inclusive scan into ``out``, its total, whether (and where first) a
    segment starts in it. A chunk past the end is a start of nothing (no carry)."""
    out = part.out
    lo = c * CHUNK
    hi = min(n, lo + CHUNK)
    if lo >= hi:
        part.tot_v[c] = 0
        part.tot_f[c] = True
        part.first[c] = 0
        return
    acc = values[lo]
    out[lo] = acc
    at = 0 if heads[lo] else CHUNK
    for i in range(lo + 1, hi):
        if heads[i]:
            acc = values[i]
            if at == CHUNK:
                at = i - lo
        else:
            acc = combine(op, acc, values[i])
        out[i] = acc
    part.tot_v[c] = acc
    part.tot_f[c] = at < CHUNK
    part.first[c] = at


@device_fn
def carry_chunk(out, carry, first, n, op, c):
    """Chunk ``c``'s elements before its first segment start take the scan of the chunks before."""
    if c == 0:
        return
    lo = c * CHUNK
    hi = min(n, lo + min(np.int64(first[c]), CHUNK))
    v = carry[c - 1]
    for i in range(lo, hi):
        out[i] = combine(op, v, out[i])


@cpu_kernel
def scan_chunks(values, heads, n, op, part):
    for c in range(part.tot_v.shape[0]):
        scan_chunk(values, heads, n, op, part, c)


@cpu_kernel
def scan_carry(out, carry, first, n, op):
    for c in range(first.shape[0]):
        carry_chunk(out, carry, first, n, op, c)


def chunks_of(n: int) -> int:
    return max(1, -(-n // CHUNK))


def scan_levels(xp, run, values, heads, op: int, levels: int = LEVELS):
    """Inclusive segmented scan of int64 ``values`` (``heads``: segment starts) with ``run``
    launching the two steps (:class:`HostScan`, or the GPU backend's launcher)."""
    n = int(values.shape[0])
    nch = chunks_of(n)
    part = Partial(xp.empty(n, dtype=xp.int64), xp.empty(nch, dtype=xp.int64), xp.empty(nch, dtype=bool),
                   xp.empty(nch, dtype=xp.int32))
    run.chunks(values, heads, n, op, part)
    if levels:
        carry = scan_levels(xp, run, part.tot_v, part.tot_f, op, levels - 1)
        run.carry(part.out, carry, part.first, n, op)
    return part.out


class HostScan:
    """The two steps on the CPU (for tests: the array version is the CPU's)."""

    def chunks(self, values, heads, n, op, part):
        scan_chunks(values, heads, n, op, part)

    def carry(self, out, carry, first, n, op):
        scan_carry(out, carry, first, n, op)
