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

Sources and reflectors are kept as a bounded sample of ``SOURCE_SAMPLE`` addresses, those
with the smallest crc32 (a bottom-k sketch: :class:`~detector.detect.sample.DistinctSample` for
reflectors; for SYN sources, rows of a :class:`KeyedTable` of address ids per target and
window); past that their count is estimated (KMV), and the alert says "about" and sets
``sources_exact`` / ``reflectors_exact`` to false. All SYN sources held are capped by
``max_sources``: past it the highest hashes are evicted and counted, every bucket's sample is
cut below one hash, and counts are estimated from that threshold.

The SYN counts are columnar and mergeable (:meth:`Floods.merge`): per (target, window) sums of
attempts and completions (:class:`KeyedSums`), at most ``max_buckets`` of them (the fewest
attempts evicted first, never the all-targets ones).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView, widen
from detector.detect.keyed_table import KeyedSums, KeyedTable, Names, key_rows
from detector.detect.sample import DistinctSample, sampled_count
from detector.detect.services import AMPLIFIER_PORTS
from detector.l7.events import Events

SOURCE_SAMPLE = 10_000  # addresses kept per flood: enough for exact counts of any real botnet's share
ALL = np.uint64(0)  # the target key of "all targets at once" (a spoofed flood with random targets)
BUCKET = ("target", "w")
_SPACE = float(1 << 32)


def _fewest_attempts_out(cols: dict) -> np.ndarray:
    """Past the cap, the (target, window) buckets with the fewest attempts go first; never the
    all-targets ones."""
    return np.where(cols["target"] == ALL, np.int64(1) << 62, cols["att"])


def _all_targets_kept(cols: dict) -> np.ndarray:
    return (cols["target"] == ALL).astype(np.int64)


def _highest_crc_out(cols: dict) -> np.ndarray:
    """Past the cap, the sources hashing highest go first: they are the first to leave a
    bottom-k sample, and the held ones stay a uniform sample (threshold sampling)."""
    return -cols["crc"]


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
        max_buckets: int = 500_000  # (target, window) buckets held
        max_sources: int = 4_000_000  # sources held over all buckets' samples (about 32 B each)

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        # per (target, window): attempts, completed, span; the 32 lowest ports attempted; the
        # sources hashing lowest (a bottom-k sample of SOURCE_SAMPLE, one more to tell it is full)
        self.size = SOURCE_SAMPLE
        cap = self.p.max_buckets
        self.counts = KeyedSums(BUCKET, {"att": "sum", "ok": "sum", "first": "min", "last": "max"}, cap,
                                _fewest_attempts_out)
        self.ports = KeyedTable(BUCKET, ("port",), 32, 4 * cap, _all_targets_kept, unique=True)
        self.sources = KeyedTable(BUCKET, ("crc", "src"), self.size + 1, self.p.max_sources, _highest_crc_out,
                                  unique=True, threshold=True)
        self.names = Names()  # the text of the targets and sources held
        self.refl: dict[str, dict] = {}
        self.dhcp: list[tuple[int, str]] = []
        self.dhcp_servers: dict[str, dict] = {}

    def merge(self, other: Floods) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        for mine, theirs in ((self.counts, other.counts), (self.ports, other.ports), (self.sources, other.sources)):
            mine.merge(theirs)
        self.names.merge(other.names)
        for victim, r in other.refl.items():
            mine = self.refl.get(victim)
            if mine is None:
                self.refl[victim] = r
                continue
            mine["first"], mine["last"] = min(mine["first"], r["first"]), max(mine["last"], r["last"])
            mine["bytes"] += r["bytes"]
            mine["pkts"] += r["pkts"]
            mine["refl"].merge(r["refl"])
            mine["services"] |= r["services"]
            mine["victim_port"] = min(mine["victim_port"], r["victim_port"])
        self.dhcp.extend(other.dhcp[:max(0, 1_000_000 - len(self.dhcp))])
        for server, counts in other.dhcp_servers.items():
            mine = self.dhcp_servers.setdefault(server, {"offers": 0, "acks": 0, "naks": 0})
            for k, v in counts.items():
                mine[k] += v

    @property
    def evictions(self) -> int:
        """Buckets, ports and sources dropped at ``max_buckets`` and ``max_sources``."""
        return self.counts.evicted + self.ports.evicted + self.sources.evicted

    def _count_handshakes(self, f: FlowView) -> None:
        """Per (target, window) and over all targets: attempts that never completed (a SYN,
        no data either way) and completed handshakes (the originator acknowledged the SYN-ACK
        or sent data; a SYN-ACK alone is the victim answering a flood packet)."""
        has = {c: f.has_text("history", c) for c in "hHADS"}
        tcp = f["proto"] == "tcp"
        opened = tcp & (has["h"] | has["H"]) & (has["A"] | has["D"])
        attempt = tcp & ~opened & has["S"] & (f["orig_bytes"] == 0) & (f["resp_bytes"] == 0)
        rows = np.flatnonzero(opened | attempt)
        if not len(rows):
            return
        srcs, src_code = f.encoded("orig_h")
        src_crc = f.crc32("orig_h").astype(np.int64)
        ts = f["ts"][rows].astype(np.int64)
        w = ts // int(self.p.window_s * 1e9)
        att = attempt[rows]
        # the ports attempted (not those of completed connections: a flood on 443 is not on 22)
        tried = np.flatnonzero(att)
        ports = f["resp_p"][rows[tried]].astype(np.int64)
        a = np.flatnonzero(att & (src_code[rows] < len(srcs)))  # (a null source is no source)
        crc, src = src_crc[src_code[rows[a]]], f.ids("orig_h")[rows[a]]
        for target in (np.full(len(rows), ALL), f.ids("resp_h")[rows]):
            self.counts.add({"target": target, "w": w, "att": att.astype(np.int64), "ok": (~att).astype(np.int64),
                             "first": ts, "last": ts})
            self.ports.add({"target": target[tried], "w": w[tried], "port": ports})
            self.sources.add({"target": target[a], "w": w[a], "crc": crc, "src": src})
        self.names.add(*f.named("resp_h", rows))
        self.names.add(*f.named("orig_h", rows[a]))
        self.names.prune(lambda: [r[k] for r, k in ((self.counts.rows(), "target"), (self.sources.rows(), "src")) if r])

    def _sources(self, at: slice) -> tuple[int, bool, np.ndarray]:
        """A bucket's sources: their count (estimated past the sample, or past the cap on all
        samples), whether it is exact, and the ids of the sample."""
        S = self.sources.rows()
        k = at.stop - at.start
        ids = S["src"][at][:self.size]
        if k > self.size:  # the bottom-k estimate (KMV)
            return *sampled_count(S["crc"][at], self.size), ids
        if self.sources.floor is not None:  # every sample cut below one hash: a threshold sample
            below = -int(self.sources.floor)  # the lowest hash evicted; all held hash lower
            return max(k, round(k * _SPACE / below)), False, ids
        return k, True, ids

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
        C = self.counts.rows()
        best: dict[int, int] = {}  # target -> its busiest window's row
        if C:
            att, ok, first, last = C["att"], C["ok"], C["first"], C["last"]
            burst_rate = att / np.maximum((last - first) / 1e9, 1e-3)
            big = (att >= p.syn_min) | ((att >= p.syn_burst_min) & (burst_rate >= p.syn_rate))
            for r in np.flatnonzero(big & (ok <= p.complete_share * (att + ok))).tolist():
                n, _, _ = self._sources(key_rows(self.sources.rows(), BUCKET, (C["target"][r], C["w"][r])))
                if n < p.syn_min_sources:
                    continue
                # the busiest window; the earliest of equals, whatever order the windows were made in
                t = int(C["target"][r])
                if t not in best or (att[r], -first[r]) > (att[best[t]], -first[best[t]]):
                    best[t] = r
        if len(best) > 1:
            best.pop(int(ALL), None)  # the per-target alerts say it better
        for t, r in best.items():
            attempts, completed = int(C["att"][r]), int(C["ok"][r])
            n, exact, ids = self._sources(key_rows(self.sources.rows(), BUCKET, (C["target"][r], C["w"][r])))
            examples = sorted(self.names.text(ids))[:10]
            ports = sorted(self.ports.rows()["port"][key_rows(self.ports.rows(), BUCKET, (C["target"][r], C["w"][r]))]
                           .tolist())
            target = None if t == int(ALL) else self.names.text(np.array([t], np.uint64))[0]
            rate = attempts / max(p.window_s, 1e-9)
            victim = "many hosts (random targets)" if target is None else target
            out.append(Alert(int(C["first"][r]), int(C["last"][r]), "dos", "syn_flood", "high", 0.9,
                             f"{victim} received {attempts} TCP connection attempts that never completed from "
                             f"{'' if exact else 'about '}{n} sources within {p.window_s:.0f} s "
                             f"({completed} completed): a SYN flood",
                             self.label, self.host_for(target, *examples[:1]),
                             None, target, None, ports[0] if ports else None, "tcp",
                             {"attempts": attempts, "completed": completed, "sources": n,
                              "sources_exact": exact, "example_sources": examples,
                              "ports": ports,
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
