"""IP packets wrapped in the link layers of kernels/link_layers.py, as capture files hold them
(PPP, PPP in HDLC framing, Cisco HDLC, NFLOG, 802.11 bare, under radiotap and under PPI)."""

from __future__ import annotations

import struct

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
BSSID = bytes.fromhex("02000000aaaa")


def ethertype(ip: bytes) -> int:
    return 0x86DD if ip[0] >> 4 == 6 else 0x0800


def ppp(ip: bytes, framed: bool = True) -> bytes:
    proto = 0x0057 if ip[0] >> 4 == 6 else 0x0021
    return (b"\xff\x03" if framed else b"") + struct.pack(">H", proto) + ip


def cisco_hdlc(ip: bytes) -> bytes:
    return struct.pack(">BBH", 0x0F, 0, ethertype(ip)) + ip


def nflog(ip: bytes, little: bool = True) -> bytes:
    """An NFLOG message: header, a prefix TLV, a hardware-protocol TLV, then the payload TLV."""
    o = "<" if little else ">"

    def tlv(kind: int, value: bytes) -> bytes:
        return struct.pack(o + "HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)

    family = 10 if ip[0] >> 4 == 6 else 2
    return struct.pack(">BBH", family, 0, 7) + tlv(10, b"fw-drop\0") + tlv(1, struct.pack(">HBB", ethertype(ip), 3, 0)) \
        + tlv(9, ip)


def wifi(ip: bytes, qos: bool = False, from_ds: bool = False) -> bytes:
    """A data frame to (or from) the distribution system, with LLC/SNAP."""
    subtype = 8 if qos else 0
    fc = (2 << 2) | (subtype << 4) | ((2 if from_ds else 1) << 8)
    if from_ds:  # addr1 = destination, addr2 = BSSID, addr3 = source
        addrs = MAC_B + BSSID + MAC_A
    else:  # addr1 = BSSID, addr2 = source, addr3 = destination
        addrs = BSSID + MAC_A + MAC_B
    header = struct.pack("<HH", fc, 0) + addrs + struct.pack("<H", 0) + (b"\0\0" if qos else b"")
    return header + b"\xaa\xaa\x03\x00\x00\x00" + struct.pack(">H", ethertype(ip)) + ip


def wifi_other(kind: str) -> bytes:
    """Frames with no IP: a beacon (management), or an encrypted data frame."""
    if kind == "beacon":
        return struct.pack("<HH", 0x80, 0) + b"\xff" * 6 + BSSID + BSSID + struct.pack("<H", 0) + b"\0" * 12
    fc = (2 << 2) | ((1 | 0x40) << 8)
    return struct.pack("<HH", fc, 0) + BSSID + MAC_A + MAC_B + struct.pack("<H", 0) + b"\x11" * 40


def radiotap(frame: bytes) -> bytes:
    """A radiotap header with the flags and rate fields present."""
    return struct.pack("<BBHI", 0, 0, 10, 0b110) + bytes([0x00, 0x02]) + frame


def ppi(frame: bytes, link_type: int = 105) -> bytes:
    return struct.pack("<BBHI", 0, 0, 8, link_type) + frame


def ethernet(ip: bytes) -> bytes:
    return MAC_B + MAC_A + struct.pack(">H", ethertype(ip)) + ip


WRAPS = {  # link type and wrapper, for whole captures
    "ppp": (9, ppp),
    "ppp-bare": (9, lambda ip: ppp(ip, framed=False)),
    "ppp-hdlc": (50, ppp),
    "cisco-hdlc": (104, cisco_hdlc),
    "nflog": (239, nflog),
    "nflog-big-endian": (239, lambda ip: nflog(ip, little=False)),
    "wifi": (105, wifi),
    "wifi-qos-from-ds": (105, lambda ip: wifi(ip, qos=True, from_ds=True)),
    "radiotap": (127, lambda ip: radiotap(wifi(ip))),
    "ppi-wifi": (192, lambda ip: ppi(wifi(ip, qos=True))),
    "ppi-ethernet": (192, lambda ip: ppi(ethernet(ip), 1)),
}


def erf_record(ts_ns: int, kind: int, data: bytes, wlen: int | None = None, extensions: int = 0) -> bytes:
    """One ERF record (``kind``: its type; Ethernet types get their 2-byte pad), padded to 8 bytes."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    stamp = (seconds << 32) | ((ns << 32) // 1_000_000_000 + 1)  # +1: the reader's floor gives ns back
    pad = b"\0\0" if kind in (2, 11, 16, 20) else b""
    ext = b"".join(bytes([0x80 | 5 if k < extensions - 1 else 5]) + b"\0" * 7 for k in range(extensions))
    body = ext + pad + data
    rlen = 16 + len(body)
    rlen += -rlen % 8
    head = struct.pack("<Q", stamp) + struct.pack(">BBHHH", kind | (0x80 if extensions else 0), 0, rlen, 0,
                                                 len(data) if wlen is None else wlen)
    return (head + body).ljust(rlen, b"\0")


ERF_WRAPS = {  # ERF record type and wrapper of an IP packet
    "erf-ethernet": (2, ethernet),
    "erf-ipv4-ipv6": (None, lambda ip: ip),  # type 22 or 23 by the packet's version
    "erf-hdlc-pos": (1, ppp),
}
