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

Severity: medium; high from ``port_high`` ports or ``sweep_high`` hosts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.baseline.flow_features import FAILED_STATES as FLOW_FAILED_STATES
from detector.detect.base import Detector, FlowView, widen
from detector.detect.sample import DistinctSample
from detector.detect.services import AMPLIFIER_PORTS

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

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.ports: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.hosts: dict[tuple[str, int, str], set[str]] = defaultdict(set)
        self.first: dict[tuple, tuple[int, int]] = {}
        self.trw: dict[str, dict[str, tuple[int, bool]]] = {}  # src -> dst -> (time, failed) of the first contact
        self.inbound: dict[str, dict] = {}

    def _note(self, key, ts: int) -> None:
        lo, hi = self.first.get(key, (ts, ts))
        self.first[key] = (min(lo, ts), max(hi, ts))

    def observe_flows(self, f: FlowView) -> None:
        proto = f["proto"]
        # an "originator" that sent nothing is answering someone else's traffic
        rows = np.flatnonzero(((proto == "tcp") | (proto == "udp") | (proto == "icmp")) & (f["orig_pkts"] > 0))
        if not len(rows):
            return
        multicast = self.site.multicast
        cols = (f.take(name, rows) for name in ("orig_h", "resp_h", "proto", "ts", "orig_p", "resp_p", "conn_state",
                                                 "orig_bytes", "resp_bytes", "resp_pkts"))
        for src, dst, pr, t, sport, port, state, ob, rb, rpk in zip(*cols):
            if src in multicast or dst in multicast:
                continue
            if pr == "icmp":
                if port == 0 and sport == 8:  # echo request: a host probe
                    key = (src, -1, "icmp")
                    self.hosts[key].add(dst)
                    self._note(key, t)
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
                self.ports[(src, dst)].add(port)
                self._note((src, dst), t)
                key = (src, port, pr)
                self.hosts[key].add(dst)
                self._note(key, t)
                self._note_inbound(src, dst, port, pr, t)
            # threshold random walk over first contacts with distinct hosts, as in the paper: the
            # first contact is the earliest, whatever order the flows arrive in; the walk runs in
            # time order in finish()
            if len(self.trw) >= self.p.max_sources and src not in self.trw:
                continue
            contacts = self.trw.setdefault(src, {})
            prev = contacts.get(dst)
            if prev is None:
                if len(contacts) < self.p.max_sources:
                    contacts[dst] = (t, failed)
            elif (t, not failed) < (prev[0], not prev[1]):
                contacts[dst] = (t, failed)

    @staticmethod
    def _walk(contacts: dict[str, tuple[int, bool]]) -> dict:
        """The random walk over a source's first contacts, in time order."""
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

    def finish(self) -> list[Alert]:
        p = self.p
        out = []
        reported: set[str] = set()
        for (src, dst), ports in self.ports.items():
            if len(ports) < p.port_threshold:
                continue
            first, last = self.first[(src, dst)]
            high = len(ports) >= p.port_high
            plist = sorted(ports)
            out.append(Alert(first, last, "scan", "port_scan", "high" if high else "medium", 0.85 if high else 0.6,
                             f"{src} probed {len(ports)} ports on {dst} ({', '.join(map(str, plist[:8]))}"
                             f"{'...' if len(plist) > 8 else ''}) without using them: a port scan", self.label,
                             self.host_for(dst, src), src, dst, None, None, None,
                             {"ports": plist[:64], "port_count": len(ports), "threshold": p.port_threshold}))
            reported.add(src)
        for (src, port, pr), hosts in self.hosts.items():
            if len(hosts) < p.sweep_threshold:
                continue
            first, last = self.first[(src, port, pr)]
            high = len(hosts) >= p.sweep_high
            what = "ICMP echo" if pr == "icmp" else f"{pr} port {port}"
            out.append(Alert(first, last, "scan", "address_sweep", "high" if high else "medium", 0.85 if high else 0.6,
                             f"{src} probed {len(hosts)} hosts on {what}: an address sweep", self.label,
                             self.host_for(src, *sorted(hosts)[:1]), src, None, None,
                             None if pr == "icmp" else port, pr,
                             {"hosts": sorted(hosts)[:64], "host_count": len(hosts), "threshold": p.sweep_threshold}))
            reported.add(src)
        for src, contacts in self.trw.items():
            if src in reported:
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
