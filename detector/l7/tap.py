"""L7Tap: after flow accounting, take from each batch what the inspectors and packet-level
detectors need, with bounded state.

A compiled pass names what every payload starts like; only DNS and DHCP packets, the packets
that start a TLS, SSH, HTTP, JSON, RFB or blockchain-protocol stream, and the next packets of the
streams being followed reach Python. Streams keep at most ``HEAD_BYTES`` per direction and are
followed for ``FOLLOW_PACKETS`` packets per direction; at most ``MAX_STREAMS`` are followed at
once (the oldest are dropped and counted). ARP, ICMP and odd TCP flag packets are handed on as
column arrays.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from detector import arrowutil as au
from detector.l7 import dhcp as dhcp_mod
from detector.l7 import dns as dns_mod
from detector.l7 import http as http_mod
from detector.l7 import rfb as rfb_mod
from detector.l7 import rpc as rpc_mod
from detector.l7 import shell as shell_mod
from detector.l7 import ssh as ssh_mod
from detector.l7 import tls as tls_mod
from detector.l7.events import (
    Ctx,
    DhcpEvent,
    DnsEvent,
    Events,
    FtpDataAnnounce,
    FtpReply,
    HttpEvent,
    MiningEvent,
    PacketArrays,
    RfbEvent,
    ShellEvent,
    SshEvent,
    TlsEvent,
    TunnelEvent,
)
from detector.l7.select import DST_SAMPLE, FOLLOW_PACKETS, NEXT_HOP_PACKETS, SHELL_PACKETS, odd_tcp
from detector.sources.batch import RawBatch
from kernels import l7_select as ks
from kernels import packet_columns as pc
from kernels.rexmit import RexmitTable
from kernels.xp_ops import bottom_k, group_ids, mix64

log = logging.getLogger("detector.l7")

HEAD_BYTES = 16384
STREAM_LINGER_NS = 2_000_000_000  # live input: a quiet stream's findings are handed on after this
MAX_STREAMS = 200_000
PAYLOAD_LIMIT = 4096
SHELL_BYTES = 1024
ICMP_HEAD = 64
TLS, SSH, HTTP, JSON, P2P, RFB = "tls", "ssh", "http", "json", "p2p", "rfb"
_SIG_KIND = {ks.SIG_TLS: TLS, ks.SIG_SSH: SSH, ks.SIG_HTTP: HTTP, ks.SIG_JSON: JSON, ks.SIG_P2P: P2P, ks.SIG_RFB: RFB}
_STREAM_SIGS = np.array(sorted(_SIG_KIND), np.uint8)
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _ids(flows) -> np.ndarray:
    """Flow ids (keys of a dict, or any iterable of them) as an array, for ``np.isin``."""
    return np.fromiter(flows, np.uint64)


_B62_CODES = np.frombuffer(_B62.encode(), np.uint8)


def uid_texts(fids: np.ndarray) -> list[str]:
    """:func:`uid_text` of many flow ids, one NumPy step per digit."""
    n = len(fids)
    digits = np.empty((n, 12), np.uint8)
    digits[:, 0] = ord("C")
    x = fids.astype(np.uint64)
    for k in range(11, 0, -1):
        digits[:, k] = _B62_CODES[x % np.uint64(62)]
        x = x // np.uint64(62)
    text = digits.tobytes().decode("ascii")
    return [text[i:i + 12] for i in range(0, 12 * n, 12)]


@lru_cache(maxsize=1 << 16)
def uid_text(fid: int) -> str:
    digits = []
    for _ in range(11):
        fid, r = divmod(fid, 62)
        digits.append(_B62[r])
    return "C" + "".join(reversed(digits))


_FTP_HOST_PORT = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_FTP_EXT = re.compile(rb"\|(\d)?\|([0-9A-Fa-f:.]*)\|(\d{1,5})\|")


def ftp_endpoint(line: bytes) -> tuple[str | None, int] | None:
    """The (address, port) in a PORT/227 (h1,h2,h3,h4,p1,p2) or EPRT/229 (|af|addr|port|) line."""
    m = _FTP_HOST_PORT.search(line)
    if m:
        v = [int(x) for x in m.groups()]
        return ".".join(map(str, v[:4])), v[4] * 256 + v[5]
    m = _FTP_EXT.search(line)
    if m:
        return (m.group(2).decode() or None), int(m.group(3))
    return None


ORIG_SETTLED, RESP_SETTLED = 1, 2  # Stream.settled: no bytes to come in that direction can add to the event


class Stream:
    __slots__ = ("kind", "ctx", "orig", "resp", "done", "event", "packets", "last_ns", "settled", "cut")

    def __init__(self, kind: str, ctx: Ctx):
        self.kind = kind
        self.ctx = ctx
        self.orig = bytearray()
        self.resp = bytearray()
        self.done = False
        self.event = None
        self.packets = 0
        self.last_ns = ctx.ts_ns
        self.settled = 0
        self.cut = 0  # directions with a packet whose payload was not all captured: later bytes do not follow on

    def side(self, from_orig: bool) -> tuple[bytearray, int]:
        """The bytes kept of one direction, and that direction's ``settled`` bit."""
        return (self.orig, ORIG_SETTLED) if from_orig else (self.resp, RESP_SETTLED)

    def settle(self, bit: int, settled: bool, data: bytearray) -> None:
        """Mark a direction settled when its parser says so, its kept bytes are full, or a
        packet of it was cut short (what comes after the gap is not what the parser needs next)."""
        if settled or len(data) >= HEAD_BYTES or self.cut & bit:
            self.settled |= bit


class Inspected:
    """The inspected packets' fields as lists; a packet's :class:`Ctx` is built only when an
    event needs it (most followed packets only add bytes to a stream)."""

    def __init__(self, cols, idx, fid):
        k = len(idx)
        sb, db = np.empty(max(1, k * 39), np.uint8), np.empty(max(1, k * 39), np.uint8)
        so, do = np.empty(k + 1, np.int64), np.empty(k + 1, np.int64)
        ks.packet_addresses(cols, idx, sb, so, db, do)
        self.src = au.strings(sb, so, k).to_pylist()
        self.dst = au.strings(db, do, k).to_pylist()
        self.ts = cols.ts_ns[idx].tolist()
        self.from_orig = (cols.flow_dir[idx] == 1).tolist()
        self.sport, self.dport = cols.sport[idx].tolist(), cols.dport[idx].tolist()
        self.proto, self.ttl = cols.proto[idx].tolist(), cols.ttl[idx].tolist()
        self.fids = fid[idx].tolist()
        self.uids = uid_texts(fid[idx])
        self.wire = cols.payload_len[idx].tolist()

    def ctx(self, j: int) -> Ctx:
        return Ctx(self.ts[j], self.uids[j], self.from_orig[j], self.src[j], self.dst[j], self.sport[j],
                   self.dport[j], self.proto[j], self.ttl[j])

    def packet(self, j: int, captured: int) -> Packet:
        return Packet(self.ts[j], self.from_orig[j], captured < self.wire[j], self, j)


class Packet(NamedTuple):
    """A packet a stream parser reads: its time and direction, its full context on demand."""

    ts_ns: int
    from_orig: bool
    cut: bool  # its payload was not all captured (snap length, or the tap's copy limit)
    rows: Inspected
    j: int

    def ctx(self) -> Ctx:
        return self.rows.ctx(self.j)


class L7Tap:
    def __init__(self):
        self.streams: OrderedDict[int, Stream] = OrderedDict()
        self.dropped_streams = 0
        self.parse_errors = 0
        self.ftp_users: dict[int, str] = {}
        # web flows whose HTTP stream was read: their later packets are not searched for shell text
        self.web_flows: OrderedDict[int, None] = OrderedDict()
        # flows whose TLS or SSH stream was read to its end: a resent or late handshake packet
        # does not open a second, partial stream (an HTTP or peer-to-peer flow may: one stream
        # per request or message)
        self.ended: OrderedDict[int, None] = OrderedDict()
        self.rexmit = RexmitTable()

    # -- per batch -------------------------------------------------------------------------
    def process(self, b: RawBatch, cols: pc.PacketColumns, n: int) -> Events:
        """``cols`` are host (NumPy) columns of the batch's first ``n`` rows."""
        ev = Events()
        if n == 0:
            return ev
        sig = np.empty(n, np.uint8)
        fid = np.empty(n, np.uint64)
        ks.classify_payloads(b.buf, b.off, cols, n, sig, fid)
        starts = np.isin(sig, _STREAM_SIGS)
        wanted = starts | (sig == ks.SIG_DNS) | (sig == ks.SIG_DHCP) | (sig == ks.SIG_FTP)
        # a stream's later packets carry no signature of their own: follow every flow that is
        # already open, and every flow that opens in this very batch
        early = (cols.payload_len[:n] > 0) & (cols.flow_nth[:n] < FOLLOW_PACKETS) & ~wanted
        cand = np.flatnonzero(early)
        if len(cand) and (self.streams or starts.any()):
            followed = np.concatenate([_ids(self.streams), fid[starts]])
            wanted[cand[np.isin(fid[cand], followed)]] = True
        idx = np.flatnonzero(wanted).astype(np.int64)
        if len(idx):
            self._inspect(b, cols, idx, sig, fid, ev)
        # shell text: in unrecognised TCP payloads (JSON-looking ones too: a prompt starts with
        # '['), but not in web streams, whose pages may quote any command
        shell_idx = np.flatnonzero(((sig == ks.SIG_OTHER) | (sig == ks.SIG_JSON)) & (cols.flow_nth[:n] < SHELL_PACKETS)
                                   & (cols.proto[:n] == 6))
        if len(shell_idx):
            web = np.concatenate([fid[sig == ks.SIG_HTTP], _ids(self.web_flows),
                                  _ids(f for f, st in self.streams.items() if st.kind == HTTP)])
            shell_idx = shell_idx[~np.isin(fid[shell_idx], web)].astype(np.int64)
        if len(shell_idx):
            self._shell_text(b, cols, shell_idx, fid, ev)
        self._packet_arrays(b, cols, n, ev)
        return ev

    def _inspect(self, b, cols, idx, sig, fid, ev: Events) -> None:
        out = np.empty(max(1, len(idx) * PAYLOAD_LIMIT), np.uint8)
        offs = np.empty(len(idx) + 1, np.int64)
        end = ks.gather(b.buf, b.off, cols, idx, PAYLOAD_LIMIT, False, out, offs)
        data = out[:end].tobytes()
        rows = Inspected(cols, idx, fid)
        at = offs.tolist()
        sigs = sig[idx].tolist()
        macs = cols.src_mac[idx].tolist()
        streams, ended = self.streams, self.ended
        for j, f in enumerate(rows.fids):
            s = sigs[j]
            try:
                if s == ks.SIG_DNS:
                    ctx = rows.ctx(j)
                    ev.dns.append(DnsEvent(ctx, dns_mod.parse(data[at[j]:at[j + 1]], tcp=ctx.proto == 6), macs[j]))
                elif s == ks.SIG_DHCP:
                    ev.dhcp.append(DhcpEvent(rows.ctx(j), macs[j], dhcp_mod.parse(data[at[j]:at[j + 1]])))
                elif s == ks.SIG_FTP:
                    self._ftp(f, rows.ctx(j), data[at[j]:at[j + 1]], ev)
                else:
                    st = streams.get(f)
                    if st is None:
                        kind = _SIG_KIND.get(s)
                        if kind is None or f in ended:
                            continue  # a followed flow's packet after its stream ended
                        st = self._open(f, Stream(kind, rows.ctx(j)), ev)
                    payload = data[at[j]:at[j + 1]][:rows.wire[j]]  # Ethernet padding is no payload
                    self._stream_packet(f, st, rows.packet(j, len(payload)), payload, ev)
            except ValueError:
                self.parse_errors += 1

    def _shell_text(self, b, cols, idx, fid, ev: Events) -> None:
        # one pass over the capture buffer finds the payloads holding a marker's literal; only
        # those are copied out for the patterns
        hit = np.empty(len(idx), np.uint8)
        ks.payloads_with_literals(b.buf, b.off, cols, idx, SHELL_BYTES, shell_mod.LITERAL_BYTES,
                                  shell_mod.LITERAL_OFFSETS, shell_mod.LITERAL_FIRST, hit)
        idx = idx[hit.astype(bool)]
        if not len(idx):
            return
        out = np.empty(len(idx) * SHELL_BYTES, np.uint8)
        offs = np.empty(len(idx) + 1, np.int64)
        end = ks.gather(b.buf, b.off, cols, idx, SHELL_BYTES, False, out, offs)
        found = shell_mod.find_markers(out[:end].tobytes(), offs)
        if not found:
            return
        sel = np.array([j for j, _, _ in found], np.int64)
        rows = Inspected(cols, idx[sel], fid)
        for k, (_, marker, text) in enumerate(found):
            ctx = rows.ctx(k)
            if shell_mod.is_file_transfer(ctx.sport, ctx.dport):
                continue  # file contents may quote any command; they are not a shell session
            ev.shell.append(ShellEvent(ctx, marker, text))  # (or FTP data: remote_shell checks the announcements)

    def _ftp(self, f: int, ctx: Ctx, payload: bytes, ev: Events) -> None:
        """FTP control lines: remember the client's USER and the data connections announced
        (PORT/EPRT, 227/229 replies, as Zeek's expected connections), report login replies."""
        for line in payload.split(b"\r\n"):
            if ctx.from_orig:
                verb = line[:5].upper()
                if verb == b"USER ":
                    if len(self.ftp_users) > MAX_STREAMS:
                        self.ftp_users.clear()
                    self.ftp_users[f] = line[5:69].decode("latin-1")
                elif verb in (b"PORT ", b"EPRT "):
                    self._expect_data(ctx, ctx.client, ftp_endpoint(line), ev)
            elif line[:3] in (b"230", b"530"):
                ev.ftp.append(FtpReply(ctx, int(line[:3]), self.ftp_users.get(f)))
            elif line[:4] in (b"227 ", b"229 "):
                self._expect_data(ctx, ctx.server, ftp_endpoint(line), ev)

    @staticmethod
    def _expect_data(ctx: Ctx, peer: str, endpoint: tuple[str | None, int] | None, ev: Events) -> None:
        """A data connection announced on the control connection (Zeek's expected connection):
        handed on as an event, so that the detectors, not this tap's state, tell a file sent
        over it from a shell session, whichever flows it meets first."""
        if endpoint is None:
            return
        ip, port = endpoint
        ev.ftp_data.append(FtpDataAnnounce(ctx, tuple(sorted((host, port) for host in {peer, ip} - {None}))))

    # -- streams ---------------------------------------------------------------------------
    def _open(self, f: int, st: Stream, ev: Events) -> Stream:
        self.streams[f] = st
        if len(self.streams) > MAX_STREAMS:
            _, old = self.streams.popitem(last=False)
            self._finish_stream(old, ev)
            self.dropped_streams += 1
        return st

    def _stream_packet(self, f: int, st: Stream, pkt: Packet, payload: bytes, ev: Events) -> None:
        if st.done:
            return
        buf, bit = st.side(pkt.from_orig)
        if pkt.cut:
            st.cut |= bit
        room = HEAD_BYTES - len(buf)
        if room > 0:
            buf += payload[:room]
        st.packets += 1
        st.last_ns = pkt.ts_ns
        getattr(self, f"_{st.kind}")(st, pkt, payload, ev)
        if st.done or (len(st.orig) >= HEAD_BYTES and len(st.resp) >= HEAD_BYTES):
            self._finish_stream(st, ev)
            self.streams.pop(f, None)
            ended = self.web_flows if st.kind == HTTP else self.ended if st.kind in (TLS, SSH) else None
            if ended is not None:
                ended[f] = None
                if len(ended) > MAX_STREAMS:
                    ended.popitem(last=False)

    def _tls(self, st: Stream, pkt: Packet, payload, ev) -> None:
        """Only the direction this packet added to is parsed again. The stream is done when
        each direction has given what it can: a ClientHello one way, a ServerHello and (before
        TLS 1.3) certificates the other, or records that end the handshake (a resumed session,
        or a stream that is not TLS) so that nothing more can come."""
        if st.event is None:
            st.event = TlsEvent(st.ctx)
        e = st.event
        data, bit = st.side(pkt.from_orig)
        wanted = e.client_hello is None if pkt.from_orig else e.server_hello is None or not e.certificates
        if wanted and not st.settled & bit:
            msgs, settled = tls_mod.handshake_scan(bytes(data))
            for mtype, body in msgs:
                if not pkt.from_orig:
                    if mtype == 2 and e.server_hello is None:
                        e.server_hello = tls_mod.parse_server_hello(body)
                    elif mtype == 11 and not e.certificates:
                        e.certificates = tls_mod.parse_certificates(body)
                elif mtype == 1:
                    e.client_hello = tls_mod.parse_client_hello(body)
            st.settle(bit, settled, data)
        tls13 = e.server_hello is not None and e.server_hello.version == 0x0304
        client = e.client_hello is not None or st.settled & ORIG_SETTLED
        server = (e.server_hello is not None and (e.certificates or tls13)) or st.settled & RESP_SETTLED
        if client and server:
            st.done = True

    def _ssh(self, st: Stream, pkt: Packet, payload, ev) -> None:
        """Only the direction this packet added to is parsed again; the stream is done when both
        banners and the host key are found, or when neither direction can add more."""
        if st.event is None:
            st.event = SshEvent(st.ctx)
        e = st.event
        data, bit = st.side(pkt.from_orig)
        if st.settled & bit:
            return
        banner, start, settled = ssh_mod.banner_scan(bytes(data))
        if banner is not None:
            if pkt.from_orig:
                e.client_banner = banner
            else:
                e.server_banner = banner
            if e.host_key is None:
                key, settled = ssh_mod.host_key_scan(bytes(data), start)
                if key is not None:
                    e.host_key_type, e.host_key = key.key_type, key.fingerprint
                    e.key_sent_by_orig = pkt.from_orig
        st.settle(bit, settled, data)
        if (e.client_banner and e.server_banner and e.host_key) or st.settled == ORIG_SETTLED | RESP_SETTLED:
            st.done = True

    def _http(self, st: Stream, pkt: Packet, payload, ev) -> None:
        if st.event is None:
            st.event = HttpEvent(st.ctx)
        e = st.event
        if e.request is None and pkt.from_orig:
            e.request = http_mod.parse_request(bytes(st.orig))
        if e.response is None and not pkt.from_orig:
            e.response = http_mod.parse_response(bytes(st.resp))
        upgraded = e.request is not None and e.request.upgrade is not None
        # a protocol banner inside an HTTP (e.g. WebSocket) stream is a tunnel
        pos = payload.find(b"SSH-2.0-")
        if pos < 0:
            pos = payload.find(b"SSH-1.99-")
        if pos >= 0 and not payload.startswith(b"SSH-"):
            outer = e.request.upgrade if upgraded else "http"
            end = payload.find(b"\n", pos)
            ev.tunnels.append(TunnelEvent(pkt.ctx(), "ssh", outer or "http", pos,
                                          payload[pos:end if end > 0 else pos + 64].decode("latin-1").strip()))
            st.done = True
        elif e.request is not None and e.response is not None and not upgraded and st.packets > 4:
            st.done = True

    def _json(self, st: Stream, pkt: Packet, payload, ev) -> None:
        methods, agent = rpc_mod.mining_methods(payload)
        if methods:
            if st.event is None:
                st.event = MiningEvent(st.ctx, [], agent, "stratum")
            e = st.event
            for m in methods:
                if m not in e.methods:
                    e.methods.append(m)
            if agent and not e.agent:
                e.agent = agent
            if "getwork" in e.methods or "getblocktemplate" in e.methods:
                e.protocol = "getwork"
            if len(e.methods) >= 3:
                st.done = True
        elif st.packets >= 8 and st.event is None:
            st.done = True

    def _p2p(self, st: Stream, pkt: Packet, payload, ev) -> None:
        found = rpc_mod.p2p_protocol(payload)
        if found is not None:
            st.event = MiningEvent(st.ctx, [found[1]], None, f"p2p:{found[0]}")
        st.done = True

    def _rfb(self, st: Stream, pkt: Packet, payload, ev) -> None:
        h = rfb_mod.parse(bytes(st.orig), bytes(st.resp))
        if h is None:
            st.done = True
            return
        prev = st.event
        e = st.event = RfbEvent(st.ctx, h.server_version, h.client_version, h.security_type, h.auth_ok, h.reason)
        if prev is not None:
            e.challenge_ts, e.response_ts = prev.challenge_ts, prev.response_ts
        if e.challenge_ts is None and h.challenge_end is not None and len(st.resp) >= h.challenge_end:
            e.challenge_ts = pkt.ts_ns
        if e.response_ts is None and h.response_end is not None and len(st.orig) >= h.response_end:
            e.response_ts = pkt.ts_ns
        if h.auth_ok is not None or (h.security_type not in (None, rfb_mod.SEC_NONE, rfb_mod.SEC_VNC)):
            st.done = True

    def _finish_stream(self, st: Stream, ev: Events) -> None:
        e = st.event
        if e is None:
            return
        if isinstance(e, TlsEvent) and e.client_hello is not None:
            ev.tls.append(e)
        elif isinstance(e, SshEvent) and (e.client_banner or e.server_banner):
            ev.ssh.append(e)
        elif isinstance(e, HttpEvent) and e.request is not None:
            ev.http.append(e)
        elif isinstance(e, MiningEvent) and e.methods:
            ev.mining.append(e)
        elif isinstance(e, RfbEvent):
            ev.rfb.append(e)
        st.event = None

    def ripe(self, now_ns: int, linger_ns: int = STREAM_LINGER_NS) -> Events:
        """Live input: what open streams found, once they have been quiet for ``linger_ns``
        (a miner's session stays open for days; its first methods are the evidence). Such a
        stream is read no further."""
        ev = Events()
        for st in self.streams.values():
            if st.event is not None and not st.done and now_ns - st.last_ns >= linger_ns:
                self._finish_stream(st, ev)
                st.done = True
        return ev

    def flush(self) -> Events:
        """End of input: hand on what the open streams found."""
        ev = Events()
        for st in self.streams.values():
            self._finish_stream(st, ev)
        self.streams.clear()
        return ev

    # -- packet-level arrays ---------------------------------------------------------------
    def _packet_arrays(self, b, cols, n, ev: Events) -> None:
        et = cols.ethertype[:n]
        arp = np.flatnonzero(et == 0x0806)
        if len(arp):
            ev.arp = PacketArrays({"ts": cols.ts_ns[arp], "op": cols.arp_op[arp], "eth_src": cols.src_mac[arp],
                                   "eth_dst": cols.dst_mac[arp], "sha": cols.arp_sha[arp], "spa": cols.arp_spa[arp],
                                   "tha": cols.arp_tha[arp], "tpa": cols.arp_tpa[arp]})
        ipv = cols.ip_ver[:n] != 0
        proto = cols.proto[:n]
        icmp = np.flatnonzero(ipv & ((proto == 1) | (proto == 58)) & (cols.frag[:n] & pc.FRAG_IS_FRAGMENT == 0)
                              & (cols.status[:n] == pc.ST_OK))
        if len(icmp):
            heads = np.zeros((len(icmp), ICMP_HEAD), np.uint8)
            buf = np.empty(len(icmp) * ICMP_HEAD, np.uint8)
            offs = np.empty(len(icmp) + 1, np.int64)
            ks.gather(b.buf, b.off, cols, icmp.astype(np.int64), ICMP_HEAD, True, buf, offs)
            for j in range(len(icmp)):
                row = buf[offs[j]:offs[j + 1]]
                heads[j, :len(row)] = row
            src, dst = self._addresses(cols, icmp)
            ev.icmp = PacketArrays({"ts": cols.ts_ns[icmp], "src": src, "dst": dst, "v6": proto[icmp] == 58,
                                    "type": cols.icmp_type[icmp], "code": cols.icmp_code[icmp],
                                    "payload_len": cols.payload_len[icmp], "ttl": cols.ttl[icmp],
                                    "eth_src": cols.src_mac[icmp], "head": heads,
                                    "uid": np.array(uid_texts(self._fids(cols, icmp)), dtype=object)})
        flags = cols.tcp_flags[:n]
        # a later fragment's "TCP header" is payload bytes: only unfragmented and first fragments count
        whole = (cols.frag[:n] & pc.FRAG_IS_FRAGMENT == 0) | (cols.frag[:n] & pc.FRAG_FIRST != 0)
        tcp_ok = ipv & (proto == 6) & (cols.status[:n] == pc.ST_OK) & whole
        odd = tcp_ok & odd_tcp(flags)
        odd_idx = np.flatnonzero(odd)
        if len(odd_idx):
            src, dst = self._addresses(cols, odd_idx)
            ev.tcp_odd = PacketArrays({"ts": cols.ts_ns[odd_idx], "src": src, "dst": dst,
                                       "sport": cols.sport[odd_idx], "dport": cols.dport[odd_idx],
                                       "flags": flags[odd_idx]})
        self._initiators(cols, n, ipv, proto, flags, tcp_ok, ev)
        self._next_hops(cols, n, ev)
        rows, prev_ttl = self.rexmit.find(b.buf, b.off, cols, n)
        if len(rows):
            src, dst = self._addresses(cols, rows)
            ev.tcp_rexmit = PacketArrays({"ts": cols.ts_ns[rows], "src": src, "dst": dst, "sport": cols.sport[rows],
                                          "dport": cols.dport[rows], "seq": cols.tcp_seq[rows], "ttl": cols.ttl[rows],
                                          "prev_ttl": prev_ttl, "uid": np.array(
                                              uid_texts(self._fids(cols, rows)), dtype=object)})

    def _initiators(self, cols, n, ipv, proto, flags, tcp_ok, ev: Events) -> None:
        """The (source MAC, address) pairs of the batch's connection openers (SYNs, DNS
        questions): one host's IPv4 and IPv6 addresses share its MAC (a router's MAC carries many)."""
        opening = (tcp_ok & ((flags & (pc.TH_SYN | pc.TH_ACK)) == pc.TH_SYN)) | \
            (ipv & (proto == 17) & (cols.dport[:n] == 53))
        rows = np.flatnonzero(opening)
        if not len(rows):
            return
        _, first = group_ids(np, cols.src_mac[rows], cols.src_ip_hi[rows], cols.src_ip_lo[rows])
        rows = rows[np.sort(first)]
        src, _ = self._address_text(cols, rows)
        ev.initiators = PacketArrays({"ts": cols.ts_ns[rows], "mac": cols.src_mac[rows], "addr": src})

    def _next_hops(self, cols, n, ev: Events) -> None:
        """Which MAC each host's frames go to, from the first packets of each flow direction: per
        (VLAN, source MAC, source address, destination MAC) the first time, the packets, and the
        ``DST_SAMPLE`` smallest hashes of the destination addresses (a bottom-k sample, which
        merges across batches: a router carries frames to many addresses, a peer on the link
        to one, its own)."""
        rows = np.flatnonzero((cols.flow_dir[:n] != 0) & (cols.flow_nth[:n] < NEXT_HOP_PACKETS))
        if not len(rows):
            return
        def mix(x):
            return mix64(np, x)

        group = mix(cols.vlan[rows].astype(np.uint64) ^ mix(cols.src_mac[rows] ^ mix(cols.dst_mac[rows] ^ mix(
            cols.src_ip_hi[rows] ^ mix(cols.src_ip_lo[rows])))))
        dst = mix(cols.dst_ip_hi[rows] ^ mix(cols.dst_ip_lo[rows] ^ np.uint64(0x5EED)))
        groups, first, packets = np.unique(group, return_index=True, return_counts=True)
        sample = bottom_k(np, np.searchsorted(groups, group), dst, len(groups), DST_SAMPLE)
        order = np.argsort(first, kind="stable")  # in capture order
        first, packets, sample = first[order], packets[order], sample[order]
        at = rows[first]
        src, _ = self._address_text(cols, at)
        host = mix(cols.vlan[at].astype(np.uint64) ^ mix(cols.src_ip_hi[at] ^ mix(cols.src_ip_lo[at])))
        ev.next_hops = PacketArrays({"ts": cols.ts_ns[at], "vlan": cols.vlan[at], "src_mac": cols.src_mac[at],
                                     "src": src, "host_id": host, "dst_mac": cols.dst_mac[at], "packets": packets,
                                     "dsts": sample})

    def _fids(self, cols, idx):
        fid = np.zeros(len(idx), np.uint64)
        ks.flow_ids(cols, idx.astype(np.int64), fid)
        return fid

    def _addresses(self, cols, idx) -> tuple[np.ndarray, np.ndarray]:
        src, dst = self._address_text(cols, idx)
        return np.array(src.to_pylist(), dtype=object), np.array(dst.to_pylist(), dtype=object)

    def _address_text(self, cols, idx) -> tuple[pa.Array, pa.Array]:
        """Source and destination addresses of packets ``idx`` as Arrow strings (no Python
        object per packet: a flood's millions of sources are turned into text only where a
        detector keeps them)."""
        k = len(idx)
        sb, db = np.empty(max(1, k * 39), np.uint8), np.empty(max(1, k * 39), np.uint8)
        so, do = np.empty(k + 1, np.int64), np.empty(k + 1, np.int64)
        ks.packet_addresses(cols, idx.astype(np.int64), sb, so, db, do)
        # copies of the text only: the scratch buffers are sized for the longest addresses
        return au.strings(sb[:so[k]].copy(), so, k), au.strings(db[:do[k]].copy(), do, k)
