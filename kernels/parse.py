"""Per-packet parse: one captured record in, one row of :class:`PacketColumns` out.

This is the decoder's business logic, written once. It is a set of Numba ``njit`` functions
with no Python objects, no exceptions and no allocation, so the CPU driver
(:mod:`kernels.decode`) and the GPU kernel (one thread per packet) call the same code.

Every read is checked against the captured length first. A header cut by the snap length
leaves the row with what was captured and a status saying where it stopped; the wire length
and the IP header's own length fields, not the capture, give the sizes.
"""

from __future__ import annotations

import numpy as np

from kernels import link_layers as ll
from kernels._jit import device_fn, row_fn
from kernels.bytes_be import be16, be32, be48, be64u, le32, u8
from kernels.packet_columns import (
    FRAG_FIRST,
    FRAG_IS_FRAGMENT,
    FRAG_MORE,
    ST_BAD_IP,
    ST_BAD_LINK,
    ST_L4_TRUNCATED,
    ST_NOT_IP,
    ST_OK,
)

# link types this decoder understands (LINKTYPE_* numbers as stored in pcap/pcapng)
LT_NULL = 0
LT_ETHERNET = 1
LT_RAW = 101
LT_RAW_DLT12 = 12  # DLT_RAW on most systems
LT_RAW_DLT14 = 14  # DLT_RAW on OpenBSD
LT_LOOP = 108
LT_LINUX_SLL = 113
LT_IPV4 = 228
LT_IPV6 = 229
LT_LINUX_SLL2 = 276
SUPPORTED_LINK_TYPES = (
    LT_NULL, LT_ETHERNET, LT_RAW_DLT12, LT_RAW_DLT14, LT_RAW, LT_LOOP, LT_LINUX_SLL, LT_IPV4,
    LT_IPV6, LT_LINUX_SLL2, *ll.LINK_TYPES,
)

ET_IPV4 = 0x0800
ET_ARP = 0x0806
ET_IPV6 = 0x86DD
ET_VLAN = 0x8100
ET_QINQ = 0x88A8
ET_QINQ_OLD = 0x9100
ET_MPLS = 0x8847
ET_MPLS_MC = 0x8848
ET_PPPOE = 0x8864

MAX_TAGS = 8  # VLAN tags or MPLS labels followed before giving up

_V4_MAPPED = np.uint64(0x0000FFFF00000000)


@device_fn
def icmp_counterpart(icmp_type, is_v6):
    """The type that answers ``icmp_type`` (Zeek's and Community ID's pairing), or -1.

    A request and its reply share a flow: the reply's key ports are (reply type, request type),
    the request's are (request type, reply type), which canonicalise to the same key.
    """
    t = icmp_type
    if not is_v6:
        if t == 8:
            return 0
        if t == 0:
            return 8
        if t == 13:
            return 14
        if t == 14:
            return 13
        if t == 15:
            return 16
        if t == 16:
            return 15
        if t == 10:
            return 9
        if t == 9:
            return 10
        if t == 17:
            return 18
        if t == 18:
            return 17
        return -1
    if t == 128:
        return 129
    if t == 129:
        return 128
    if t == 133:
        return 134
    if t == 134:
        return 133
    if t == 135:
        return 136
    if t == 136:
        return 135
    if t == 130:
        return 131
    if t == 131:
        return 130
    if t == 139:
        return 140
    if t == 140:
        return 139
    if t == 144:
        return 145
    if t == 145:
        return 144
    return -1


@device_fn
def _frag_bits(foff, more):
    bits = FRAG_IS_FRAGMENT
    if foff == 0:
        bits |= FRAG_FIRST
    if more:
        bits |= FRAG_MORE
    return bits


@row_fn
def _after_ethertype(buf, off, caplen, p, et, cols, i):
    """Follow VLAN tags, MPLS labels and PPPoE from offset ``p`` (ethertype ``et``).

    Returns ``(l3_offset, ethertype)``, with ethertype 0 when the frame was cut short.
    """
    first_tag = True
    for _ in range(MAX_TAGS):
        if et != ET_VLAN and et != ET_QINQ and et != ET_QINQ_OLD:
            break
        if p + 4 > caplen:
            return p, 0
        if first_tag:
            cols.vlan[i] = be16(buf, off + p) & 0x0FFF
            first_tag = False
        et = be16(buf, off + p + 2)
        p += 4
    if et == ET_MPLS or et == ET_MPLS_MC:
        for _ in range(MAX_TAGS):
            if p + 4 > caplen:
                return p, 0
            bottom = u8(buf, off + p + 2) & 1
            p += 4
            if bottom:
                break
        if p + 1 > caplen:
            return p, 0
        v = u8(buf, off + p) >> 4
        if v == 4:
            et = ET_IPV4
        elif v == 6:
            et = ET_IPV6
        else:
            et = 0xFFFF  # an MPLS payload we do not decode (e.g. pseudowire)
    elif et == ET_PPPOE:
        if p + 8 > caplen:
            return p, 0
        ppp = be16(buf, off + p + 6)
        p += 8
        if ppp == 0x0021:
            et = ET_IPV4
        elif ppp == 0x0057:
            et = ET_IPV6
        else:
            et = 0xFFFF
    return p, et


@device_fn
def _raw_ip_ethertype(buf, off, caplen, p):
    if p + 1 > caplen:
        return 0
    v = u8(buf, off + p) >> 4
    if v == 4:
        return ET_IPV4
    if v == 6:
        return ET_IPV6
    return 0xFFFF


@row_fn
def _link_layer(buf, off, caplen, link_type, cols, i):
    """Returns ``(l3_offset, ethertype)``; ethertype 0 means the link header is unusable."""
    if link_type == LT_ETHERNET:
        if caplen < 14:
            return 0, 0
        cols.dst_mac[i] = be48(buf, off)
        cols.src_mac[i] = be48(buf, off + 6)
        return _after_ethertype(buf, off, caplen, 14, be16(buf, off + 12), cols, i)
    if link_type == LT_RAW or link_type == LT_RAW_DLT12 or link_type == LT_RAW_DLT14:
        return 0, _raw_ip_ethertype(buf, off, caplen, 0)
    if link_type == LT_IPV4:
        return 0, ET_IPV4
    if link_type == LT_IPV6:
        return 0, ET_IPV6
    if link_type == LT_LINUX_SLL:
        if caplen < 16:
            return 0, 0
        if be16(buf, off + 4) == 6:
            cols.src_mac[i] = be48(buf, off + 6)
        return _after_ethertype(buf, off, caplen, 16, be16(buf, off + 14), cols, i)
    if link_type == LT_LINUX_SLL2:
        if caplen < 20:
            return 0, 0
        if u8(buf, off + 11) == 6:
            cols.src_mac[i] = be48(buf, off + 12)
        return _after_ethertype(buf, off, caplen, 20, be16(buf, off + 0), cols, i)
    if link_type == LT_NULL or link_type == LT_LOOP:
        if caplen < 4:
            return 0, 0
        if link_type == LT_LOOP:
            fam = be32(buf, off)
        else:
            # written in the capturing host's byte order, which the file does not record
            fam = le32(buf, off)
            if fam > 0xFFFF:
                fam = be32(buf, off)
        if fam == 2:
            return 4, ET_IPV4
        if fam == 10 or fam == 24 or fam == 28 or fam == 30:
            return 4, ET_IPV6
        return 4, 0xFFFF
    return _other_link_layer(buf, off, caplen, link_type, cols, i)


@row_fn
def _other_link_layer(buf, off, caplen, link_type, cols, i):
    """PPP, Cisco HDLC, NFLOG and 802.11 (:mod:`kernels.link_layers`)."""
    if link_type == ll.LT_PPP:
        framed = caplen >= 2 and u8(buf, off) == 0xFF and u8(buf, off + 1) == 0x03
        return ll.ppp(buf, off, caplen, 2 if framed else 0)
    if link_type == ll.LT_PPP_HDLC or link_type == ll.LT_C_HDLC:
        p, et, is_ppp = ll.hdlc_framed(buf, off, caplen)
        if is_ppp:
            return ll.ppp(buf, off, caplen, p)
        return _onwards(buf, off, caplen, p, et, cols, i)
    if link_type == ll.LT_NFLOG:
        return ll.nflog(buf, off, caplen)
    if link_type == ll.LT_IEEE802_11:
        p, et = ll.wifi(buf, off, caplen, 0, cols, i)
        return _onwards(buf, off, caplen, p, et, cols, i)
    if link_type == ll.LT_RADIOTAP:
        n = ll.radiotap_length(buf, off, caplen)
        if n == 0:
            return 0, 0
        p, et = ll.wifi(buf, off, caplen, n, cols, i)
        return _onwards(buf, off, caplen, p, et, cols, i)
    if link_type == ll.LT_PPI:
        n, inner = ll.ppi_header(buf, off, caplen)
        if n == 0:
            return 0, 0
        if inner == ll.LT_IEEE802_11:
            p, et = ll.wifi(buf, off, caplen, n, cols, i)
            return _onwards(buf, off, caplen, p, et, cols, i)
        if inner == LT_ETHERNET:
            if caplen < n + 14:
                return n, 0
            cols.dst_mac[i] = be48(buf, off + n)
            cols.src_mac[i] = be48(buf, off + n + 6)
            return _after_ethertype(buf, off, caplen, n + 14, be16(buf, off + n + 12), cols, i)
        return n, ll.NOT_IP
    return 0, 0


@row_fn
def _onwards(buf, off, caplen, p, et, cols, i):
    """VLAN tags and the like after a link header that gave an ethertype (none: as it is)."""
    if et == 0 or et == ll.NOT_IP:
        return p, et
    return _after_ethertype(buf, off, caplen, p, et, cols, i)


@row_fn
def _transport(buf, off, caplen, q, l4len, proto, is_v6, cols, i):
    """Decode the transport header at record offset ``q``; ``l4len`` comes from the IP header.

    Returns the row status.
    """
    avail = caplen - q
    if proto == 6:
        if avail < 4:
            cols.payload_len[i] = max(l4len - 20, 0)
            return ST_L4_TRUNCATED
        cols.sport[i] = be16(buf, off + q)
        cols.dport[i] = be16(buf, off + q + 2)
        if avail < 20 or l4len < 20:
            cols.payload_len[i] = max(l4len - 20, 0)
            return ST_L4_TRUNCATED
        doff = (u8(buf, off + q + 12) >> 4) * 4
        cols.tcp_seq[i] = be32(buf, off + q + 4)
        cols.tcp_ack[i] = be32(buf, off + q + 8)
        cols.tcp_flags[i] = u8(buf, off + q + 13)
        cols.tcp_win[i] = be16(buf, off + q + 14)
        if doff < 20 or doff > l4len:
            cols.payload_len[i] = max(l4len - 20, 0)
            return ST_L4_TRUNCATED
        cols.payload_off[i] = q + doff
        cols.payload_len[i] = l4len - doff
        return ST_OK
    if proto == 17 or proto == 136:  # UDP, UDP-Lite
        if avail < 4:
            cols.payload_len[i] = max(l4len - 8, 0)
            return ST_L4_TRUNCATED
        cols.sport[i] = be16(buf, off + q)
        cols.dport[i] = be16(buf, off + q + 2)
        cols.payload_off[i] = q + 8
        cols.payload_len[i] = max(l4len - 8, 0)
        if avail < 8 or l4len < 8:
            return ST_L4_TRUNCATED
        return ST_OK
    if proto == 1 or proto == 58:
        if avail < 2 or l4len < 2:
            cols.payload_len[i] = max(l4len - 8, 0)
            return ST_L4_TRUNCATED
        t = u8(buf, off + q)
        c = u8(buf, off + q + 1)
        cols.icmp_type[i] = t
        cols.icmp_code[i] = c
        cols.sport[i] = t
        other = icmp_counterpart(t, is_v6)
        cols.dport[i] = other if other >= 0 else c
        cols.payload_off[i] = q + 8
        cols.payload_len[i] = max(l4len - 8, 0)
        if avail < 8 or l4len < 8:
            return ST_L4_TRUNCATED
        return ST_OK
    if proto == 132:  # SCTP
        if avail < 4:
            cols.payload_len[i] = max(l4len - 12, 0)
            return ST_L4_TRUNCATED
        cols.sport[i] = be16(buf, off + q)
        cols.dport[i] = be16(buf, off + q + 2)
        cols.payload_off[i] = q + 12
        cols.payload_len[i] = max(l4len - 12, 0)
        return ST_OK
    cols.payload_off[i] = q
    cols.payload_len[i] = l4len
    return ST_OK


@row_fn
def _ipv4(buf, off, caplen, wire_len, p, cols, i):
    if caplen - p < 20:
        return ST_BAD_IP
    o = off + p
    vihl = u8(buf, o)
    ihl = (vihl & 15) * 4
    if (vihl >> 4) != 4 or ihl < 20:
        return ST_BAD_IP
    tot = be16(buf, o + 2)
    if tot == 0:  # TCP segmentation offload on the capturing host leaves it unset
        tot = wire_len - p
    if tot < ihl:
        return ST_BAD_IP
    cols.ip_ver[i] = 4
    cols.ip_len[i] = tot
    cols.ip_id[i] = be16(buf, o + 4)
    ff = be16(buf, o + 6)
    foff = ff & 0x1FFF
    more = (ff & 0x2000) != 0
    cols.ttl[i] = u8(buf, o + 8)
    proto = u8(buf, o + 9)
    cols.proto[i] = proto
    cols.src_ip_hi[i] = 0
    cols.src_ip_lo[i] = _V4_MAPPED | np.uint64(be32(buf, o + 12))
    cols.dst_ip_hi[i] = 0
    cols.dst_ip_lo[i] = _V4_MAPPED | np.uint64(be32(buf, o + 16))
    l4len = tot - ihl
    if foff != 0 or more:
        cols.frag[i] = _frag_bits(foff, more)
        cols.frag_off[i] = foff
        if foff != 0:
            cols.payload_off[i] = p + ihl
            cols.payload_len[i] = l4len
            return ST_OK
    if p + ihl > caplen:
        cols.payload_len[i] = l4len
        return ST_L4_TRUNCATED
    return _transport(buf, off, caplen, p + ihl, l4len, proto, False, cols, i)


@row_fn
def _ipv6(buf, off, caplen, wire_len, p, cols, i):
    if caplen - p < 40:
        return ST_BAD_IP
    o = off + p
    if (u8(buf, o) >> 4) != 6:
        return ST_BAD_IP
    plen = be16(buf, o + 4)
    if plen == 0:  # jumbogram or offload: trust the wire
        plen = max(wire_len - p - 40, 0)
    nh = u8(buf, o + 6)
    cols.ip_ver[i] = 6
    cols.ip_len[i] = 40 + plen
    cols.ttl[i] = u8(buf, o + 7)
    cols.src_ip_hi[i] = be64u(buf, o + 8)
    cols.src_ip_lo[i] = be64u(buf, o + 16)
    cols.dst_ip_hi[i] = be64u(buf, o + 24)
    cols.dst_ip_lo[i] = be64u(buf, o + 32)
    q = p + 40
    remaining = plen
    for _ in range(MAX_TAGS):
        if nh != 0 and nh != 43 and nh != 44 and nh != 60 and nh != 51 and nh != 135 and nh != 139 and nh != 140:
            break
        if q + 8 > caplen:
            cols.proto[i] = nh
            cols.payload_len[i] = max(remaining, 0)
            return ST_L4_TRUNCATED
        nxt = u8(buf, off + q)
        if nh == 44:
            hlen = 8
            offlg = be16(buf, off + q + 2)
            foff = offlg >> 3
            more = (offlg & 1) != 0
            cols.ip_id[i] = be32(buf, off + q + 4)
            if foff != 0 or more:
                cols.frag[i] = _frag_bits(foff, more)
                cols.frag_off[i] = foff
            nh = nxt
            q += hlen
            remaining -= hlen
            if foff != 0:
                cols.proto[i] = nh
                cols.payload_off[i] = q
                cols.payload_len[i] = max(remaining, 0)
                return ST_OK
            continue
        if nh == 51:
            hlen = (u8(buf, off + q + 1) + 2) * 4
        else:
            hlen = (u8(buf, off + q + 1) + 1) * 8
        nh = nxt
        q += hlen
        remaining -= hlen
    cols.proto[i] = nh
    if remaining < 0:
        return ST_BAD_IP
    if q > caplen:
        cols.payload_len[i] = remaining
        return ST_L4_TRUNCATED
    return _transport(buf, off, caplen, q, remaining, nh, True, cols, i)


@row_fn
def _arp(buf, off, caplen, p, cols, i):
    if caplen - p < 8:
        return
    o = off + p
    cols.arp_op[i] = be16(buf, o + 6)
    # Ethernet hardware addresses with IPv4 protocol addresses: the only kind we keep
    if be16(buf, o + 2) != ET_IPV4 or u8(buf, o + 4) != 6 or u8(buf, o + 5) != 4 or caplen - p < 28:
        return
    cols.arp_sha[i] = be48(buf, o + 8)
    cols.arp_spa[i] = be32(buf, o + 14)
    cols.arp_tha[i] = be48(buf, o + 18)
    cols.arp_tpa[i] = be32(buf, o + 24)


@row_fn
def parse_packet(buf, off, caplen, wire_len, link_type, cols, i):
    """Decode the record at ``buf[off:off+caplen]`` into row ``i`` of ``cols``.

    Only the fields the record carries are written: the row must be zero beforehand (the
    drivers clear whole columns, which is far cheaper than clearing field by field).
    ``ts_ns``, ``wire_len`` and ``cap_len`` are the caller's (they come from the record header).
    """
    cols.link_type[i] = link_type
    p, et = _link_layer(buf, off, caplen, link_type, cols, i)
    if et == 0:
        cols.status[i] = ST_BAD_LINK
        return
    cols.ethertype[i] = et
    cols.l3_off[i] = p
    if et == ET_IPV4:
        st = _ipv4(buf, off, caplen, wire_len, p, cols, i)
    elif et == ET_IPV6:
        st = _ipv6(buf, off, caplen, wire_len, p, cols, i)
    else:
        if et == ET_ARP:
            _arp(buf, off, caplen, p, cols, i)
        st = ST_NOT_IP
    if st == ST_BAD_IP:
        cols.ip_ver[i] = 0
    cols.status[i] = st
