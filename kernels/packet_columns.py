"""Packet columns: the decoder's output, one array per field, one row per captured record.

The layout follows DESIGN.md ("Packet columns"). IP addresses are 16 bytes held as two
big-endian ``uint64`` words (``*_hi``, ``*_lo``); IPv4 addresses use the IPv4-mapped IPv6
form ``::ffff:a.b.c.d`` so one comparison and one hash serve both families.

``status`` tells what the decoder could make of a record (see the ``ST_*`` constants);
only rows with ``ip_ver`` 4 or 6 take part in flows.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# status: how far the decoder got
ST_OK = 0  # every header the row describes was captured and is consistent
ST_L4_TRUNCATED = 1  # an IP packet whose transport header was cut by the snap length
ST_NOT_IP = 2  # a frame with no IP in it (ARP, LLDP, STP, ...)
ST_BAD_IP = 3  # claims to be IP but its header is broken or cut: cannot be keyed
ST_BAD_LINK = 4  # link-layer header cut short or of an unsupported link type

# frag bits
FRAG_IS_FRAGMENT = 1  # offset > 0 or more-fragments set
FRAG_FIRST = 2  # offset 0 (carries the transport header)
FRAG_MORE = 4  # more-fragments flag
FRAG_PORTS_RESOLVED = 8  # ports taken from the first fragment of the datagram

# tcp_flags bits
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
TH_ECE = 0x40
TH_CWR = 0x80

IPV4_MAPPED_HI = np.uint64(0)
IPV4_MAPPED_LO_PREFIX = np.uint64(0x0000FFFF00000000)


class PacketColumns(NamedTuple):
    """Struct of arrays for ``n`` packets. Every array has the same length."""

    ts_ns: np.ndarray  # int64, capture timestamp, ns since the Unix epoch
    wire_len: np.ndarray  # uint32, length on the wire (from the record header)
    cap_len: np.ndarray  # uint32, bytes captured
    link_type: np.ndarray  # uint16, DLT/LINKTYPE of the record's interface
    status: np.ndarray  # uint8, ST_*
    src_mac: np.ndarray  # uint64 (48 bits used)
    dst_mac: np.ndarray  # uint64
    vlan: np.ndarray  # uint16, outermost 802.1Q/802.1ad VLAN id, 0 if untagged
    ethertype: np.ndarray  # uint16, after VLAN tags; 0x0800/0x86DD for raw IP link types
    ip_ver: np.ndarray  # uint8, 4, 6 or 0
    l3_off: np.ndarray  # uint16, offset of the IP (or ARP) header in the record
    src_ip_hi: np.ndarray  # uint64
    src_ip_lo: np.ndarray  # uint64
    dst_ip_hi: np.ndarray  # uint64
    dst_ip_lo: np.ndarray  # uint64
    proto: np.ndarray  # uint8, transport protocol (after IPv6 extension headers)
    ttl: np.ndarray  # uint8, TTL / hop limit
    ip_len: np.ndarray  # uint32, IP total length (IPv6: 40 + payload length)
    ip_id: np.ndarray  # uint32, IPv4 id or IPv6 fragment identification
    frag: np.ndarray  # uint8, FRAG_* bits
    frag_off: np.ndarray  # uint16, fragment offset in bytes / 8
    sport: np.ndarray  # uint16, source port; ICMP: type
    dport: np.ndarray  # uint16, destination port; ICMP: counterpart type or code
    tcp_flags: np.ndarray  # uint8
    tcp_seq: np.ndarray  # uint32
    tcp_ack: np.ndarray  # uint32
    tcp_win: np.ndarray  # uint16
    icmp_type: np.ndarray  # uint8
    icmp_code: np.ndarray  # uint8
    payload_off: np.ndarray  # uint32, offset of the transport payload in the record
    payload_len: np.ndarray  # uint32, payload length from the headers (not the capture)
    arp_op: np.ndarray  # uint16
    arp_sha: np.ndarray  # uint64, sender MAC
    arp_spa: np.ndarray  # uint32, sender IPv4
    arp_tha: np.ndarray  # uint64, target MAC
    arp_tpa: np.ndarray  # uint32, target IPv4
    # written by flow accounting, not by the decoder:
    flow_dir: np.ndarray  # uint8, 1 = from the originator, 2 = from the responder, 0 = not in a flow
    flow_nth: np.ndarray  # uint32, the packet's number (from 0) in its direction of its flow record
    flow_first_ts: np.ndarray  # int64, first timestamp of its flow record (with the key: the uid)


COLUMN_DTYPES: dict[str, np.dtype] = {
    "ts_ns": np.dtype(np.int64),
    "wire_len": np.dtype(np.uint32),
    "cap_len": np.dtype(np.uint32),
    "link_type": np.dtype(np.uint16),
    "status": np.dtype(np.uint8),
    "src_mac": np.dtype(np.uint64),
    "dst_mac": np.dtype(np.uint64),
    "vlan": np.dtype(np.uint16),
    "ethertype": np.dtype(np.uint16),
    "ip_ver": np.dtype(np.uint8),
    "l3_off": np.dtype(np.uint16),
    "src_ip_hi": np.dtype(np.uint64),
    "src_ip_lo": np.dtype(np.uint64),
    "dst_ip_hi": np.dtype(np.uint64),
    "dst_ip_lo": np.dtype(np.uint64),
    "proto": np.dtype(np.uint8),
    "ttl": np.dtype(np.uint8),
    "ip_len": np.dtype(np.uint32),
    "ip_id": np.dtype(np.uint32),
    "frag": np.dtype(np.uint8),
    "frag_off": np.dtype(np.uint16),
    "sport": np.dtype(np.uint16),
    "dport": np.dtype(np.uint16),
    "tcp_flags": np.dtype(np.uint8),
    "tcp_seq": np.dtype(np.uint32),
    "tcp_ack": np.dtype(np.uint32),
    "tcp_win": np.dtype(np.uint16),
    "icmp_type": np.dtype(np.uint8),
    "icmp_code": np.dtype(np.uint8),
    "payload_off": np.dtype(np.uint32),
    "payload_len": np.dtype(np.uint32),
    "arp_op": np.dtype(np.uint16),
    "arp_sha": np.dtype(np.uint64),
    "arp_spa": np.dtype(np.uint32),
    "arp_tha": np.dtype(np.uint64),
    "arp_tpa": np.dtype(np.uint32),
    "flow_dir": np.dtype(np.uint8),
    "flow_nth": np.dtype(np.uint32),
    "flow_first_ts": np.dtype(np.int64),
}
assert tuple(COLUMN_DTYPES) == PacketColumns._fields


def allocate(n: int, xp=np) -> PacketColumns:
    """Empty columns for ``n`` packets, in NumPy (default) or any array namespace ``xp``."""
    return PacketColumns(*(xp.empty(n, dtype=dt) for dt in COLUMN_DTYPES.values()))


def head(cols: PacketColumns, n: int) -> PacketColumns:
    """A view of the first ``n`` rows."""
    return PacketColumns(*(a[:n] for a in cols))
