"""gateway_mac as a bounded, mergeable reducer over the tap's next-hop and ARP columns: any
split of the events, merged in any order, gives the one-pass alerts; the caps keep the hosts
seen first and the routers, and count what they drop."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.config import SiteConfig
from detector.detect.gateway_mac import GatewayMac
from detector.detect.keyed_table import KeyedSums
from detector.l7.events import Events, PacketArrays
from detector.site import Site
from kernels.xp_ops import mix64
from tests.merge_splits import split_and_merge

T = 1_700_000_000 * 10**9
S = 10**9
GW, R2, ATT = 0x020000000001, 0x020000000002, 0x020000000066
SITE = Site(SiteConfig(local_nets=["10.0.0.0/24"]))


def ipv4(text: str) -> int:
    a, b, c, d = (int(x) for x in text.split("."))
    return a << 24 | b << 16 | c << 8 | d


def host_id(vlan: int, addr: str) -> int:
    return int(mix64(np, np.array([vlan], np.uint64) ^ mix64(np, np.array([ipv4(addr)], np.uint64)))[0])



def traffic(seed: int) -> tuple[list, list]:
    """Hosts on two VLANs reaching the Internet through the gateway (now and then a second
    router, or an on-link peer); after a switch time some move to a new MAC, which may relay
    their frames to the gateway; hosts ask ARP for the gateway, the new MAC may claim it."""
    rng = random.Random(seed)
    hosts = [(rng.choice([0, 0, 5]), f"10.0.0.{10 + k}", 0x020000001000 + k) for k in range(rng.randrange(2, 7))]
    switch = rng.choice([20, 40, 100]) * S
    victims = set(rng.sample(range(len(hosts)), rng.randrange(1, len(hosts) + 1)))
    new = rng.choice([ATT, R2])
    relays = rng.random() < 0.5
    hops, arps, t = [], [], 0
    for _ in range(rng.randrange(20, 200)):
        t += rng.randrange(1, 3 * S)
        h = rng.randrange(len(hosts))
        vlan, src, mac = hosts[h]
        if rng.random() < 0.15:
            dmac = 0x020000001000 + rng.randrange(3)
            dsts = [dmac]
        else:
            moved = t > switch and h in victims and rng.random() < 0.9
            dmac = new if moved else GW if rng.random() < 0.9 else R2
            dsts = rng.sample(range(1, 40), rng.randrange(1, 4))
        hops.append((T + t, vlan, mac, src, dmac, rng.randrange(1, 3), dsts))
        if dmac == new == ATT and relays and rng.random() < 0.5:
            hops.append((T + t + 1000, vlan, ATT, src, GW, 1, dsts))
        if rng.random() < 0.1:
            kind = rng.random()
            if kind < 0.4:
                arps.append((T + t, 1, mac, ipv4(src), ipv4("10.0.0.1")))
            elif kind < 0.7 and t > switch - 30 * S:
                arps.append((T + t, rng.choice([1, 2]), ATT, ipv4(rng.choice(["10.0.0.1", "10.0.0.254"])), ipv4(src)))
            else:
                arps.append((T + t, 2, GW, ipv4("10.0.0.1"), ipv4(src)))
    return hops, arps


def events(hops: list, arps: list) -> Events:
    ev = Events()
    if hops:
        dsts = np.zeros((len(hops), 4), np.uint64)
        for i, h in enumerate(hops):
            dsts[i, :len(h[6])] = sorted(h[6])[:4]
        ev.next_hops = PacketArrays({
            "ts": np.array([h[0] for h in hops], np.int64), "vlan": np.array([h[1] for h in hops], np.uint16),
            "src_mac": np.array([h[2] for h in hops], np.uint64), "src": pa.array([h[3] for h in hops]),
            "host_id": np.array([host_id(h[1], h[3]) for h in hops], np.uint64),
            "dst_mac": np.array([h[4] for h in hops], np.uint64), "packets": np.array([h[5] for h in hops], np.int64),
            "dsts": dsts})
    if arps:
        ev.arp = PacketArrays({name: np.array([a[k] for a in arps], dtype) for k, (name, dtype) in enumerate(
            (("ts", np.int64), ("op", np.uint16), ("sha", np.uint64), ("spa", np.uint32), ("tpa", np.uint32)))})
    return ev


def alerts(det: GatewayMac) -> list[str]:
    return sorted(str(a.to_dict()) for a in det.finish())


def test_random_traffic_gives_each_kind_of_alert_to_compare():
    found = set()
    for seed in range(40):
        det = GatewayMac(site=SITE)
        det.observe_events(events(*traffic(seed)))
        found |= {a.severity for a in det.finish()}
    assert found == {"critical", "high", "medium"}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_any_split_and_merge_order_gives_the_one_pass_alerts(seed, cuts, order):
    hops, arps = traffic(seed)
    one = GatewayMac(site=SITE)
    one.observe_events(events(hops, arps))
    expected = alerts(one)
    # next hops and ARP messages as one stream of (kind, row), split and merged
    rows = [("hop", h) for h in hops] + [("arp", x) for x in arps]

    def feed(det, batch):
        det.observe_events(events([r for kind, r in batch if kind == "hop"], [r for kind, r in batch if kind == "arp"]))

    first = split_and_merge(lambda: GatewayMac(site=SITE), feed, rows, cuts, order, seed)
    assert alerts(first) == expected


def victim_moves(t0: int = 0) -> list:
    """10.0.0.5 through the gateway to 4 destinations, then (60 s later) through ATT."""
    return [(T + (t0 + k) * S, 0, 0x020000000005, "10.0.0.5", GW if k < 4 else ATT, 1, [k % 4 + 1, 100 + k])
            for k in range(4)] + [(T + (t0 + 60 + k) * S, 0, 0x020000000005, "10.0.0.5", ATT, 1, [200 + k])
                                  for k in range(4)]


def test_past_max_hosts_the_hosts_seen_first_stay_and_the_rest_are_counted():
    det = GatewayMac(GatewayMac.Params(max_hosts=50), SITE)
    spoofed = [(T + (30 + k * 1e-4) * S, 0, GW, f"10.0.{1 + k // 250}.{k % 250}", ATT, 1, [k + 1])
               for k in range(5000)]
    claim = [(T + 59 * S, 1, ATT, ipv4("10.0.0.1"), ipv4("10.0.0.5"))]
    asks = [(T + k * S, 1, 0x020000001000 + k, ipv4(f"10.0.0.{20 + k}"), ipv4("10.0.0.1")) for k in range(3)]
    rows = victim_moves()
    det.observe_events(events(rows[:4], asks))
    for k in range(0, 5000, 500):
        det.observe_events(events(spoofed[k:k + 500], []))
    det.observe_events(events(rows[4:], claim))
    (a,) = det.finish()
    assert a.severity == "high" and a.evidence["hosts"] == ["10.0.0.5"]
    assert a.evidence["arp_claim"]["address"] == "10.0.0.1"
    assert det.evictions >= 5000 - 50 and len(det.own.rows()["host"]) <= 50


def test_past_max_hops_on_link_peers_go_before_routers():
    det = GatewayMac(GatewayMac.Params(max_hops=10), SITE)
    peers = [(T + (1 + k * 0.01) * S, 0, 0x020000000005, "10.0.0.5", 0x020000002000 + k, 5, [k + 1])
             for k in range(200)]
    det.observe_events(events(victim_moves()[:4] + peers + victim_moves()[4:], []))
    (a,) = det.finish()
    assert a.evidence["new_mac"] == "02:00:00:00:00:66" and a.evidence["old_mac"] == "02:00:00:00:00:01"
    assert det.evictions == 200 + 2 - 10  # (gateway, attacker and 200 peers: 202 next hops)


def reference_bottom_k(groups: list[list[int]], k: int) -> list[list[int]]:
    out = []
    for rows in groups:
        vals = sorted({v for v in rows if v})[:k]
        out.append(vals + [0] * (k - len(vals)))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.lists(st.integers(0, 30), min_size=3, max_size=3)), min_size=1,
                max_size=40), st.integers(1, 4))
def test_keyed_sums_sample_keeps_each_keys_distinct_smallest_hashes(rows, parts):
    table = KeyedSums(("key",), {"dsts": "sample"})
    for part in np.array_split(np.arange(len(rows)), parts):
        table.add({"key": np.array([rows[j][0] for j in part], np.int64),
                   "dsts": np.array([rows[j][1] for j in part], np.uint64).reshape(-1, 3)})
    got = table.rows()
    keys = sorted({r[0] for r in rows})
    assert got["key"].tolist() == keys
    expected = reference_bottom_k([[v for key, vals in rows if key == k for v in vals] for k in keys], 3)
    assert got["dsts"].tolist() == expected


def test_claims_long_before_and_after_the_change_are_no_claim():
    """An ARP claim counts when a message came within claim_window_s of the change, not when
    messages before and after it span it."""
    window = GatewayMac.Params().claim_window_s
    rows = victim_moves()
    change = 64  # (the victim's first frame through the new MAC, in seconds)
    asks = [(T + k * S, 1, 0x020000001000 + k, ipv4(f"10.0.0.{20 + k}"), ipv4("10.0.0.1")) for k in range(3)]
    for offsets, claimed in (((-2 * window, 2 * window), False), ((-2 * window, window / 2), True)):
        claims = [(T + int((change + o) * S), 1, ATT, ipv4("10.0.0.1"), ipv4("10.0.0.5")) for o in offsets]
        det = GatewayMac(site=SITE)
        det.observe_events(events(rows, sorted(asks + claims)))
        (a,) = det.finish()
        assert (a.evidence["arp_claim"] is not None) == claimed, offsets


def test_a_held_hosts_later_frames_past_max_hosts_are_not_evictions():
    det = GatewayMac(GatewayMac.Params(max_hosts=2), SITE)
    first = [(T + k * S, 0, 0x020000000100 + k, f"10.0.0.{10 + k}", GW, 1, [k + 1]) for k in range(3)]
    det.observe_events(events(first, []))
    det.own.rows()
    assert det.evictions == 1  # the third host
    later = [(T + (10 + k) * S, 0, 0x020000000100, "10.0.0.10", GW, 1, [k + 1]) for k in range(50)]
    det.observe_events(events(later, []))
    det.own.rows()
    assert det.evictions == 1


def test_a_configured_gateway_claimed_by_arp_needs_no_askers():
    claim = [(T + 63 * S, 1, ATT, ipv4("10.0.0.1"), ipv4("10.0.0.5"))]
    alone = GatewayMac(site=SITE)
    alone.observe_events(events(victim_moves(), claim))
    assert alone.finish()[0].evidence["arp_claim"] is None  # nobody asked for 10.0.0.1: no known gateway
    told = GatewayMac(site=Site(SiteConfig(local_nets=["10.0.0.0/24"], gateways=["10.0.0.1", "fe80::1"])))
    told.observe_events(events(victim_moves(), claim))
    (a,) = told.finish()
    assert a.severity == "high" and a.evidence["arp_claim"]["address"] == "10.0.0.1"
