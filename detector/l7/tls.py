"""TLS handshakes in the clear: ClientHello (SNI, JA3), ServerHello (version, JA3S) and, up to
TLS 1.2, the server's certificate (SHA-256, subject, issuer, self-signed or not).

JA3 follows Salesforce's definition: ``SSLVersion,Ciphers,Extensions,EllipticCurves,
EllipticCurvePointFormats`` in decimal, GREASE values left out, MD5 of that string.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field


def _is_grease(v: int) -> bool:
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


@dataclass
class ClientHello:
    version: int
    sni: str | None
    ja3: str
    ja3_string: str
    alpn: list[str] = field(default_factory=list)


@dataclass
class ServerHello:
    version: int  # the negotiated version (supported_versions when present)
    cipher: int
    ja3s: str


@dataclass
class Certificate:
    sha256: str
    subject: str  # "CN=...,O=..." of the fields found
    issuer: str
    self_signed: bool
    der: bytes = field(default=b"", repr=False, compare=False)  # for checks that parse it in full


def handshake_messages(stream: bytes) -> list[tuple[int, bytes]]:
    """``(type, body)`` of the handshake messages in the TLS records at the start of a stream
    (stops at the first non-handshake record or at the end of what was captured)."""
    return handshake_scan(stream)[0]


def handshake_scan(stream: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """:func:`handshake_messages`, and whether they are settled: whether the handshake records
    have ended (a change_cipher_spec, alert or application-data record, or bytes that are no
    TLS record), so that no bytes appended to ``stream`` can add a message."""
    hs = bytearray()
    pos = 0
    settled = False
    while pos + 5 <= len(stream):
        ctype, _ver, length = stream[pos], stream[pos + 1:pos + 3], struct.unpack(">H", stream[pos + 3:pos + 5])[0]
        if ctype != 22:
            if ctype in (20, 21, 23):  # change_cipher_spec, alert, application data: handshake over
                settled = True
                break
            return [], True
        hs += stream[pos + 5:pos + 5 + length]
        pos += 5 + length
    msgs = []
    p = 0
    while p + 4 <= len(hs):
        mtype = hs[p]
        mlen = int.from_bytes(hs[p + 1:p + 4], "big")
        if p + 4 + mlen > len(hs):
            break
        msgs.append((mtype, bytes(hs[p + 4:p + 4 + mlen])))
        p += 4 + mlen
    return msgs, settled


def _u16s(b: bytes) -> list[int]:
    return [struct.unpack(">H", b[k:k + 2])[0] for k in range(0, len(b) - 1, 2)]


def parse_client_hello(body: bytes) -> ClientHello | None:
    try:
        version = struct.unpack(">H", body[:2])[0]
        p = 34
        p += 1 + body[p]
        clen = struct.unpack(">H", body[p:p + 2])[0]
        ciphers = _u16s(body[p + 2:p + 2 + clen])
        p += 2 + clen
        p += 1 + body[p]
        exts, curves, points, sni, alpn = [], [], [], None, []
        if p + 2 <= len(body):
            end = p + 2 + struct.unpack(">H", body[p:p + 2])[0]
            p += 2
            while p + 4 <= min(end, len(body)):
                etype, elen = struct.unpack(">HH", body[p:p + 4])
                data = body[p + 4:p + 4 + elen]
                exts.append(etype)
                if etype == 0 and len(data) >= 5:
                    n = struct.unpack(">H", data[3:5])[0]
                    sni = data[5:5 + n].decode("ascii", "replace").lower()
                elif etype == 10 and len(data) >= 2:
                    curves = _u16s(data[2:2 + struct.unpack(">H", data[:2])[0]])
                elif etype == 11 and len(data) >= 1:
                    points = list(data[1:1 + data[0]])
                elif etype == 16 and len(data) >= 2:
                    q = 2
                    while q < len(data):
                        n = data[q]
                        alpn.append(data[q + 1:q + 1 + n].decode("ascii", "replace"))
                        q += 1 + n
                p += 4 + elen
    except (IndexError, struct.error):
        return None

    def join(values):
        return "-".join(str(v) for v in values if not _is_grease(v))

    ja3_string = ",".join([str(version), join(ciphers), join(exts), join(curves), "-".join(map(str, points))])
    return ClientHello(version, sni, hashlib.md5(ja3_string.encode()).hexdigest(), ja3_string, alpn)


def parse_server_hello(body: bytes) -> ServerHello | None:
    try:
        version = struct.unpack(">H", body[:2])[0]
        p = 34
        p += 1 + body[p]
        cipher = struct.unpack(">H", body[p:p + 2])[0]
        p += 3
        exts = []
        if p + 2 <= len(body):
            end = p + 2 + struct.unpack(">H", body[p:p + 2])[0]
            p += 2
            while p + 4 <= min(end, len(body)):
                etype, elen = struct.unpack(">HH", body[p:p + 4])
                exts.append(etype)
                if etype == 43 and elen == 2:
                    version = struct.unpack(">H", body[p + 4:p + 6])[0]
                p += 4 + elen
    except (IndexError, struct.error):
        return None
    s = f"{struct.unpack('>H', body[:2])[0]},{cipher},{'-'.join(str(e) for e in exts if not _is_grease(e))}"
    return ServerHello(version, cipher, hashlib.md5(s.encode()).hexdigest())


# -- X.509, just enough: subject, issuer ---------------------------------------------------------
_OIDS = {b"\x55\x04\x03": "CN", b"\x55\x04\x0a": "O", b"\x55\x04\x0b": "OU", b"\x55\x04\x06": "C"}


def _tlv(b: bytes, p: int) -> tuple[int, int, int]:
    """``(tag, start of value, end of value)`` of the DER element at ``p``."""
    tag = b[p]
    n = b[p + 1]
    p += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(b[p:p + k], "big")
        p += k
    if p + n > len(b):
        raise ValueError("DER element runs past its container")
    return tag, p, p + n


def _children(b: bytes, start: int, end: int):
    p = start
    while p < end:
        tag, s, e = _tlv(b, p)
        yield tag, s, e, p
        p = e


def _name_text(b: bytes, start: int, end: int) -> str:
    parts = []
    for _, s, e, _ in _children(b, start, end):  # RDN sets
        for _, s2, e2, _ in _children(b, s, e):  # AttributeTypeAndValue
            items = list(_children(b, s2, e2))
            if len(items) == 2:
                oid = b[items[0][1]:items[0][2]]
                if oid in _OIDS:
                    parts.append(f"{_OIDS[oid]}={b[items[1][1]:items[1][2]].decode('utf-8', 'replace')}")
    return ",".join(parts)


def parse_certificate(der: bytes) -> Certificate | None:
    try:
        _, s, e = _tlv(der, 0)  # Certificate
        _, ts, te = _tlv(der, s)  # TBSCertificate
        fields = list(_children(der, ts, te))
        k = 1 if fields and fields[0][0] == 0xA0 else 0  # explicit version
        issuer, subject = fields[k + 2], fields[k + 4]
        issuer_raw = der[issuer[1]:issuer[2]]
        subject_raw = der[subject[1]:subject[2]]
        return Certificate(hashlib.sha256(der).hexdigest(), _name_text(der, subject[1], subject[2]),
                           _name_text(der, issuer[1], issuer[2]), issuer_raw == subject_raw, bytes(der))
    except (IndexError, ValueError):
        return None


def parse_certificates(body: bytes) -> list[Certificate]:
    """The certificates of a (TLS 1.2 or older) Certificate message, leaf first, up to the first
    that cannot be read (cut by the capture, or broken): after a gap, the next one is not the
    issuer of the one before, and without the leaf there is no leaf."""
    out = []
    p = 3
    end = 3 + int.from_bytes(body[:3], "big")
    while p + 3 <= min(end, len(body)):
        n = int.from_bytes(body[p:p + 3], "big")
        der = body[p + 3:p + 3 + n]
        cert = parse_certificate(der) if len(der) == n else None
        if cert is None:
            break
        out.append(cert)
        p += 3 + n
    return out
