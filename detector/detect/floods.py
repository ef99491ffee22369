"""Denial of service (dos / syn_flood, reflection, dhcp_starvation).

Methods:

- ``syn_flood``: connection attempts that never complete (a SYN, perhaps answered, never
  acknowledged, no data) against completed handshakes, per target and in ``window_s`` windows
  (the SYN-vs-handshake balance of Wang, Zhang and Shin, "Detecting SYN flooding attacks",
  INFOCOM 2002). A target receiving ``syn_min`` of them from ``syn_min_sources`` sources with at
  most ``complete_share`` completed is flooded; spoofed floods with random targets are caught by
  the same test over all targets at once.
- ``reflection``: amplification answers (DNS, NTP, SNMP, SSDP, memcached, CLDAP, chargen, ...)
  arriving at a host that never asked (flows from those ports with no packet from the host),
  adding up to ``reflect_min_bytes``, or to ``reflect_floor_bytes`` from ``reflect_min_sources``
  reflectors. Below that floor, a few kB of answers from many servers are a resolver or client
  whose queries the capture missed (it started late, or saw one direction), not a flood.
- ``dhcp_starvation``: DHCP DISCOVER/REQUEST messages from ``dhcp_min_macs`` distinct client
  MAC addresses within ``dhcp_window_s`` (address-pool exhaustion, as Yersinia or dhcpstarv
  do), or ``dhcp_flood_rate`` client messages per second from one client.

A SYN flood also counts when a burst of at least ``syn_burst_min`` attempts arrives at
``syn_rate`` attempts per second or more.

Sources and reflectors are kept as a bounded sample of ``SOURCE_SAMPLE`` addresses
(:class:`~detector.detect.sample.DistinctSample`); past that their count is estimated, and the
alert says "about" and sets ``sources_exact`` / ``reflectors_exact`` to false.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from detector import arrowutil as au
from detector.alerts import Alert
from detector.detect.address_columns import crc32_column
from detector.detect.base import Detector, FlowView, widen
from detector.detect.sample import DistinctSample
from detector.detect.services import AMPLIFIER_PORTS
from detector.l7.events import Events
from kernels.xp_ops import distinct

SOURCE_SAMPLE = 10_000  # addresses kept per flood: enough for exact counts of any real botnet's share


def _keep_lowest(ports: set[int], port: int, cap: int) -> None:
    """Keep the ``cap`` lowest ports seen: the same set whatever order flows come in."""
    if port in ports:
        return
    if len(ports) < cap:
        ports.add(port)
    elif port < (top := max(ports)):
        ports.remove(top)
        ports.add(port)


class Floods(Detector):
    name = "floods"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        window_s: float = 10.0
        syn_min: int = 100
        syn_min_sources: int = 20
        complete_share: float = 0.2
        reflect_min_sources: int = 5
        reflect_min_bytes: int = 1_000_000
        reflect_floor_bytes: int = 100_000
        syn_burst_min: int = 50
        syn_rate: float = 500.0
        dhcp_min_macs: int = 30
        dhcp_window_s: float = 300.0
        dhcp_flood_rate: float = 20.0

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        # per (target, window): [attempts, completed, sources, first, last, ports]
        self.syn: dict[tuple[str, int], list] = {}
        self.refl: dict[str, dict] = {}
        self.dhcp: list[tuple[int, str]] = []
        self.dhcp_servers: dict[str, dict] = {}

    def _bucket(self, key: str, ts: int):
        w = int(self.p.window_s * 1e9)
        b = self.syn.get((key, ts // w))
        if b is None:
            if len(self.syn) > 500_000:
                return None
            b = self.syn[(key, ts // w)] = [0, 0, DistinctSample(SOURCE_SAMPLE), ts, ts, set()]
        return b

    def _count_handshakes(self, f: FlowView) -> None:
        """Per (target, window) and over all targets ("*"): attempts that never completed (a SYN,
        no data either way) and completed handshakes (the originator acknowledged the SYN-ACK
        or sent data; a SYN-ACK alone is the victim answering a flood packet)."""
        hist = f.batch.column("history")
        has = {c: au.to_numpy(pc.match_substring(hist, c)) for c in "hHADS"}
        tcp = f["proto"] == "tcp"
        opened = tcp & (has["h"] | has["H"]) & (has["A"] | has["D"])
        attempt = tcp & ~opened & has["S"] & (f["orig_bytes"] == 0) & (f["resp_bytes"] == 0)
        rows = np.flatnonzero(opened | attempt)
        if not len(rows):
            return
        dsts, dst_code = f.distinct("resp_h")
        srcs, src_code = f.encoded("orig_h")
        src_crc = np.append(crc32_column(srcs), 0).astype(np.int64)
        ts = f["ts"][rows]
        window = ts // int(self.p.window_s * 1e9)
        ports, att = f["resp_p"][rows], attempt[rows]
        for target_code in (np.full(len(rows), -1), dst_code[rows]):  # all targets first: never dropped at the cap
            key = (target_code + 1) << 32 | (window - window.min())
            _, group, inverse = np.unique(key, return_index=True, return_inverse=True)
            order = np.argsort(inverse, kind="stable")
            starts = np.searchsorted(inverse[order], np.arange(len(group)))
            n_att = np.add.reduceat(att[order].astype(np.int64), starts)
            n_ok = np.diff(np.append(starts, len(order))) - n_att
            first = np.minimum.reduceat(ts[order], starts)
            last = np.maximum.reduceat(ts[order], starts)
            buckets = []
            for g, row in enumerate(group.tolist()):
                code = int(target_code[row])
                b = self._bucket("*" if code < 0 else dsts[code], int(ts[row]))
                buckets.append(b)
                if b is None:
                    continue
                b[0] += int(n_att[g])
                b[1] += int(n_ok[g])
                b[3], b[4] = min(b[3], int(first[g])), max(b[4], int(last[g]))
            # the ports attempted (not those of completed connections: a flood on 443 is not on 22)
            pairs = distinct(np, inverse[att].astype(np.int64) << 16 | ports[att])
            for g, port in zip((pairs >> 16).tolist(), (pairs & 0xFFFF).tolist()):
                b = buckets[g]
                if b is not None:
                    _keep_lowest(b[5], port, 32)
            sel = np.flatnonzero(att)
            pairs = distinct(np, inverse[sel].astype(np.int64) << 32 | src_code[rows[sel]])
            group_of, code_of = pairs >> 32, pairs & 0xFFFFFFFF
            # only the sources that can enter a bucket's sample (crc under its bound) go one by one
            bound = np.array([-1 if b is None else b[2].bound for b in buckets], np.int64)
            under = np.flatnonzero((src_crc[code_of] <= bound[group_of]) & (code_of < len(srcs)))
            g_of, c_of = group_of[under], code_of[under]  # sorted by bucket: one run each
            cuts = np.flatnonzero(np.r_[True, g_of[1:] != g_of[:-1], True]) if len(g_of) else np.zeros(1, np.int64)
            for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                codes = c_of[a:b]
                buckets[int(g_of[a])][2].add_hashed(srcs.take(pa.array(codes)), src_crc[codes])

    def observe_flows(self, f: FlowView) -> None:
        proto, ts = f["proto"], f["ts"]
        oh, rh, rp, op = f["orig_h"], f["resp_h"], f["resp_p"], f["orig_p"]
        opk, rpk = f["orig_pkts"], f["resp_pkts"]
        self._count_handshakes(f)
        # answers from an amplifier port to a side that sent nothing back (either orientation)
        amp_o = np.isin(op, list(AMPLIFIER_PORTS)) & (rpk == 0) & (opk > 0)
        amp_r = np.isin(rp, list(AMPLIFIER_PORTS)) & (opk == 0) & (rpk > 0)
        for j in np.flatnonzero((proto == "udp") & (amp_o | amp_r)).tolist():
            if amp_r[j]:
                victim, reflector, port, vport = oh[j], rh[j], int(rp[j]), int(op[j])
                nbytes, npk = int(f["resp_ip_bytes"][j]), int(rpk[j])
            else:
                victim, reflector, port, vport = rh[j], oh[j], int(op[j]), int(rp[j])
                nbytes, npk = int(f["orig_ip_bytes"][j]), int(opk[j])
            r = self.refl.setdefault(victim, {"first": int(ts[j]), "last": 0, "bytes": 0, "pkts": 0,
                                              "refl": DistinctSample(SOURCE_SAMPLE),
                                              "services": set(), "victim_port": 65536})
            widen(r, int(ts[j]))
            r["bytes"] += nbytes
            r["pkts"] += npk
            r["refl"].add(reflector)
            r["services"].add(AMPLIFIER_PORTS[port])
            r["victim_port"] = min(r["victim_port"], vport)  # the lowest: whatever order flows come in

    def observe_events(self, events: Events) -> None:
        for ev in events.dhcp:
            if ev.msg.op == 1 and ev.msg.msg_type in (1, 3, 8) and len(self.dhcp) < 1_000_000:
                self.dhcp.append((ev.ctx.ts_ns, ev.msg.client_mac))
            elif ev.msg.op == 2 and ev.msg.msg_type in (2, 5, 6):  # OFFER, ACK, NAK: the server under load
                server = ev.msg.server_id or ev.ctx.src
                counts = self.dhcp_servers.setdefault(server, {"offers": 0, "acks": 0, "naks": 0})
                counts[{2: "offers", 5: "acks", 6: "naks"}[ev.msg.msg_type]] += 1

    def finish(self) -> list[Alert]:
        p = self.p
        out = []
        best: dict[str, list] = {}
        for (target, _), b in self.syn.items():
            attempts, completed = b[0], b[1]
            burst_rate = attempts / max((b[4] - b[3]) / 1e9, 1e-3)
            big = attempts >= p.syn_min or (attempts >= p.syn_burst_min and burst_rate >= p.syn_rate)
            if not big or len(b[2]) < p.syn_min_sources:
                continue
            if completed > p.complete_share * (attempts + completed):
                continue
            # the busiest window; the earliest of equals, whatever order the windows were made in
            if target not in best or (attempts, -b[3]) > (best[target][0], -best[target][3]):
                best[target] = b
        if len(best) > 1:
            best.pop("*", None)  # the per-target alerts say it better
        for target, b in best.items():
            attempts, completed, sources = b[0], b[1], b[2]
            rate = attempts / max(p.window_s, 1e-9)
            victim = "many hosts (random targets)" if target == "*" else target
            out.append(Alert(b[3], b[4], "dos", "syn_flood", "high", 0.9,
                             f"{victim} received {attempts} TCP connection attempts that never completed from "
                             f"{'' if sources.exact else 'about '}{len(sources)} sources within {p.window_s:.0f} s "
                             f"({completed} completed): a SYN flood",
                             self.label, self.host_for(target if target != "*" else None, *sources.examples(1)),
                             None, None if target == "*" else target, None, min(b[5]) if b[5] else None, "tcp",
                             {"attempts": attempts, "completed": completed, "sources": len(sources),
                              "sources_exact": sources.exact, "example_sources": sources.examples(10),
                              "ports": sorted(b[5]),
                              "attempts_per_s": round(rate, 1), "window_s": p.window_s}))
        for victim, r in self.refl.items():
            if r["bytes"] < p.reflect_min_bytes and (len(r["refl"]) < p.reflect_min_sources
                                                     or r["bytes"] < p.reflect_floor_bytes):
                continue
            out.append(Alert(r["first"], r["last"], "dos", "reflection", "high", 0.85,
                             f"{victim} received {r['bytes']:,} bytes of unrequested "
                             f"{'/'.join(sorted(r['services']))} answers from {'' if r['refl'].exact else 'about '}"
                             f"{len(r['refl'])} reflectors: an "
                             "amplification attack", self.label, self.host_for(victim), None, victim, None,
                             r["victim_port"] if r["victim_port"] < 65536 else None, "udp",
                             {"bytes": r["bytes"], "packets": r["pkts"], "reflectors": len(r["refl"]),
                              "reflectors_exact": r["refl"].exact, "example_reflectors": r["refl"].examples(10),
                              "services": sorted(r["services"])}))
        if self.dhcp:
            self.dhcp.sort()
            w = int(p.dhcp_window_s * 1e9)
            ts = [t for t, _ in self.dhcp]
            macs = [m for _, m in self.dhcp]
            counts: dict[str, int] = {}
            distinct = best_n = best_lo = hi = 0
            for lo in range(len(ts)):
                while hi < len(ts) and ts[hi] - ts[lo] <= w:
                    counts[macs[hi]] = counts.get(macs[hi], 0) + 1
                    distinct += counts[macs[hi]] == 1
                    hi += 1
                if distinct > best_n or (distinct == best_n and hi - lo > 0):
                    best_n, best_lo, best_hi = distinct, lo, hi
                counts[macs[lo]] -= 1
                distinct -= counts[macs[lo]] == 0
            per_mac = defaultdict(int)
            for m in macs:
                per_mac[m] += 1
            span = max((ts[-1] - ts[0]) / 1e9, 1.0)
            top_mac, top_n = max(per_mac.items(), key=lambda kv: kv[1])
            servers = sorted(self.dhcp_servers.items(), key=lambda kv: -sum(kv[1].values()))
            server = servers[0][0] if servers else next(iter(self.site.cfg.dhcp_servers), None)
            host = self.host_for(server) if server else "dhcp"
            answered = {s: c for s, c in servers[:8]}
            if best_n >= p.dhcp_min_macs:
                out.append(Alert(ts[best_lo], ts[best_hi - 1], "dos", "dhcp_starvation", "high", 0.85,
                                 f"{best_n} different client MAC addresses asked for DHCP leases within "
                                 f"{p.dhcp_window_s:.0f} s{f' from {server}' if server else ''}: exhausting the "
                                 "address pool", self.label, host, None, server, 68, 67, "udp",
                                 {"distinct_macs": best_n, "requests": len(ts),
                                  "example_macs": sorted(set(macs[best_lo:best_hi]))[:10], "servers": answered}))
            elif top_n / span >= p.dhcp_flood_rate:
                out.append(Alert(ts[0], ts[-1], "dos", "dhcp_starvation", "medium", 0.6,
                                 f"{top_mac} sent {top_n} DHCP requests at {top_n / span:.0f} per second: a DHCP "
                                 "flood", self.label, host, None, server, 68, 67, "udp",
                                 {"client_mac": top_mac, "requests": top_n, "per_second": round(top_n / span, 1),
                                  "servers": answered}))
        return out
