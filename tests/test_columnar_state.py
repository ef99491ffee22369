"""Columnar detector state (issue 21): address columns computed over Arrow buffers agree with
the standard library value for value; keyed tables fold batches in any split and order into
the same rows, merge, and evict at their cap with the evictions counted; port_scan keeps its
findings under a spoofed flood that overflows its tables."""

from __future__ import annotations

import random
import socket
import zlib

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.detect.address_columns import crc32_column, ipv4_values, string_ids
from detector.detect.base import FlowView
from detector.detect.keyed_table import KeyedTable, Names
from detector.detect.port_scan import PortScan
from detector.detect.sample import DistinctSample
from detector.site import NetSet
from tests.test_scan_evidence import S, T, attempt, records, targets

octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["256", "999", "01", "00", "", "-1", "1a", " 1"]))
dotted = st.lists(octet, min_size=3, max_size=5).map(".".join)
text = st.one_of(dotted, st.text(max_size=20), st.sampled_from(["::1", "fe80::1", "::ffff:10.0.0.1", "1.2.3.4 "]))


def inet4(s: str) -> int | None:
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, s), "big")
    except (OSError, ValueError):
        return None


@settings(max_examples=300, deadline=None)
@given(st.lists(text, max_size=40))
def test_ipv4_values_agree_with_inet_pton(values):
    ok, v = ipv4_values(pa.array(values, pa.string()))
    expected = [inet4(s) for s in values]
    assert ok.tolist() == [e is not None for e in expected]
    assert [int(x) for x, e in zip(v, expected) if e is not None] == [e for e in expected if e is not None]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=70)), max_size=30))
def test_crc32_column_is_zlibs(values):
    got = crc32_column(pa.array(values, pa.string())).tolist()
    assert got == [0 if s is None else zlib.crc32(s.encode()) for s in values]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=50), min_size=1, max_size=30), st.text(max_size=60))
def test_string_ids_do_not_depend_on_the_other_values_of_the_array(values, other):
    alone = string_ids(pa.array(values, pa.string()))
    mixed = string_ids(pa.array(values + [other], pa.string()))[:-1]
    sliced = string_ids(pa.array([other] + values, pa.string()).slice(1))
    assert alone.tolist() == mixed.tolist() == sliced.tolist()
    by_value = dict(zip(values, alone.tolist()))
    assert len(set(by_value.values())) == len(by_value)  # distinct strings, distinct ids


def test_string_ids_have_no_collision_among_a_million_addresses():
    rng = np.random.default_rng(5)
    v4 = [f"{a}.{b}.{c}.{d}" for a, b, c, d in rng.integers(0, 256, (500_000, 4)).tolist()]
    v6 = [f"2001:db8:{a:x}::{b:x}" for a, b in rng.integers(0, 65536, (500_000, 2)).tolist()]
    values = list(set(v4 + v6))
    assert len(np.unique(string_ids(pa.array(values)))) == len(values)


def test_member_matches_netset_for_ipv4_and_ipv6():
    nets = NetSet(["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32", "::ffff:172.16.0.0/108"])
    values = ["10.1.2.3", "11.0.0.1", "192.168.1.200", "192.168.2.1", "2001:db8::5", "2001:db9::1",
              "::ffff:172.16.0.9", "not an address", "0.0.0.0"]
    view = FlowView(pa.RecordBatch.from_pydict({"h": values + values[::-1]}))
    assert view.member("h", nets).tolist() == [v in nets for v in values + values[::-1]]


def table() -> KeyedTable:
    return KeyedTable(("src", "dst"), ("t", "port"))


def random_rows(rng, n):
    return {"src": rng.integers(0, 20, n).astype(np.uint64), "dst": rng.integers(0, 30, n).astype(np.uint64),
            "t": rng.integers(0, 1000, n), "port": rng.integers(0, 5, n).astype(np.int32)}


def earliest_by_key(rows):
    best = {}
    for s, d, t, p in zip(*(rows[k].tolist() for k in ("src", "dst", "t", "port"))):
        best[(s, d)] = min(best.get((s, d), (t, p)), (t, p))
    return sorted((s, d, t, p) for (s, d), (t, p) in best.items())


def held(tab):
    rows = tab.rows()
    return list(zip(*(rows[k].tolist() for k in ("src", "dst", "t", "port"))))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 3000), st.lists(st.integers(1, 3000), max_size=6))
def test_keyed_table_folds_any_split_and_merge_order_into_one_pass(seed, n, cuts):
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, n)
    one = table()
    one.add(rows)
    assert held(one) == earliest_by_key(rows)
    # the same rows in random batches, spread over three tables merged in a random order
    perm = rng.permutation(n)
    bounds = [0] + sorted(c % n for c in cuts) + [n]
    parts = [table() for _ in range(3)]
    for a, b in zip(bounds, bounds[1:]):
        parts[int(rng.integers(0, 3))].add({k: v[perm[a:b]] for k, v in rows.items()})
    random.Random(seed).shuffle(parts)
    merged = parts[0]
    for other in parts[1:]:
        merged.merge(other)
    assert held(merged) == held(one)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 2000), st.integers(1, 12), st.integers(1, 4), st.booleans())
def test_rows_dropped_on_sight_past_a_full_key_change_nothing(seed, n, batches, keep, unique):
    """Once folded, a key holding ``keep`` rows drops added rows that rank after its last one
    without holding them: the table is still the one pass's, whatever the batches."""
    rng = np.random.default_rng(seed)
    rows = {"src": rng.integers(0, 6, n).astype(np.uint64), "dst": rng.integers(0, 3, n).astype(np.uint64),
            "t": rng.integers(0, 50, n), "port": rng.integers(0, 3, n).astype(np.int32)}
    one = KeyedTable(("src", "dst"), ("t", "port"), keep, unique=unique)
    one.add(rows)
    split = KeyedTable(("src", "dst"), ("t", "port"), keep, unique=unique)
    for part in np.array_split(np.arange(n), batches):
        split.add({k: v[part] for k, v in rows.items()})
        split.rows()  # a fold after each batch: the next batch meets full keys
    assert held(split) == held(one)


def test_a_full_key_drops_later_rows_on_sight():
    tab = KeyedTable(("src",), ("t",), 2)
    tab.add({"src": np.array([1, 1, 2], np.uint64), "t": np.array([5, 7, 9])})
    tab.rows()
    tab.add({"src": np.array([1, 1, 1, 2], np.uint64), "t": np.array([8, 7, 6, 10])})
    assert [len(p["src"]) for p in tab._pending] == [3]  # key 1 is full up to t=7: its t=8 is dropped
    assert tab.rows()["t"].tolist() == [5, 6, 9, 10]


def test_keyed_table_keeps_the_first_rows_of_each_key():
    tab = KeyedTable(("k",), ("t",), keep=2)
    tab.add({"k": np.array([1, 1, 1, 2]), "t": np.array([30, 10, 20, 5])})
    tab.add({"k": np.array([1, 2]), "t": np.array([5, 50])})
    rows = tab.rows()
    assert list(zip(rows["k"].tolist(), rows["t"].tolist())) == [(1, 5), (1, 10), (2, 5), (2, 50)]


def test_keyed_table_evicts_the_lowest_priority_rows_at_its_cap_and_counts_them():
    def rows_of_key(cols):
        _, inverse, counts = np.unique(cols["k"], return_inverse=True, return_counts=True)
        return counts[inverse]

    tab = KeyedTable(("k", "v"), ("t",), cap=5, priority=rows_of_key)
    tab.add({"k": np.array([1, 1, 1, 7, 8, 9, 2, 2]), "v": np.arange(8), "t": np.zeros(8, np.int64)})
    rows = tab.rows()
    assert tab.evicted == 3 and len(tab) == 5
    # the keys with most rows stay: single-row keys (a spoofed flood's sources) go first
    assert sorted(rows["k"].tolist()) == [1, 1, 1, 2, 2]


def test_names_give_the_text_of_held_ids_and_forget_the_rest():
    names = Names()
    values = pa.array(["10.0.0.1", "10.0.0.2", "fe80::1"])
    ids = string_ids(values)
    names.add(ids, values)
    names.add(ids[:1], values.slice(0, 1))  # again: kept once
    assert len(names) == 3 and names.text(ids[::-1]) == ["fe80::1", "10.0.0.2", "10.0.0.1"]
    names.keep_only(ids[1:2])
    assert len(names) == 1 and names.text(ids[1:2]) == ["10.0.0.2"]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=12), max_size=400), st.integers(1, 40))
def test_distinct_sample_takes_the_same_values_with_hashes_given(values, size):
    one, batched = DistinctSample(size), DistinctSample(size)
    for v in values:
        one.add(v)
    for a in range(0, len(values), 37):
        chunk = pa.array(values[a:a + 37], pa.string())
        batched.add_hashed(chunk, crc32_column(chunk).astype(np.int64))
    assert batched.items() == one.items() and len(batched) == len(one)


def test_port_scan_keeps_a_scanner_through_a_flood_that_overflows_its_tables():
    """30,000 one-packet spoofed sources, against a table of 2,000 rows: the flood's sources
    are evicted (and counted), the scanner's 40 ports stay and are reported."""
    det = PortScan(PortScan.Params(max_contacts=2_000))
    rng = np.random.default_rng(3)
    flood = [attempt("10.0.0.9", k * 1e-4, src=f"{a}.{b}.{c}.{d}")
             for k, (a, b, c, d) in enumerate(rng.integers(1, 224, (30_000, 4)).tolist())]
    scan = [attempt("10.0.0.7", 1 + k * 0.01, port=1000 + k, src="198.51.100.66") for k in range(40)]
    rows = flood[:15_000] + scan + flood[15_000:]
    for a in range(0, len(rows), 4096):
        det.observe_flows(records(rows[a:a + 4096]))
    alerts = det.finish()
    (scanned,) = [a for a in alerts if a.technique == "port_scan"]
    assert scanned.src_ip == "198.51.100.66" and scanned.evidence["port_count"] == 40
    assert det.evictions >= 2 * (30_000 - 2_000)  # failed contacts and first contacts alike
    distributed = [a for a in alerts if a.technique == "distributed_scan"]
    assert distributed == []  # one port on the target: a flood, not probing of services


def test_port_scan_alerts_are_the_same_in_any_batches_and_order():
    rows = ([attempt(d, k * 0.5, src="10.0.0.5") for k, d in enumerate(targets(30))]
            + [attempt("10.0.0.8", 100 + k, port=2000 + k, src="10.0.0.6") for k in range(20)]
            + [attempt(d, 200 + k, failed=k % 3 == 0, src="10.0.0.4") for k, d in enumerate(targets(40, v6=True))])
    one = PortScan()
    one.observe_flows(records(rows))
    expected = [a.to_dict() for a in one.finish()]
    assert {a["technique"] for a in expected} >= {"address_sweep", "port_scan"}
    rng = random.Random(11)
    for _ in range(5):
        shuffled = rows[:]
        rng.shuffle(shuffled)
        det = PortScan()
        cut = sorted(rng.sample(range(1, len(rows)), 4))
        for a, b in zip([0] + cut, cut + [len(rows)]):
            det.observe_flows(records(shuffled[a:b]))
        assert [a.to_dict() for a in det.finish()] == expected
        assert [a.to_dict() for a in det.finish()] == expected  # a second report: the same


def test_bench_flood_scenario_is_a_flood_of_distinct_sources():
    from detector.synth.scenarios import SCENARIOS

    sc = SCENARIOS["bench-syn-flood"](packets=20_000, seed=2)
    spec = sc.packets
    assert len(spec) == 20_000
    syn = spec.dport == 443
    assert syn.sum() >= 19_800 and len(np.unique(spec.src_lo[syn])) > 0.99 * syn.sum()
    assert [i["technique"] for i in sc.labels["incidents"]] == ["syn_flood"]



def test_names_say_none_for_an_id_they_were_not_given():
    names = Names()
    assert names.text(np.array([7], np.uint64)) == [None]
    values = pa.array(["10.0.0.1", "10.0.0.3"])
    names.add(string_ids(values), values)
    assert names.text(string_ids(pa.array(["10.0.0.2", "10.0.0.3", "zzz"]))) == [None, "10.0.0.3", None]


def openers(pairs, t0=0):
    """Connection openers (MAC, address), one a second from ``t0``."""
    from detector.l7.events import Events, PacketArrays

    return Events(initiators=PacketArrays({"ts": (t0 + np.arange(len(pairs))) * 10**9,
                                           "mac": np.array([m for m, _ in pairs], np.uint64),
                                           "addr": np.array([a for _, a in pairs], dtype=object)}))


def test_a_hosts_addresses_repeated_in_a_batch_do_not_make_it_a_router():
    host = [(5, f"10.0.0.{k}") for k in range(1, 6)]
    det = PortScan()
    det.observe_events(openers(host + host))  # a batch merged from two parts repeats its openers
    assert det._same_host("10.0.0.3") == {a for _, a in host}


def test_an_address_first_seen_behind_a_router_stays_alone_in_any_batches():
    router = [(9, f"198.51.100.{k}") for k in range(1, 13)]
    later = [(5, "198.51.100.3"), (5, "10.0.0.7")]
    whole, split = PortScan(), PortScan()
    whole.observe_events(openers(router + later))
    split.observe_events(openers(router[:4]))
    split.observe_events(openers(router[4:] + later, t0=4))
    swapped = PortScan()  # the later batch first: a host's earliest opening still decides
    swapped.observe_events(openers(router[4:] + later, t0=4))
    swapped.observe_events(openers(router[:4]))
    for det in (whole, split, swapped):
        assert det._same_host("198.51.100.3") == {"198.51.100.3"}
        assert det._same_host("10.0.0.7") == {"10.0.0.7"}
    # known as a router's from the start: first come (earliest) first
    bulk = PortScan()
    bulk.observe_events(openers(router))
    bulk.observe_events(openers([(5, "10.0.0.8"), (9, "10.0.0.8"), (9, "198.51.100.77"), (5, "198.51.100.77"),
                                 (5, "10.0.0.9")], t0=20))
    assert bulk._same_host("10.0.0.8") == {"10.0.0.8", "10.0.0.9"}
    assert bulk._same_host("198.51.100.77") == {"198.51.100.77"}


def test_bittorrent_answers_do_not_make_a_peer_to_peer_client():
    row = attempt("10.0.0.9", 0, failed=False, src="10.0.0.5", service="bittorrent")
    det = PortScan()
    det.observe_flows(records([dict(row, orig_pkts=0)]))
    assert det.p2p == set()
    det.observe_flows(records([row]))
    assert det.p2p == {"10.0.0.5"}


def test_merged_events_join_arrow_and_object_text_columns_in_time_order():
    from detector.l7.events import Events, PacketArrays, merge_events

    def opener(t, addr):
        return Events(initiators=PacketArrays({"ts": np.array([t]), "mac": np.array([1], np.uint64), "addr": addr}))

    arrow, objects = opener(2, pa.array(["10.0.0.2"])), opener(1, np.array(["10.0.0.1"], dtype=object))
    for parts in ([arrow, objects], [objects, arrow]):
        merged = merge_events(parts).initiators
        assert merged.texts("addr", np.arange(2)) == ["10.0.0.1", "10.0.0.2"]


def hop_rows(seed: int, n: int) -> list[dict]:
    """TCP connections among a few hosts, IPv4 and IPv6, with TTLs that now and then move
    within a connection (injection) or between connections (a new path)."""
    rng = random.Random(seed)
    hosts = [f"10.0.0.{k}" for k in range(1, 6)] + [f"2001:db8::{k}" for k in range(1, 4)]
    rows = []
    for k in range(n):
        o, r = rng.sample(hosts, 2)
        ttl_o, ttl_r = rng.choice([64, 128, 255, 60, 52]), rng.choice([64, 50, 118, 240])
        ttl_r -= rng.choice([0] * 6 + [6, 20])
        rows.append({"ts": T + rng.randrange(0, 10**12, 10**6), "uid": f"C{k:05d}", "orig_h": o, "resp_h": r,
                     "orig_p": 40000 + k, "resp_p": rng.choice([22, 443]), "proto": "tcp",
                     "history": rng.choice(["ShADadFf", "ShAD", "S", "DdA", "Dd"]), "duration": 1.0,
                     "community_id": rng.choice(["1:a", "1:b", None]),
                     "orig_ttl_min": ttl_o - rng.choice([0] * 19 + [30]), "orig_ttl_max": ttl_o,
                     "resp_ttl_min": ttl_r, "resp_ttl_max": ttl_r})
    return rows


def hop_records(rows: list[dict]) -> FlowView:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("ns"))
    cols["community_id"] = pa.array(cols["community_id"], pa.string())
    for k in ("orig_ttl_min", "orig_ttl_max", "resp_ttl_min", "resp_ttl_max"):
        cols[k] = pa.array(cols[k], pa.uint8())
    return FlowView(pa.RecordBatch.from_pydict(cols))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 300), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_ttl_change_any_split_and_merge_order_gives_the_one_pass_alerts(seed, n, cuts, order):
    from detector.detect.ttl_change import TtlChange
    rows = hop_rows(seed, n)
    one = TtlChange()
    one.observe_flows(hop_records(rows))
    expected = sorted(str(a.to_dict()) for a in one.finish())
    rng = random.Random(seed)
    rng.shuffle(rows)
    at = sorted({int(c * n) for c in cuts} - {0, n})
    parts = [TtlChange() for _ in range(3)]
    for k, (a, b) in enumerate(zip([0] + at, at + [n])):
        parts[k % 3].observe_flows(hop_records(rows[a:b]))
    first, *rest = parts[order % 3:] + parts[:order % 3]
    for other in rest:
        first.merge(other)
    assert sorted(str(a.to_dict()) for a in first.finish()) == expected
    assert first.learned() == one.learned()


def test_ttl_change_settles_a_peer_and_reports_its_move_once():
    from detector.detect.ttl_change import TtlChange
    peer, me = "192.0.2.9", "10.0.0.1"

    def conn(k, ttl):
        return {"ts": T + k * S, "uid": f"C{k}", "orig_h": me, "resp_h": peer, "orig_p": 40000 + k, "resp_p": 443,
                "proto": "tcp", "history": "ShADadFf", "duration": 1.0, "community_id": None,
                "orig_ttl_min": 64, "orig_ttl_max": 64, "resp_ttl_min": ttl, "resp_ttl_max": ttl}

    p = TtlChange.Params()
    det = TtlChange()
    # settled at 64 - 50 = 14 hops over peer_min_connections connections, then 5 hops closer, twice
    det.observe_flows(hop_records([conn(k, 50) for k in range(p.peer_min_connections)] + [conn(10, 55), conn(11, 55)]))
    (moved,) = det.finish()
    assert (moved.src_ip, moved.dst_ip, moved.evidence["hops_before"], moved.evidence["hops_now"]) == (peer, me, 14, 9)
    assert moved.evidence["connections"] == 2 and moved.evidence["uid"] == "C10"
    assert det.learned()["peers"][peer] == [14, p.peer_min_connections, 50]
    det = TtlChange()
    det.observe_flows(hop_records([conn(k, 50) for k in range(p.peer_min_connections - 1)] + [conn(10, 55)]))
    assert det.finish() == []  # not settled yet: the count starts over


def test_ttl_change_keeps_every_peers_earliest_connections_at_its_cap_and_counts_the_rest():
    from detector.detect.ttl_change import TtlChange
    rows = hop_rows(5, 400)
    full, det = TtlChange(), TtlChange(TtlChange.Params(max_connections=50))
    full.observe_flows(hop_records(rows))
    det.observe_flows(hop_records(rows))
    held, every = det.early.rows(), full.early.rows()
    assert len(held["ts"]) == 50 and det.evictions > 0
    assert set(held["src"].tolist()) == set(every["src"].tolist())  # no peer lost
    for src in set(every["src"].tolist()):
        mine = held["ts"][held["src"] == src]
        assert mine.tolist() == every["ts"][every["src"] == src][:len(mine)].tolist()  # its earliest


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 400), st.lists(st.floats(0, 1), max_size=5))
def test_keyed_sums_reduce_any_split_and_merge_order_like_a_group_by(seed, n, cuts):
    from detector.detect.keyed_table import KeyedSums
    rng = np.random.default_rng(seed)
    cols = {"a": rng.integers(0, 5, n).astype(np.uint64), "b": rng.integers(0, 3, n),
            "x": rng.integers(-9, 9, n), "y": rng.integers(0, 10**12, n)}
    at = sorted({int(c * n) for c in cuts} - {0, n})
    parts = [KeyedSums(("a", "b"), {"x": "sum", "y": "min", "z": "max"}) for _ in range(3)]
    for k, (lo, hi) in enumerate(zip([0, *at], [*at, n])):
        parts[k % 3].add({**{c: v[lo:hi] for c, v in cols.items()}, "z": cols["y"][lo:hi]})
    merged = parts[2]
    merged.merge(parts[0])
    merged.merge(parts[1])
    got = merged.rows()
    expected = {}
    for a, b, x, y in zip(*(cols[c].tolist() for c in "abxy")):
        s, lo, hi = expected.get((a, b), (0, y, y))
        expected[(a, b)] = (s + x, min(lo, y), max(hi, y))
    assert dict(zip(zip(got["a"].tolist(), got["b"].tolist()),
                    zip(got["x"].tolist(), got["y"].tolist(), got["z"].tolist()))) == expected
    assert list(zip(got["a"].tolist(), got["b"].tolist())) == sorted(expected)  # in key order


def test_keyed_table_distinct_keeps_the_first_distinct_values_of_a_key():
    t = KeyedTable(("k",), ("v",), keep=3, unique=True)
    t.add({"k": np.array([1, 1, 1, 2]), "v": np.array([9, 5, 9, 7])})
    t.add({"k": np.array([1, 1]), "v": np.array([5, 1])})
    assert t.rows()["v"].tolist() == [1, 5, 9, 7]


MB = 2**20


def upload_rows(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    local, outside = ["10.0.0.1", "10.0.0.2", "2001:db8:1::5"], [f"198.51.100.{k}" for k in range(1, 8)]
    return [{"ts": T + rng.randrange(0, 10**12, 10**6), "uid": f"C{k:05d}", "orig_h": rng.choice(local),
             "resp_h": rng.choice(outside), "orig_p": 40000 + k, "resp_p": rng.choice([443, 22, 8080, 9000]),
             "proto": "tcp", "duration": rng.random() * 100, "community_id": rng.choice(["1:a", None]),
             "orig_bytes": rng.choice([100, 10 * MB, 90 * MB, 300 * MB]) + k, "resp_bytes": rng.choice([0, 5 * MB])}
            for k in range(n)]


def upload_records(rows: list[dict]) -> FlowView:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("ns"))
    cols["community_id"] = pa.array(cols["community_id"], pa.string())
    return FlowView(pa.RecordBatch.from_pydict(cols))


def upload_site():
    from detector.config import SiteConfig
    from detector.site import Site
    return Site(SiteConfig(local_nets=["10.0.0.0/24", "2001:db8:1::/48"]))


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 200), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_bulk_upload_any_split_and_merge_order_gives_the_one_pass_alerts(seed, n, cuts, order):
    from detector.detect.bulk_upload import BulkUpload
    rows = upload_rows(seed, n)
    one = BulkUpload(site=upload_site())
    one.observe_flows(upload_records(rows))
    expected = sorted(str(a.to_dict()) for a in one.finish())
    random.Random(seed).shuffle(rows)
    at = sorted({int(c * n) for c in cuts} - {0, n})
    parts = [BulkUpload(site=upload_site()) for _ in range(3)]
    for k, (a, b) in enumerate(zip([0, *at], [*at, n])):
        parts[k % 3].observe_flows(upload_records(rows[a:b]))
    first, *rest = parts[order % 3:] + parts[:order % 3]
    for other in rest:
        first.merge(other)
    assert sorted(str(a.to_dict()) for a in first.finish()) == expected


def test_bulk_upload_keeps_the_big_sender_when_small_pairs_overflow_its_tables():
    from detector.detect.bulk_upload import BulkUpload
    small = [{**r, "resp_h": f"203.0.113.{k % 250}", "orig_h": f"10.0.0.{1 + k % 200}", "orig_bytes": 500}
             for k, r in enumerate(upload_rows(1, 3000))]  # 1,000 pairs
    big = [{**r, "orig_h": "10.0.0.1", "resp_h": "198.51.100.9", "orig_bytes": 100 * MB, "resp_bytes": 0}
           for r in upload_rows(2, 5)]
    det = BulkUpload(BulkUpload.Params(max_pairs=100), site=upload_site())
    for a in range(0, 3000, 500):
        det.observe_flows(upload_records(small[a:a + 500] + (big if a == 1500 else [])))
    (alert,) = det.finish()
    assert (alert.src_ip, alert.dst_ip, alert.evidence["bytes_out"]) == ("10.0.0.1", "198.51.100.9", 500 * MB)
    assert det.pairs.evicted == 1000 + 1 - 100


def test_tables_reduce_large_batches_on_their_own_and_still_fold_like_one_pass():
    """Batches past PRE_REDUCE_MIN are reduced before they are held (keys that repeat), or not
    for a while (keys that hardly repeat): either way the rows are those of one pass."""
    from detector.detect.keyed_table import PRE_REDUCE_MIN, KeyedSums
    rng = np.random.default_rng(4)
    n = 40 * PRE_REDUCE_MIN
    few = {"k": rng.integers(0, 50, n).astype(np.uint64), "t": rng.integers(0, 10**9, n)}
    many = {"k": rng.permutation(n).astype(np.uint64), "t": rng.integers(0, 10**9, n)}
    for cols in (few, many):
        one, batched = KeyedTable(("k",), ("t",), keep=3), KeyedTable(("k",), ("t",), keep=3)
        sums, batched_sums = KeyedSums(("k",), {"t": "max"}), KeyedSums(("k",), {"t": "max"})
        one.add(cols)
        sums.add(cols)
        for a in range(0, n, 2 * PRE_REDUCE_MIN):
            part = {c: v[a:a + 2 * PRE_REDUCE_MIN] for c, v in cols.items()}
            batched.add(part)
            batched_sums.add(part)
        for mine, theirs in ((batched, one), (batched_sums, sums)):
            assert {c: v.tolist() for c, v in mine.rows().items()} == {c: v.tolist() for c, v in theirs.rows().items()}
    assert batched._skip > 0  # distinct keys: reducing a batch on its own was given up for a while


def test_floods_estimate_sources_past_the_cap_on_all_samples_and_count_the_evictions():
    """20,000 spoofed sources, 2,000 held: every bucket's sample is cut below one hash and the
    count estimated from it (threshold sampling), the same in any batches."""
    from detector.detect.floods import Floods
    rng = np.random.default_rng(9)
    rows = [attempt("10.0.0.9", k * 2e-4, src=f"{a}.{b}.{c}.{d}")
            for k, (a, b, c, d) in enumerate(rng.integers(1, 224, (20_000, 4)).tolist())]
    truth = len({r["orig_h"] for r in rows})
    found = []
    for batch in (20_000, 3_000):
        det = Floods(Floods.Params(max_sources=2_000))
        for a in range(0, len(rows), batch):
            det.observe_flows(records(rows[a:a + batch]))
        alerts = [a for a in det.finish() if a.technique == "syn_flood"]
        (alert,) = alerts
        ev = alert.evidence
        assert not ev["sources_exact"] and abs(ev["sources"] - truth) / truth < 0.15, ev["sources"]  # crc32, as DistinctSample
        assert det.evictions > 0 and len(det.sources.rows()["src"]) <= 2_000
        found.append(ev["sources"])
    assert found[0] == found[1]


def test_bulk_upload_names_a_pair_with_its_own_evidence_when_pairs_are_evicted():
    """A pair's largest upload and ports leave with the pair: the pair kept is named by its own."""
    from detector.detect.bulk_upload import BulkUpload

    def up(src, k, nbytes, port=443):
        return {**upload_rows(0, 1)[0], "orig_h": src, "resp_h": "198.51.100.7", "uid": f"C{src[-1]}{k:02d}",
                "orig_bytes": nbytes, "resp_bytes": 0, "resp_p": port, "ts": T + k * S}

    rows = [up("10.0.0.1", k, 30 * MB) for k in range(10)] + [up("10.0.0.2", 20, 100 * MB)] + \
        [up("10.0.0.3", 21, 50 * MB, port=8443)]
    det = BulkUpload(BulkUpload.Params(max_pairs=2, min_bytes=40 * MB), site=upload_site())
    for r in rows:
        det.observe_flows(upload_records([r]))
    by_src = {a.src_ip: a for a in det.finish()}
    assert set(by_src) == {"10.0.0.1", "10.0.0.2"}
    assert by_src["10.0.0.1"].evidence["uid"].startswith("C1") and by_src["10.0.0.1"].evidence["ports"] == [443]
    assert by_src["10.0.0.2"].evidence["uid"] == "C220"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(text, st.none()), max_size=40))
def test_address_columns_from_one_padded_matrix_equal_those_from_the_array(values):
    """FlowView lays a column's distinct values out once and reads ids, IPv4 values and hashes
    from that matrix: the same as from the Arrow array, at any matrix width."""
    from detector.detect.address_columns import padded
    arr = pa.array(values, pa.string())
    mat = padded(arr)
    assert string_ids(mat).tolist() == string_ids(arr).tolist()
    assert crc32_column(mat).tolist() == crc32_column(arr).tolist()
    for got, want in zip(ipv4_values(mat), ipv4_values(arr)):
        assert got.tolist() == want.tolist()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(text, st.none()), min_size=1, max_size=40), st.data())
def test_ids_at_some_rows_are_the_ids_of_the_whole_column_there(values, data):
    rows = np.array(data.draw(st.lists(st.integers(0, len(values) - 1), max_size=20)), np.int64)
    batch = pa.RecordBatch.from_pydict({"uid": pa.array(values, pa.string())})
    assert FlowView(batch).ids_at("uid", rows).tolist() == FlowView(batch).ids("uid")[rows].tolist()


def test_followers_hold_no_key_their_leader_evicted_while_taking_in_the_same_update():
    """A batch large enough to fold the leader inside the update (a flood's batch): the keys
    it evicts there leave the followers with this update's rows too, in one update or many."""
    from detector.detect.keyed_table import KeyedSums, Led, key_ids

    rng = np.random.default_rng(5)
    for updates in (1, 3):
        leader = KeyedSums(("k",), {"n": "sum"}, cap=100, priority=lambda c: c["n"])
        follower = KeyedTable(("k",), ("t",), 4)
        led = Led(leader, follower)
        for _ in range(updates):
            keys = np.concatenate([rng.integers(1_000, 10**9, 70_000), np.repeat(np.arange(1, 31), 10)]).astype(np.uint64)
            led.add({"k": keys, "n": np.ones(len(keys), np.int64)}, {"k": keys, "t": rng.integers(0, 10**6, len(keys))})
        held = set(led.rows()["k"].tolist())
        assert len(held) <= 100 and set(range(1, 31)) <= held
        assert set(follower.rows()["k"].tolist()) <= held
        assert len(key_ids(follower.rows(), ("k",))) <= 4 * 100
