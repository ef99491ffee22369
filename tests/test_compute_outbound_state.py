"""compute_outbound as a bounded, mergeable reducer: any split of the flow records, merged in
any order, gives the one-pass alerts; the destination sample counts exactly below its size and
estimates above it; the node cap keeps the busiest nodes and counts the rest."""

from __future__ import annotations

import random

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.config import SiteConfig
from detector.detect.base import FlowView
from detector.detect.compute_outbound import SAMPLE, ComputeOutbound
from detector.site import Site
from tests.merge_splits import split_and_merge

T = 1_700_000_000 * 10**9
SITE = Site(SiteConfig(local_nets=["10.0.0.0/8", "2001:db8:1::/48"], compute_nets=["10.1.0.0/16", "2001:db8:1::/48"],
                       proxies=["192.0.2.80"]))


def session(k: int, src: str, dst: str, port: int = 443, nbytes: int = 100) -> dict:
    return {"ts": T + k * 10**6, "uid": f"C{k:06d}", "orig_h": src, "resp_h": dst, "orig_p": 40000 + k % 20000,
            "resp_p": port, "proto": "tcp", "community_id": f"1:{k % 5}", "orig_bytes": nbytes, "resp_bytes": 10}


def records(rows: list[dict]) -> FlowView:
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("ns"))
    return FlowView(pa.RecordBatch.from_pydict(cols))


def sessions(seed: int, n: int) -> list[dict]:
    """Compute nodes, IPv4 and IPv6, and a login node, to Internet hosts, the proxy, local and
    multicast addresses."""
    rng = random.Random(seed)
    src = ["10.1.0.1", "10.1.0.2", "10.0.0.5", "2001:db8:1::9"]
    dst = [f"198.51.100.{k}" for k in range(rng.choice([3, 40]))] + ["10.0.0.9", "239.1.1.1", "192.0.2.80",
                                                                      "2001:db8:99::1"]
    return [session(k, rng.choice(src), rng.choice(dst), rng.choice([443, 80, 3333] + list(range(1000, 1020))),
                    rng.randrange(1000)) for k in range(n)]


def alerts(det: ComputeOutbound) -> list[str]:
    return sorted(str(a.to_dict()) for a in det.finish())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(5, 400), st.lists(st.floats(0, 1), max_size=5), st.integers(0, 5))
def test_any_split_and_merge_order_gives_the_one_pass_alerts(seed, n, cuts, order):
    rows = sessions(seed, n)
    one = ComputeOutbound(site=SITE)
    one.observe_flows(records(rows))
    expected = alerts(one)
    first = split_and_merge(lambda: ComputeOutbound(site=SITE), lambda d, b: d.observe_flows(records(b)),
                            rows, cuts, order, seed)
    assert alerts(first) == expected


def test_a_compute_node_to_the_internet_is_reported_once_and_the_proxy_and_login_nodes_are_not():
    det = ComputeOutbound(site=SITE)
    det.observe_flows(records([session(0, "10.1.0.1", "192.0.2.80"), session(1, "10.0.0.5", "198.51.100.1"),
                               session(2, "10.1.0.1", "10.0.0.9"), session(3, "10.1.0.1", "239.1.1.1")]))
    assert det.finish() == []
    det.observe_flows(records([session(5 + k, "10.1.0.1", f"198.51.100.{k}", 3333) for k in range(10)]))
    (a,) = det.finish()
    assert (a.severity, a.src_ip, a.dst_ip, a.dst_port) == ("high", "10.1.0.1", "198.51.100.0", 3333)
    assert a.evidence["uid"] == "C000005" and "10 Internet destination(s)" in a.summary


def test_destinations_past_the_sample_are_estimated():
    det = ComputeOutbound(site=SITE)
    det.observe_flows(records([session(k, "10.1.0.1", f"198.51.{k // 250}.{k % 250}") for k in range(5 * SAMPLE)]))
    (a,) = det.finish()
    n = int(a.summary.split("about ")[1].split()[0])
    assert abs(n - 5 * SAMPLE) < 0.3 * 5 * SAMPLE and len(a.evidence["destinations"]) == 32


def test_past_max_hosts_the_nodes_that_sent_least_go_and_are_counted():
    det = ComputeOutbound(ComputeOutbound.Params(max_hosts=5), SITE)
    quiet = [session(k, f"10.1.{k // 250}.{k % 250}", "198.51.100.1", nbytes=1) for k in range(300)]
    busy = [session(1000 + k, "10.1.9.9", f"198.51.100.{k}", nbytes=10**6) for k in range(12)]
    rows = quiet[:150] + busy + quiet[150:]
    for a in range(0, len(rows), 40):
        det.observe_flows(records(rows[a:a + 40]))
    found = {a.src_ip: a for a in det.finish()}
    assert found["10.1.9.9"].severity == "high" and len(found) <= 5
    assert det.evictions >= 300 + 1 - 5
