"""Beaconing: periodic outbound sessions, as command-and-control and some miners keep
(compute_theft / beaconing).

Method: RITA's beacon score (Active Countermeasures, RITA v4 ``beacon`` analysis) per local host
and external destination, from the start times and sizes of their connections:

- timing: Bowley skewness of the gaps (regular gaps: 0), their median absolute deviation
  (small is regular; scored ``1 - MAD/30 s``) and how many of the possible connections over the
  observed span were made;
- size: skewness and MAD of the bytes sent per connection, and how small their mode is.

The score is the mean of the timing and size scores; medium from ``medium_score``, high from
``high_score``, with at least ``min_connections``, a median gap of at least ``min_interval_s``
(faster than that is a burst or a scan, not a check-in) and at most ``max_ports`` destination
ports (a beacon calls one service). Periodic by design and left out: NTP, DNS,
perfSONAR (861/862/5201), proxies and caches (3128), names in ``allow_domains`` (Globus,
CVMFS, ...) as learned from DNS answers and TLS server names, and ``site.partner_dtns``. Only
login and compute nodes are judged when roles are configured; any local host otherwise.

State is columnar and mergeable (issue 21): per (host, destination) pair, as 64-bit address
ids, the connection count and time span (:class:`KeyedSums`), the earliest ``max_series``
connections' start times and bytes (the series the statistics read: at one check-in a minute,
68 hours), up to ``max_ports + 1`` destination ports and the earliest connection that names the
alert. At most ``max_pairs`` pairs: past it, the pairs with fewest connections are evicted and
counted; past ``max_connections`` series rows, each pair's latest go first over all pairs.
Names come from the latest DNS answer or TLS server name for an address (``max_names``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.detect.keyed_table import KeyedSums, KeyedTable, Led, Names, key_ids, key_rows, latest_first
from detector.l7.events import Events
from kernels.features import interarrival_stats
from kernels.xp_ops import distinct, group_starts, in_sorted

PAIR = ("src", "dst")


def _pair_ids(rows: dict) -> np.ndarray:
    return key_ids(rows, PAIR)


def _fewest_out(cols: dict) -> np.ndarray:
    """Past ``max_pairs``, the pairs with fewest connections go first: furthest from a beacon."""
    return cols["n"]


def _segment_pick(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, num: int, den: int) -> np.ndarray:
    """The value at index ``(count - 1) * num // den`` of each segment of segment-sorted ``values``."""
    return values[starts + (counts - 1) * num // den]


class SizeStats(NamedTuple):
    """Per series: Bowley skewness, MAD and mode (the smallest of the most frequent) of the
    bytes sent per connection, with the nearest-rank quartiles RITA uses."""

    skew: np.ndarray
    mad: np.ndarray
    mode: np.ndarray


def size_stats(group: np.ndarray, sizes: np.ndarray, n_groups: int) -> SizeStats:
    v = sizes.astype(np.float64)
    order = np.lexsort((v, group))
    g, v = group[order], v[order]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    q1, med, q3 = (_segment_pick(v, starts, counts, k, 4) for k in (1, 2, 3))
    skew = np.where(q3 > q1, (q3 + q1 - 2 * med) / np.where(q3 > q1, q3 - q1, 1.0), 0.0)
    dev = np.abs(v - med[g])
    mad = _segment_pick(dev[np.lexsort((dev, g))], starts, counts, 1, 2)
    runs = np.flatnonzero(group_starts(np, [g, v]))  # equal sizes of a series, smallest first
    run_len = np.diff(np.append(runs, len(v)))
    best = np.lexsort((-run_len, g[runs]))  # per series, the longest run first (ties: smallest)
    firsts = best[group_starts(np, [g[runs][best]])]
    return SizeStats(skew, mad, v[runs][firsts])


class Judged(NamedTuple):
    """The pairs a decide step judges, and their series."""

    pairs: np.ndarray  # rows of the pair table, in order of pair id
    series: dict  # the series rows of those pairs (by pair, then time)
    group: np.ndarray  # each series row's index into ``pairs``
    timing: dict  # :func:`interarrival_stats` of each pair's series


class Beaconing(Detector):
    name = "beaconing"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        min_connections: int = 20
        medium_score: float = 0.85
        high_score: float = 0.95
        allow_ports: tuple[int, ...] = (53, 123, 861, 862, 5201, 3128)
        allow_domains: tuple[str, ...] = ("globus.org", "cvmfs", "cern.ch", "opensciencegrid.org", "ntp.org",
                                          "perfsonar")
        max_pairs: int = 200_000
        min_interval_s: float = 1.0
        max_ports: int = 3
        max_series: int = 4096  # connections per pair whose timing and sizes are judged (the earliest)
        max_connections: int = 2_000_000  # series rows over all pairs
        max_names: int = 200_000  # addresses named by DNS answers and TLS server names

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        p = self.p
        self.pairs = KeyedSums(PAIR, {"n": "sum", "first": "min", "last": "max"}, p.max_pairs, _fewest_out)
        self.series = KeyedTable(PAIR, ("ts", "oport"), p.max_series, p.max_connections, latest_first(PAIR))
        self.earliest = KeyedTable(PAIR, ("ts", "oport", "uid"), 1)  # the connection an alert names
        self.ports = KeyedTable(PAIR, ("port",), p.max_ports + 1, unique=True)
        self.text = Names()  # the text of the addresses, uids, community ids and protocols held
        self.names: dict[str, tuple[int, str]] = {}  # address -> (time, name) of its latest naming
        self.names_dropped = 0
        self.led = Led(self.pairs, self.series, self.earliest, self.ports)  # a pair's rows leave with it

    @property
    def evictions(self) -> int:
        return self.pairs.evicted + self.series.evicted + self.names_dropped

    def _name(self, addr: str, ts: int, name: str) -> None:
        known = self.names.get(addr)
        if known is None and len(self.names) >= self.p.max_names:
            self.names_dropped += 1
        elif known is None or (ts, name) > known:
            self.names[addr] = (ts, name)

    def observe_events(self, events: Events) -> None:
        for ev in events.dns:
            if ev.msg.response:
                for a in ev.msg.answers:
                    if a.rtype in (1, 28):
                        self._name(a.data, ev.ctx.ts_ns, ev.msg.qname)
        for ev in events.tls:
            if ev.client_hello and ev.client_hello.sni:
                self._name(ev.ctx.server, ev.ctx.ts_ns, ev.client_hello.sni)

    def merge(self, other: Beaconing) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        for mine, theirs in ((self.pairs, other.pairs), (self.series, other.series),
                             (self.earliest, other.earliest), (self.ports, other.ports)):
            mine.merge(theirs)
        self.led.reconcile()
        self.text.merge(other.text)
        self.names_dropped += other.names_dropped
        for addr, (ts, name) in other.names.items():
            self._name(addr, ts, name)

    def observe_flows(self, f: FlowView) -> None:
        site = self.site
        if site.login_nodes or site.compute:
            judged = f.member("orig_h", site.login_nodes) | f.member("orig_h", site.compute)
        else:
            judged = f.member("orig_h", site.local)
        external = ~f.member("resp_h", site.local) & ~f.member("resp_h", site.multicast)
        rows = np.flatnonzero(~np.isin(f["resp_p"], self.p.allow_ports) & judged & external
                              & ~f.member("resp_h", site.partners) & ~f.member("resp_h", site.proxies))
        if not len(rows):
            return
        src, dst = f.ids("orig_h")[rows], f.ids("resp_h")[rows]
        ts = f["ts"][rows].astype(np.int64)
        oport, port = f["orig_p"][rows].astype(np.int64), f["resp_p"][rows].astype(np.int64)
        self.led.add({"src": src, "dst": dst, "n": np.ones(len(rows), np.int64), "first": ts, "last": ts},
                     {"src": src, "dst": dst, "ts": ts, "oport": oport,
                      "bytes": np.nan_to_num(f["orig_bytes"][rows].astype(float)).astype(np.int64)},
                     {"src": src, "dst": dst, "ts": ts, "oport": oport, "uid": f.ids_at("uid", rows),
                      "cid": f.ids_at("community_id", rows), "port": port, "proto": f.ids_at("proto", rows)},
                     {"src": src, "dst": dst, "port": port})
        for name in ("orig_h", "resp_h", "uid", "community_id", "proto"):
            self.text.add(*f.named(name, rows))
        self.text.prune(self._held_ids)

    def _held_ids(self) -> list[np.ndarray]:
        P, E = self.pairs.rows(), self.earliest.rows()
        return ([P["src"], P["dst"]] if P else []) + ([E["uid"], E["cid"], E["proto"]] if E else [])

    def _port_counts(self, P: dict) -> np.ndarray:
        """Distinct destination ports of each pair of ``P`` (at most ``max_ports + 1``)."""
        R = self.ports.rows()
        if not R:
            return np.zeros(len(P["src"]), np.int64)
        starts = np.flatnonzero(group_starts(np, [R["src"], R["dst"]]))
        rid = _pair_ids({k: R[k][starts] for k in PAIR})
        order = np.argsort(rid)
        counts = np.diff(np.append(starts, len(R["src"])))[order]
        pos = np.minimum(np.searchsorted(rid[order], _pair_ids(P)), len(rid) - 1)
        return np.where(rid[order][pos] == _pair_ids(P), counts[pos], 0)

    def _judge(self, need: int, max_ports: int | None) -> Judged | None:
        """The pairs with at least ``need`` connections (and at most ``max_ports`` ports), and
        the statistics of their series (the decide step reads these, not every pair held)."""
        P = self.led.rows()
        S = self.series.rows()
        if not P or not S:
            return None
        ok = P["n"] >= need
        if max_ports is not None:
            ok &= self._port_counts(P) <= max_ports
        pid, sid = _pair_ids(P), _pair_ids(S)
        judged = np.flatnonzero(ok)
        judged = judged[in_sorted(np, pid[judged], distinct(np, sid))]  # (a series may be all evicted)
        if not len(judged):
            return None
        judged = judged[np.argsort(pid[judged])]
        key = pid[judged]
        pos = np.minimum(np.searchsorted(key, sid), len(key) - 1)
        hit = key[pos] == sid
        series = {k: v[hit] for k, v in S.items()}
        group = pos[hit]
        return Judged(judged, series, group, interarrival_stats(np, group, series["ts"] / 1e9))

    def _named(self, addr: str) -> str:
        known = self.names.get(addr)
        return known[1] if known else ""

    def _earliest(self, P: dict, c: int) -> dict:
        """The earliest connection of pair ``c`` of ``P``: its port, protocol, uid and community id."""
        E = self.earliest.rows()
        e = key_rows(E, PAIR, (P["src"][c], P["dst"][c])).start
        proto, uid, cid = self.text.text(np.array([E["proto"][e], E["uid"][e], E["cid"][e]], np.uint64))
        return {"port": int(E["port"][e]), "proto": proto, "uid": uid, "cid": cid}

    def candidates(self, top: int = 6, max_gaps: int = 2000) -> list[dict]:
        """The most regular (host, destination) series with enough connections to judge, alert
        or not (for the report): their gaps between connections, the median and MAD."""
        j = self._judge(max(5, self.p.min_connections // 2), None)
        if j is None:
            return []
        P, st = self.pairs.rows(), j.timing
        keep = np.flatnonzero(st["median"] >= self.p.min_interval_s)
        ratio = st["mad"][keep] / np.maximum(st["median"][keep], 1e-9)
        out = []
        for g in keep[np.lexsort((-P["n"][j.pairs[keep]], ratio))][:top].tolist():
            c = int(j.pairs[g])
            src, dst = self.text.text(np.array([P["src"][c], P["dst"][c]], np.uint64))
            gaps = np.diff(j.series["ts"][j.group == g]) / 1e9  # (series rows are in time order)
            out.append({"src": src, "dst": dst, "name": self._named(dst) or None,
                        "port": self._earliest(P, c)["port"], "connections": int(P["n"][c]),
                        "median_s": float(st["median"][g]), "mad_s": float(st["mad"][g]),
                        "gaps_s": gaps[:max_gaps].tolist()})
        return out

    def finish(self) -> list[Alert]:
        p = self.p
        j = self._judge(p.min_connections, p.max_ports)
        if j is None:
            return []
        P, st = self.pairs.rows(), j.timing
        n, first, last = (P[k][j.pairs] for k in ("n", "first", "last"))
        median, mad, bowley = st["median"], st["mad"], st["bowley_skew"]
        span = (last - first) / 1e9
        size = size_stats(j.group, j.series["bytes"], len(j.pairs))
        ts_skew = 1.0 - np.minimum(1.0, np.abs(bowley))
        ts_mad = np.maximum(0.0, 1.0 - mad / 30.0)
        ts_count = np.where(median > 0, np.minimum(1.0, n / np.maximum(span / np.maximum(median, 1e-3), 1.0)), 0.0)
        timing = (ts_skew + ts_mad + ts_count) / 3
        ds = (1.0 - np.minimum(1.0, np.abs(size.skew)) + np.maximum(0.0, 1.0 - size.mad / 32.0)
              + np.maximum(0.0, 1.0 - size.mode / 65535.0)) / 3
        score = (timing + ds) / 2
        out = []
        for g in np.flatnonzero((median >= p.min_interval_s) & (score >= p.medium_score)).tolist():
            c = int(j.pairs[g])
            src, dst = self.text.text(np.array([P["src"][c], P["dst"][c]], np.uint64))
            name = self._named(dst)
            if name and any(d in name for d in p.allow_domains):
                continue
            e = self._earliest(P, c)
            high = score[g] >= p.high_score
            med, gap_mad, mode = float(median[g]), float(mad[g]), float(size.mode[g])
            out.append(Alert(int(first[g]), int(last[g]), "compute_theft", "beaconing", "high" if high else "medium",
                             float(score[g]),
                             f"{src} ({self.site.role(src)}) connected to {name or dst}:{e['port']} {int(n[g])} times "
                             f"every {med:.0f} s (gap MAD {gap_mad:.1f} s, typical {mode:.0f} bytes): "
                             "a beacon, as malware and unattended miners keep", self.label, self.host_for(src), src,
                             dst, None, e["port"], e["proto"],
                             {"connections": int(n[g]), "median_interval_s": round(med, 3),
                              "interval_mad_s": round(gap_mad, 3),
                              "interval_bowley_skew": round(float(bowley[g]), 3),
                              "bytes_mode": mode, "bytes_mad": float(size.mad[g]),
                              "score_timing": round(float(timing[g]), 3), "score_size": round(float(ds[g]), 3),
                              "destination_name": name or None, "uid": e["uid"]}, e["cid"]))
        return out
