"""Walker for Linux TPACKET_V3 ring blocks: where each packet of a retired block starts, and
its captured length, wire length and timestamp. The kernel fills a block with packets, each
behind a ``tpacket3_hdr`` that says how far away the next one is, so the walk is sequential
and touches only those headers (the same shape as :mod:`kernels.capture_scan`)."""

from __future__ import annotations

from kernels._jit import cpu_kernel
from kernels.bytes_be import le16, le32

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1
BLOCK_STATUS = 8
BLOCK_NUM_PKTS = 12
BLOCK_FIRST_PKT = 16
# struct tpacket3_hdr
PKT_NEXT = 0
PKT_SEC = 4
PKT_NSEC = 8
PKT_SNAPLEN = 12
PKT_LEN = 16
PKT_MAC = 24
PKT_SLL_PKTTYPE = 58  # sockaddr_ll after the header (TPACKET_ALIGN(sizeof(tpacket3_hdr)) = 48), +10
PACKET_OUTGOING = 4


BLOCK_LEN = 20


@cpu_kernel
def walk_block(buf, block, used, off, caplen, wirelen, ts_ns, n0, skip_outgoing):
    """Records the packets of the block copied to ``buf[block : block + used]`` from row ``n0``
    on (offsets into ``buf``); returns how many. A damaged header ends the walk, keeping what
    came before it. ``skip_outgoing`` leaves out the sent copy of each packet (the loopback
    interface shows every packet twice, as sent and as received)."""
    num = le32(buf, block + BLOCK_NUM_PKTS)
    pkt = le32(buf, block + BLOCK_FIRST_PKT)
    n = n0
    for _ in range(num):
        if n >= len(off) or pkt <= 0 or pkt + 28 > used:
            break
        mac = le16(buf, block + pkt + PKT_MAC)
        snap = le32(buf, block + pkt + PKT_SNAPLEN)
        if pkt + mac + snap > used:
            break
        nxt = le32(buf, block + pkt + PKT_NEXT)
        if skip_outgoing and buf[block + pkt + PKT_SLL_PKTTYPE] == PACKET_OUTGOING:
            if nxt == 0:
                break
            pkt += nxt
            continue
        off[n] = block + pkt + mac
        caplen[n] = snap
        wirelen[n] = le32(buf, block + pkt + PKT_LEN)
        ts_ns[n] = le32(buf, block + pkt + PKT_SEC) * 1_000_000_000 + le32(buf, block + pkt + PKT_NSEC)
        n += 1
        if nxt == 0:
            break
        pkt += nxt
    return n - n0
