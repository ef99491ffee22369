"""Capture files written by the tests themselves: classic pcap and pcapng, any byte order,
any timestamp resolution, several interfaces and sections. Frames come from scapy."""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D


@dataclass
class Rec:
    ts_ns: int
    data: bytes
    wire_len: int | None = None  # default: len(data)
    iface: int = 0
    simple: bool = False  # pcapng: a Simple Packet Block (no timestamp: it gets the one before's)


def pcap_bytes(records: list[Rec], link_type: int = 1, little: bool = True, nanosecond: bool = False,
               snaplen: int = 262144) -> bytes:
    o = "<" if little else ">"
    out = [struct.pack(o + "IHHiIII", MAGIC_NS if nanosecond else MAGIC_US, 2, 4, 0, 0, snaplen, link_type)]
    for r in records:
        sec, frac = divmod(r.ts_ns, 1_000_000_000)
        if not nanosecond:
            frac //= 1000
        wire = r.wire_len if r.wire_len is not None else len(r.data)
        out.append(struct.pack(o + "IIII", sec, frac, len(r.data), wire) + r.data)
    return b"".join(out)


def _opt(o: str, code: int, value: bytes) -> bytes:
    return struct.pack(o + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(o: str, btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack(o + "II", btype, total) + body + struct.pack(o + "I", total)


@dataclass
class Iface:
    link_type: int = 1
    snaplen: int = 262144
    tsresol: int | None = None  # if_tsresol byte; None = default microseconds
    tsoffset_s: int = 0


def pcapng_section(records: list[Rec], ifaces: list[Iface], little: bool = True, extra_blocks: bytes = b"",
                   simple: bool = False) -> bytes:
    """One section: SHB, IDBs, then an EPB per record (SPB with ``simple`` or ``Rec.simple``)."""
    o = "<" if little else ">"
    out = [_block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1) + _opt(o, 1, b"tests") +
                  struct.pack(o + "HH", 0, 0))]
    for f in ifaces:
        opts = b""
        if f.tsresol is not None:
            opts += _opt(o, 9, bytes([f.tsresol]))
        if f.tsoffset_s:
            opts += _opt(o, 14, struct.pack(o + "q", f.tsoffset_s))
        opts += _opt(o, 2, b"eth0") + struct.pack(o + "HH", 0, 0)
        out.append(_block(o, 1, struct.pack(o + "HHI", f.link_type, 0, f.snaplen) + opts))
    out.append(extra_blocks)
    for r in records:
        f = ifaces[r.iface]
        wire = r.wire_len if r.wire_len is not None else len(r.data)
        pad = b"\0" * (-len(r.data) % 4)
        if simple or r.simple:
            out.append(_block(o, 3, struct.pack(o + "I", wire) + r.data + pad))
            continue
        res = f.tsresol if f.tsresol is not None else 6
        units_per_s = 2 ** (res & 0x7F) if res & 0x80 else 10 ** res
        units = (r.ts_ns - f.tsoffset_s * 1_000_000_000) * units_per_s // 1_000_000_000
        body = struct.pack(o + "IIIII", r.iface, units >> 32, units & 0xFFFFFFFF, len(r.data), wire) + r.data + pad
        out.append(_block(o, 6, body + _opt(o, 1, b"c") + struct.pack(o + "HH", 0, 0)))
    return b"".join(out)


def custom_block(little: bool = True) -> bytes:
    """A block type no reader knows (it must be skipped)."""
    o = "<" if little else ">"
    return _block(o, 0x40000BAD, b"\x01\x02\x03\x04\x05\x06\x07\x08")


def split_pcap(src, dst_dir, parts: int, stem: str = "part") -> list:
    """Cut a classic little-endian pcap into ``parts`` files of about equal packet counts
    (a rotating capture's files), named so that they sort in capture order."""
    import pathlib

    data = pathlib.Path(src).read_bytes()
    head, pos, records = data[:24], 24, []
    while pos < len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        records.append(data[pos:pos + 16 + caplen])
        pos += 16 + caplen
    dst = pathlib.Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    out, per = [], -(-len(records) // parts)
    for k in range(parts):
        p = dst / f"{stem}-{k:03d}.pcap"
        p.write_bytes(head + b"".join(records[k * per:(k + 1) * per]))
        out.append(p)
    return out
