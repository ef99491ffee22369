"""The beaconing detector as a bounded, mergeable reducer: any split of the flow records,
merged in any order, gives the one-pass alerts; thresholds at their boundaries; the caps keep
the beacon and count what they drop."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.config import SiteConfig
from detector.detect.address_columns import string_ids
from detector.detect.base import FlowView
from detector.detect.beaconing import Beaconing, size_stats
from detector.l7.dns import Answer, DnsMessage
from detector.l7.events import Ctx, DnsEvent, Events
from detector.site import Site
from tests.merge_splits import split_and_merge

T = 1_700_000_000 * 10**9
SITE = Site(SiteConfig(local_nets=["10.0.0.0/24", "2001:db8:1::/48"]))


def conn(k: int, src: str, dst: str, t_s: float, port: int = 443, nbytes: int = 300) -> dict:
    return {"ts": T + int(t_s * 1e9), "uid": f"C{k:06d}", "orig_h": src, "resp_h": dst, "orig_p": 40000 + k % 20000,
            "resp_p": port, "proto": "tcp", "duration": 0.5, "community_id": f"1:{k % 7}",
            "orig_bytes": nbytes, "resp_bytes": 100}


def records(rows: list[dict]) -> FlowView:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("ns"))
    return FlowView(pa.RecordBatch.from_pydict(cols))


def check_ins(seed: int, n: int) -> list[dict]:
    """Connections of a few local hosts (IPv4 and IPv6) to a few external ones, each pair at
    its own period with its own jitter, now and then a missed or extra check-in, another port
    or another size."""
    rng = random.Random(seed)
    local = ["10.0.0.1", "10.0.0.2", "2001:db8:1::5"]
    ext = ["198.51.100.1", "198.51.100.2", "2001:db8:99::1", "10.0.0.9"]
    period = {(s, d): rng.choice([2.0, 30.0, 60.0, 0.5]) for s in local for d in ext}
    jitter = {(s, d): rng.choice([0.0, 1e-3, 0.5, 5.0]) for s in local for d in ext}
    clock: dict = {}
    rows = []
    for k in range(n):
        s, d = rng.choice(local), rng.choice(ext)
        clock[(s, d)] = clock.get((s, d), 0.0) + period[(s, d)] + rng.uniform(-jitter[(s, d)], jitter[(s, d)])
        port = rng.choice([443] * 30 + [8443, 22, 53])
        nbytes = 300 if rng.random() < 0.8 else rng.randrange(100, 100_000)
        rows.append(conn(k, s, d, clock[(s, d)] + (rng.randrange(100) if rng.random() < 0.02 else 0), port, nbytes))
    return rows


def lenient() -> Beaconing:
    """Lower thresholds, so that random series give alerts to compare."""
    return Beaconing(Beaconing.Params(medium_score=0.6, high_score=0.8, min_connections=8), SITE)


def alerts(det: Beaconing) -> list[str]:
    return sorted(str(a.to_dict()) for a in det.finish())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(30, 600), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_any_split_and_merge_order_gives_the_one_pass_alerts(seed, n, cuts, order):
    rows = check_ins(seed, n)
    one = lenient()
    one.observe_flows(records(rows))
    expected = alerts(one)
    first = split_and_merge(lenient, lambda d, b: d.observe_flows(records(b)),
                            rows, cuts, order, seed)
    assert alerts(first) == expected
    assert first.candidates() == one.candidates()


def test_random_series_give_alerts_to_compare():
    """(What the property test compares is not empty.)"""
    det = lenient()
    det.observe_flows(records(check_ins(1, 600)))
    assert len(det.finish()) >= 2


def beacon(n: int, src: str = "10.0.0.1", dst: str = "198.51.100.7", every_s: float = 60.0, k0: int = 0,
           ports=(443,)) -> list[dict]:
    return [conn(k0 + k, src, dst, k * every_s, ports[k % len(ports)]) for k in range(n)]


def test_a_regular_check_in_alerts_from_min_connections_and_names_its_earliest_connection():
    det = Beaconing(site=SITE)
    det.observe_flows(records(beacon(19)))
    assert det.finish() == []
    det.observe_flows(records([conn(19, "10.0.0.1", "198.51.100.7", 19 * 60.0)]))
    (a,) = det.finish()
    assert (a.technique, a.severity, a.src_ip, a.dst_ip, a.dst_port, a.proto) == (
        "beaconing", "high", "10.0.0.1", "198.51.100.7", 443, "tcp")
    assert a.evidence["connections"] == 20 and a.evidence["median_interval_s"] == 60.0
    assert a.evidence["uid"] == "C000000" and a.ts_ns == T and a.ts_end_ns == T + 19 * 60 * 10**9


def test_a_pair_calling_more_than_max_ports_services_is_no_beacon():
    det = Beaconing(site=SITE)
    det.observe_flows(records(beacon(40, ports=(443, 8443, 8080))))
    assert len(det.finish()) == 1
    det = Beaconing(site=SITE)
    det.observe_flows(records(beacon(40, ports=(443, 8443, 8080, 9000))))
    assert det.finish() == []


def test_faster_than_min_interval_is_a_burst_not_a_beacon():
    det = Beaconing(site=SITE)
    det.observe_flows(records(beacon(100, every_s=0.99)))
    assert det.finish() == []
    det = Beaconing(site=SITE)
    det.observe_flows(records(beacon(100, every_s=1.0)))
    assert len(det.finish()) == 1


def answer(ts: int, name: str) -> DnsEvent:
    msg = DnsMessage(1, True, 0, 0, name, 1, [Answer(1, 60, "198.51.100.7", 4)])
    return DnsEvent(Ctx(ts, "Cd", False, "10.0.0.53", "10.0.0.1", 53, 33000, 17), msg)


def test_a_destination_named_by_dns_as_an_allowed_domain_is_left_alone_in_any_merge_order():
    det = Beaconing(site=SITE)
    det.observe_events(Events(dns=[answer(T + 5, "cvmfs-stratum-one.cern.ch"), answer(T + 1, "evil.example")]))
    # (an older answer, seen later, does not replace a newer one)
    other = Beaconing(site=SITE)
    other.observe_flows(records(beacon(30)))
    other.merge(det)
    assert other.finish() == []
    assert other.names["198.51.100.7"] == (T + 5, "cvmfs-stratum-one.cern.ch")


def test_past_max_pairs_the_pairs_with_fewest_connections_go_and_are_counted():
    det = Beaconing(Beaconing.Params(max_pairs=50), SITE)
    noise = [conn(1000 + k, "10.0.0.2", f"203.0.113.{k % 250}" if k < 250 else f"192.0.2.{k % 250}", k * 0.1)
             for k in range(500)]
    rows = beacon(40) + noise
    random.Random(3).shuffle(rows)
    for a in range(0, len(rows), 37):
        det.observe_flows(records(rows[a:a + 37]))
    (a,) = det.finish()
    assert a.dst_ip == "198.51.100.7" and a.evidence["connections"] == 40 and a.evidence["uid"] == "C000000"
    assert det.evictions >= 500 - 50 and len(det.pairs.rows()["n"]) <= 50
    assert len(det.earliest.rows()["src"]) <= 50  # what is kept of a pair leaves with it


def test_a_series_past_max_series_is_judged_by_its_earliest_connections_and_counted_whole():
    det = Beaconing(Beaconing.Params(max_series=25, max_connections=40), SITE)
    det.observe_flows(records(beacon(100) + beacon(100, src="10.0.0.2", every_s=30.0, k0=100)))
    found = {a.src_ip: a for a in det.finish()}
    assert found["10.0.0.1"].evidence["connections"] == 100  # the count is exact
    assert found["10.0.0.2"].evidence["median_interval_s"] == 30.0
    assert found["10.0.0.1"].ts_end_ns == T + 99 * 60 * 10**9
    S = det.series.rows()
    # past max_series a series is cut (by design, not counted); past max_connections each
    # pair's latest rows go first (counted): both pairs keep their first 20
    assert det.evictions == 10
    for src, every in (("10.0.0.1", 60), ("10.0.0.2", 30)):
        mine = S["src"] == string_ids(pa.array([src]))[0]
        assert (S["ts"][mine] == T + np.arange(20) * every * 10**9).all()


def reference_size_stats(values: list[int]) -> tuple[float, float, float]:
    """RITA's size statistics of one series, one value at a time."""
    v = sorted(float(x) for x in values)
    q1, med, q3 = v[(len(v) - 1) // 4], v[(len(v) - 1) // 2], v[3 * (len(v) - 1) // 4]
    skew = (q3 + q1 - 2 * med) / (q3 - q1) if q3 > q1 else 0.0
    mad = sorted(abs(x - med) for x in v)[(len(v) - 1) // 2]
    counts: dict = {}
    for x in v:
        counts[x] = counts.get(x, 0) + 1
    return skew, mad, min(x for x in counts if counts[x] == max(counts.values()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=30), min_size=1, max_size=6))
def test_size_stats_per_series_are_those_of_each_series_alone(series):
    group = np.concatenate([np.full(len(s), g) for g, s in enumerate(series)])
    sizes = np.concatenate([np.array(s, np.int64) for s in series])
    order = np.random.default_rng(len(sizes)).permutation(len(sizes))
    got = size_stats(group[order], sizes[order], len(series))
    for g, s in enumerate(series):
        assert (got.skew[g], got.mad[g], got.mode[g]) == reference_size_stats(s)


def test_a_pair_evicted_and_back_is_named_by_its_own_later_connections():
    """Evictions at the pair cap take the pair's series and earliest connection with them at
    once, whichever fold evicts it: a pair that comes back is not named by what was dropped."""
    from detector.detect.keyed_table import Led

    det = Beaconing(Beaconing.Params(max_pairs=3, min_connections=5), SITE)
    det.observe_flows(records([conn(0, "10.0.0.1", "198.51.100.7", 0.0, port=8443)]))
    for k, dst in enumerate(("198.51.100.1", "198.51.100.2", "198.51.100.3")):
        det.observe_flows(records([conn(100 * (k + 1) + j, "10.0.0.2", dst, 1000 + j) for j in range(5)]))
    det.pairs.rows()  # the fold that evicts the one-connection pair
    assert det.pairs.evicted >= 1 and isinstance(det.led, Led)
    det.observe_flows(records([dict(r, ts=r["ts"] + 10**13) for r in beacon(30, k0=1000)]))
    back = [a for a in det.finish() if a.dst_ip == "198.51.100.7"]
    assert [(a.dst_port, a.evidence["uid"], a.evidence["connections"]) for a in back] == [(443, "C001000", 30)]
