"""The sequential walk of the segments that the scans could not settle: each segment's packets
in capture order through the CPU engine's own per-packet functions (``packet_ends_flow``,
``init_flow``, ``update_flow``, ``restart_flow``), on one CPU thread or one CUDA thread per
segment. Flows are then exactly the CPU engine's by construction.
"""

from __future__ import annotations

from typing import NamedTuple

from kernels._jit import cpu_kernel, row_fn
from kernels.flowkey import canonical_key
from kernels.flowstate import END_ACTIVE
from kernels.flowtable import init_flow, note_packet_flow, packet_ends_flow, restart_flow, update_flow


class Segments(NamedTuple):
    """The walked segments: packets in key order (``order``), each segment's range of it
    (``lo``, ``hi``) and the first row its ended records go to (``out_at``)."""

    order: object
    lo: object
    hi: object
    out_at: object


class Walk(NamedTuple):
    """Row-format state of the walked segments' flows (one row each) and whether it is held."""

    st: object
    fs: object
    hist: object
    has: object


class Walked(NamedTuple):
    """What the walk emits: records in row format at each segment's ``out_at`` onwards, how
    many each segment ``emitted``, and how many flows each ``created``."""

    keys: object
    st: object
    fs: object
    hist: object
    reason: object
    emitted: object
    created: object


def emitted_mask(xp, out_at, emitted, n_out):
    """Which output rows the walk filled: the first ``emitted[g]`` from ``out_at[g]``."""
    marks = xp.zeros(n_out + 1, dtype=xp.int64)
    marks[out_at] += 1
    seg_of = xp.cumsum(marks[:n_out]) - 1
    return xp.arange(n_out) - out_at[seg_of] < emitted[seg_of]


@row_fn
def _emit_row(walk, g, reason, res, k):
    for c in range(walk.st.shape[1]):
        res.st[k, c] = walk.st[g, c]
    for c in range(walk.fs.shape[1]):
        res.fs[k, c] = walk.fs[g, c]
    for c in range(walk.hist.shape[1]):
        res.hist[k, c] = walk.hist[g, c]
    res.reason[k] = reason


@row_fn
def walk_one(cols, segs, likely, cfg, walk, res, g):
    """Segment ``g`` (packets ``segs.order[lo:hi]``, one key) as ``update_flows`` walks it, in
    the walk's row ``g``: a record that ends is written to ``res`` from ``segs.out_at[g]``."""
    out_at = segs.out_at[g]
    k = out_at
    has = walk.has[g] != 0
    for j in range(segs.lo[g], segs.hi[g]):
        i = segs.order[j]
        a_hi, a_lo, b_hi, b_lo, w4, from_a = canonical_key(cols, i)
        if has:
            reason = packet_ends_flow(walk.st, g, cols, i, cfg)
            if reason == END_ACTIVE:
                _emit_row(walk, g, END_ACTIVE, res, k)
                res.keys[k, 0], res.keys[k, 1], res.keys[k, 2], res.keys[k, 3], res.keys[k, 4] = (
                    a_hi, a_lo, b_hi, b_lo, w4)
                k += 1
                restart_flow(walk.st, walk.fs, g, cols.ts_ns[i])
            elif reason >= 0:
                _emit_row(walk, g, reason, res, k)
                res.keys[k, 0], res.keys[k, 1], res.keys[k, 2], res.keys[k, 3], res.keys[k, 4] = (
                    a_hi, a_lo, b_hi, b_lo, w4)
                k += 1
                has = False
        if not has:
            init_flow(walk.st, walk.fs, walk.hist, g, cols, i, from_a, likely)
            res.created[g] += 1
            has = True
        update_flow(walk.st, walk.fs, walk.hist, g, cols, i, from_a, cfg)
        note_packet_flow(walk.st, g, cols, i, from_a)
    res.emitted[g] = k - out_at


@cpu_kernel
def walk_segments(cols, segs, likely, cfg, walk, res):
    """Every walked segment on the CPU (the GPU runs one thread per segment)."""
    for g in range(segs.lo.shape[0]):
        walk_one(cols, segs, likely, cfg, walk, res, g)
