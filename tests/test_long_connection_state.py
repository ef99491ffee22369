"""long_connection as a bounded, mergeable reducer: any split of the flow records, merged in
any order, gives the one-pass alerts; the five-tuple cap keeps the longest and counts the rest."""

from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.config import SiteConfig
from detector.detect.base import FlowView
from detector.detect.long_connection import LongConnection
from detector.site import Site
from tests.merge_splits import split_and_merge

T = 1_700_000_000 * 10**9
SITE = Site(SiteConfig(local_nets=["10.0.0.0/8"]))


def records(rows: list[dict]) -> FlowView:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("ns"))
    for k in ("community_id", "service"):
        cols[k] = pa.array(cols[k], pa.string())
    return FlowView(pa.RecordBatch.from_pydict(cols))


def record(k: int, key: tuple, start_s: int, dur_s: int, service=None) -> dict:
    return {"ts": T + start_s * 10**9 + k, "uid": f"C{k:05d}", "orig_h": key[0], "orig_p": key[1], "resp_h": key[2],
            "resp_p": key[3], "proto": key[4], "duration": float(dur_s), "orig_bytes": 1000 + k, "resp_bytes": 10 * k,
            "service": service, "community_id": "1:a"}


def sessions(seed: int, n: int) -> list[dict]:
    """Interim records of a few five-tuples: back to back, with gaps, short pieces."""
    rng = random.Random(seed)
    keys = [(rng.choice(["10.0.0.1", "198.51.100.5"]), 40000 + rng.randrange(3),
             rng.choice(["198.51.100.9", "10.0.0.9"]), rng.choice([22, 443]), rng.choice(["tcp", "udp"]))
            for _ in range(rng.randrange(1, 6))]
    clock, rows = {}, []
    for k in range(n):
        key = rng.choice(keys)
        start = clock.get(key, rng.randrange(3600)) + rng.choice([0, 0, 60, 3000])
        dur = rng.choice([1800, 1800, 200, 400, 4000])
        clock[key] = start + dur
        rows.append(record(k, key, start, dur, rng.choice([None, "ssh"])))
    return rows


def alerts(det: LongConnection) -> list[str]:
    return sorted(str(a.to_dict()) for a in det.finish())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 200), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_any_split_and_merge_order_gives_the_one_pass_alerts(seed, n, cuts, order):
    rows = sessions(seed, n)
    one = LongConnection(site=SITE)
    one.observe_flows(records(rows))
    merged = split_and_merge(lambda: LongConnection(site=SITE), lambda d, b: d.observe_flows(records(b)),
                             rows, cuts, order, seed)
    assert alerts(merged) == alerts(one)


def test_past_max_connections_the_five_tuples_covering_least_go_and_are_counted():
    det = LongConnection(LongConnection.Params(max_connections=10))
    long_key = ("10.0.0.1", 40000, "198.51.100.9", 443, "tcp")
    long_ = [record(k, long_key, k * 1800, 1800) for k in range(3)]
    short = [record(100 + k, (f"10.0.1.{k}", 50000, "198.51.100.8", 22, "tcp"), 0, 400) for k in range(200)]
    rows = short[:100] + long_ + short[100:]
    for a in range(0, len(rows), 20):
        det.observe_flows(records(rows[a:a + 20]))
    (a,) = det.finish()
    assert (a.src_ip, a.evidence["records"], a.evidence["hours"], a.evidence["uid"]) == ("10.0.0.1", 3, 1.5, "C00000")
    assert det.evictions >= 201 - 10
