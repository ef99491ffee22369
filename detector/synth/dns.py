"""DNS messages in wire format (RFC 1035), for synthetic captures."""

from __future__ import annotations

import struct

QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "NULL": 10, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def query(txid: int, name: str, qtype: str = "A") -> bytes:
    header = struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack(">HH", QTYPES[qtype], 1)


def response(txid: int, name: str, qtype: str = "A", answers: list[bytes] | None = None, ttl: int = 300,
             rcode: int = 0) -> bytes:
    """A response echoing the question; each answer is raw RDATA (4 bytes for A, 16 for AAAA, ...)."""
    answers = answers or []
    header = struct.pack(">HHHHHH", txid, 0x8180 | rcode, 1, len(answers), 0, 0)
    body = encode_name(name) + struct.pack(">HH", QTYPES[qtype], 1)
    for rdata in answers:
        body += struct.pack(">HHHIH", 0xC00C, QTYPES[qtype], 1, ttl, len(rdata)) + rdata
    return header + body
