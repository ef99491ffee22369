"""Record walkers: find where each captured packet starts in a buffer of pcap or pcapng bytes.

The walk is sequential (each record's length says where the next one starts) and touches only
the 16-28 bytes of each record header, so it is cheap next to decoding. The walkers stop at the
first record that is not complete in the buffer (``NEED_MORE``), at anything malformed (an
error code, with the offset of the bad record), for pcapng at any block that is not a packet
block (``OTHER_BLOCK``: section and interface blocks are rare and are parsed in Python), and at
the first record at or after a stop offset (``STOP``): several threads can then walk stretches
of one buffer, each from a record start that :mod:`kernels.capture_resync` finds.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, device_fn
from kernels.bytes_be import rd16, rd32

# return codes
SCAN_FULL = 0  # max_records reached; call again
SCAN_NEED_MORE = 1  # the next record is not complete in the buffer
SCAN_OTHER_BLOCK = 2  # pcapng: a non-packet block starts at the returned position
SCAN_STOP = 3  # a bounded walk reached a record that starts at or after its stop offset
ERR_CAPLEN = 10  # captured length larger than the snap length or absurd
ERR_BLOCK_LEN = 11  # pcapng block length below 12 or not a multiple of 4
ERR_BLOCK_TRAILER = 12  # pcapng trailing length differs from the leading one
ERR_IFACE = 13  # pcapng packet names an interface that was never described
ERR_BLOCK_SHORT = 14  # pcapng packet block too short for its fixed fields

ERROR_TEXT = {
    ERR_CAPLEN: "captured length is larger than the snap length (corrupt record header)",
    ERR_BLOCK_LEN: "block length is below 12 or not a multiple of 4 (corrupt block)",
    ERR_BLOCK_TRAILER: "block's trailing length does not match its leading length (corrupt block)",
    ERR_IFACE: "packet names an interface with no Interface Description Block",
    ERR_BLOCK_SHORT: "packet block is too short for its fields or its captured length",
}

# pcapng timestamp conversion kinds, one per interface
TS_MUL = 0  # ns = units * factor
TS_DIV = 1  # ns = units // factor
TS_POW2 = 2  # ns = units * 1e9 / 2**factor

NS = 1_000_000_000
NO_STOP = 1 << 62  # a walk's stop offset when only the end of the buffer ends it


@cpu_kernel
def walk_pcap(buf, pos, bounds, fmt, out, first, limit):
    """Walk classic pcap records from ``pos`` into rows ``first``, ``first + 1``, ... of ``out``.

    ``bounds`` is ``(stop, end)``: the walk also ends at the first record whose header starts
    at or after ``stop`` (``SCAN_STOP``; :data:`NO_STOP` for none), so that several threads can
    each walk a stretch of one buffer. ``fmt`` is ``(little, ts_mult, max_caplen)``; ``out`` is
    the tuple of record arrays ``(off, caplen, wirelen, ts_ns, link, head)`` (the link column is
    the reader's; ``head``: where each record's header starts). Returns ``(count, new_pos, code,
    0)``: the shape of :func:`walk_pcapng`'s.
    """
    stop, end = bounds
    little, ts_mult, max_caplen = fmt
    off, caplen, wirelen, ts, _, head = out
    n = 0
    while n < limit:
        if pos >= stop:
            return n, pos, SCAN_STOP, 0
        if pos + 16 > end:
            return n, pos, SCAN_NEED_MORE, 0
        incl = rd32(buf, pos + 8, little)
        if incl > max_caplen:
            return n, pos, ERR_CAPLEN, 0
        if pos + 16 + incl > end:
            return n, pos, SCAN_NEED_MORE, 0
        orig = rd32(buf, pos + 12, little)
        i = np.uint64(first + n)  # unsigned: no negative-index wraparound on each store
        head[i] = pos
        off[i] = pos + 16
        caplen[i] = incl
        wirelen[i] = orig if orig >= incl else incl
        ts[i] = rd32(buf, pos, little) * NS + rd32(buf, pos + 4, little) * ts_mult
        pos += 16 + incl
        n += 1
    return n, pos, SCAN_FULL, 0


@device_fn
def _pcapng_ts(hi, lo, kind, factor, offset_ns):
    units = (np.int64(hi) << 32) | np.int64(lo)
    if kind == TS_MUL:
        ns = units * factor
    elif kind == TS_DIV:
        ns = units // factor
    else:
        whole = units >> factor
        part = units - (whole << factor)
        ns = whole * NS + ((part * NS) >> factor)
    return ns + offset_ns


@cpu_kernel
def walk_pcapng(buf, pos, bounds, fmt, ifs, out, first, limit):
    """Walk pcapng packet blocks (EPB, SPB, obsolete PB) from ``pos`` into rows ``first``, ...
    of ``out``, the record arrays as :func:`walk_pcap` takes them.

    ``bounds`` is ``(stop, end)`` as for :func:`walk_pcap`. ``fmt`` is ``(little, n_if,
    last_ts)``: ``last_ts`` is the timestamp given to Simple Packet Blocks, which carry none.
    ``ifs`` holds the interfaces' ``(link, snap, ts_kind, ts_factor, ts_offset_ns)`` arrays.
    Returns ``(count, new_pos, code, lead)``; ``lead`` counts the Simple Packet Blocks before
    the first block with a timestamp of its own: a walk that starts mid-file without knowing
    ``last_ts`` has those to correct.
    """
    stop, end = bounds
    little, n_if, last_ts = fmt
    if_link, if_snap, if_kind, if_factor, if_offset_ns = ifs
    off, caplen, wirelen, rec_ts, link, head = out
    n = 0
    lead = 0
    timed = False
    while n < limit:
        if pos >= stop:
            return n, pos, SCAN_STOP, lead
        if pos + 12 > end:
            return n, pos, SCAN_NEED_MORE, lead
        btype = rd32(buf, pos, little)
        blen = rd32(buf, pos + 4, little)
        if btype != 6 and btype != 3 and btype != 2:
            return n, pos, SCAN_OTHER_BLOCK, lead
        if blen < 12 or (blen & 3) != 0:
            return n, pos, ERR_BLOCK_LEN, lead
        if pos + blen > end:
            return n, pos, SCAN_NEED_MORE, lead
        if rd32(buf, pos + blen - 4, little) != blen:
            return n, pos, ERR_BLOCK_TRAILER, lead
        if btype == 3:
            if blen < 16:
                return n, pos, ERR_BLOCK_SHORT, lead
            if n_if < 1:
                return n, pos, ERR_IFACE, lead
            orig = rd32(buf, pos + 8, little)
            cap = orig
            if if_snap[0] > 0 and cap > if_snap[0]:
                cap = if_snap[0]
            if cap > blen - 16:
                cap = blen - 16
            data, lk, ts = pos + 12, if_link[0], last_ts
            if not timed:
                lead += 1
        else:
            if blen < 32:
                return n, pos, ERR_BLOCK_SHORT, lead
            if btype == 6:
                ifid = rd32(buf, pos + 8, little)
            else:
                ifid = rd16(buf, pos + 8, little)
            if ifid >= n_if:
                return n, pos, ERR_IFACE, lead
            cap = rd32(buf, pos + 20, little)
            orig = rd32(buf, pos + 24, little)
            if cap > blen - 32:
                return n, pos, ERR_BLOCK_SHORT, lead
            ts = _pcapng_ts(rd32(buf, pos + 12, little), rd32(buf, pos + 16, little),
                            if_kind[ifid], if_factor[ifid], if_offset_ns[ifid])
            last_ts = ts
            timed = True
            data, lk = pos + 28, if_link[ifid]
            if orig < cap:
                orig = cap
        i = np.uint64(first + n)  # unsigned: no negative-index wraparound on each store
        head[i] = pos
        off[i] = data
        caplen[i] = cap
        wirelen[i] = orig
        rec_ts[i] = ts
        link[i] = lk
        pos += blen
        n += 1
    return n, pos, SCAN_FULL, lead


@cpu_kernel
def copy_records(buf, rec_off, caplen, idx, out, out_off):
    """Copy records ``idx`` of ``buf`` back to back into ``out``; record ``j`` lands at
    ``out_off[j]`` (a distributed run ships the packets of flows that span partitions)."""
    pos = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        a = rec_off[i]
        n = caplen[i]
        out_off[j] = pos
        for k in range(n):
            out[pos + k] = buf[a + k]
        pos += n
