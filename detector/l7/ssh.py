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
    pos = 0
    for _ in range(16):
        end = stream.find(b"\n", pos, pos + 512)
        if end < 0:
            return None, 0
        line = stream[pos:end].rstrip(b"\r")
        if line.startswith(b"SSH-"):
            return line[:255].decode("utf-8", "replace"), end + 1
        pos = end + 1
    return None, 0


def _string(b: bytes, p: int) -> tuple[bytes, int]:
    n = struct.unpack(">I", b[p:p + 4])[0]
    if p + 4 + n > len(b):
        raise ValueError("string runs past the packet")
    return b[p + 4:p + 4 + n], p + 4 + n


def host_key(stream: bytes, start: int) -> HostKey | None:
    """The host key sent in this direction's key-exchange reply, if these bytes hold one."""
    pos = start
    for _ in range(16):
        if pos + 6 > len(stream):
            return None
        length = struct.unpack(">I", stream[pos:pos + 4])[0]
        if length < 2 or length > 65536:
            return None
        payload = stream[pos + 5:pos + 4 + length]
        if len(payload) < 1:
            return None
        msg = payload[0]
        if msg == MSG_NEWKEYS:
            return None
        if msg in (MSG_KEXDH_REPLY, MSG_KEX_DH_GEX_REPLY):
            try:
                blob, _ = _string(payload, 1)
                ktype, _ = _string(blob, 0)
                name = ktype.decode("ascii")
            except (ValueError, struct.error, UnicodeDecodeError):
                name = ""
            if name.startswith(KEY_TYPE_PREFIXES):
                digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
                return HostKey(name, f"SHA256:{digest}")
        pos += 4 + length
    return None
