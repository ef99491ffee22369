"""Record walkers: find where each captured packet starts in a buffer of pcap or pcapng bytes.

The walk is sequential (each record's length says where the next one starts) and touches only
the 16-28 bytes of each record header, so it is cheap next to decoding. The walkers stop at the
first record that is not complete in the buffer (``NEED_MORE``), at anything malformed (an
error code, with the offset of the bad record), or, for pcapng, at any block that is not a
packet block (``OTHER_BLOCK``): section and interface blocks are rare and are parsed in Python.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, device_fn
from kernels.bytes_be import rd16, rd32

# return codes
SCAN_FULL = 0  # max_records reached; call again
SCAN_NEED_MORE = 1  # the next record is not complete in the buffer
SCAN_OTHER_BLOCK = 2  # pcapng: a non-packet block starts at the returned position
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


@cpu_kernel
def scan_pcap(buf, pos, end, little, ts_mult, max_caplen, max_records,
              rec_off, rec_caplen, rec_wirelen, rec_ts):
    """Walk classic pcap records from ``pos``. Returns ``(count, new_pos, code)``."""
    n = 0
    while n < max_records:
        if pos + 16 > end:
            return n, pos, SCAN_NEED_MORE
        incl = rd32(buf, pos + 8, little)
        if incl > max_caplen:
            return n, pos, ERR_CAPLEN
        if pos + 16 + incl > end:
            return n, pos, SCAN_NEED_MORE
        sec = rd32(buf, pos, little)
        frac = rd32(buf, pos + 4, little)
        orig = rd32(buf, pos + 12, little)
        rec_off[n] = pos + 16
        rec_caplen[n] = incl
        rec_wirelen[n] = orig if orig >= incl else incl
        rec_ts[n] = sec * NS + frac * ts_mult
        pos += 16 + incl
        n += 1
    return n, pos, SCAN_FULL


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
def scan_pcapng(buf, pos, end, little, if_link, if_snap, if_kind, if_factor, if_offset_ns, n_if,
                max_records, last_ts, rec_off, rec_caplen, rec_wirelen, rec_ts, rec_link):
    """Walk pcapng packet blocks (EPB, SPB, obsolete PB) from ``pos``.

    ``last_ts`` is the timestamp given to Simple Packet Blocks, which carry none.
    Returns ``(count, new_pos, code)``.
    """
    n = 0
    while n < max_records:
        if pos + 12 > end:
            return n, pos, SCAN_NEED_MORE
        btype = rd32(buf, pos, little)
        blen = rd32(buf, pos + 4, little)
        if btype != 6 and btype != 3 and btype != 2:
            return n, pos, SCAN_OTHER_BLOCK
        if blen < 12 or (blen & 3) != 0:
            return n, pos, ERR_BLOCK_LEN
        if pos + blen > end:
            return n, pos, SCAN_NEED_MORE
        if rd32(buf, pos + blen - 4, little) != blen:
            return n, pos, ERR_BLOCK_TRAILER
        if btype == 3:
            if blen < 16:
                return n, pos, ERR_BLOCK_SHORT
            if n_if < 1:
                return n, pos, ERR_IFACE
            orig = rd32(buf, pos + 8, little)
            cap = orig
            if if_snap[0] > 0 and cap > if_snap[0]:
                cap = if_snap[0]
            if cap > blen - 16:
                cap = blen - 16
            rec_off[n] = pos + 12
            rec_caplen[n] = cap
            rec_wirelen[n] = orig
            rec_ts[n] = last_ts
            rec_link[n] = if_link[0]
        else:
            if blen < 32:
                return n, pos, ERR_BLOCK_SHORT
            if btype == 6:
                ifid = rd32(buf, pos + 8, little)
            else:
                ifid = rd16(buf, pos + 8, little)
            if ifid >= n_if:
                return n, pos, ERR_IFACE
            cap = rd32(buf, pos + 20, little)
            orig = rd32(buf, pos + 24, little)
            if cap > blen - 32:
                return n, pos, ERR_BLOCK_SHORT
            ts = _pcapng_ts(rd32(buf, pos + 12, little), rd32(buf, pos + 16, little),
                            if_kind[ifid], if_factor[ifid], if_offset_ns[ifid])
            last_ts = ts
            rec_off[n] = pos + 28
            rec_caplen[n] = cap
            rec_wirelen[n] = orig if orig >= cap else cap
            rec_ts[n] = ts
            rec_link[n] = if_link[ifid]
        pos += blen
        n += 1
    return n, pos, SCAN_FULL


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
