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

State is columnar and mergeable (issue 21): per (host, source MAC, next-hop MAC) the first and
last time, the packets and the bottom-k destination sample (:class:`KeyedSums`); each host's
own MAC (the source of its earliest frame); per (MAC, address) its ARP messages' first and last
time; per address asked for by ARP, the first ``ASKERS`` MACs that asked. A host's relays and
the addresses a MAC sends from are read from the next hops when a report decides. Bounded:
``max_hosts`` hosts (the latest seen go first), ``max_hops`` next hops (those that carried the
fewest destinations, then packets, go first: on-link peers before routers), ``max_hosts``
ARP claims (the least recent go first) and asked addresses; evictions are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from detector.alerts import Alert
from detector.detect.address_columns import ipv4_values
from detector.detect.base import Detector, ipv4_text, mac_text
from detector.detect.keyed_table import KeyedSums, KeyedTable, Names
from detector.l7.events import Events
from kernels.xp_ops import distinct, group_ids, group_starts, in_sorted

ASKERS = 16  # MACs counted per address asked for by ARP
MAX_DHCP_ROUTERS = 64


def _fewest_destinations_out(cols: dict) -> np.ndarray:
    """Past ``max_hops``, the next hops that carried the fewest destinations, then packets, go
    first: on-link peers (one destination: their own) before routers."""
    return np.count_nonzero(cols["dsts"], axis=1).astype(np.int64) << 40 | np.minimum(cols["packets"], (1 << 40) - 1)


def _latest_out(cols: dict) -> np.ndarray:
    """Past ``max_hosts``, the hosts (asked addresses) first seen latest go first."""
    return -cols["ts"]


def _least_recent_out(cols: dict) -> np.ndarray:
    """Past ``max_hosts`` ARP claims, those not repeated for longest go first."""
    return cols["last"]


class Hops(NamedTuple):
    """Next-hop rows (a :class:`KeyedSums` of (host, smac, dmac)) with each host's own MAC."""

    rows: dict
    own: np.ndarray  # the own MAC of each row's host (-1: host not held)

    def of_host(self, mine: bool) -> np.ndarray:
        """The rows whose source MAC is (``mine``) or is not (relayed) the host's own."""
        known = self.own >= 0
        same = self.rows["smac"].astype(np.int64) == self.own
        return known & (same if mine else ~same)


class Change(NamedTuple):
    vlan: int
    new: int
    host: np.uint64
    old: int
    ts: int


class Move(NamedTuple):
    """A new MAC that took over the next hop of ``hosts`` from ``old`` at ``ts``."""

    vlan: int
    new: int
    old: int
    ts: int
    hosts: list[str]


class GatewayMac(Detector):
    name = "gateway_mac"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        min_destinations: int = 3  # at most DST_SAMPLE
        settle_s: float = 30.0
        claim_window_s: float = 600.0  # an ARP claim this long before the change (or after) belongs to it
        gateway_min_askers: int = 3
        max_hosts: int = 100_000
        max_hops: int = 400_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        p = self.p
        self.hops = KeyedSums(("host", "smac", "dmac"), {"vlan": "min", "first": "min", "packets": "sum",
                                                          "dsts": "sample"},
                              p.max_hops, _fewest_destinations_out)
        # first come, first kept (threshold): past max_hosts, hosts first seen later are not taken in
        self.own = KeyedTable(("host",), ("ts", "smac"), 1, p.max_hosts, _latest_out, threshold=True)
        # ARP messages' first and last time per (MAC, address, window of claim_window_s): whether
        # one came within the window of a change is then exact
        self.claims = KeyedSums(("mac", "ip", "w"), {"first": "min", "last": "max"}, p.max_hosts, _least_recent_out)
        self.window_ns = max(1, int(p.claim_window_s * 1e9))
        self.askers = KeyedTable(("ip",), ("mac",), ASKERS, p.max_hosts, _latest_out, unique=True)
        self.hosts = Names()  # the address text of each host id
        self.dhcp_routers: set[str] = set()

    @property
    def evictions(self) -> int:
        return sum(t.evicted for t in (self.hops, self.own, self.claims, self.askers))

    def merge(self, other: GatewayMac) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        for mine, theirs in ((self.hops, other.hops), (self.own, other.own), (self.claims, other.claims),
                             (self.askers, other.askers)):
            mine.merge(theirs)
        self.hosts.merge(other.hosts)
        self._dhcp_routers(other.dhcp_routers)

    def _dhcp_routers(self, routers) -> None:
        self.dhcp_routers = set(sorted(self.dhcp_routers | set(routers))[:MAX_DHCP_ROUTERS])

    def observe_events(self, events: Events) -> None:
        self._arp(events)
        routers = {r for ev in events.dhcp if ev.msg.op == 2 for r in ev.msg.routers or ()}
        if routers:
            self._dhcp_routers(routers)
        h = events.next_hops
        if not len(h):
            return
        host = h["host_id"].astype(np.uint64)
        smac, ts = h["src_mac"].astype(np.uint64), h["ts"].astype(np.int64)
        self.own.add({"host": host, "ts": ts, "smac": smac})
        rows = slice(None)
        if self.own.floor is not None:  # hosts past max_hosts (a flood's spoofed sources): not kept
            rows = np.flatnonzero(in_sorted(np, host, distinct(np, self.own.rows()["host"])))
            host, smac, ts = host[rows], smac[rows], ts[rows]
        self.hops.add({"host": host, "smac": smac, "dmac": h["dst_mac"][rows].astype(np.uint64),
                       "vlan": h["vlan"][rows].astype(np.int64), "first": ts,
                       "packets": h["packets"][rows].astype(np.int64), "dsts": h["dsts"][rows].astype(np.uint64)})
        _, first = group_ids(np, host)
        self.hosts.add(host[first], _take(h["src"], np.arange(len(h))[rows][first]))
        self.hosts.prune(lambda: [self.own.rows()["host"]])

    def _arp(self, events: Events) -> None:
        a = events.arp
        if not len(a):
            return
        rows = np.flatnonzero(a["spa"] != 0)
        if not len(rows):
            return
        ts, mac, spa = a["ts"][rows].astype(np.int64), a["sha"][rows].astype(np.uint64), a["spa"][rows].astype(np.int64)
        self.claims.add({"mac": mac, "ip": spa, "w": ts // self.window_ns, "first": ts, "last": ts})
        asks = (a["op"][rows] == 1) & (a["tpa"][rows] != a["spa"][rows])
        self.askers.add({"ip": a["tpa"][rows][asks].astype(np.int64), "mac": mac[asks], "ts": ts[asks]})

    def _hops(self) -> Hops | None:
        H, O = self.hops.rows(), self.own.rows()
        if not H or not O:
            return None
        pos = np.minimum(np.searchsorted(O["host"], H["host"]), len(O["host"]) - 1)
        own = np.where(O["host"][pos] == H["host"], O["smac"][pos].astype(np.int64), -1)
        return Hops(H, own)

    def _changes(self, hops: Hops) -> list[Change]:
        """Each host's moves from one router-like next hop to another that its VLAN first used
        ``settle_s`` or more after the old one."""
        H = hops.rows
        rows = np.flatnonzero(hops.of_host(True)
                              & (np.count_nonzero(H["dsts"], axis=1) >= self.p.min_destinations))
        if not len(rows):
            return []
        host, vlan, mac, first = H["host"][rows], H["vlan"][rows], H["dmac"][rows], H["first"][rows]
        router, _ = group_ids(np, vlan, mac)  # (VLAN, MAC) -> first time any host used it as a router
        since = np.full(int(router.max()) + 1, np.iinfo(np.int64).max)
        np.minimum.at(since, router, first)
        order = np.lexsort((mac, first, host))  # each host's router-like hops, in order of first use
        host, vlan, mac, first, router = host[order], vlan[order], mac[order], first[order], router[order]
        step = np.flatnonzero((host[1:] == host[:-1])
                              & (since[router[1:]] - since[router[:-1]] >= self.p.settle_s * 1e9))
        return [Change(int(vlan[j + 1]), int(mac[j + 1]), host[j + 1], int(mac[j]), int(first[j + 1]))
                for j in step.tolist()]

    def _gateways(self, old: set[int]) -> set[int]:
        """Gateway addresses (IPv4 values): configured, bound to one of the ``old`` MACs by its
        own ARP, named as router by DHCP, or asked for by ``gateway_min_askers`` hosts."""
        named = pa.array([str(ip) for ip in (*self.site.cfg.gateways, *self.dhcp_routers)], pa.string())
        is_v4, value = ipv4_values(named)
        out = set(value[is_v4].tolist())
        C = self.claims.rows()
        if C:
            out |= set(C["ip"][np.isin(C["mac"], np.array(sorted(old), np.uint64))].tolist())
        A = self.askers.rows()
        if A:
            starts = np.flatnonzero(group_starts(np, [A["ip"]]))
            asked = np.diff(np.append(starts, len(A["ip"])))
            out |= set(A["ip"][starts][asked >= self.p.gateway_min_askers].tolist())
        return out

    def _claim(self, new: int, old: set[int], t: int, sends_from: set[str]) -> tuple[int, str] | None:
        """An ARP claim by ``new`` of a gateway's address that is not its own, sent within
        ``claim_window_s`` of ``t``: (its time, the address); the earliest such time known."""
        C = self.claims.rows()
        if not C:
            return None
        w, b = self.window_ns, t // self.window_ns
        mine = C["mac"] == np.uint64(new)
        # the window t +- w covers the whole of t's own claim window, the end of the one before
        # and the start of the one after: a message inside it is then known for certain
        when = np.where(C["w"] == b, C["first"],
                        np.where((C["w"] == b - 1) & (C["last"] >= t - w), C["last"],
                                 np.where((C["w"] == b + 1) & (C["first"] <= t + w), C["first"], -1)))
        gateways = self._gateways(old)
        found = [(int(when[j]), ipv4_text(int(C["ip"][j]))) for j in np.flatnonzero(mine & (when >= 0)).tolist()
                 if int(C["ip"][j]) in gateways]
        return min((c for c in found if c[1] not in sends_from), default=None)

    def finish(self) -> list[Alert]:
        hops = self._hops()
        if hops is None:
            return []
        moves: dict[tuple[int, int], list[Change]] = {}
        for c in self._changes(hops):
            moves.setdefault((c.vlan, c.new), []).append(c)
        if not moves:
            return []
        H = hops.rows
        relayed, own_rows = np.flatnonzero(hops.of_host(False)), np.flatnonzero(hops.of_host(True))
        out = []
        for (vlan, new), moved in moves.items():
            host_ids = np.array(sorted({c.host for c in moved}), np.uint64)
            hosts = sorted(self.hosts.text(host_ids))
            first = min(moved, key=lambda c: (c.ts, c.host))  # the earliest move names the old MAC
            old, t = first.old, first.ts
            sent = own_rows[H["smac"][own_rows] == np.uint64(new)]
            claim = self._claim(new, {c.old for c in moved}, t, set(self.hosts.text(np.unique(H["host"][sent]))))
            relay = relayed[(H["smac"][relayed] == np.uint64(new)) & np.isin(H["host"][relayed], host_ids)
                            & (H["vlan"][relayed] == vlan)]
            out.append(self._alert(Move(vlan, new, old, t, hosts), claim, _relay(H, relay)))
        return out

    def _alert(self, m: Move, claim: tuple[int, str] | None, relay: tuple[int, int] | None) -> Alert:
        if claim and relay:
            severity, score, what = "critical", 0.97, "an ARP man in the middle: it claimed"
        elif claim:
            severity, score, what = "high", 0.85, "ARP poisoning: it claimed"
        else:
            severity, score, what = "medium", 0.6, "a router failover, or a man in the middle whose ARP was not seen"
        told = f"{what} {claim[1]} by ARP" if claim else what
        passes = f" and passes their traffic on to {mac_text(m.old)}" if relay else ""
        hosts = m.hosts
        return Alert(
            m.ts, max(m.ts, relay[0]) if relay else m.ts, "mitm", "gateway_mac_change", severity, score,
            f"The traffic of {', '.join(hosts[:3])}{' and others' if len(hosts) > 3 else ''} to other networks "
            f"went to {mac_text(m.old)} and now goes to {mac_text(m.new)}{passes}: {told}",
            self.label, self.host_for(*hosts), hosts[0], claim[1] if claim else None, None, None, None,
            {"vlan": m.vlan, "new_mac": mac_text(m.new), "old_mac": mac_text(m.old), "hosts": hosts[:32],
             "arp_claim": {"address": claim[1], "ts_ns": claim[0]} if claim else None,
             "relays": bool(relay), "relayed_packets": relay[1] if relay else 0,
             "readings": ["ARP man in the middle"] + ([] if claim else ["router failover"])})


def _relay(H: dict, rows: np.ndarray) -> tuple[int, int] | None:
    """Of the relayed next-hop rows ``rows``: when the last of their hosts began to be relayed,
    and the packets relayed."""
    if not len(rows):
        return None
    order = np.lexsort((H["first"][rows], H["host"][rows]))
    began = H["first"][rows][order][group_starts(np, [H["host"][rows][order]])]
    return int(began.max()), int(H["packets"][rows].sum())


def _take(col, rows: np.ndarray) -> pa.Array:
    """``col`` (Arrow strings or a NumPy array) at ``rows``, as Arrow."""
    return col.take(pa.array(rows)) if isinstance(col, pa.Array) else pa.array(col[rows].tolist(), pa.string())
