"""ARP spoofing and poisoning (mitm / arp_spoof).

Method (as arpwatch and Zeek's arp policy): keep each IP address's MAC binding from ARP sender
fields, and report per claiming MAC address:

- an IP address claimed by a second MAC address (a changed or duplicated binding), critical
  when the address is a gateway: configured, named as router by DHCP, or the address most
  hosts ask for;
- replies nobody asked for (no matching who-has in ``reply_window_s``), repeated;
- frames whose Ethernet source differs from the ARP sender MAC;
- one MAC claiming several IP addresses.

Severity: medium for a conflict or ``unsolicited_min`` unsolicited replies, high when both
happen or for ``unsolicited_high``, critical for a gateway's address.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, ipv4_text, mac_text
from detector.l7.events import Events


def _new_claim() -> dict:  # a module-level factory: finished detectors travel back from workers
    return {"ips": set(), "conflicts": {}, "unsolicited": 0, "mismatch": 0, "first": None, "last": 0,
            "victims": set()}

class ArpSpoof(Detector):
    name = "arp_spoof"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        reply_window_s: float = 5.0
        unsolicited_min: int = 5
        unsolicited_high: int = 50
        gateway_min_askers: int = 3

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.binding: dict[int, int] = {}  # ip -> first MAC seen
        self.claims: dict[int, dict] = defaultdict(_new_claim)
        self.conflict_seen: dict[tuple[int, int], list[int]] = {}  # (claiming MAC, ip) -> first, last, claims
        self.pending: dict[tuple[int, int], int] = {}  # (asker ip, asked ip) -> ts of the who-has
        self.askers: dict[int, set[int]] = defaultdict(set)  # asked ip -> asking ips
        self.dhcp_routers: set[str] = set()

    def learned(self) -> dict:
        return {"bindings": [[ip, mac] for ip, mac in self.binding.items()]}

    def seed(self, pins: dict) -> None:
        for ip, mac in pins.get("bindings", []):
            self.binding.setdefault(int(ip), int(mac))

    def changes(self) -> list[dict]:
        """Every IP address claimed by a MAC address other than the one first bound to it (for
        the report): the address, both MACs, and when and how often the newcomer claimed it."""
        rows = [{"ip": ipv4_text(ip), "bound_mac": mac_text(self.binding[ip]), "claimed_by": mac_text(mac),
                 "first_ns": first, "last_ns": last, "claims": n}
                for (mac, ip), (first, last, n) in self.conflict_seen.items() if ip in self.binding]
        return sorted(rows, key=lambda r: (r["first_ns"], r["ip"]))

    def observe_events(self, events: Events) -> None:
        for ev in events.dhcp:
            self.dhcp_routers.update(ev.msg.routers)
        a = events.arp
        if not len(a):
            return
        window = int(self.p.reply_window_s * 1e9)
        order = np.argsort(a["ts"], kind="stable")
        ts_all, op_all = a["ts"][order], a["op"][order]
        sha_all, spa_all, tpa_all = a["sha"][order], a["spa"][order], a["tpa"][order]
        eth_all = a["eth_src"][order]
        for ts, op, sha, spa, tpa, eth in zip(ts_all.tolist(), op_all.tolist(), sha_all.tolist(),
                                              spa_all.tolist(), tpa_all.tolist(), eth_all.tolist()):
            if op == 1:
                self.pending[(spa, tpa)] = ts
                if spa and spa != tpa and len(self.askers[tpa]) < 64:
                    self.askers[tpa].add(spa)
            if spa == 0 or sha == 0:
                continue  # an ARP probe (RFC 5227) binds nothing
            c = self.claims[sha]
            c["first"] = ts if c["first"] is None else c["first"]
            c["last"] = ts
            c["ips"].add(spa)
            if eth and eth != sha:
                c["mismatch"] += 1
            if op == 2:
                asked = self.pending.get((tpa, spa))
                if asked is None or ts - asked > window:
                    if spa != tpa:  # a gratuitous announcement is not a reply to anyone
                        c["unsolicited"] += 1
                        if tpa:
                            c["victims"].add(tpa)
            old = self.binding.setdefault(spa, sha)
            if old != sha:
                c["conflicts"].setdefault(spa, old)
                self.claims[old]["conflicts"].setdefault(spa, sha)
                seen = self.conflict_seen.setdefault((sha, spa), [ts, ts, 0])
                seen[1] = ts
                seen[2] += 1

    def _gateways(self) -> set[str]:
        gws = set(self.site.gateways) | self.dhcp_routers
        if self.askers:
            ip, askers = max(self.askers.items(), key=lambda kv: len(kv[1]))
            if len(askers) >= self.p.gateway_min_askers:
                gws.add(ipv4_text(ip))
        return gws

    def finish(self) -> list[Alert]:
        p = self.p
        gateways = self._gateways()
        out = []
        # in a conflict the suspect is the claimant with the most unsolicited replies, then the
        # most addresses claimed, then the one seen last; the address's owner is not reported
        suspects = {mac for mac, c in self.claims.items()
                    if c["unsolicited"] >= p.unsolicited_min or c["mismatch"]}
        by_ip: dict[int, set[int]] = defaultdict(set)
        for mac, c in self.claims.items():
            for ip, other in c["conflicts"].items():
                by_ip[ip].update((mac, other))
        for macs in by_ip.values():
            suspects.add(max(macs, key=lambda m: (self.claims[m]["unsolicited"], len(self.claims[m]["ips"]),
                                                  self.claims[m]["mismatch"], self.claims[m]["first"] or 0)))
        for mac in sorted(suspects):
            c = self.claims[mac]
            unsolicited = c["unsolicited"]
            ips = sorted(ipv4_text(ip) for ip in c["ips"])
            gw_hit = sorted(set(ips) & gateways)
            if gw_hit and c["conflicts"]:
                severity, score = "critical", 0.97
            elif c["conflicts"] and unsolicited >= p.unsolicited_min or unsolicited >= p.unsolicited_high:
                severity, score = "high", 0.85
            else:
                severity, score = "medium", 0.6
            claimed = ", ".join(ips[:4]) + ("..." if len(ips) > 4 else "")
            victims = sorted(ipv4_text(v) for v in c["victims"])
            what = []
            if c["conflicts"]:
                what.append(f"claims {', '.join(ipv4_text(i) for i in list(c['conflicts'])[:3])} already bound to "
                            f"{', '.join(sorted({mac_text(m) for m in c['conflicts'].values()})[:2])}")
            if unsolicited:
                what.append(f"sent {unsolicited} ARP replies nobody asked for")
            if c["mismatch"]:
                what.append(f"{c['mismatch']} frames with a different Ethernet source")
            gw = f" (gateway {', '.join(gw_hit)})" if gw_hit else ""
            src = ips[0] if ips else None
            out.append(Alert(c["first"], c["last"], "mitm", "arp_spoof", severity, score,
                             f"{mac_text(mac)} {'; '.join(what)}: ARP poisoning to intercept traffic for "
                             f"{claimed}{gw}", self.label, self.host_for(*(victims + ips)), src,
                             victims[0] if victims else None, None, None, "arp",
                             {"mac": mac_text(mac), "claimed_ips": ips, "gateway_ips": gw_hit,
                              "previous_macs": {ipv4_text(i): mac_text(m) for i, m in c["conflicts"].items()},
                              "unsolicited_replies": unsolicited, "ethernet_mismatches": c["mismatch"],
                              "victims": victims[:16]}))
        return out
