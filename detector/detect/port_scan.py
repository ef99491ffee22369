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
import pyarrow as pa

from detector.alerts import Alert
from detector.baseline.flow_features import FAILED_STATES as FLOW_FAILED_STATES
from detector.detect.address_columns import string_ids
from detector.detect.base import Detector, FlowView, widen
from detector.detect.keyed_table import KeyedTable, Names, count_by
from detector.detect.sample import DistinctSample
from detector.detect.services import AMPLIFIER_PORTS
from detector.l7.events import Events
from kernels.xp_ops import distinct, group_ids, in_sorted

EYEBALL_SAMPLE = 4096  # successful contacts kept per client and port
ANSWERS_KEPT = 8  # DNS answer times kept per (client, address): the latest
ROUTER_ADDRESSES = 8  # a source MAC seen with more addresses than this is a router's, not one host's

FAILED_STATES = set(FLOW_FAILED_STATES)
PROTO_CODE = {"tcp": 0, "udp": 1, "icmp": 2}
PROTO_NAME = {v: k for k, v in PROTO_CODE.items()}


def _rows_of_source(cols: dict) -> np.ndarray:
    """Eviction priority of a table's rows: how many rows their source has, so that the
    one-contact sources of a spoofed flood go first."""
    ids, first = group_ids(np, cols["src"])
    return np.bincount(ids, minlength=len(first))[ids]


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
        max_contacts: int = 2_000_000  # rows per contact table (about 30 bytes each); past it, evicted
        resolved_window_s: float = 600.0
        eyeballs_window_s: float = 2.0
        max_resolved: int = 1_000_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        cap, by_source = self.p.max_contacts, _rows_of_source
        # failed contacts (probes), the earliest of each (source, target, port, protocol)
        self.failed = KeyedTable(("src", "dst", "port", "proto"), ("t",), cap=cap, priority=by_source)
        # each source's first contact with each host: (time, failed, port)
        self.first = KeyedTable(("src", "dst"), ("t", "ok", "port"), cap=cap, priority=by_source)
        # contacts that worked, the earliest EYEBALL_SAMPLE per (source, port)
        self.connected = KeyedTable(("src", "port"), ("t", "v6"), keep=EYEBALL_SAMPLE, cap=cap, priority=by_source)
        self.names = Names()  # the text of the addresses the tables hold
        # the contacts of possible scanners, as dictionaries (see _held_contacts)
        self.ports: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        self.hosts: dict[tuple[str, int, str], dict[str, int]] = defaultdict(dict)
        self.trw: dict[str, dict[str, tuple]] = {}  # src -> dst -> (time, failed, port) of the first contact
        self.connected_of: dict[tuple[str, int], list[tuple[int, int]]] = {}  # (client, port) -> [(-time, v6)]
        self.inbound: dict[str, dict] = {}
        self.resolved: dict[tuple[str, str], list[int]] = {}  # (client, address) -> when DNS answers gave it
        self.p2p: set[str] = set()
        self.mac_of: dict[str, int] = {}  # address -> the source MAC it opened connections from
        self.addrs_of: dict[int, set[str]] = {}  # MAC -> its addresses (up to ROUTER_ADDRESSES + 1)
        self.lone = np.zeros(0, np.uint64)  # ids of addresses first seen behind a router's MAC
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
            if ev.protocol.startswith("p2p"):
                if ev.ctx.client in self.p2p or len(self.p2p) < self.p.max_sources:
                    self.p2p.add(ev.ctx.client)
                else:
                    self.dropped += 1
        o = events.initiators
        if len(o):
            self._note_initiators(o)

    def _note_initiators(self, o) -> None:
        """Each address's MAC, as first seen opening a connection, for grouping a host's
        addresses. The rows of MACs known as routers' (more than ``ROUTER_ADDRESSES``
        addresses: a router, or a spoofed flood) are taken in bulk: their addresses are pinned
        as lone ones (sorted ids, not dictionary entries), unless an earlier row of the batch
        or an earlier batch gave them a MAC first."""
        macs, addrs = o["mac"], o["addr"]
        routers = np.array(sorted(m for m, g in self.addrs_of.items() if len(g) > ROUTER_ADDRESSES), np.uint64)
        behind = in_sorted(np, macs.astype(np.uint64), routers)
        ids = string_ids(addrs if isinstance(addrs, pa.Array) else pa.array(addrs.tolist(), pa.string()))
        pinned = in_sorted(np, ids, self.lone)
        first_pin = np.full(len(ids), len(ids))  # each address's first row behind a router in this batch
        r = np.flatnonzero(behind)
        if len(r):
            _, first = group_ids(np, ids[r])  # stable: the first row of each address
            pin_ids, pin_at = ids[r][first], r[first]
            by = np.argsort(pin_ids)
            pin_ids, pin_at = pin_ids[by], pin_at[by]
            hit = in_sorted(np, ids, pin_ids)
            first_pin[hit] = pin_at[np.searchsorted(pin_ids, ids[hit])]
            room = max(0, self.p.max_resolved - len(self.lone))
            new = pin_ids[~in_sorted(np, pin_ids, self.lone)]
            self.dropped += max(0, len(new) - room)
            self.lone = distinct(np, np.concatenate([self.lone, new[:room]]))
        own = np.flatnonzero(~behind)
        for i, mac, addr in zip(own.tolist(), macs[own].tolist(), o.texts("addr", own)):
            if addr in self.mac_of or pinned[i] or first_pin[i] < i:
                continue
            if len(self.mac_of) >= self.p.max_resolved:
                self.dropped += 1
                continue
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
        sent = (f["orig_pkts"] > 0) & f.has_value("orig_h") & f.has_value("resp_h")
        for src in f.take("orig_h", np.flatnonzero(f.isin("service", ("bittorrent",)) & f.isin("proto", ("tcp",))
                                                     & sent)):
            if src in self.p2p or len(self.p2p) < self.p.max_sources:
                self.p2p.add(src)
            else:
                self.dropped += 1
        proto = f["proto"]
        tcp, udp = proto == "tcp", proto == "udp"
        multicast = f.member("orig_h", self.site.multicast) | f.member("resp_h", self.site.multicast)
        # an "originator" that sent nothing is answering someone else's traffic
        sent &= ~multicast
        sport, port = f["orig_p"].astype(np.int32), f["resp_p"].astype(np.int32)
        echo = sent & (proto == "icmp") & (port == 0) & (sport == 8)  # an echo request: a host probe
        # an answer nobody asked for (reflection backscatter) is not a probe
        backscatter = udp & np.isin(sport, list(AMPLIFIER_PORTS)) & (port >= 1024) & (f["resp_pkts"] == 0)
        contact = sent & (tcp | udp) & ~backscatter
        if not (contact.any() or echo.any()):
            return
        # a probe: refused or unanswered, or (TCP) opened and closed without a byte either way;
        # one-way data (GridFTP data streams, pushes) is a used connection
        refused = f.isin("conn_state", FAILED_STATES)
        failed = refused | np.where(tcp, (f["orig_bytes"] == 0) & (f["resp_bytes"] == 0), f["resp_pkts"] == 0)
        src, dst, t = f.ids("orig_h"), f.ids("resp_h"), f["ts"].astype(np.int64)
        code = np.where(tcp, PROTO_CODE["tcp"], np.where(udp, PROTO_CODE["udp"], PROTO_CODE["icmp"])).astype(np.int8)
        probe = np.flatnonzero((contact & failed) | echo)
        self.failed.add({"src": src[probe], "dst": dst[probe], "port": np.where(echo, -1, port)[probe],
                         "proto": code[probe], "t": t[probe]})
        used = np.flatnonzero(contact & ~failed)
        v6 = f.has_text("resp_h", ":")
        self.connected.add({"src": src[used], "port": port[used], "t": t[used], "v6": v6[used].astype(np.int8)})
        # threshold random walk over first contacts with distinct hosts, as in the paper: the
        # first contact is the earliest, whatever order the flows arrive in; the walk runs in
        # time order when alerts are decided
        walked = np.flatnonzero(contact)
        self.first.add({"src": src[walked], "dst": dst[walked], "t": t[walked],
                        "ok": (~failed[walked]).astype(np.int8), "port": port[walked]})
        for name in ("orig_h", "resp_h"):
            self.names.add(*f.named(name, np.r_[probe, used]))
        self._note_inbound(f, np.flatnonzero(contact & failed), code)

    def _note_inbound(self, f: FlowView, rows: np.ndarray, code: np.ndarray) -> None:
        """Failed contacts per target, for distributed probing: attempts, time span, and a
        bounded sample of the sources and of the ports."""
        if not len(rows):
            return
        sources, src_codes = f.encoded("orig_h")
        src_crc = f.crc32("orig_h")
        targets, dst_codes = f.encoded("resp_h")
        ts, port = f["ts"].astype(np.int64), f["resp_p"]
        order = rows[np.argsort(dst_codes[rows], kind="stable")]
        bounds = np.flatnonzero(np.r_[True, dst_codes[order][1:] != dst_codes[order][:-1], True])
        heads = targets.take(pa.array(dst_codes[order[bounds[:-1]]])).to_pylist()  # the text of these targets only
        for dst, a, b in zip(heads, bounds[:-1].tolist(), bounds[1:].tolist()):
            group = order[a:b]
            d = self.inbound.get(dst)
            if d is None:
                if len(self.inbound) >= self.p.max_sources:
                    self.dropped += len(group)
                    continue
                t0 = int(ts[group[0]])
                d = self.inbound[dst] = {"sources": DistinctSample(4096), "ports": DistinctSample(4096),
                                         "first": t0, "last": t0, "attempts": 0}
            widen(d, int(ts[group].min()))
            widen(d, int(ts[group].max()))
            d["attempts"] += len(group)
            uniq = distinct(np, src_codes[group])
            d["sources"].add_hashed(sources.take(pa.array(uniq)), src_crc[uniq])
            for pr, pt in set(zip(code[group].tolist(), port[group].tolist())):
                d["ports"].add(f"{PROTO_NAME[pr]}/{pt}")

    def _held_contacts(self) -> None:
        """The contacts of the sources that might be scanners, as dictionaries for the judging
        below: those whose failed contacts reach a threshold before any excuse (excuses only
        lower counts), the peer-to-peer clients, and the other addresses of their hosts (whose
        failures race for the same happy-eyeballs wins)."""
        F, T = self.failed.rows(), self.first.rows()
        cand = [np.zeros(0, np.uint64)]
        if F:
            m = F["proto"] != PROTO_CODE["icmp"]
            one, _ = count_by([F["src"][m], F["dst"][m], F["port"][m]])
            pair, n_ports = count_by([F["src"][m][one], F["dst"][m][one]])
            cand.append(F["src"][m][one][pair[n_ports >= self.p.port_threshold]])
            sweep, n_hosts = count_by([F["src"], F["port"], F["proto"]])
            cand.append(F["src"][sweep[n_hosts >= self.p.sweep_threshold]])
        if T:
            bad = T["ok"] == 0
            walker, n_failed = count_by([T["src"][bad]])
            cand.append(T["src"][bad][walker[n_failed >= self.p.trw_min_failures]])
        cand = distinct(np, np.concatenate(cand))
        texts = {t for t in self.names.text(cand) if t is not None} | self.p2p
        texts |= {a for src in list(texts) for a in self._same_host(src)}
        keep = distinct(np, string_ids(pa.array(sorted(texts), pa.string())))
        self.ports, self.hosts, self.trw, self.connected_of = defaultdict(dict), defaultdict(dict), {}, {}
        if F:
            r = np.flatnonzero(in_sorted(np, F["src"], keep))
            for s, d, pt, pr, t in zip(self._text(F["src"][r]), self._text(F["dst"][r]), F["port"][r].tolist(),
                                       F["proto"][r].tolist(), F["t"][r].tolist()):
                if pr != PROTO_CODE["icmp"]:
                    self._earliest(self.ports[(s, d)], pt, t)
                self._earliest(self.hosts[(s, pt, PROTO_NAME[pr])], d, t)
        if T:
            r = np.flatnonzero(in_sorted(np, T["src"], keep))
            for s, d, t, ok, pt in zip(self._text(T["src"][r]), self._text(T["dst"][r]), T["t"][r].tolist(),
                                       T["ok"][r].tolist(), T["port"][r].tolist()):
                self.trw.setdefault(s, {})[d] = (t, not ok, pt)
        C = self.connected.rows()
        if C:
            r = np.flatnonzero(in_sorted(np, C["src"], keep))
            for s, pt, t, v6 in zip(self._text(C["src"][r]), C["port"][r].tolist(), C["t"][r].tolist(),
                                    C["v6"][r].tolist()):
                self.connected_of.setdefault((s, pt), []).append((-t, v6))

    def _prune_names(self) -> None:
        held = [t.rows() for t in (self.failed, self.first, self.connected)]
        self.names.keep_only(np.concatenate([np.zeros(0, np.uint64)] + [r[k] for r in held if r
                                                                          for k in ("src", "dst") if k in r]))

    @property
    def evictions(self) -> int:
        """Contacts dropped at ``max_contacts``, and DNS answers at ``max_resolved``."""
        return self.failed.evicted + self.first.evicted + self.connected.evicted + self.dropped

    def _text(self, ids: np.ndarray) -> list[str]:
        return self.names.text(ids) if len(ids) else []

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
            wins = sorted((-neg, fam) for a in host for neg, fam in self.connected_of.get((a, port), ()))
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
        self._held_contacts()
        self._prune_names()
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
