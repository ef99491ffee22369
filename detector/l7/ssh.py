"""SSH in the clear: the version banners and the server host key, which the key-exchange
reply carries before encryption starts (RFC 4253 section 8, RFC 5656, RFC 4419)."""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

KEY_TYPE_PREFIXES = ("ssh-", "ecdsa-", "sk-", "rsa-sha2-", "x509v3-")
MSG_KEXDH_REPLY = 31  # also KEX_ECDH_REPLY; in group exchange 31 is GEX_GROUP, told apart by content
MSG_KEX_DH_GEX_REPLY = 33
MSG_NEWKEYS = 21


@dataclass
class HostKey:
    key_type: str
    fingerprint: str  # "SHA256:<base64 without padding>", as OpenSSH prints it


def banner(stream: bytes) -> tuple[str | None, int]:
    """The identification line at the start of a stream and where the binary packets begin.
    Lines before it (allowed by RFC 4253) are skipped."""
    text, start, _ = banner_scan(stream)
    return text, start


def banner_scan(stream: bytes) -> tuple[str | None, int, bool]:
    """:func:`banner`, and whether it is settled: found, or never to be found in this stream
    however many bytes are appended (16 lines without one, or a line past 512 bytes)."""
    pos = 0
    for _ in range(16):
        end = stream.find(b"\n", pos, pos + 512)
        if end < 0:
            return None, 0, len(stream) >= pos + 512
        line = stream[pos:end].rstrip(b"\r")
        if line.startswith(b"SSH-"):
            return line[:255].decode("utf-8", "replace"), end + 1, True
        pos = end + 1
    return None, 0, True


def _string(b: bytes, p: int) -> tuple[bytes, int]:
    n = struct.unpack(">I", b[p:p + 4])[0]
    if p + 4 + n > len(b):
        raise ValueError("string runs past the packet")
    return b[p + 4:p + 4 + n], p + 4 + n


def host_key(stream: bytes, start: int) -> HostKey | None:
    """The host key sent in this direction's key-exchange reply, if these bytes hold one."""
    return host_key_scan(stream, start)[0]


def host_key_scan(stream: bytes, start: int) -> tuple[HostKey | None, bool]:
    """:func:`host_key`, and whether it is settled: found, or never to be found however many
    bytes are appended (new keys taken, a length no SSH packet has, or 16 packets without one)."""
    pos = start
    for _ in range(16):
        if pos + 6 > len(stream):
            return None, False
        length = struct.unpack(">I", stream[pos:pos + 4])[0]
        if length < 2 or length > 65536:
            return None, True
        payload = stream[pos + 5:pos + 4 + length]
        msg = payload[0]
        if msg == MSG_NEWKEYS:
            return None, True
        if msg in (MSG_KEXDH_REPLY, MSG_KEX_DH_GEX_REPLY):
            try:
                blob, _ = _string(payload, 1)
                ktype, _ = _string(blob, 0)
                name = ktype.decode("ascii")
            except (ValueError, struct.error, UnicodeDecodeError):
                name = ""
            if name.startswith(KEY_TYPE_PREFIXES):
                digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
                return HostKey(name, f"SHA256:{digest}"), True
        pos += 4 + length
    return None, pos <= len(stream)
