"""PacketSpec: packets to synthesise, as columns (one row per packet).

Generators build these columns with NumPy, many flows at a time; :mod:`detector.synth.encode`
turns them into capture bytes. Addresses use the same 16-byte (two ``uint64``) form as the
decoder, with IPv4 in the IPv4-mapped range.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields

import numpy as np

KIND_IP = 0
KIND_ARP = 1

_V4_MAPPED = 0x0000FFFF00000000


def ip_words(addr: str) -> tuple[int, int]:
    """``(hi, lo)`` words of an IPv4 or IPv6 address."""
    ip = ipaddress.ip_address(addr)
    if ip.version == 4:
        return 0, _V4_MAPPED | int(ip)
    v = int(ip)
    return v >> 64, v & (2**64 - 1)


def mac_int(mac: str) -> int:
    return int(mac.replace(":", "").replace("-", ""), 16)


@dataclass
class PacketSpec:
    ts_ns: np.ndarray  # int64
    kind: np.ndarray  # uint8, KIND_*
    src_mac: np.ndarray  # uint64
    dst_mac: np.ndarray  # uint64
    vlan: np.ndarray  # uint16, 0 = untagged
    ip_ver: np.ndarray  # uint8
    src_hi: np.ndarray  # uint64
    src_lo: np.ndarray  # uint64
    dst_hi: np.ndarray  # uint64
    dst_lo: np.ndarray  # uint64
    proto: np.ndarray  # uint8
    sport: np.ndarray  # uint16 (ICMP: type)
    dport: np.ndarray  # uint16 (ICMP: code)
    flags: np.ndarray  # uint8, TCP flags
    seq: np.ndarray  # uint32
    ack: np.ndarray  # uint32
    win: np.ndarray  # uint16
    ttl: np.ndarray  # uint8
    ip_id: np.ndarray  # uint16
    payload_len: np.ndarray  # uint32, true transport payload length
    cap_payload: np.ndarray  # uint32, payload bytes written to the capture (<= payload_len)
    payload_off: np.ndarray  # int64, where the written payload bytes start in the pool
    arp_op: np.ndarray  # uint16
    arp_tha: np.ndarray  # uint64

    DTYPES = {
        "ts_ns": np.int64, "kind": np.uint8, "src_mac": np.uint64, "dst_mac": np.uint64, "vlan": np.uint16,
        "ip_ver": np.uint8, "src_hi": np.uint64, "src_lo": np.uint64, "dst_hi": np.uint64, "dst_lo": np.uint64,
        "proto": np.uint8, "sport": np.uint16, "dport": np.uint16, "flags": np.uint8, "seq": np.uint32,
        "ack": np.uint32, "win": np.uint16, "ttl": np.uint8, "ip_id": np.uint16, "payload_len": np.uint32,
        "cap_payload": np.uint32, "payload_off": np.int64, "arp_op": np.uint16, "arp_tha": np.uint64,
    }

    @classmethod
    def empty(cls, n: int) -> PacketSpec:
        return cls(**{name: np.zeros(n, dtype=dt) for name, dt in cls.DTYPES.items()})

    @classmethod
    def build(cls, n: int, **columns) -> PacketSpec:
        """``n`` packets; each keyword is a column value (scalar or array), the rest are zero."""
        spec = cls.empty(n)
        for name, value in columns.items():
            col = getattr(spec, name)
            col[:] = np.asarray(value).astype(col.dtype, copy=False) if np.ndim(value) else value
        return spec

    def __len__(self) -> int:
        return len(self.ts_ns)

    def take(self, idx: np.ndarray) -> PacketSpec:
        return PacketSpec(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def concat(parts: list[PacketSpec]) -> PacketSpec:
        parts = [p for p in parts if len(p)]
        if not parts:
            return PacketSpec.empty(0)
        return PacketSpec(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                             for f in fields(PacketSpec)})

    def sorted_by_time(self) -> PacketSpec:
        return self.take(np.argsort(self.ts_ns, kind="stable"))


class PayloadPool:
    """Bytes that captured payloads are copied from. Offset 0 starts a block of zero bytes."""

    ZEROS = 1 << 16

    def __init__(self):
        self._parts: list[bytes] = [bytes(self.ZEROS)]
        self._size = self.ZEROS

    def add(self, data: bytes) -> int:
        off = self._size
        self._parts.append(data)
        self._size += len(data)
        return off

    def array(self) -> np.ndarray:
        return np.frombuffer(b"".join(self._parts), dtype=np.uint8)
