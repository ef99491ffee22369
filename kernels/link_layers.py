"""Link layers other than Ethernet-like ones: PPP, Cisco HDLC, Linux NFLOG and IEEE 802.11
(bare, under radiotap, or under PPI). Each decoder returns ``(offset, ethertype)`` of what
follows its header, ethertype 0 when the header is cut short and ``0xFFFF`` for a frame that
carries no IP (management frames, encrypted data, control protocols); ``kernels.parse``
follows VLAN tags and the like from there, as for Ethernet.

Numbers and layouts: the tcpdump.org link-type list (LINKTYPE_PPP 9, PPP_HDLC 50, C_HDLC 104,
IEEE802_11 105, IEEE802_11_RADIOTAP 127, PPI 192, NFLOG 239), RFC 1661/1662 (PPP), the
radiotap and PPI headers' little-endian length fields, and IEEE 802.11's MAC header.
"""

from __future__ import annotations

from kernels._jit import device_fn, row_fn
from kernels.bytes_be import be16, be48, le16, le32, u8

LT_PPP = 9
LT_PPP_HDLC = 50
LT_C_HDLC = 104
LT_IEEE802_11 = 105
LT_RADIOTAP = 127
LT_PPI = 192
LT_NFLOG = 239
LINK_TYPES = (LT_PPP, LT_PPP_HDLC, LT_C_HDLC, LT_IEEE802_11, LT_RADIOTAP, LT_PPI, LT_NFLOG)

ET_IPV4 = 0x0800
ET_IPV6 = 0x86DD
NOT_IP = 0xFFFF
NFLOG_TLVS = 32  # TLVs looked through for the packet (a log message has a handful)
NFULA_PAYLOAD = 9
AF_INET, AF_INET6 = 2, 10


@device_fn
def ppp(buf, off, caplen, p):
    """After a PPP protocol field at ``p`` (two bytes, or one when compressed, RFC 1661)."""
    if p + 1 > caplen:
        return p, 0
    first = u8(buf, off + p)
    if first & 1:
        proto = first
        p += 1
    else:
        if p + 2 > caplen:
            return p, 0
        proto = be16(buf, off + p)
        p += 2
    if proto == 0x0021:
        return p, ET_IPV4
    if proto == 0x0057:
        return p, ET_IPV6
    return p, NOT_IP


@device_fn
def hdlc_framed(buf, off, caplen):
    """PPP in HDLC-like framing (address 0xFF, control 0x03) or Cisco HDLC (address 0x0F or
    0x8F, then an ethertype): returns ``(offset, ethertype, is_ppp)``."""
    if caplen < 2:
        return 0, 0, False
    address = u8(buf, off)
    if address == 0xFF and u8(buf, off + 1) == 0x03:
        return 2, 0, True
    if (address == 0x0F or address == 0x8F) and caplen >= 4:
        return 4, be16(buf, off + 2), False
    return 0, NOT_IP, False


@device_fn
def nflog(buf, off, caplen):
    """The packet inside a Linux NFLOG message: the payload TLV among the message's TLVs.
    Their lengths and types are in the capturing host's byte order, which the file does not
    record: the first TLV's length is read both ways, and the reading that fits the record
    decides (a metadata TLV comes first, and it is never cut short)."""
    if caplen < 8:
        return 0, 0
    family = u8(buf, off)
    p = 4
    first = le16(buf, off + p)
    little = 4 <= first <= caplen - p
    for _ in range(NFLOG_TLVS):
        if p + 4 > caplen:
            return p, NOT_IP
        length = le16(buf, off + p) if little else be16(buf, off + p)
        kind = le16(buf, off + p + 2) if little else be16(buf, off + p + 2)
        if length < 4:
            return p, 0
        if kind == NFULA_PAYLOAD:
            p += 4
            if family == AF_INET:
                return p, ET_IPV4
            if family == AF_INET6:
                return p, ET_IPV6
            if p + 1 > caplen:
                return p, 0
            v = u8(buf, off + p) >> 4
            return p, ET_IPV4 if v == 4 else (ET_IPV6 if v == 6 else NOT_IP)
        p += (length + 3) & ~3
    return p, NOT_IP


@row_fn
def wifi(buf, off, caplen, p, cols, i):
    """An IEEE 802.11 frame at ``p``: a data frame's LLC/SNAP ethertype and where it ends;
    the frame's source and destination MACs go to the columns, as Ethernet's do."""
    if p + 2 > caplen:
        return p, 0
    fc = le16(buf, off + p)
    kind = (fc >> 2) & 3
    subtype = (fc >> 4) & 0xF
    flags = (fc >> 8) & 0xFF
    if kind != 2 or subtype & 4 or flags & 0x40:  # not data, no data (null), or encrypted
        return p, NOT_IP
    to_ds = flags & 1
    from_ds = flags & 2
    hdr = 30 if to_ds and from_ds else 24
    if subtype & 8:  # QoS data: QoS control, and an HT control field when the order bit is set
        hdr += 2
        if flags & 0x80:
            hdr += 4
    if p + hdr + 8 > caplen:
        return p, 0
    a1 = be48(buf, off + p + 4)
    a2 = be48(buf, off + p + 10)
    a3 = be48(buf, off + p + 16)
    if to_ds and from_ds:
        cols.dst_mac[i] = a3
        cols.src_mac[i] = be48(buf, off + p + 24)
    elif to_ds:
        cols.dst_mac[i] = a3
        cols.src_mac[i] = a2
    elif from_ds:
        cols.dst_mac[i] = a1
        cols.src_mac[i] = a3
    else:
        cols.dst_mac[i] = a1
        cols.src_mac[i] = a2
    q = p + hdr
    snap = u8(buf, off + q) == 0xAA and u8(buf, off + q + 1) == 0xAA and u8(buf, off + q + 2) == 0x03
    if not snap:
        return p, NOT_IP
    return q + 8, be16(buf, off + q + 6)


@device_fn
def radiotap_length(buf, off, caplen):
    """Where the 802.11 frame starts after a radiotap header (0: unusable)."""
    if caplen < 8 or u8(buf, off) != 0:
        return 0
    n = le16(buf, off + 2)
    return n if 8 <= n <= caplen else 0


@device_fn
def ppi_header(buf, off, caplen):
    """A PPI header's length and the link type of what follows (0, 0: unusable)."""
    if caplen < 8 or u8(buf, off) != 0:
        return 0, 0
    n = le16(buf, off + 2)
    if n < 8 or n > caplen:
        return 0, 0
    return n, le32(buf, off + 4)
