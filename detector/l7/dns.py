"""DNS messages (RFC 1035): question, answers with TTLs, flags, rcode, transaction id."""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field

QTYPE_NAMES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 15: "MX", 16: "TXT", 28: "AAAA",
               33: "SRV", 35: "NAPTR", 41: "OPT", 43: "DS", 46: "RRSIG", 48: "DNSKEY", 64: "SVCB", 65: "HTTPS",
               255: "ANY"}


@dataclass
class Answer:
    rtype: int
    ttl: int
    data: str  # address text for A/AAAA, the name for CNAME/PTR/NS/MX, else a hex prefix
    length: int  # RDATA length


@dataclass
class DnsMessage:
    txid: int
    response: bool
    opcode: int
    rcode: int
    qname: str
    qtype: int
    answers: list[Answer] = field(default_factory=list)
    size: int = 0

    @property
    def qtype_name(self) -> str:
        return QTYPE_NAMES.get(self.qtype, str(self.qtype))


class DnsError(ValueError):
    pass


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``pos``: ``(text, position after it)``."""
    labels = []
    end = None
    jumps = 0
    length = 0
    while True:
        if pos >= len(data):
            raise DnsError("name runs past the message")
        n = data[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise DnsError("truncated compression pointer")
            if end is None:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | data[pos + 1]
            jumps += 1
            if jumps > 32:
                raise DnsError("compression loop")
            continue
        if n & 0xC0:
            raise DnsError("unknown label type")
        label = data[pos + 1:pos + 1 + n]
        if len(label) < n:
            raise DnsError("label runs past the message")
        labels.append(label.decode("latin-1"))
        pos += 1 + n
        length += n + 1
        if length > 300:
            raise DnsError("name too long")
    return ".".join(labels), (end if end is not None else pos)


_SEEN: dict[bytes, DnsMessage] = {}
SEEN_SIZE = 1 << 14
SEEN_MAX_BYTES = 512  # larger messages (TCP, EDNS) are parsed each time: the memo stays small


def parse(data: bytes, tcp: bool = False) -> DnsMessage:
    """Parse one DNS message (UDP payload, or a TCP segment starting with the length prefix).
    Messages that differ only in their transaction ID (the same question asked again, the same
    answer served again) are parsed once; the parsed messages are shared, not to be changed."""
    if tcp:
        if len(data) < 2:
            raise DnsError("short TCP DNS message")
        data = data[2:2 + struct.unpack(">H", data[:2])[0]]
    if len(data) < 12:
        raise DnsError("shorter than a DNS header")
    if len(data) > SEEN_MAX_BYTES:
        return _parse(data)
    key = data[2:]
    seen = _SEEN.get(key)
    txid = (data[0] << 8) | data[1]
    if seen is None:
        if len(_SEEN) >= SEEN_SIZE:
            _SEEN.clear()
        seen = _SEEN[key] = _parse(data)
    if seen.txid == txid:
        return seen
    return DnsMessage(txid, seen.response, seen.opcode, seen.rcode, seen.qname, seen.qtype, seen.answers, seen.size)


def _parse(data: bytes) -> DnsMessage:
    txid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", data[:12])
    pos = 12
    qname, qtype = "", 0
    if qd:
        qname, pos = _name(data, pos)
        if pos + 4 > len(data):
            raise DnsError("truncated question")
        qtype = struct.unpack(">H", data[pos:pos + 2])[0]
        pos += 4
        for _ in range(qd - 1):  # rare: skip extra questions
            _, pos = _name(data, pos)
            pos += 4
    msg = DnsMessage(txid, bool(flags & 0x8000), (flags >> 11) & 0xF, flags & 0xF, qname.lower(), qtype,
                     size=len(data))
    for _ in range(min(an, 64)):
        try:
            _, pos = _name(data, pos)
        except DnsError:
            break
        if pos + 10 > len(data):
            break
        rtype, _cls, ttl, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + rdlen]
        if rtype == 1 and rdlen == 4:
            text = socket.inet_ntop(socket.AF_INET, rdata)
        elif rtype == 28 and rdlen == 16:
            text = str(ipaddress.IPv6Address(rdata))  # the flow records' spelling of mapped addresses
        elif rtype in (2, 5, 12):
            try:
                text = _name(data, pos)[0].lower()
            except DnsError:
                text = ""
        else:
            text = rdata[:32].hex()
        msg.answers.append(Answer(rtype, ttl, text, rdlen))
        pos += rdlen
    return msg
