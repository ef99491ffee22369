"""Hand-built packets for the protocol parts of synthetic incidents.

An attack's handshakes, DNS messages, ARP replies and the like are a few hundred to a few
thousand packets with real bytes; :class:`Crafter` lays them out a row at a time (with correct
TCP sequence numbers) and hands back one :class:`PacketSpec`. High-volume parts (floods, bulk
data) use the vectorised generators of :mod:`detector.synth.traffic` instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.synth.packets import KIND_ARP, PacketSpec, PayloadPool, ip_words, mac_int
from detector.synth.site import Host, Site, path_ttl
from detector.synth.traffic import TH_ACK, TH_FIN, TH_PSH, TH_RST, TH_SYN

MSS = 1448
BROADCAST_MAC = 0xFFFFFFFFFFFF


@dataclass(frozen=True)
class Peer:
    """One end of a packet: address words, the MAC address frames to it carry, IP version."""

    hi: int
    lo: int
    mac: int
    ver: int
    text: str
    ttl: int = 64  # what its packets arrive with at the capture point

    @property
    def v4(self) -> int:
        return self.lo & 0xFFFFFFFF


def peer(site: Site, x: Host | str, v6: bool = False, mac: str | int | None = None) -> Peer:
    """A site host, or any address (an external one is reached through the site gateway)."""
    if isinstance(x, Host):
        text = x.ipv6 if v6 and x.ipv6 else x.ipv4
        hi, lo = ip_words(text)
        m = x.mac_int
    else:
        text = x
        hi, lo = ip_words(x)
        m = site.gateway.mac_int
    if mac is not None:
        m = mac_int(mac) if isinstance(mac, str) else int(mac)
    return Peer(hi, lo, m, 6 if ":" in text else 4, text, int(path_ttl(np.array([hi]), np.array([lo]))[0]))


class Crafter:
    def __init__(self, pool: PayloadPool):
        self.pool = pool
        self.rows: dict[str, list] = {name: [] for name in PacketSpec.DTYPES}

    def __len__(self) -> int:
        return len(self.rows["ts_ns"])

    def _row(self, **values) -> None:
        for name, col in self.rows.items():
            col.append(values.get(name, 0))

    def ip(self, ts: int, src: Peer, dst: Peer, proto: int, sport: int, dport: int, payload: bytes = b"",
           length: int | None = None, snap: int = 65535, flags: int = 0, seq: int = 0, ack: int = 0,
           ttl: int | None = None,
           win: int = 502, ip_id: int = 0, src_mac: int | None = None, dst_mac: int | None = None) -> None:
        """One IP packet. ``payload`` is written (up to ``snap`` bytes); ``length`` is the true
        payload length when larger (the rest is cut from the capture, as a snap length does).
        For ICMP, ``sport``/``dport`` are type/code and ``seq`` is the 4-byte rest of header.
        ``ttl`` defaults to the source's path TTL."""
        length = len(payload) if length is None else max(length, len(payload))
        off = self.pool.add(payload) if payload else 0
        self._row(ts_ns=int(ts), src_mac=src.mac if src_mac is None else src_mac,
                  dst_mac=dst.mac if dst_mac is None else dst_mac, ip_ver=src.ver, src_hi=src.hi, src_lo=src.lo,
                  dst_hi=dst.hi, dst_lo=dst.lo, proto=proto, sport=sport, dport=dport, flags=flags,
                  seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, win=win, ttl=src.ttl if ttl is None else ttl,
                  ip_id=ip_id & 0xFFFF,
                  payload_len=length, cap_payload=min(len(payload), snap), payload_off=off)

    def arp(self, ts: int, op: int, sha: int, spa: int, tha: int, tpa: int, eth_dst: int | None = None) -> None:
        """An ARP message; addresses are the 48-bit MAC and 32-bit IPv4 values."""
        if eth_dst is None:
            eth_dst = BROADCAST_MAC if op == 1 else tha
        self._row(ts_ns=int(ts), kind=KIND_ARP, src_mac=sha, dst_mac=eth_dst, src_lo=spa, dst_lo=tpa, arp_op=op,
                  arp_tha=tha)

    def udp(self, ts: int, src: Peer, dst: Peer, sport: int, dport: int, payload: bytes = b"", **kw) -> None:
        self.ip(ts, src, dst, 17, sport, dport, payload, **kw)

    def tcp_session(self, ts: int, client: Peer, server: Peer, cport: int, sport: int,
                    messages: list[tuple[bool, bytes | int]], rtt_ns: int = 20_000_000, gap_ns: int = 50_000_000,
                    close: str = "fin", c_ttl: int | None = None, s_ttl: int | None = None, snap: int = 65535,
                    segment: int = MSS, isn: tuple[int, int] | None = None) -> int:
        """A TCP connection: handshake, ``messages`` (``(from_client, bytes or a length of
        zeros)``, cut into ``segment``-byte segments, each acknowledged), and a teardown
        (``fin``, ``rst`` by the client, ``open``). Returns the time of its last packet."""
        rng = np.random.default_rng((client.lo ^ server.lo ^ cport * 65537 ^ int(ts)) & 0xFFFFFFFF)
        c_seq, s_seq = isn if isn is not None else (int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)))
        t = int(ts)
        half = rtt_ns // 2

        def send(from_client: bool, flags: int, data: bytes = b"", length: int | None = None) -> None:
            nonlocal c_seq, s_seq, t
            n = len(data) if length is None else length
            if from_client:
                self.ip(t, client, server, 6, cport, sport, data, n, snap, flags, c_seq,
                        s_seq if flags & TH_ACK else 0, c_ttl)
                c_seq += n + (1 if flags & (TH_SYN | TH_FIN) else 0)
            else:
                self.ip(t, server, client, 6, sport, cport, data, n, snap, flags, s_seq,
                        c_seq if flags & TH_ACK else 0, s_ttl)
                s_seq += n + (1 if flags & (TH_SYN | TH_FIN) else 0)

        send(True, TH_SYN)
        t += half
        send(False, TH_SYN | TH_ACK)
        t += half
        send(True, TH_ACK)
        for from_client, data in messages:
            t += gap_ns
            total = data if isinstance(data, int) else len(data)
            raw = b"" if isinstance(data, int) else data
            for k in range(0, max(total, 1), segment):
                n = min(segment, total - k)
                send(from_client, TH_ACK | TH_PSH, raw[k:k + n], n)
                t += max(half // 8, 10_000)
            t += half
            send(not from_client, TH_ACK)
        t += gap_ns
        if close == "fin":
            send(True, TH_FIN | TH_ACK)
            t += half
            send(False, TH_FIN | TH_ACK)
            t += half
            send(True, TH_ACK)
        elif close == "rst":
            send(True, TH_RST | TH_ACK)
        return t

    def spec(self) -> PacketSpec:
        n = len(self)
        spec = PacketSpec.empty(n)
        for name, col in self.rows.items():
            getattr(spec, name)[:] = np.asarray(col, dtype=np.uint64 if name.endswith("mac") or name in (
                "src_hi", "src_lo", "dst_hi", "dst_lo", "arp_tha") else np.int64).astype(PacketSpec.DTYPES[name])
        return spec
