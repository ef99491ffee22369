"""DHCP (BOOTP with the DHCP magic cookie): message type, client MAC, server id, addresses."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

MSG_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE", 8: "INFORM"}
COOKIE = b"\x63\x82\x53\x63"


@dataclass
class DhcpMessage:
    op: int  # 1 request, 2 reply
    xid: int
    client_mac: str
    msg_type: int
    your_ip: str
    server_id: str | None = None
    requested_ip: str | None = None
    routers: list[str] = field(default_factory=list)
    dns_servers: list[str] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        return MSG_TYPES.get(self.msg_type, str(self.msg_type))


class DhcpError(ValueError):
    pass


def _ip(b: bytes) -> str:
    return str(ipaddress.IPv4Address(b))


def parse(data: bytes) -> DhcpMessage:
    if len(data) < 240 or data[236:240] != COOKIE:
        raise DhcpError("not a DHCP message")
    op, _htype, hlen = data[0], data[1], data[2]
    xid = struct.unpack(">I", data[4:8])[0]
    mac = ":".join(f"{b:02x}" for b in data[28:28 + min(hlen, 16)])
    msg = DhcpMessage(op, xid, mac, 0, _ip(data[16:20]))
    pos = 240
    while pos < len(data):
        code = data[pos]
        if code == 255:
            break
        if code == 0:
            pos += 1
            continue
        if pos + 1 >= len(data):
            break
        length = data[pos + 1]
        value = data[pos + 2:pos + 2 + length]
        if len(value) < length:
            break
        if code == 53 and length >= 1:
            msg.msg_type = value[0]
        elif code == 54 and length == 4:
            msg.server_id = _ip(value)
        elif code == 50 and length == 4:
            msg.requested_ip = _ip(value)
        elif code == 3:
            msg.routers = [_ip(value[k:k + 4]) for k in range(0, length - 3, 4)]
        elif code == 6:
            msg.dns_servers = [_ip(value[k:k + 4]) for k in range(0, length - 3, 4)]
        pos += 2 + length
    return msg
