"""What the L7 inspectors and the packet taps hand to the detectors, per batch.

Application events are few (one per DNS message, per handshake, per request) and are plain
objects; packet-level events (ARP, ICMP, odd TCP flags) can be many and are column arrays.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, fields

import numpy as np
import pyarrow as pa

from detector.l7.dhcp import DhcpMessage
from detector.l7.dns import DnsMessage
from detector.l7.http import HttpRequest, HttpResponse
from detector.l7.tls import Certificate, ClientHello, ServerHello


@dataclass
class Ctx:
    """Where an application event was seen: its packet and the flow record it belongs to."""

    ts_ns: int
    uid: str
    from_orig: bool  # sent by the flow's originator
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    ttl: int = 0

    @property
    def client(self) -> str:
        return self.src if self.from_orig else self.dst

    @property
    def server(self) -> str:
        return self.dst if self.from_orig else self.src


@dataclass
class DnsEvent:
    ctx: Ctx
    msg: DnsMessage
    src_mac: int = 0  # the Ethernet source: a forged answer keeps the forger's


@dataclass
class DhcpEvent:
    ctx: Ctx
    src_mac: int
    msg: DhcpMessage


@dataclass
class TlsEvent:
    ctx: Ctx  # the first packet of the handshake (client side)
    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    certificates: list[Certificate] = field(default_factory=list)


@dataclass
class SshEvent:
    ctx: Ctx
    client_banner: str | None = None  # sent by the flow's originator
    server_banner: str | None = None
    host_key_type: str | None = None
    host_key: str | None = None  # fingerprint
    key_sent_by_orig: bool = False  # the originator sent the host key: SSH roles are reversed


@dataclass
class HttpEvent:
    ctx: Ctx
    request: HttpRequest | None = None
    response: HttpResponse | None = None


@dataclass
class MiningEvent:
    ctx: Ctx
    methods: list[str]
    agent: str | None = None
    protocol: str = "stratum"  # stratum, getwork, p2p:<network>


@dataclass
class FtpReply:
    ctx: Ctx  # a server reply on an FTP control connection
    code: int  # 230 logged in, 530 not logged in, ...
    user: str | None = None  # the last USER the client sent on this connection


@dataclass
class RfbEvent:
    ctx: Ctx
    server_version: str | None
    client_version: str | None
    security_type: int | None
    auth_ok: bool | None  # None: the outcome was not seen
    reason: str | None = None
    challenge_ts: int | None = None  # when the server's VNC challenge and the client's response were sent
    response_ts: int | None = None

    @property
    def response_delay_s(self) -> float | None:
        """How long the client took to answer the password challenge: people type, tools do not."""
        if self.challenge_ts is None or self.response_ts is None:
            return None
        return (self.response_ts - self.challenge_ts) / 1e9


@dataclass
class FtpDataAnnounce:
    ctx: Ctx  # the control-connection packet (PORT/EPRT, or a 227/229 reply) that announced it
    endpoints: tuple[tuple[str, int], ...]  # (host, port) a data connection will use


@dataclass
class ShellEvent:
    ctx: Ctx  # the packet that carried the marker
    marker: str  # what the text is evidence of
    text: str  # the matched text


@dataclass
class TunnelEvent:
    ctx: Ctx
    inner: str  # the protocol found inside, e.g. "ssh"
    outer: str  # what carries it, e.g. "websocket", "http", "unknown"
    offset: int  # where in the stream it was found
    evidence: str = ""


@dataclass
class PacketArrays:
    """Column arrays for many packets of one kind (all the same length)."""

    cols: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]

    def texts(self, name: str, rows: np.ndarray) -> list:
        """Column ``name`` at ``rows`` as Python values (text columns may be Arrow strings)."""
        col = self.cols[name]
        return col.take(pa.array(rows, pa.int64())).to_pylist() if isinstance(col, pa.Array) else col[rows].tolist()


def _joined(cols: list, order: np.ndarray):
    """Columns of several PacketArrays end to end, rows in ``order``."""
    if any(isinstance(c, pa.Array) for c in cols):  # text: Arrow from the tap, object arrays from elsewhere
        parts = [c if isinstance(c, pa.Array) else pa.array(list(c), pa.string()) for c in cols]
        return pa.concat_arrays(parts).take(pa.array(order, pa.int64()))
    return np.concatenate(cols)[order]


@dataclass
class Events:
    dns: list[DnsEvent] = field(default_factory=list)
    dhcp: list[DhcpEvent] = field(default_factory=list)
    tls: list[TlsEvent] = field(default_factory=list)
    ssh: list[SshEvent] = field(default_factory=list)
    http: list[HttpEvent] = field(default_factory=list)
    mining: list[MiningEvent] = field(default_factory=list)
    tunnels: list[TunnelEvent] = field(default_factory=list)
    ftp: list[FtpReply] = field(default_factory=list)
    rfb: list[RfbEvent] = field(default_factory=list)
    shell: list[ShellEvent] = field(default_factory=list)
    ftp_data: list[FtpDataAnnounce] = field(default_factory=list)
    arp: PacketArrays = field(default_factory=PacketArrays)
    icmp: PacketArrays = field(default_factory=PacketArrays)
    tcp_odd: PacketArrays = field(default_factory=PacketArrays)
    tcp_rexmit: PacketArrays = field(default_factory=PacketArrays)  # a sequence number resent with other bytes
    initiators: PacketArrays = field(default_factory=PacketArrays)  # (source MAC, address) of connection openers
    next_hops: PacketArrays = field(default_factory=PacketArrays)  # where each host's frames go (see L7Tap)


def merge_events(parts: list[Events]) -> Events:
    """Events of one batch that different tasks produced, as one pass would hand them on:
    each kind's events by time (ties keep the parts' order), packet arrays by time."""
    parts = [p for p in parts if p is not None]
    if len(parts) <= 1:
        return parts[0] if parts else Events()
    out = Events()
    for f in fields(Events):
        values = [getattr(p, f.name) for p in parts]
        if isinstance(values[0], PacketArrays):
            filled = [v for v in values if len(v)]
            if len(filled) == 1:
                setattr(out, f.name, filled[0])
            elif filled:
                order = np.argsort(np.concatenate([v.cols["ts"] for v in filled]), kind="stable")
                setattr(out, f.name, PacketArrays({k: _joined([v.cols[k] for v in filled], order)
                                                   for k in filled[0].cols}))
        else:
            setattr(out, f.name, list(heapq.merge(*values, key=lambda e: e.ctx.ts_ns)))
    return out

