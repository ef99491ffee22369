"""A host's traffic to other networks handed to a new MAC address (mitm / gateway_mac_change).

Method: ARP poisoning needs a single forged message (a request whose sender is the gateway's
address with the attacker's MAC will do) and the gateway may never ARP in the capture, so the
bindings alone can miss it. What cannot be hidden is where the victim's frames go: the MAC its
traffic to other networks is addressed to. Per VLAN and host (from the first packets of each
flow, :meth:`detector.l7.tap.L7Tap._next_hops`):

- a **router-like next hop** of a host is a MAC its frames reach ``min_destinations`` (at most
  ``DST_SAMPLE``) or more destination addresses through (a peer on the same link receives
  frames for one: its own); destinations are a bottom-k sample of address hashes, so the count
  is the same whatever the batches;
- a host's next hop **changes** when it moves from one router-like MAC to another that the VLAN
  first used ``settle_s`` or more after the old one (two routers in use from the start, as with
  ECMP, are not a change);
- the new MAC **claims the gateway by ARP** when it sent an ARP message whose sender address is
  a gateway's: configured in ``[site] gateways``, bound to the old MAC by its own ARP, named
  as router by DHCP, or the address ``gateway_min_askers`` hosts ask ARP for (what every host
  of a LAN asks for is its gateway); a router's ARP for its own address is no claim;
- it **relays** when frames carrying the host's source address leave from it (to the old
  gateway): traffic read and passed on.

Change, claim and relay: an ARP man in the middle, critical. Change and claim: high. A change
alone: medium, with both readings in the evidence (a router failover looks the same; VRRP and
HSRP keep their virtual MAC and do not change at all). One alert per new MAC, listing the hosts
it took over.

State is bounded: ``max_hosts`` hosts, ``HOPS_PER_HOST`` next hops each (when full, the one
that carried the fewest destinations, then packets, makes room: on-link peers go first),
``max_hosts`` MACs of ARP claims, bindings and relays.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, ipv4_text, mac_text
from detector.l7.events import Events
from detector.l7.select import DST_SAMPLE
from kernels.xp_ops import distinct, in_sorted

HOPS_PER_HOST = 8
CLAIMS_PER_MAC = 32
IPS_PER_MAC = 64
ASKERS = 16  # hosts counted per address asked for by ARP


class GatewayMac(Detector):
    name = "gateway_mac"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_destinations: int = 3  # at most DST_SAMPLE
        settle_s: float = 30.0
        claim_window_s: float = 600.0  # an ARP claim this long before the change (or after) belongs to it
        gateway_min_askers: int = 3
        max_hosts: int = 100_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.own_mac: dict[tuple[int, str], int] = {}  # (vlan, host address) -> the MAC its frames came from first
        self.hops: dict[tuple[int, str], dict[int, list]] = {}  # -> next-hop MAC -> [first, last, packets, dst set]
        self.relayed: dict[tuple[int, str, int], list] = {}  # (vlan, host, relaying MAC) -> [first, packets, to MACs]
        self.sends_from: dict[int, set[str]] = {}  # MAC -> addresses it sent its own frames from
        self.claims: dict[int, list[tuple[int, str]]] = {}  # MAC -> (time, address) its ARP messages claimed
        self.bound: dict[int, set[str]] = {}  # MAC -> addresses ARP bound to it
        self.askers: dict[str, set[int]] = {}  # address asked for by ARP -> the MACs that asked
        self.dhcp_routers: set[str] = set()
        self.dropped = 0
        self._own_ids = np.zeros(0, np.uint64)  # the next-hop host ids of own_mac's keys (for bulk drops)

    def observe_events(self, events: Events) -> None:
        self._arp(events)
        for ev in events.dhcp:
            for r in (ev.msg.routers or ()) if ev.msg.op == 2 else ():
                if len(self.dhcp_routers) < IPS_PER_MAC:
                    self.dhcp_routers.add(r)
        h = events.next_hops
        if not len(h):
            return
        rows = np.arange(len(h))
        if len(self.own_mac) >= self.p.max_hosts:  # new hosts would be dropped one by one: in bulk
            known = in_sorted(np, h["host_id"], self._own_ids)
            self.dropped += int((~known).sum())
            rows = rows[known]
        added = []
        for ts, vlan, smac, src, dmac, pk, dsts, host in zip(
                *(h.texts(k, rows) for k in ("ts", "vlan", "src_mac", "src", "dst_mac", "packets", "dsts", "host_id"))):
            key = (vlan, src)
            own = self.own_mac.get(key)
            if own is None:
                if len(self.own_mac) >= self.p.max_hosts:
                    self.dropped += 1
                    continue
                own = self.own_mac[key] = smac
                added.append(host)
            if smac != own:  # the host's address, leaving from another MAC: relayed
                if (vlan, src, smac) not in self.relayed and len(self.relayed) >= self.p.max_hosts:
                    self.dropped += 1
                    continue
                r = self.relayed.setdefault((vlan, src, smac), [ts, 0, set()])
                r[0], r[1] = min(r[0], ts), r[1] + pk
                if len(r[2]) < 4:
                    r[2].add(dmac)
                continue
            if smac in self.sends_from or len(self.sends_from) < self.p.max_hosts:
                ips = self.sends_from.setdefault(smac, set())
                if len(ips) < IPS_PER_MAC:
                    ips.add(src)
            hops = self.hops.setdefault(key, {})
            hop = hops.get(dmac)
            if hop is None:
                if len(hops) >= HOPS_PER_HOST:  # an on-link peer (fewest destinations) makes room
                    del hops[min(hops, key=lambda m: (len(hops[m][3]), hops[m][2], m))]
                hop = hops[dmac] = [ts, ts, 0, set()]
            hop[0], hop[1] = min(hop[0], ts), max(hop[1], ts)
            hop[2] += pk
            hop[3] = set(sorted(hop[3] | {d for d in dsts if d})[:DST_SAMPLE])
        if added:
            self._own_ids = distinct(np, np.concatenate([self._own_ids, np.array(added, np.uint64)]))

    def _arp(self, events: Events) -> None:
        a = events.arp
        if not len(a):
            return
        for j in np.flatnonzero(a["spa"] != 0).tolist():
            mac, ip, ts = int(a["sha"][j]), ipv4_text(int(a["spa"][j])), int(a["ts"][j])
            if mac not in self.claims and len(self.claims) >= self.p.max_hosts:
                self.dropped += 1
                continue
            claims = self.claims.setdefault(mac, [])
            if len(claims) < CLAIMS_PER_MAC and (not claims or claims[-1][1] != ip):
                claims.append((ts, ip))
            bound = self.bound.setdefault(mac, set())
            if len(bound) < IPS_PER_MAC:
                bound.add(ip)
            if int(a["op"][j]) == 1 and int(a["tpa"][j]) != int(a["spa"][j]):
                asked = ipv4_text(int(a["tpa"][j]))
                if asked in self.askers or len(self.askers) < self.p.max_hosts:
                    who = self.askers.setdefault(asked, set())
                    if len(who) < ASKERS:
                        who.add(mac)

    def _changes(self):
        """(vlan, new MAC) -> [(host, old MAC, time of the change)]."""
        routers = {}  # (vlan, MAC) -> first time any host used it as a router-like next hop
        for (vlan, _), hops in self.hops.items():
            for mac, (first, _, _, dsts) in hops.items():
                if len(dsts) >= self.p.min_destinations:
                    routers[(vlan, mac)] = min(routers.get((vlan, mac), first), first)
        settle = self.p.settle_s * 1e9
        found: dict[tuple[int, int], list] = {}
        for (vlan, host), hops in self.hops.items():
            used = sorted((first, mac) for mac, (first, _, _, dsts) in hops.items()
                          if len(dsts) >= self.p.min_destinations)
            for (_, old), (t_new, new) in pairwise(used):
                if routers[(vlan, new)] - routers[(vlan, old)] >= settle:
                    found.setdefault((vlan, new), []).append((host, old, t_new))
        return found

    def _claim(self, new: int, old: int, t: int) -> tuple[int, str] | None:
        """An ARP message of ``new`` near ``t`` claiming a gateway's address, if any."""
        gateways = set(self.site.cfg.gateways) | self.bound.get(old, set()) | self.dhcp_routers | {
            ip for ip, who in self.askers.items() if len(who) >= self.p.gateway_min_askers}
        own = self.sends_from.get(new, set())
        w = self.p.claim_window_s * 1e9
        return next(((ts, ip) for ts, ip in self.claims.get(new, [])
                     if t - w <= ts <= t + w and ip in gateways and ip not in own), None)

    def finish(self) -> list[Alert]:
        out = []
        for (vlan, new), moved in self._changes().items():
            hosts = sorted({h for h, _, _ in moved})
            old = moved[0][1]
            t = min(tc for _, _, tc in moved)
            claim = self._claim(new, old, t)
            relays = {h: r for (v, h, m), r in self.relayed.items() if v == vlan and m == new and h in hosts}
            if claim and relays:
                severity, score, what = "critical", 0.97, "an ARP man in the middle: it claimed"
            elif claim:
                severity, score, what = "high", 0.85, "ARP poisoning: it claimed"
            else:
                severity, score, what = "medium", 0.6, "a router failover, or a man in the middle whose ARP was not seen"
            told = f"{what} {claim[1]} by ARP" if claim else what
            relay = f" and passes their traffic on to {mac_text(old)}" if relays else ""
            end = max([t] + [r[0] for r in relays.values()])
            out.append(Alert(
                t, end, "mitm", "gateway_mac_change", severity, score,
                f"The traffic of {', '.join(hosts[:3])}{' and others' if len(hosts) > 3 else ''} to other networks "
                f"went to {mac_text(old)} and now goes to {mac_text(new)}{relay}: {told}",
                self.label, self.host_for(*hosts), hosts[0], claim[1] if claim else None, None, None, None,
                {"vlan": vlan, "new_mac": mac_text(new), "old_mac": mac_text(old), "hosts": hosts[:32],
                 "arp_claim": {"address": claim[1], "ts_ns": claim[0]} if claim else None,
                 "relays": bool(relays), "relayed_packets": sum(r[1] for r in relays.values()),
                 "readings": ["ARP man in the middle"] + ([] if claim else ["router failover"])}))
        return out
