"""Record walker for Endace ERF files (Extensible Record Format, as DAG cards write it).

A record is a 16-byte header: a little-endian 64-bit timestamp (seconds, and a 32-bit binary
fraction), a type byte (its top bit: an extension header follows), flags, the record length
(big-endian, header and padding included), a loss counter or colour, and the wire length.
Extension headers (8 bytes each, top bit: another follows) come next, then for Ethernet
types a 2-byte offset/pad before the frame. Each record gets the link type of its ERF type,
so one file may mix them; padding records are skipped. Same contract as
:func:`kernels.capture_scan.walk_pcap`.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, device_fn
from kernels.bytes_be import be16, u8
from kernels.capture_scan import NS, SCAN_FULL, SCAN_NEED_MORE, SCAN_STOP

ERR_RECORD_LEN = 20  # an ERF record shorter than its header and extension headers
ERROR_TEXT = {ERR_RECORD_LEN: "ERF record length is below its header's (corrupt record header)"}

TYPE_PAD = 48
MAX_EXTENSIONS = 16
UNDECODED = 0xFFFF  # the link type given to records of ERF types the decoder does not read


@device_fn
def link_of(kind):
    """The link type of an ERF record type, and the bytes between the headers and the packet."""
    if kind == 2 or kind == 11 or kind == 16 or kind == 20:  # Ethernet (plain, coloured, DSM, hashed)
        return 1, 2
    if kind == 1 or kind == 10 or kind == 15 or kind == 19:  # HDLC POS: PPP or Cisco HDLC framing
        return 50, 0
    if kind == 22:
        return 228, 0
    if kind == 23:
        return 229, 0
    return UNDECODED, 0


@cpu_kernel
def walk_erf(buf, pos, bounds, out, first, limit):
    """ERF records from ``pos`` into rows ``first``, ... of ``out`` (``(off, caplen, wirelen,
    ts_ns, link, head)``); returns ``(count, new_pos, code, 0)``."""
    stop, end = bounds
    off, caplen, wirelen, ts, link, head = out
    n = 0
    while n < limit:
        if pos >= stop:
            return n, pos, SCAN_STOP, 0
        if pos + 16 > end:
            return n, pos, SCAN_NEED_MORE, 0
        typ = u8(buf, pos + 8)
        rlen = be16(buf, pos + 10)
        if rlen < 16:
            return n, pos, ERR_RECORD_LEN, 0
        if pos + rlen > end:
            return n, pos, SCAN_NEED_MORE, 0
        q = pos + 16
        more = typ & 0x80
        for _ in range(MAX_EXTENSIONS):
            if not more:
                break
            if q + 8 > pos + rlen:
                return n, pos, ERR_RECORD_LEN, 0
            more = u8(buf, q) & 0x80
            q += 8
        kind = typ & 0x7F
        if kind == TYPE_PAD:
            pos += rlen
            continue
        lt, pad = link_of(kind)
        if q + pad > pos + rlen:
            return n, pos, ERR_RECORD_LEN, 0
        q += pad
        wlen = be16(buf, pos + 14)
        i = np.uint64(first + n)
        head[i] = pos
        off[i] = q
        captured = pos + rlen - q  # padding to the record's length included
        caplen[i] = captured if wlen == 0 or captured <= wlen else wlen  # wlen 0: not given
        wirelen[i] = max(wlen, caplen[i])
        link[i] = lt
        stamp = np.uint64(u8(buf, pos))
        for k in range(1, 8):
            stamp |= np.uint64(u8(buf, pos + k)) << np.uint64(8 * k)
        seconds = np.int64(stamp >> np.uint64(32))
        fraction = np.int64(stamp & np.uint64(0xFFFFFFFF))
        ts[i] = seconds * NS + ((fraction * NS) >> 32)
        pos += rlen
        n += 1
    return n, pos, SCAN_FULL, 0
