"""RFB (VNC) in the clear: the protocol versions and the outcome of authentication, from the
first bytes of each direction (RFC 6143 sections 7.1-7.1.3).

The handshake is short and fixed: each side sends ``RFB xxx.yyy\\n``; in 3.3 the server then
names one security type as a 32-bit number, from 3.7 it lists the types (a count byte, then one
byte each) and the client answers with its choice. VNC authentication (type 2) is a 16-byte
challenge and a 16-byte response, after which the server sends a 32-bit SecurityResult: 0 OK,
1 failed (3.8 follows a failure with a reason string).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

_VERSION = re.compile(rb"RFB (\d{3})\.(\d{3})\n")
SEC_NONE, SEC_VNC = 1, 2
SECURITY_NAMES = {0: "invalid", 1: "none", 2: "vnc", 5: "ra2", 6: "ra2ne", 16: "tight", 18: "tls", 19: "vencrypt",
                  22: "xvp", 30: "apple-dh"}


@dataclass
class RfbHandshake:
    server_version: str | None = None
    client_version: str | None = None
    security_type: int | None = None  # the type in use (chosen by the client from 3.7)
    auth_ok: bool | None = None  # None until the server's SecurityResult is seen
    reason: str | None = None
    challenge_end: int | None = None  # offsets just past the VNC challenge (server) and response (client)
    response_end: int | None = None


def _version(stream: bytes) -> tuple[tuple[int, int] | None, str | None]:
    m = _VERSION.match(stream[:12])
    if m is None:
        return None, None
    return (int(m.group(1)), int(m.group(2))), stream[:11].decode("ascii")


def parse(client: bytes, server: bytes) -> RfbHandshake | None:
    """What the two directions' first bytes show, or None when the server side is not RFB."""
    sv, stext = _version(server)
    if sv is None:
        return None
    cv, ctext = _version(client)
    h = RfbHandshake(stext, ctext)
    if cv is None:
        return h
    s, c = server[12:], client[12:]
    version = min(sv, cv)
    if version < (3, 7):
        if len(s) < 4:
            return h
        h.security_type = struct.unpack(">I", s[:4])[0]
        s = s[4:]
        sec_start = 16
    else:
        if not s:
            return h
        count = s[0]
        if count == 0:  # the server refused the connection; a reason follows
            h.auth_ok = False
            h.reason = _reason(s[1:])
            return h
        s = s[1 + count:]
        sec_start = 13 + count
        if not c:
            return h
        h.security_type = c[0]
        c = c[1:]
    if h.security_type == SEC_VNC:
        h.challenge_end = sec_start + 16
        h.response_end = len(client) - len(c) + 16
        if len(s) < 16 or len(c) < 16:
            return h
        s = s[16:]
    elif h.security_type != SEC_NONE or version < (3, 8):
        return h  # other types run their own exchange; 3.3/3.7 send no result for "none"
    if len(s) >= 4:
        result = struct.unpack(">I", s[:4])[0]
        h.auth_ok = result == 0
        if result != 0 and version >= (3, 8):
            h.reason = _reason(s[4:])
    return h


def _reason(b: bytes) -> str | None:
    if len(b) < 4:
        return None
    n = struct.unpack(">I", b[:4])[0]
    return b[4:4 + min(n, 200)].decode("utf-8", "replace") or None
