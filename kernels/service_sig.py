"""What protocol a flow speaks, from the first payload of its first packets (not from its ports).

Zeek names a connection's ``service`` after the analyzer that recognised its payload (dynamic
protocol detection); a flow on port 80 that does not speak HTTP gets no ``http``. The same here:
``first_payloads`` returns the early packets of flows that carry captured payload (the first
``EARLY`` of each direction) and a code for what that payload starts like, judged on content
alone. The caller keeps the first one per flow.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, row_fn

JUDGE_BYTES = 16  # captured payload bytes needed to say "not recognised" (all of a shorter payload)
EARLY = 8  # packets per direction (a handshake takes one or two; a capture on a relaying link sees each twice)

SVC_UNKNOWN = 0  # payload captured, no protocol recognised
SVC_SSL = 1
SVC_SSH = 2
SVC_HTTP = 3
SVC_DNS = 4
SVC_DHCP = 5
SVC_BANNER220 = 6  # "220 " greeting: SMTP or FTP (the port tells which)
SVC_RFB = 7
SVC_BITTORRENT = 8
SVC_NTP = 9
SVC_QUIC = 10


@row_fn
def _at(buf, p, avail, a, b, c, d):
    return avail >= 4 and buf[p] == a and buf[p + 1] == b and buf[p + 2] == c and buf[p + 3] == d


@row_fn
def _http(buf, p, avail):
    return (_at(buf, p, avail, 71, 69, 84, 32) or _at(buf, p, avail, 80, 79, 83, 84)
            or _at(buf, p, avail, 72, 69, 65, 68) or _at(buf, p, avail, 80, 85, 84, 32)
            or _at(buf, p, avail, 68, 69, 76, 69) or _at(buf, p, avail, 79, 80, 84, 73)
            or _at(buf, p, avail, 80, 65, 84, 67) or _at(buf, p, avail, 67, 79, 78, 78)
            or _at(buf, p, avail, 72, 84, 84, 80))


@row_fn
def _dns(buf, p, avail, plen, tcp):
    """A DNS message: (TCP: a two-byte length of a header or more) a header with one or two questions, a
    standard opcode and, in a query, no answers."""
    if tcp:
        if avail < 14:
            return False
        if (np.int64(buf[p]) << 8) | np.int64(buf[p + 1]) < 12:
            return False
        p += 2
        avail -= 2
    if avail < 12:
        return False
    opcode = (buf[p + 2] >> 3) & 0xF
    qd = (np.int64(buf[p + 4]) << 8) | np.int64(buf[p + 5])
    an = (np.int64(buf[p + 6]) << 8) | np.int64(buf[p + 7])
    query = (buf[p + 2] & 0x80) == 0
    return opcode <= 5 and 1 <= qd <= 2 and not (query and an > 0 and opcode == 0)


@row_fn
def classify_service(buf, p, avail, plen, proto):
    b0 = buf[p]
    if proto == 6:
        if avail >= 3 and b0 == 0x16 and buf[p + 1] == 3 and buf[p + 2] <= 4:
            return SVC_SSL
        if _at(buf, p, avail, 83, 83, 72, 45):  # "SSH-"
            return SVC_SSH
        if _http(buf, p, avail):
            return SVC_HTTP
        if _at(buf, p, avail, 50, 50, 48, 32) or _at(buf, p, avail, 50, 50, 48, 45):  # "220 ", "220-"
            return SVC_BANNER220
        if _at(buf, p, avail, 82, 70, 66, 32):  # "RFB "
            return SVC_RFB
        if avail >= 20 and b0 == 19 and _at(buf, p + 1, avail - 1, 66, 105, 116, 84):  # "\x13BitTorrent"
            return SVC_BITTORRENT
        if _dns(buf, p, avail, plen, True):
            return SVC_DNS
        return SVC_UNKNOWN
    if proto == 17:
        if avail >= 240 and (b0 == 1 or b0 == 2) and buf[p + 1] == 1 and buf[p + 2] == 6 and \
                buf[p + 236] == 0x63 and buf[p + 237] == 0x82 and buf[p + 238] == 0x53 and buf[p + 239] == 0x63:
            return SVC_DHCP
        if avail >= 1200 and (b0 & 0xC0) == 0xC0 and buf[p + 1] == 0 and buf[p + 2] == 0 and buf[p + 3] == 0 \
                and buf[p + 4] == 1:
            return SVC_QUIC
        if avail >= 12 and buf[p] == 100 and buf[p + 1] == 49 and buf[p + 2] == 58:  # "d1:" bencoded DHT
            return SVC_BITTORRENT
        if avail == 48 and ((b0 >> 3) & 7) in (3, 4) and 1 <= (b0 & 7) <= 5:
            return SVC_NTP
        if _dns(buf, p, avail, plen, False):
            return SVC_DNS
        return SVC_UNKNOWN
    return SVC_UNKNOWN


@cpu_kernel
def first_payloads(buf, rec_off, cols, n, rows, codes):
    """Rows (``rows[:m]``, returns ``m``) of flow packets among their direction's first
    ``EARLY`` whose payload was captured, and ``codes`` for what it starts like."""
    m = 0
    for i in range(n):
        if cols.flow_dir[i] == 0 or cols.flow_nth[i] >= EARLY or cols.payload_len[i] == 0:
            continue
        if cols.frag[i] & 1 and not cols.frag[i] & 2:  # a later fragment carries no header
            continue
        proto = cols.proto[i]
        if proto != 6 and proto != 17:
            continue
        plen = np.int64(cols.payload_len[i])
        avail = min(np.int64(cols.cap_len[i]) - np.int64(cols.payload_off[i]), plen)
        if avail <= 0 or avail < min(plen, np.int64(JUDGE_BYTES)):
            continue  # headers only, or a few bytes of it (a short snap length): nothing to judge
        rows[m] = i
        codes[m] = classify_service(buf, rec_off[i] + cols.payload_off[i], avail, cols.payload_len[i], proto)
        m += 1
    return m
