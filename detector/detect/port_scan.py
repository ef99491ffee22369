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

State is columnar and mergeable (issue 21): tables of 64-bit address ids for the failed, first
and successful contacts (``max_contacts`` rows each; past it, the sources with fewest rows go
first), the latest DNS answers per (client, address), each address's earliest opening and each
MAC's addresses (``max_resolved``), and per target the failed attempts with bottom-k samples of
sources and ports (``max_sources`` targets; past it, those probed least go first). A report
reads them into dictionaries only for the candidate scanners (those past a threshold before
excuses, and the peer-to-peer clients). Evictions are counted.
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
from detector.detect.base import Detector, FlowView
from detector.detect.keyed_table import KeyedSums, KeyedTable, Led, Names, count_by, key_rows
from detector.detect.sample import sampled_count
from detector.detect.services import AMPLIFIER_PORTS
from detector.l7.events import Events
from kernels.xp_ops import distinct, group_ids, group_starts, in_sorted, mix64

EYEBALL_SAMPLE = 4096  # successful contacts kept per client and port
ANSWERS_KEPT = 8  # DNS answer times kept per (client, address): the latest
ROUTER_ADDRESSES = 8  # a source MAC seen with more addresses than this is a router's, not one host's
INBOUND_SAMPLE = 4096  # sources and ports kept per target of distributed probing (bottom-k)

FAILED_STATES = set(FLOW_FAILED_STATES)
PROTO_CODE = {"tcp": 0, "udp": 1, "icmp": 2}
PROTO_NAME = {v: k for k, v in PROTO_CODE.items()}


def _oldest_answer_out(cols: dict) -> np.ndarray:
    """Past ``max_resolved``, the oldest DNS answers go first."""
    return -cols["neg_ts"]


def _fewest_attempts_out(cols: dict) -> np.ndarray:
    """Past ``max_sources`` targets, those probed least go first."""
    return cols["attempts"]


def _ids_of(texts) -> tuple[np.ndarray, pa.Array]:
    """64-bit ids of text values (Arrow strings or Python strings), and the text as Arrow."""
    arr = texts if isinstance(texts, pa.Array) else pa.array(list(texts), pa.string())
    return string_ids(arr), arr


def _rows_of_mac(cols: dict) -> np.ndarray:
    """Past ``max_resolved`` rows, the MACs seen with fewest addresses go first (routers' stay)."""
    ids, first = group_ids(np, cols["mac"])
    return np.bincount(ids, minlength=len(first))[ids]


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
        p = self.p
        # (client, address) -> the latest times DNS answers gave it
        self.resolved = KeyedTable(("client", "addr"), ("neg_ts",), ANSWERS_KEPT, p.max_resolved, _oldest_answer_out,
                                   unique=True)
        # each address's earliest opening (time, source MAC), and the distinct addresses each MAC
        # opened from (a full MAC is a router's): a host's addresses are those its MAC opened first
        self.opened = KeyedTable(("addr",), ("ts", "mac"), 1, p.max_resolved, self._routers_out)
        self.macs = KeyedTable(("mac",), ("addr",), ROUTER_ADDRESSES + 1, p.max_resolved, _rows_of_mac, unique=True)
        # failed contacts per target (distributed probing): attempts and span, bottom-k samples
        # of the sources (by crc32, as DistinctSample) and of the ports
        self.inbound = KeyedSums(("dst",), {"attempts": "sum", "first": "min", "last": "max"}, p.max_sources,
                                 _fewest_attempts_out)
        self.inbound_src = KeyedTable(("dst",), ("crc", "src"), INBOUND_SAMPLE + 1, unique=True)
        # ports ranked by a 32-bit hash of (protocol, port), so that the count past the sample is
        # the same KMV estimate as the sources'
        self.inbound_ports = KeyedTable(("dst",), ("rank", "pp"), INBOUND_SAMPLE + 1, unique=True)
        self.led = Led(self.inbound, self.inbound_src, self.inbound_ports)
        self.names = Names()  # the text of the addresses the tables hold
        # the contacts of possible scanners, as dictionaries (see _held_contacts)
        self.ports: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        self.hosts: dict[tuple[str, int, str], dict[str, int]] = defaultdict(dict)
        self.trw: dict[str, dict[str, tuple]] = {}  # src -> dst -> (time, failed, port) of the first contact
        self.connected_of: dict[tuple[str, int], list[tuple[int, int]]] = {}  # (client, port) -> [(-time, v6)]
        self.resolved_of: dict[tuple[str, str], list[int]] = {}  # (client, address) -> answer times
        self.host_of: dict[str, set[str]] = {}  # address -> its host's addresses
        self.p2p: set[str] = set()
        self.dropped = 0

    @staticmethod
    def _earliest(d: dict, key, ts: int) -> None:
        old = d.get(key)
        if old is None or ts < old:
            d[key] = ts

    def _p2p(self, clients) -> None:
        for c in clients:
            if c in self.p2p or len(self.p2p) < self.p.max_sources:
                self.p2p.add(c)
            else:
                self.dropped += 1

    def merge(self, other: PortScan) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        for mine, theirs in ((self.failed, other.failed), (self.first, other.first), (self.connected, other.connected),
                             (self.resolved, other.resolved), (self.opened, other.opened), (self.macs, other.macs),
                             (self.inbound, other.inbound), (self.inbound_src, other.inbound_src),
                             (self.inbound_ports, other.inbound_ports)):
            mine.merge(theirs)
        self.led.reconcile()
        self.names.merge(other.names)
        self.dropped += other.dropped
        self._p2p(sorted(other.p2p))

    def observe_events(self, events: Events) -> None:
        clients, addrs, times = [], [], []
        for ev in events.dns:
            m = ev.msg
            if not m.response or not m.answers:
                continue
            client = ev.ctx.dst if ev.ctx.sport == 53 else ev.ctx.client
            for ans in m.answers:
                if ans.rtype in (1, 28):
                    clients.append(client)
                    addrs.append(ans.data)
                    times.append(ev.ctx.ts_ns)
        if clients:
            (cid, ctext), (aid, atext) = _ids_of(clients), _ids_of(addrs)
            self.resolved.add({"client": cid, "addr": aid, "neg_ts": -np.array(times, np.int64)})
            self.names.add(cid, ctext)
            self.names.add(aid, atext)
        self._p2p(ev.ctx.client for ev in events.mining if ev.protocol.startswith("p2p"))
        o = events.initiators
        if len(o):
            self._note_initiators(o)
        self.names.prune(self._held_ids, 4 * self.p.max_contacts)

    def _note_initiators(self, o) -> None:
        """Each address's earliest opening (time, source MAC) and each MAC's distinct addresses.
        The rows of MACs already known as routers' (a router, or a spoofed flood) add no name:
        their addresses stand alone; once the openings reached ``max_resolved``, they are not
        taken in at all (they would be the first evicted)."""
        ids, text = _ids_of(o["addr"])
        mac, ts = o["mac"].astype(np.uint64), o["ts"].astype(np.int64)
        self.macs.add({"mac": mac, "addr": ids})
        hosted = ~in_sorted(np, mac, self._routers())
        if self.opened.evicted and not hosted.all():
            self.dropped += int((~hosted).sum())
            ids, mac, ts, text = ids[hosted], mac[hosted], ts[hosted], text.filter(pa.array(hosted))
            hosted = hosted[hosted]
        self.opened.add({"addr": ids, "ts": ts, "mac": mac})
        if hosted.any():
            rows = np.flatnonzero(hosted)
            self.names.add(ids[rows], text.take(pa.array(rows)))

    def _routers(self) -> np.ndarray:
        """The MACs that opened connections from more than ``ROUTER_ADDRESSES`` addresses (sorted)."""
        M = self.macs.rows()
        if not M:
            return np.zeros(0, np.uint64)
        starts = np.flatnonzero(group_starts(np, [M["mac"]]))
        counts = np.diff(np.append(starts, len(M["mac"])))
        return M["mac"][starts[counts > ROUTER_ADDRESSES]]

    def _routers_out(self, cols: dict) -> np.ndarray:
        """Past ``max_resolved`` openings, those of routers' MACs go first (their addresses stand alone anyway)."""
        return (~in_sorted(np, cols["mac"], self._routers())).astype(np.int64)

    def _hosts(self, addrs: list[str]) -> dict[str, set[str]]:
        """Each address's host: the addresses whose earliest opening was from the same MAC, when
        that MAC is no router's; else the address alone."""
        out = {a: {a} for a in addrs}
        O = self.opened.rows()
        if not O or not addrs:
            return out
        ids, _ = _ids_of(addrs)
        pos = np.minimum(np.searchsorted(O["addr"], ids), len(O["addr"]) - 1)
        found = O["addr"][pos] == ids
        mac = np.where(found, O["mac"][pos], 0)
        hosted = found & ~in_sorted(np, mac, self._routers())
        if not hosted.any():
            return out
        macs = distinct(np, mac[hosted])
        rows = np.flatnonzero(in_sorted(np, O["mac"], macs))
        group: dict[int, set[str]] = {}
        for m, a in zip(O["mac"][rows].tolist(), self._text(O["addr"][rows])):
            if a is not None:
                group.setdefault(m, set()).add(a)
        for a, m, h in zip(addrs, mac.tolist(), hosted.tolist()):
            if h and a in group.get(m, ()):
                out[a] = group[m]
        return out

    def _same_host(self, addr: str) -> set[str]:
        """``addr`` and the other addresses its host opened connections from (its IPv4 and IPv6
        addresses share one MAC; a MAC with more than ``ROUTER_ADDRESSES`` is a router's)."""
        known = self.host_of.get(addr)
        return known if known is not None else self._hosts([addr])[addr]

    def observe_flows(self, f: FlowView) -> None:
        sent = (f["orig_pkts"] > 0) & f.has_value("orig_h") & f.has_value("resp_h")
        self._p2p(f.take("orig_h", np.flatnonzero(f.isin("service", ("bittorrent",)) & f.isin("proto", ("tcp",))
                                                   & sent)))
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
        self.names.prune(self._held_ids, 4 * self.p.max_contacts)

    def _held_ids(self) -> list[np.ndarray]:
        """The address id columns of the tables (the names worth keeping)."""
        held = [t.rows() for t in (self.failed, self.first, self.connected, self.resolved, self.opened,
                                   self.inbound, self.inbound_src)]
        return [r[k] for r in held if r for k in ("src", "dst", "client", "addr") if k in r]

    def _note_inbound(self, f: FlowView, rows: np.ndarray, code: np.ndarray) -> None:
        """Failed contacts per target, for distributed probing: attempts, time span, and
        bottom-k samples of the sources and of the ports."""
        if not len(rows):
            return
        dst, t = f.ids("resp_h")[rows], f["ts"][rows].astype(np.int64)
        _, src_codes = f.encoded("orig_h")
        pp = code[rows].astype(np.int64) << 16 | f["resp_p"][rows].astype(np.int64)
        self.led.add({"dst": dst, "attempts": np.ones(len(rows), np.int64), "first": t, "last": t},
                     {"dst": dst, "crc": f.crc32("orig_h")[src_codes[rows]].astype(np.int64),
                      "src": f.ids("orig_h")[rows]},
                     {"dst": dst, "rank": (mix64(np, pp.astype(np.uint64)) >> np.uint64(32)).astype(np.int64),
                      "pp": pp})

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
        texts = sorted({t for t in self.names.text(cand) if t is not None} | self.p2p)
        self.host_of = self._hosts(texts)
        texts = sorted({a for src in texts for a in self.host_of[src]})
        self.host_of.update(self._hosts([a for a in texts if a not in self.host_of]))
        keep = distinct(np, string_ids(pa.array(texts, pa.string())))
        self.ports, self.hosts, self.trw, self.connected_of = defaultdict(dict), defaultdict(dict), {}, {}
        self.resolved_of = {}
        R = self.resolved.rows()
        if R:
            r = np.flatnonzero(in_sorted(np, R["client"], keep))
            for c, a, neg in zip(self._text(R["client"][r]), self._text(R["addr"][r]), R["neg_ts"][r].tolist()):
                self.resolved_of.setdefault((c, a), []).append(-neg)
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
        self.names.keep_only(np.concatenate([np.zeros(0, np.uint64), *self._held_ids()]))

    @property
    def evictions(self) -> int:
        """Contacts dropped at ``max_contacts``, DNS answers and openings at ``max_resolved``,
        targets and peer-to-peer clients at ``max_sources``."""
        return sum(t.evicted for t in (self.failed, self.first, self.connected, self.resolved, self.opened,
                                       self.macs, self.inbound)) + self.dropped

    def _text(self, ids: np.ndarray) -> list[str]:
        return self.names.text(ids) if len(ids) else []

    def _resolved_before(self, host: set[str], dst: str, t: int) -> bool:
        w = self.p.resolved_window_s * 1e9
        return any(r <= t <= r + w for a in host for r in self.resolved_of.get((a, dst), ()))

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

    def _distributed(self, reported: set[str]) -> list[Alert]:
        """Targets probed by many sources on several ports (see the module's docstring)."""
        p = self.p
        D = self.led.rows()
        if not D:
            return []
        S, P = self.inbound_src.rows(), self.inbound_ports.rows()
        out = []
        for c in range(len(D["dst"])):
            s, pr = key_rows(S, ("dst",), (D["dst"][c],)), key_rows(P, ("dst",), (D["dst"][c],))
            if s.stop - s.start < p.distributed_min_sources or pr.stop - pr.start < p.distributed_min_ports:
                continue  # (before the sample's own sources already reported are taken out)
            total, exact = sampled_count(S["crc"][s], INBOUND_SAMPLE)
            sample = {x for x in self._text(S["src"][s][:INBOUND_SAMPLE]) if x is not None}
            sources = sample - reported
            # past the sample's size, the share of scanners not reported already scales the estimate
            n_sources = len(sources) if exact else round(total * len(sources) / len(sample))
            n_ports, _ = sampled_count(P["rank"][pr], INBOUND_SAMPLE)
            if n_sources < p.distributed_min_sources or n_ports < p.distributed_min_ports:
                continue
            ports = [f"{PROTO_NAME[v >> 16]}/{v & 0xFFFF}" for v in np.sort(P["pp"][pr][:INBOUND_SAMPLE]).tolist()]
            (dst,) = self._text(D["dst"][c:c + 1])
            attempts, about = int(D["attempts"][c]), "" if exact else "about "
            out.append(Alert(int(D["first"][c]), int(D["last"][c]), "scan", "distributed_scan", "medium", 0.6,
                             f"{about}{n_sources} sources made {attempts} failed connection attempts to {dst} on "
                             f"{n_ports} ports ({', '.join(ports[:8])}{'...' if len(ports) > 8 else ''}): probing "
                             "by many hosts at once, as worms and botnets do", self.label, self.host_for(dst), None,
                             dst, None, None, None,
                             {"source_count": n_sources, "source_count_exact": exact,
                              "sources": sorted(sources)[:32], "ports": ports[:64], "attempts": attempts}))
        return out

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
        out.extend(self._distributed(reported))
        return out
