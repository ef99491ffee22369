"""Flow records out as IPFIX (RFC 7011) to a site's collector: ``[daemon] ipfix_export =
"udp://collector:4739"``.

Each flow record is one biflow record (RFC 5103): the originator's counts in IANA elements,
the responder's in the same elements under the reverse enterprise number (29305). Two
templates, IPv4 (256) and IPv6 (257):

| element | id | bytes | | element | id | bytes |
|---|---:|---:|---|---|---:|---:|
| sourceIPv4Address / sourceIPv6Address | 8 / 27 | 4 / 16 | | flowStartMilliseconds | 152 | 8 |
| destinationIPv4Address / destinationIPv6Address | 12 / 28 | 4 / 16 | | flowEndMilliseconds | 153 | 8 |
| sourceTransportPort | 7 | 2 | | octetDeltaCount (IP bytes), and reverse | 1 | 8 |
| destinationTransportPort | 11 | 2 | | packetDeltaCount, and reverse | 2 | 8 |
| protocolIdentifier | 4 | 1 | | tcpControlBits (OR of the flags seen), and reverse | 6 | 2 |
| vlanId | 58 | 2 | | flowEndReason | 136 | 1 |

and two elements of our own, under the enterprise number RFC 5612 reserves for documentation
(32473; ``ENTERPRISE``): ``zeekConnState`` (1, 1 byte: the index of the state in S0, S1, SF,
REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH) and ``zeekHistory`` (2, 16 bytes: the
history letters, padded with zero bytes, cut at 16).

Messages stay under ``MAX_MESSAGE`` bytes (one Ethernet MTU, no fragments); over UDP the
templates are sent again every ``template_every_s`` (RFC 7011 8.4) and with the first message.
"""

from __future__ import annotations

import socket
import struct
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector import arrowutil as au
from detector.exports.collector import parse_listen
from kernels.tcp_state import CONN_STATES

ENTERPRISE = 32473  # RFC 5612: for documentation; a site may hold its own
REVERSE_PEN = 29305
MAX_MESSAGE = 1400
END_REASON = {"idle": 1, "active": 2, "fin": 3, "rst": 3, "eof": 4, "evicted": 5}
FLAGS = (("fin", 0x01), ("syn", 0x02), ("rst", 0x04), ("psh", 0x08), ("ack", 0x10), ("urg", 0x20), ("ece", 0x40),
         ("cwr", 0x80))


def _template(v6: bool) -> list[tuple[int, int, int]]:
    """(element id, length, enterprise) of each field."""
    addr = [(27, 16, 0), (28, 16, 0)] if v6 else [(8, 4, 0), (12, 4, 0)]
    return addr + [(7, 2, 0), (11, 2, 0), (4, 1, 0), (58, 2, 0), (152, 8, 0), (153, 8, 0), (1, 8, 0), (2, 8, 0),
                   (1, 8, REVERSE_PEN), (2, 8, REVERSE_PEN), (6, 2, 0), (6, 2, REVERSE_PEN), (136, 1, 0),
                   (1, 1, ENTERPRISE), (2, 16, ENTERPRISE)]


def _dtype(v6: bool) -> np.dtype:
    addr = [("src", "V16"), ("dst", "V16")] if v6 else [("src", ">u4"), ("dst", ">u4")]
    return np.dtype(addr + [("sport", ">u2"), ("dport", ">u2"), ("proto", "u1"), ("vlan", ">u2"), ("start", ">u8"),
                            ("end", ">u8"), ("octets", ">u8"), ("packets", ">u8"), ("r_octets", ">u8"),
                            ("r_packets", ">u8"), ("flags", ">u2"), ("r_flags", ">u2"), ("reason", "u1"),
                            ("state", "u1"), ("history", "S16")])


class IpfixEncoder:
    def __init__(self, domain: int = 1, template_every_s: float = 60.0):
        self.domain, self.template_every_s = domain, template_every_s
        self.sequence = 0  # data records sent (RFC 7011 3.1)
        self.templates_sent_at: float | None = None

    def templates(self) -> bytes:
        out = b""
        for tid, v6 in ((256, False), (257, True)):
            fields = _template(v6)
            rec = struct.pack(">HH", tid, len(fields))
            for ie, n, pen in fields:
                rec += struct.pack(">HHI", ie | 0x8000, n, pen) if pen else struct.pack(">HH", ie, n)
            out += rec
        return struct.pack(">HH", 2, 4 + len(out)) + out

    def messages(self, rb: pa.RecordBatch, now_s: float) -> list[bytes]:
        """``rb`` (flow records) as IPFIX messages, templates first when they are due."""
        out = []
        if self.templates_sent_at is None or now_s - self.templates_sent_at >= self.template_every_s:
            out.append(self._message([self.templates()], now_s))
            self.templates_sent_at = now_s
        for v6, tid, rows in _by_family(rb):
            rec = _records(rb, rows, v6)
            size = rec.dtype.itemsize
            per = (MAX_MESSAGE - 16 - 4) // size
            data = rec.tobytes()
            for k in range(0, len(rec), per):
                chunk = data[k * size:(k + per) * size]
                out.append(self._message([struct.pack(">HH", tid, 4 + len(chunk)) + chunk], now_s))
                self.sequence = (self.sequence + len(chunk) // size) & 0xFFFFFFFF  # RFC 7011 3.1: modulo 2^32
        return out

    def _message(self, sets: list[bytes], now_s: float) -> bytes:
        body = b"".join(sets)
        return struct.pack(">HHIII", 10, 16 + len(body), int(now_s) & 0xFFFFFFFF, self.sequence, self.domain) + body


def _by_family(rb: pa.RecordBatch):
    v6 = au.to_numpy(pc.fill_null(pc.match_substring(rb.column("orig_h"), ":"), False))
    for is6, tid in ((False, 256), (True, 257)):
        rows = np.flatnonzero(v6 == is6)
        if len(rows):
            yield is6, tid, rows


def _address(texts, v6: bool) -> np.ndarray:
    import ipaddress

    if v6:
        return np.array([ipaddress.ip_address(t).packed for t in texts], "V16")
    return np.array([int(ipaddress.ip_address(t)) for t in texts], np.uint32)


def _records(rb: pa.RecordBatch, rows: np.ndarray, v6: bool) -> np.ndarray:
    def col(name):
        return au.to_numpy(rb.column(name))[rows]

    out = np.zeros(len(rows), _dtype(v6))
    take = pa.array(rows)
    out["src"] = _address(rb.column("orig_h").take(take).to_pylist(), v6)
    out["dst"] = _address(rb.column("resp_h").take(take).to_pylist(), v6)
    out["sport"], out["dport"], out["proto"], out["vlan"] = col("orig_p"), col("resp_p"), col("ip_proto"), col("vlan")
    start = au.to_numpy(rb.column("ts"))[rows].astype("datetime64[ns]").astype(np.int64)
    out["start"] = start // 1_000_000
    out["end"] = (start + (col("duration") * 1e9).astype(np.int64)) // 1_000_000
    out["octets"], out["packets"] = col("orig_ip_bytes"), col("orig_pkts")
    out["r_octets"], out["r_packets"] = col("resp_ip_bytes"), col("resp_pkts")
    for side, name in (("orig", "flags"), ("resp", "r_flags")):
        bits = np.zeros(len(rows), np.uint16)
        for flag, bit in FLAGS:
            bits |= np.where(col(f"{side}_{flag}") > 0, bit, 0).astype(np.uint16)
        out[name] = bits
    reason = rb.column("end_reason").take(take).cast(pa.string()).to_pylist()
    out["reason"] = [END_REASON.get(r, 0) for r in reason]
    states = list(CONN_STATES)
    state = rb.column("conn_state").take(take).cast(pa.string()).to_pylist()
    out["state"] = [states.index(s) if s in states else states.index("OTH") for s in state]
    out["history"] = [h.encode()[:16] for h in rb.column("history").take(take).to_pylist()]
    return out


class IpfixExporter:
    """A flow writer (``write(batch)``, ``close()``) that sends the records to a collector.

    Over UDP what cannot be sent is lost, as with any exporter. Over TCP a collector that is
    down or stalls is given ``SEND_TIMEOUT_S`` at most, then the connection is dropped and tried
    again after ``RETRY_S`` (with its templates again): the daemon never waits on it longer, and
    what could not be sent meanwhile is counted (``lost``)."""

    SEND_TIMEOUT_S = 0.5
    RETRY_S = 10.0

    def __init__(self, url: str, domain: int = 1, template_every_s: float = 60.0):
        scheme, self.host, self.port = parse_listen(url)
        self.tcp = scheme == "tcp"
        self.encoder = IpfixEncoder(domain, float("inf") if self.tcp else template_every_s)  # TCP: once per connection
        self.sock: socket.socket | None = None
        self.retry_at = 0.0
        self.sent = 0
        self.lost = 0
        if not self.tcp:
            self.sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.connect((self.host, self.port))

    def _connect(self) -> bool:
        if self.sock is not None:
            return True
        if time.monotonic() < self.retry_at:
            return False
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.SEND_TIMEOUT_S)
            self.encoder.templates_sent_at = None  # a new connection gets the templates first
            return True
        except OSError:
            self.retry_at = time.monotonic() + self.RETRY_S
            return False

    def write(self, rb: pa.RecordBatch) -> None:
        if self.tcp and not self._connect():
            self.lost += rb.num_rows
            return
        messages = self.encoder.messages(rb, time.time())
        for k, message in enumerate(messages):
            try:
                if self.tcp:
                    self.sock.sendall(message)
                else:
                    self.sock.send(message)
                self.sent += 1
            except OSError:
                self.lost += 1
                if self.tcp:  # the stream may hold half a message now: start a new one later
                    self.sock.close()
                    self.sock = None
                    self.retry_at = time.monotonic() + self.RETRY_S
                    self.lost += len(messages) - k - 1
                    return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
