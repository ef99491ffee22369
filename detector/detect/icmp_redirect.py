"""ICMP redirects from hosts that are not routers (mitm / icmp_redirect).

Method: an ICMP Redirect (IPv4 type 5, ICMPv6 type 137) tells a host to send traffic for a
destination through another next hop. Only routers may send them (RFC 1122 3.2.2.2, RFC 4861
8.1); from any other host it is a route hijack. Redirects from ``site.routers`` and
``site.gateways`` are accepted unless their Ethernet source is not the router's own MAC address
(learned from the router's ARP messages): hosts only obey redirects from their current
gateway, so attackers (netwox 86, Ettercap) forge its address from their own interface.
On IPv6 links the routers announce themselves: redirects from a host that sent Router
Advertisements (type 134), from the MAC address it advertised from, are what RFC 4861 lets a
first-hop router do, and are reported at low severity only (a rogue advertiser would look the
same; rogue advertisements are not yet a detection of their own). One alert per sender:
medium, high from ``high_count`` redirects on or when forged; low when every redirect came from
an advertised router.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, ipv4_text, mac_text, widen
from detector.l7.events import Events

MAX_ROUTERS = 4096


class IcmpRedirect(Detector):
    name = "icmp_redirect"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        high_count: int = 3

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.senders: dict[str, dict] = {}
        self.router_macs: dict[str, int] = {}
        self.advertised: set[str] = set()  # IPv6 routers that sent a Router Advertisement

    def _is_router(self, addr: str) -> bool:
        return addr in self.site.routers or addr in self.site.gateways or addr in self.advertised

    def _configured(self, addr: str) -> bool:
        return addr in self.site.routers or addr in self.site.gateways

    def _learn_router_macs(self, events: Events) -> None:
        a = events.arp
        for j in np.flatnonzero(a["spa"] != 0).tolist() if len(a) else ():
            ip = ipv4_text(int(a["spa"][j]))
            if self._is_router(ip) and ip not in self.router_macs:
                self.router_macs[ip] = int(a["sha"][j])
        i = events.icmp
        for j in np.flatnonzero(i["v6"] & (i["type"] == 134)).tolist() if len(i) else ():
            src = i["src"][j]
            if src not in self.advertised and len(self.advertised) < MAX_ROUTERS:
                self.advertised.add(src)
                self.router_macs.setdefault(src, int(i["eth_src"][j]))

    def observe_events(self, events: Events) -> None:
        self._learn_router_macs(events)
        a = events.icmp
        if not len(a):
            return
        redir = np.flatnonzero(((~a["v6"]) & (a["type"] == 5)) | (a["v6"] & (a["type"] == 137)))
        for j in redir.tolist():
            src = a["src"][j]
            forged = advertised = False
            if self._is_router(src):
                known = self.router_macs.get(src)
                if known is None or known == int(a["eth_src"][j]):
                    if self._configured(src):
                        continue
                    advertised = True
                else:
                    forged = True
            head = bytes(a["head"][j])
            if a["v6"][j]:
                target = str(ipaddress.IPv6Address(head[8:24])) if len(head) >= 24 else "?"
            else:
                target = str(ipaddress.IPv4Address(head[4:8])) if len(head) >= 8 else "?"
            s = self.senders.setdefault(src, {"first": int(a["ts"][j]), "last": 0, "count": 0, "victims": set(),
                                              "gateways": set(), "mac": mac_text(a["eth_src"][j]),
                                              "forged": False, "advertised_only": True})
            s["forged"] |= forged
            s["advertised_only"] &= advertised
            widen(s, int(a["ts"][j]))
            s["count"] += 1
            s["victims"].add(a["dst"][j])
            s["gateways"].add(target)

    def finish(self) -> list[Alert]:
        out = []
        for src, s in self.senders.items():
            high = s["count"] >= self.p.high_count or s["forged"]
            victims = sorted(s["victims"])
            if s["advertised_only"]:
                severity, score, who = "low", 0.3, f"{src}, a router by its own advertisement,"
            else:
                severity, score = ("high", 0.8) if high else ("medium", 0.6)
                who = f"{s['mac']}, forging the router {src}," if s["forged"] else f"{src}, not a known router,"
            out.append(Alert(s["first"], s["last"], "mitm", "icmp_redirect", severity, score,
                             f"{who} sent {s['count']} ICMP redirect(s) to "
                             f"{', '.join(victims[:3])} pointing at {', '.join(sorted(s['gateways'])[:3])}: "
                             "rerouting their traffic", self.label, self.host_for(*victims, src), src, victims[0],
                             None, None, "icmp",
                             {"redirects": s["count"], "victims": victims[:16], "new_gateways": sorted(s["gateways"]),
                              "sender_mac": s["mac"], "forged_router_address": s["forged"],
                              "advertised_router": s["advertised_only"],
                              "router_mac": mac_text(self.router_macs[src]) if s["forged"] else None}))
        return out
