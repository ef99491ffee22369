"""Port scans, address sweeps and slow scans (scan / port_scan, address_sweep, slow_scan,
distributed_scan).

Methods:

- Zeek's ``scan.zeek`` counting: per source and target, the distinct ports of failed or empty
  connection attempts (``port_threshold``); per source and port, the distinct hosts probed
  (``sweep_threshold``); ICMP echo sweeps likewise.
- Threshold random walk (Jung, Paxson, Berger and Balakrishnan, "Fast portscan detection using
  sequential hypothesis testing", IEEE S&P 2004) for scans too slow or small for counting: each
  first contact of a source with a host is a failure when it was refused,
  unanswered, or (TCP) closed without a byte of payload either way, and a success otherwise; with theta0 = 0.8 and theta1 = 0.2 the likelihood ratio grows 4x
  per failure and shrinks 4x per success, and the source is a scanner when it reaches
  ``trw_eta1`` (99: false positive rate 1 %, detection 99 %) after at least ``trw_min_failures``.
- Distributed probing of one target: failed connection attempts to one host from at least
  ``distributed_min_sources`` sources on at least ``distributed_min_ports`` ports, each source
  staying under the per-source thresholds. This is how worms and botnets look from the victim's
  side (Sasser, Bagle, MyDoom and Dameware backdoor ports hit by hundreds of infected hosts a
  day); one closed service hit by many clients does not qualify, as it is one port. Sources and
  ports per target are a bounded sample of 4096 (``DistinctSample``), counted exactly below that
  and estimated above it, the same whatever order flows arrive in.

Only evidence of probing counts (a failed first contact: no answer, a reset, an ICMP
unreachable, or a handshake closed without a byte). A failed contact is excused, for every count
above, when:

- the client (its host: the addresses that share its source MAC, up to ``ROUTER_ADDRESSES``)
  resolved that address by DNS within ``resolved_window_s`` before (a client that
  looked a name up is connecting to it, not scanning it; abandoned parallel attempts of a
  browser or a dual-stack client to the addresses of one name are the usual case);
- the same client connected on the same port to an address of the other family within
  ``eyeballs_window_s`` (RFC 8305 happy eyeballs: the IPv6 attempt is abandoned when IPv4 wins,
  or the other way round), for when the DNS lookup was not seen; each success excuses one
  failure;
- the client speaks a peer-to-peer protocol (BitTorrent by its handshake over TCP, the
  cryptocurrency networks by their message magic): peers come and go, and half the addresses a
  swarm hands out do not answer. Such a client is reported as its own low finding
  (``p2p_client``, category ``anomaly``) with what its attempts would have counted as.

Severity: medium; high from ``port_high`` ports or ``sweep_high`` hosts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.baseline.flow_features import FAILED_STATES as FLOW_FAILED_STATES
from detector.detect.base import Detector, FlowView, keep_earliest, widen
from detector.detect.sample import DistinctSample
from detector.detect.services import AMPLIFIER_PORTS
from detector.l7.events import Events

EYEBALL_SAMPLE = 4096  # successful contacts kept per client and port
ANSWERS_KEPT = 8  # DNS answer times kept per (client, address): the latest
ROUTER_ADDRESSES = 8  # a source MAC seen with more addresses than this is a router's, not one host's

FAILED_STATES = set(FLOW_FAILED_STATES)


class PortScan(Detector):
    name = "port_scan"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        port_threshold: int = 15
        port_high: int = 100
        sweep_threshold: int = 25
        sweep_high: int = 250
        trw_eta1: float = 99.0
        trw_min_failures: int = 5
        distributed_min_sources: int = 20
        distributed_min_ports: int = 5
        max_sources: int = 100_000
        resolved_window_s: float = 600.0
        eyeballs_window_s: float = 2.0
        max_resolved: int = 1_000_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        # failed contacts, each with its earliest time (and port): judged against the excuses in finish()
        self.ports: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        self.hosts: dict[tuple[str, int, str], dict[str, int]] = defaultdict(dict)
        self.trw: dict[str, dict[str, tuple]] = {}  # src -> dst -> (time, failed, port) of the first contact
        self.inbound: dict[str, dict] = {}
        self.resolved: dict[tuple[str, str], list[int]] = {}  # (client, address) -> when DNS answers gave it
        self.connected: dict[tuple[str, int], list[tuple[int, int]]] = {}  # (client, port) -> heap of (-time, v6)
        self.p2p: set[str] = set()
        self.mac_of: dict[str, int] = {}  # address -> the source MAC it opened connections from
        self.addrs_of: dict[int, set[str]] = {}  # MAC -> its addresses (up to ROUTER_ADDRESSES + 1)
        self.dropped = 0

    @staticmethod
    def _earliest(d: dict, key, ts: int) -> None:
        old = d.get(key)
        if old is None or ts < old:
            d[key] = ts

    def observe_events(self, events: Events) -> None:
        for ev in events.dns:
            m = ev.msg
            if not m.response or not m.answers:
                continue
            client = ev.ctx.dst if ev.ctx.sport == 53 else ev.ctx.client
            for ans in m.answers:
                if ans.rtype in (1, 28):
                    key = (client, ans.data)
                    if key in self.resolved or len(self.resolved) < self.p.max_resolved:
                        times = self.resolved.setdefault(key, [])
                        if ev.ctx.ts_ns not in times:  # the latest few, whatever order answers come in
                            times.append(ev.ctx.ts_ns)
                            times.sort()
                            del times[:-ANSWERS_KEPT]
                    else:
                        self.dropped += 1
        for ev in events.mining:
            if ev.protocol.startswith("p2p") and len(self.p2p) < self.p.max_sources:
                self.p2p.add(ev.ctx.client)
        o = events.initiators
        for mac, addr in zip(o["mac"].tolist(), o["addr"].tolist()) if len(o) else ():
            if addr not in self.mac_of and len(self.mac_of) < self.p.max_resolved:
                self.mac_of[addr] = mac
                group = self.addrs_of.setdefault(mac, set())
                if len(group) <= ROUTER_ADDRESSES:
                    group.add(addr)

    def _same_host(self, addr: str) -> set[str]:
        """``addr`` and the other addresses its host opened connections from (its IPv4 and IPv6
        addresses share one MAC; a MAC with more than ``ROUTER_ADDRESSES`` is a router's)."""
        group = self.addrs_of.get(self.mac_of.get(addr, -1))
        return group if group is not None and len(group) <= ROUTER_ADDRESSES and addr in group else {addr}

    def observe_flows(self, f: FlowView) -> None:
        proto = f["proto"]
        # an "originator" that sent nothing is answering someone else's traffic
        rows = np.flatnonzero(((proto == "tcp") | (proto == "udp") | (proto == "icmp")) & (f["orig_pkts"] > 0))
        if not len(rows):
            return
        multicast = self.site.multicast
        cols = (f.take(name, rows) for name in ("orig_h", "resp_h", "proto", "ts", "orig_p", "resp_p", "conn_state",
                                                 "orig_bytes", "resp_bytes", "resp_pkts", "service"))
        for src, dst, pr, t, sport, port, state, ob, rb, rpk, service in zip(*cols):
            if service == "bittorrent" and pr == "tcp" and len(self.p2p) < self.p.max_sources:
                self.p2p.add(src)
            if src in multicast or dst in multicast:
                continue
            if pr == "icmp":
                if port == 0 and sport == 8:  # echo request: a host probe
                    self._earliest(self.hosts[(src, -1, "icmp")], dst, t)
                continue
            if pr == "udp" and sport in AMPLIFIER_PORTS and port >= 1024 and rpk == 0:
                continue  # an answer nobody asked for (reflection backscatter), not a probe
            # a probe: refused or unanswered, or (TCP) opened and closed without a byte either way;
            # one-way data (GridFTP data streams, pushes) is a used connection
            if pr == "tcp":
                failed = state in FAILED_STATES or (ob == 0 and rb == 0)
            else:
                failed = state in FAILED_STATES or rpk == 0
            if failed:
                self._earliest(self.ports[(src, dst)], port, t)
                self._earliest(self.hosts[(src, port, pr)], dst, t)
                self._note_inbound(src, dst, port, pr, t)
            else:
                self._note_connected(src, port, t, ":" in dst)
            # threshold random walk over first contacts with distinct hosts, as in the paper: the
            # first contact is the earliest, whatever order the flows arrive in; the walk runs in
            # time order in finish()
            if len(self.trw) >= self.p.max_sources and src not in self.trw:
                continue
            contacts = self.trw.setdefault(src, {})
            prev = contacts.get(dst)
            if prev is None:
                if len(contacts) < self.p.max_sources:
                    contacts[dst] = (t, failed, port)
            elif (t, not failed, port) < (prev[0], not prev[1], prev[2]):
                contacts[dst] = (t, failed, port)

    def _note_connected(self, src: str, port: int, t: int, v6: bool) -> None:
        """A contact that worked, for the happy-eyeballs excuse (a bounded sample per client and
        port: the earliest ``EYEBALL_SAMPLE``)."""
        key = (src, port)
        seen = self.connected.get(key)
        if seen is None:
            if len(self.connected) >= self.p.max_resolved:
                return
            seen = self.connected[key] = []
        keep_earliest(seen, (-t, int(v6)), EYEBALL_SAMPLE)

    def _resolved_before(self, host: set[str], dst: str, t: int) -> bool:
        w = self.p.resolved_window_s * 1e9
        return any(r <= t <= r + w for a in host for r in self.resolved.get((a, dst), ()))

    def _excused(self) -> set[tuple[str, str, int]]:
        """The failed contacts (source, target, port) that are not evidence of probing (see the
        module's docstring): the host resolved the target just before, from any of its
        addresses; or, one for one, a success of the host on that port to an address of the
        other family within ``eyeballs_window_s`` (the winner of that race: a success excuses
        one failure, so a scanner's sweep is not hidden by its owner's browsing)."""
        excused: set[tuple[str, str, int]] = set()
        racing: dict[tuple[frozenset, int], list[tuple[int, int, str, str]]] = {}
        for (src, port, _), items in self.hosts.items():
            host = self._same_host(src)
            for dst, t in items.items():
                if self._resolved_before(host, dst, t):
                    excused.add((src, dst, port))
                elif port >= 0:
                    racing.setdefault((frozenset(host), port), []).append((t, int(":" in dst), src, dst))
        w = self.p.eyeballs_window_s * 1e9
        for (host, port), failures in racing.items():
            wins = sorted((-neg, fam) for a in host for neg, fam in self.connected.get((a, port), ()))
            used = [False] * len(wins)
            times = [t for t, _ in wins]
            for t, fam, src, dst in sorted(failures):
                k = bisect_left(times, t - w)
                while k < len(wins) and wins[k][0] <= t + w and (used[k] or wins[k][1] == fam):
                    k += 1
                if k < len(wins) and wins[k][0] <= t + w:
                    used[k] = True
                    excused.add((src, dst, port))
        return excused

    @staticmethod
    def _walk(contacts: dict[str, tuple[int, bool]]) -> dict:
        """The random walk over a source's first contacts ``dst -> (time, failed)``, in time order."""
        w = {"lr": 1.0, "fail": 0, "ok": 0, "dsts": []}
        for _, dst, failed in sorted((t, dst, failed) for dst, (t, failed) in contacts.items()):
            if failed:
                w["fail"] += 1
                w["lr"] = min(w["lr"] * 4.0, 1e12)
                if len(w["dsts"]) < 64:
                    w["dsts"].append(dst)
            else:
                w["ok"] += 1
                w["lr"] *= 0.25
        times = [t for t, _ in contacts.values()]
        w["first"], w["last"] = min(times), max(times)
        return w

    def _note_inbound(self, src: str, dst: str, port: int, pr: str, t: int) -> None:
        if dst not in self.inbound and len(self.inbound) >= self.p.max_sources:
            return
        d = self.inbound.get(dst)
        if d is None:
            d = self.inbound[dst] = {"sources": DistinctSample(4096), "ports": DistinctSample(4096),
                                     "first": t, "last": t, "attempts": 0}
        widen(d, t)
        d["attempts"] += 1
        d["sources"].add(src)
        d["ports"].add(f"{pr}/{port}")

    def _evidence(self):
        """The failed contacts that are evidence of probing: per (source, target) the ports,
        per (source, port, protocol) the hosts, per source its first contacts (time, failed)
        for the walk; sources speaking a peer-to-peer protocol apart, with their counts."""
        ports, hosts, trw, p2p = {}, {}, {}, defaultdict(lambda: {"failed": 0, "targets": set()})
        excused = self._excused()
        for (src, dst), items in self.ports.items():
            kept = {port: t for port, t in items.items() if (src, dst, port) not in excused}
            if src in self.p2p:
                p2p[src]["failed"] += len(kept)
            elif kept:
                ports[(src, dst)] = kept
        for (src, port, pr), items in self.hosts.items():
            kept = {dst: t for dst, t in items.items() if (src, dst, port) not in excused}
            if src in self.p2p:
                p2p[src]["targets"].update(list(kept)[:64 - min(64, len(p2p[src]["targets"]))])
            elif kept:
                hosts[(src, port, pr)] = kept
        for src, contacts in self.trw.items():
            if src not in self.p2p:
                # an excused failure is neither a failure nor a success: it leaves the walk
                trw[src] = {dst: (t, failed) for dst, (t, failed, port) in contacts.items()
                            if not (failed and (src, dst, port) in excused)}
        return ports, hosts, trw, p2p

    def finish(self) -> list[Alert]:
        p = self.p
        out = []
        reported: set[str] = set()
        ports_of, hosts_of, trw, p2p = self._evidence()
        for (src, dst), ports in ports_of.items():
            if len(ports) < p.port_threshold:
                continue
            first, last = min(ports.values()), max(ports.values())
            high = len(ports) >= p.port_high
            plist = sorted(ports)
            out.append(Alert(first, last, "scan", "port_scan", "high" if high else "medium", 0.85 if high else 0.6,
                             f"{src} probed {len(ports)} ports on {dst} ({', '.join(map(str, plist[:8]))}"
                             f"{'...' if len(plist) > 8 else ''}) without using them: a port scan", self.label,
                             self.host_for(dst, src), src, dst, None, None, None,
                             {"ports": plist[:64], "port_count": len(ports), "threshold": p.port_threshold}))
            reported.add(src)
        for (src, port, pr), hosts in hosts_of.items():
            if len(hosts) < p.sweep_threshold:
                continue
            first, last = min(hosts.values()), max(hosts.values())
            high = len(hosts) >= p.sweep_high
            what = "ICMP echo" if pr == "icmp" else f"{pr} port {port}"
            out.append(Alert(first, last, "scan", "address_sweep", "high" if high else "medium", 0.85 if high else 0.6,
                             f"{src} probed {len(hosts)} hosts on {what}: an address sweep", self.label,
                             self.host_for(src, *sorted(hosts)[:1]), src, None, None,
                             None if pr == "icmp" else port, pr,
                             {"hosts": sorted(hosts)[:64], "host_count": len(hosts), "threshold": p.sweep_threshold}))
            reported.add(src)
        for src, contacts in trw.items():
            if src in reported or not contacts:
                continue
            w = self._walk(contacts)
            if w["lr"] < p.trw_eta1 or w["fail"] < p.trw_min_failures:
                continue
            dsts = sorted(w["dsts"])
            out.append(Alert(w["first"], w["last"], "scan", "slow_scan", "medium", 0.6,
                             f"{src} failed {w['fail']} of {w['fail'] + w['ok']} first contacts with services on "
                             f"{', '.join(dsts[:4])}: a scan (threshold random walk)", self.label,
                             self.host_for(*dsts[:4], src), src, dsts[0] if len(dsts) == 1 else None, None, None, None,
                             {"failed_first_contacts": w["fail"], "successful_first_contacts": w["ok"],
                              "likelihood_ratio": round(float(np.log10(w["lr"])), 2), "targets": dsts[:32]}))
            reported.add(src)
        for src, c in p2p.items():
            contacts = self.trw.get(src, {})
            times = [t for t, _, _ in contacts.values()] or [0]
            out.append(Alert(min(times), max(times), "anomaly", "p2p_client", "low", 0.2,
                             f"{src} speaks a peer-to-peer protocol and reached {len(contacts)} peers, "
                             f"{sum(f for _, f, _ in contacts.values())} of them without an answer: a swarm's churn, "
                             "not counted as scanning", self.label, self.host_for(src), src, None, None, None, None,
                             {"peers": len(contacts), "failed_first_contacts": sum(f for _, f, _ in contacts.values()),
                              "example_peers": sorted(c["targets"])[:16]}))
            reported.add(src)
        for dst, d in self.inbound.items():
            sample = d["sources"].items()
            sources = sample - reported
            # past the sample's size, the share of scanners not reported already scales the estimate
            n_sources = len(sources) if d["sources"].exact else round(len(d["sources"]) * len(sources) / len(sample))
            if n_sources < p.distributed_min_sources or len(d["ports"]) < p.distributed_min_ports:
                continue
            ports = sorted(d["ports"].items(), key=lambda x: (x.split("/")[0], int(x.split("/")[1])))
            about = "" if d["sources"].exact else "about "
            out.append(Alert(d["first"], d["last"], "scan", "distributed_scan", "medium", 0.6,
                             f"{about}{n_sources} sources made {d['attempts']} failed connection attempts to {dst} on "
                             f"{len(d['ports'])} ports ({', '.join(ports[:8])}{'...' if len(ports) > 8 else ''}): probing "
                             "by many hosts at once, as worms and botnets do", self.label, self.host_for(dst), None,
                             dst, None, None, None,
                             {"source_count": n_sources, "source_count_exact": d["sources"].exact,
                              "sources": sorted(sources)[:32], "ports": ports[:64],
                              "attempts": d["attempts"]}))
        return out
