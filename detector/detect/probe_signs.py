"""Signs of scanning tools in single packets (scan / flag_probe, scanner_signature, arp_sweep).

Methods:

- ``flag_probe``: TCP segments no TCP stack sends in normal use: no flags (NULL scan), FIN
  without ACK (FIN scan), FIN+PSH+URG (Xmas scan), SYN together with FIN or RST. Scanners and
  OS fingerprinting (nmap ``-O``'s T2-T7 probes) send them; Zeek flags them as weirds and
  Suricata as decoder events. Medium from ``min_probes`` such segments from one source.
- ``scanner_signature``: the HTTP User-Agents that scanning tools announce (nmap's scripting
  engine, masscan, zgrab, Nikto, sqlmap, Nuclei, ...). Medium.
- ``arp_sweep``: ARP requests from one sender for ``arp_threshold`` distinct addresses within
  ``arp_window_s``: host discovery on the local segment (nmap ``-sn``, arp-scan). High from
  ``arp_high``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, ipv4_text, mac_text, widen
from detector.l7.events import Events

SCANNER_AGENTS = ("nmap scripting engine", "masscan", "zgrab", "nikto", "sqlmap", "nuclei", "wpscan", "dirbuster",
                  "gobuster", "openvas", "nessus", "acunetix", "qualys", "zmap", "netsparker", "fuzz faster")
FLAG_NAMES = {0: "NULL", 1: "FIN"}


def flag_text(flags: int) -> str:
    if flags in FLAG_NAMES:
        return FLAG_NAMES[flags]
    names = [n for bit, n in ((2, "SYN"), (1, "FIN"), (4, "RST"), (8, "PSH"), (16, "ACK"), (32, "URG"), (64, "ECE"),
                              (128, "CWR")) if flags & bit]
    return "+".join(names)


class ProbeSigns(Detector):
    name = "probe_signs"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_probes: int = 2
        arp_threshold: int = 32
        arp_high: int = 200
        arp_window_s: float = 300.0

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.odd: dict[str, dict] = {}
        self.agents: dict[tuple[str, str], dict] = {}
        self.arp: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)

    def observe_events(self, events: Events) -> None:
        t = events.tcp_odd
        for j in range(len(t)):
            src = t["src"][j]
            o = self.odd.setdefault(src, {"first": int(t["ts"][j]), "last": 0, "n": 0, "kinds": set(), "targets": set()})
            widen(o, int(t["ts"][j]))
            o["n"] += 1
            o["kinds"].add(flag_text(int(t["flags"][j])))
            if len(o["targets"]) < 64:
                o["targets"].add(f"{t['dst'][j]}:{int(t['dport'][j])}")
        for ev in events.http:
            ua = (ev.request.user_agent or "") if ev.request else ""
            low = ua.lower()
            tool = next((a for a in SCANNER_AGENTS if a in low), None)
            if tool:
                a = self.agents.setdefault((ev.ctx.client, tool), {"first": ev.ctx.ts_ns, "last": 0, "n": 0,
                                                                   "servers": set(), "ua": ua, "uid": ev.ctx.uid})
                widen(a, ev.ctx.ts_ns)
                a["n"] += 1
                a["servers"].add(ev.ctx.server)
        a = events.arp
        if len(a):
            req = np.flatnonzero(a["op"] == 1)
            for j in req.tolist():
                tpa, spa = int(a["tpa"][j]), int(a["spa"][j])
                if tpa == spa:
                    continue  # gratuitous announcement
                lst = self.arp[(int(a["sha"][j]), spa)]
                if len(lst) < 100_000:
                    lst.append((int(a["ts"][j]), tpa))

    def finish(self) -> list[Alert]:
        p = self.p
        out = []
        for src, o in self.odd.items():
            if o["n"] < p.min_probes:
                continue
            targets = sorted(o["targets"])
            out.append(Alert(o["first"], o["last"], "scan", "flag_probe", "medium", 0.65,
                             f"{src} sent {o['n']} TCP segments with flag combinations no normal stack sends "
                             f"({', '.join(sorted(o['kinds']))}) to {', '.join(targets[:3])}: stealth scanning or OS "
                             "fingerprinting", self.label, self.host_for(*[x.rpartition(':')[0] for x in targets[:3]], src),
                             src, targets[0].rpartition(":")[0] if targets else None, None,
                             int(targets[0].rpartition(":")[2]) if targets else None, "tcp",
                             {"segments": o["n"], "flag_combinations": sorted(o["kinds"]), "targets": targets[:32]}))
        for (client, tool), a in self.agents.items():
            servers = sorted(a["servers"])
            out.append(Alert(a["first"], a["last"], "scan", "scanner_signature", "medium", 0.7,
                             f"{client} sent {a['n']} HTTP request(s) to {', '.join(servers[:3])} as '{a['ua'][:60]}': "
                             f"the {tool} scanning tool", self.label, self.host_for(*servers[:3], client), client,
                             servers[0], None, None, "tcp",
                             {"user_agent": a["ua"], "tool": tool, "requests": a["n"], "servers": servers[:16],
                              "uid": a["uid"]}))
        window = int(p.arp_window_s * 1e9)
        for (mac, spa), reqs in self.arp.items():
            if len({t for _, t in reqs}) < p.arp_threshold:
                continue
            reqs.sort()
            ts = [r[0] for r in reqs]
            targets = [r[1] for r in reqs]
            counts: dict[int, int] = {}
            distinct = best = best_lo = hi = 0
            for lo in range(len(ts)):  # the window of arp_window_s with the most distinct targets
                while hi < len(ts) and ts[hi] - ts[lo] <= window:
                    counts[targets[hi]] = counts.get(targets[hi], 0) + 1
                    distinct += counts[targets[hi]] == 1
                    hi += 1
                if distinct > best:
                    best, best_lo = distinct, lo
                counts[targets[lo]] -= 1
                distinct -= counts[targets[lo]] == 0
            if best < p.arp_threshold:
                continue
            high = best >= p.arp_high
            src = ipv4_text(spa)
            out.append(Alert(int(ts[best_lo]), int(ts[-1]), "scan", "arp_sweep", "high" if high else "medium",
                             0.8 if high else 0.6,
                             f"{src} ({mac_text(mac)}) asked ARP for {best} different addresses within "
                             f"{p.arp_window_s:.0f} s: host discovery on the local network", self.label,
                             self.host_for(src), src, None, None, None, "arp",
                             {"mac": mac_text(mac), "distinct_targets": best, "requests": len(reqs),
                              "examples": [ipv4_text(t) for t in sorted(set(targets))[:16]]}))
        return out
