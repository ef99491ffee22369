"""Segmented scans written once for NumPy and CuPy (``xp``): the data-parallel flow engine's
building block.

Elements are in segment order; ``heads`` marks the first element of each segment. A scan runs
in three steps, none of which gives one thread more than ``CHUNK`` elements:

1. each chunk of ``CHUNK`` elements is scanned in place, one column at a time (``CHUNK``
   vector operations over all chunks at once);
2. the chunks' totals are scanned with Hillis and Steele's doubling (``log2`` of the number
   of chunks vector operations), as (segment started, value) pairs;
3. each chunk's elements before its first head take the carry of the chunks before it.

Sums use ``cumsum`` instead (exact for integers), which both libraries provide, and so do the
index scans (the last flagged element of a segment, its head): a prefix count and a scatter.
Everything here is elementwise or a gather, so it runs unchanged on CuPy; scatters never have
two writers of one element.
"""

from __future__ import annotations

CHUNK = 32
MAX_ROWS = 1 << 24  # the largest batch (FlowConfig.batch_size)
# doubling steps over chunk totals: enough for the largest batch, whatever this one holds, so a
# scan's operations are the same for every batch (steps past its size work on empty slices)
DOUBLINGS = tuple(1 << k for k in range((MAX_ROWS // CHUNK - 1).bit_length()))

# associative operators: (binary function of xp, identity as a function of the dtype)
OPS = {
    "max": (lambda xp: xp.maximum, lambda xp, dt: _lowest(xp, dt)),
    "min": (lambda xp: xp.minimum, lambda xp, dt: _highest(xp, dt)),
    "or": (lambda xp: xp.bitwise_or, lambda xp, dt: 0),
}


def _lowest(xp, dt):
    return xp.iinfo(dt).min if xp.dtype(dt).kind in "iu" else -xp.inf


def _highest(xp, dt):
    return xp.iinfo(dt).max if xp.dtype(dt).kind in "iu" else xp.inf


def start_index(xp, heads):
    """For each element, the index of its segment's head (0 before the first head)."""
    return xp.maximum(_last_true(xp, heads), 0)


def _last_true(xp, flags):
    """For each element, the index of the last flagged element at or before it, or -1: a prefix
    count, a scatter of each flagged element's index to its count (no two share one) and a
    gather, whatever the number of elements (a running max of indices, without a scan)."""
    n = flags.shape[0]
    count = xp.cumsum(flags, dtype=xp.int64)
    at = xp.full(n + 1, -1, dtype=xp.int64)
    at[xp.where(flags, count, 0)] = xp.where(flags, xp.arange(n, dtype=xp.int64), -1)  # slot 0: -1 only
    return at[count]


def scan(xp, values, heads, op: str):
    """Inclusive segmented scan of ``values`` with ``op`` (``max``, ``min`` or ``or``).

    An ``xp`` with a ``segmented_scan`` of its own (the GPU backend's: a fixed number of kernel
    launches, :mod:`kernels.chunk_scan`) does the int64 ones."""
    own = getattr(xp, "segmented_scan", None)
    if own is not None and values.dtype == xp.int64:
        return own(values, heads, op)
    n = values.shape[0]
    if n == 0:
        return values.copy()
    fn = OPS[op][0](xp)
    ident = OPS[op][1](xp, values.dtype)
    nch = -(-n // CHUNK)
    pad = nch * CHUNK - n
    v = xp.concatenate((values, xp.full(pad, ident, dtype=values.dtype))).reshape(nch, CHUNK)
    h = xp.concatenate((heads.astype(bool), xp.ones(pad, dtype=bool))).reshape(nch, CHUNK)
    for j in range(1, CHUNK):
        v[:, j] = xp.where(h[:, j], v[:, j], fn(v[:, j - 1], v[:, j]))
    # carry into each chunk: the inclusive scan of the chunk totals, shifted by one
    tot_f = h.any(axis=1)
    tot_v = v[:, CHUNK - 1].copy()
    for d in DOUBLINGS:
        new_v = xp.where(tot_f[d:], tot_v[d:], fn(tot_v[:-d], tot_v[d:]))
        tot_f = xp.concatenate((tot_f[:d], tot_f[d:] | tot_f[:-d]))
        tot_v = xp.concatenate((tot_v[:d], new_v))
    carry = tot_v[:-1]
    # elements of chunk c (c >= 1) before its first head take the carry
    before_head = xp.cumsum(h[1:], axis=1) == 0
    v[1:] = xp.where(before_head, fn(carry[:, None], v[1:]), v[1:])
    return v.reshape(-1)[:n]


def cumsum(xp, values, starts):
    """Inclusive segmented sum; ``starts`` from :func:`start_index`. Integers wrap as in C."""
    c = xp.cumsum(values)
    base = xp.where(starts > 0, c[xp.maximum(starts - 1, 0)], 0)
    return c - base


def exclusive(xp, inclusive, heads, carry):
    """The exclusive scan from an inclusive one: the element before, or ``carry`` (per
    element, taken at heads) at a segment's head."""
    shifted = xp.concatenate((inclusive[:1], inclusive[:-1]))
    return xp.where(heads, carry, shifted)


def last_index(xp, valid, heads):
    """For each element, the index of the last ``valid`` element at or before it in its segment,
    or -1 (indices grow along the elements, so the last one overall is in the segment when it
    is at or after the segment's head)."""
    last = _last_true(xp, valid)
    return xp.where(last >= _last_true(xp, heads), last, -1)


def ends(xp, heads):
    """The last element of each segment (mask)."""
    return xp.concatenate((heads[1:], xp.ones(1, dtype=bool))) if heads.shape[0] else heads
