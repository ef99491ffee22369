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
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.l7.events import Events
from kernels.features import interarrival_stats


def _skew_mad_mode(values: np.ndarray) -> tuple[float, float, float]:
    v = np.sort(values.astype(np.float64))
    q1, med, q3 = v[(len(v) - 1) // 4], v[(len(v) - 1) // 2], v[3 * (len(v) - 1) // 4]
    skew = (q3 + q1 - 2 * med) / (q3 - q1) if q3 > q1 else 0.0
    mad = float(np.sort(np.abs(v - med))[(len(v) - 1) // 2])
    uniq, counts = np.unique(v, return_counts=True)
    return skew, mad, float(uniq[np.argmax(counts)])


class Beaconing(Detector):
    name = "beaconing"
    version = "1"

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

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.starts: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.sizes: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.meta: dict[tuple[str, str], tuple] = {}
        self.ports: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.names: dict[str, str] = {}

    def observe_events(self, events: Events) -> None:
        for ev in events.dns:
            if ev.msg.response:
                for a in ev.msg.answers:
                    if a.rtype in (1, 28):
                        self.names[a.data] = ev.msg.qname
        for ev in events.tls:
            if ev.client_hello and ev.client_hello.sni:
                self.names[ev.ctx.server] = ev.client_hello.sni

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
        srcs, src_code = f.distinct("orig_h")
        dsts, dst_code = f.distinct("resp_h")
        pair = np.stack([src_code[rows], dst_code[rows]])
        _, first, inverse = np.unique(pair[0] * (len(dsts) + 1) + pair[1], return_index=True, return_inverse=True)
        ts, ob, port, oport = f["ts"][rows], f["orig_bytes"][rows], f["resp_p"][rows], f["orig_p"][rows]
        order = np.lexsort((oport, ts, inverse))  # each pair's rows, earliest first
        bounds = np.searchsorted(inverse[order], np.arange(len(first) + 1)).tolist()
        ts_sorted, ob_sorted, port_sorted = ts[order].tolist(), ob[order].tolist(), port[order].tolist()
        src_of, dst_of = pair[0].tolist(), pair[1].tolist()
        first_row = first.tolist()
        uid, cid, proto = f["uid"], f["community_id"], f["proto"]  # looked up once, not per pair
        for g in np.argsort(first, kind="stable").tolist():  # pairs in order of first appearance
            j = first_row[g]
            key = (srcs[src_of[j]], dsts[dst_of[j]])
            lo, hi = bounds[g], bounds[g + 1]
            e = int(order[lo])  # the pair's earliest connection names the alert, whatever order flows come in
            known = self.meta.get(key)
            if known is None and len(self.meta) >= self.p.max_pairs:
                continue
            if known is None or (int(ts[e]), int(oport[e])) < known[4]:
                r = int(rows[e])
                self.meta[key] = (int(port[e]), uid[r], cid[r], proto[r], (int(ts[e]), int(oport[e])))
            ports = self.ports[key]
            if len(ports) <= self.p.max_ports:
                ports.update(port_sorted[lo:hi])
            self.starts[key].extend(ts_sorted[lo:hi])
            self.sizes[key].extend(ob_sorted[lo:hi])

    def _gap_stats(self, keys: list[tuple[str, str]]) -> dict:
        """Inter-arrival statistics of each (host, destination) series in ``keys``, in order."""
        group = np.concatenate([np.full(len(self.starts[k]), g) for g, k in enumerate(keys)])
        times = np.concatenate([np.asarray(self.starts[k]) for k in keys]) / 1e9
        return interarrival_stats(np, group, times)

    def candidates(self, top: int = 6, max_gaps: int = 2000) -> list[dict]:
        """The most regular (host, destination) series with enough connections to judge, alert
        or not (for the report): their gaps between connections, the median and MAD."""
        need = max(5, self.p.min_connections // 2)
        keys = [k for k, v in self.starts.items() if len(v) >= need]
        if not keys:
            return []
        st = self._gap_stats(keys)  # the statistics finish() judges by
        out = []
        for g, (src, dst) in enumerate(keys):
            median, mad = float(st["median"][g]), float(st["mad"][g])
            if median < self.p.min_interval_s:
                continue
            gaps = np.diff(np.sort(np.asarray(self.starts[(src, dst)], np.int64))) / 1e9
            out.append({"src": src, "dst": dst, "name": self.names.get(dst), "port": self.meta[(src, dst)][0],
                        "connections": len(self.starts[(src, dst)]), "median_s": median, "mad_s": mad,
                        "gaps_s": gaps[:max_gaps].tolist()})
        out.sort(key=lambda c: (c["mad_s"] / max(c["median_s"], 1e-9), -c["connections"]))
        return out[:top]

    def finish(self) -> list[Alert]:
        p = self.p
        keys = [k for k, v in self.starts.items() if len(v) >= p.min_connections and len(self.ports[k]) <= p.max_ports]
        if not keys:
            return []
        st = self._gap_stats(keys)
        out = []
        for g, (src, dst) in enumerate(keys):
            name = self.names.get(dst, "")
            if name and any(d in name for d in p.allow_domains):
                continue
            n = len(self.starts[(src, dst)])
            span = (max(self.starts[(src, dst)]) - min(self.starts[(src, dst)])) / 1e9
            median = float(st["median"][g])
            if median < p.min_interval_s:
                continue
            ts_skew = 1.0 - min(1.0, abs(float(st["bowley_skew"][g])))
            ts_mad = max(0.0, 1.0 - float(st["mad"][g]) / 30.0)
            ts_count = min(1.0, n / max(span / max(median, 1e-3), 1.0)) if median > 0 else 0.0
            ds_skew_raw, ds_mad_raw, ds_mode = _skew_mad_mode(np.asarray(self.sizes[(src, dst)]))
            ds = (1.0 - min(1.0, abs(ds_skew_raw)) + max(0.0, 1.0 - ds_mad_raw / 32.0)
                  + max(0.0, 1.0 - ds_mode / 65535.0)) / 3
            score = ((ts_skew + ts_mad + ts_count) / 3 + ds) / 2
            if score < p.medium_score:
                continue
            port, uid, cid, proto, _ = self.meta[(src, dst)]
            high = score >= p.high_score
            first = min(self.starts[(src, dst)])
            out.append(Alert(first, max(self.starts[(src, dst)]), "compute_theft", "beaconing",
                             "high" if high else "medium", score,
                             f"{src} ({self.site.role(src)}) connected to {name or dst}:{port} {n} times every "
                             f"{median:.0f} s (gap MAD {float(st['mad'][g]):.1f} s, typical {ds_mode:.0f} bytes): "
                             "a beacon, as malware and unattended miners keep", self.label, self.host_for(src), src,
                             dst, None, port, proto,
                             {"connections": n, "median_interval_s": round(median, 3),
                              "interval_mad_s": round(float(st["mad"][g]), 3),
                              "interval_bowley_skew": round(float(st["bowley_skew"][g]), 3),
                              "bytes_mode": ds_mode, "bytes_mad": ds_mad_raw, "score_timing":
                              round((ts_skew + ts_mad + ts_count) / 3, 3), "score_size": round(ds, 3),
                              "destination_name": name or None, "uid": uid}, cid))
        return out
