"""The fast path against the slow reference reader, on generated captures."""

from __future__ import annotations

import random

from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6
from scapy.layers.l2 import Ether

from detector.synth.encode import encode
from detector.synth.scenarios import hpc_mix
from tests.capture_files import Rec, pcap_bytes
from tests.reference_flows import conversations, count_ip_packets, flow_conversations

S = 1_000_000_000
T0 = 1_750_000_000 * S


def test_synthetic_mix_matches_reference(flows, tmp_path):
    sc = hpc_mix(packets=20_000, seed=7)
    path = tmp_path / "mix.pcap"
    path.write_bytes(encode(sc.packets, sc.pool))
    run = flows(path)
    assert run.result.exit_code == 0
    assert run.total_packets() == count_ip_packets(path)
    ref_pkts, ref_bytes = conversations(path)
    got_pkts, got_bytes = flow_conversations(run.rows)
    assert got_pkts == ref_pkts and got_bytes == ref_bytes


def test_fragments_join_their_datagram_even_out_of_order(flows, tmp_path):
    big4 = IP(src="10.0.0.1", dst="10.0.0.2", id=4242) / UDP(sport=40000, dport=9999) / (b"a" * 3000)
    frags4 = fragment(big4, fragsize=1000)
    big6 = (IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(id=77) /
            UDP(sport=4000, dport=4001) / (b"b" * 3000))
    frags6 = fragment6(big6, 1280)
    assert len(frags4) >= 3 and len(frags6) >= 3
    rng = random.Random(3)
    order4 = frags4[1:] + frags4[:1]  # the first fragment arrives last
    pkts = [bytes(Ether() / f) for f in order4] + [bytes(Ether() / f) for f in rng.sample(frags6, len(frags6))]
    path = tmp_path / "frag.pcap"
    path.write_bytes(pcap_bytes([Rec(T0 + k * 1000, p) for k, p in enumerate(pkts)]))
    run = flows(path)
    v4 = run.one(orig_h="10.0.0.1")
    assert (v4["orig_p"], v4["resp_p"], v4["orig_pkts"]) == (40000, 9999, len(frags4))
    assert v4["orig_bytes"] == 3000
    v6 = run.one(orig_h="2001:db8::1")
    assert (v6["orig_p"], v6["orig_pkts"]) == (4000, len(frags6))
    assert run.summary["fragments"]["unresolved"] == 0
    ref_pkts, _ = conversations(path)
    assert flow_conversations(run.rows)[0] == ref_pkts


def test_two_threads_give_one_threads_flows_with_fragments_and_a_full_table(flows, tmp_path, monkeypatch):
    """The two-thread pipeline (blocks of 8 rows handed over here) against one thread:
    out-of-order fragments straddling blocks still meet their first fragment, and a table too
    full for the next batch evicts the same flows (the room policy looks at whole batches)."""
    import detector.flows.engine as engine

    monkeypatch.setattr(engine, "HANDOFF_BLOCK", 8)
    pkts = []
    for k in range(6):  # six datagrams of three fragments, the first fragment last
        big = IP(src="10.0.0.1", dst="10.0.0.2", id=100 + k) / UDP(sport=41000 + k, dport=9999) / (b"x" * 2500)
        frags = fragment(big, fragsize=1000)
        assert len(frags) == 3
        pkts += [bytes(Ether() / f) for f in frags[1:] + frags[:1]]
    rng = random.Random(5)
    for _ in range(4000):  # then 900 UDP conversations, at random, in a table of 600 flows
        c = rng.randrange(900)
        pkts.append(bytes(Ether() / IP(src=f"10.1.{c // 250}.{c % 250 + 1}", dst="10.9.0.1")
                          / UDP(sport=20000 + c, dport=53) / b"q"))
    path = tmp_path / "mix.pcap"
    path.write_bytes(pcap_bytes([Rec(T0 + k * 1000, p) for k, p in enumerate(pkts)]))
    one, two = (flows(path, threads=t, max_flows=600, batch_size=256) for t in (1, 2))
    assert one.rows == two.rows
    assert one.summary["evicted_flows"] == two.summary["evicted_flows"] > 0
    assert two.summary["fragments"] == one.summary["fragments"] and one.summary["fragments"]["unresolved"] == 0
    assert {r["orig_p"]: r["orig_pkts"] for r in one.rows if r["orig_h"] == "10.0.0.1"} == \
        {41000 + k: 3 for k in range(6)}
    assert sum(r["orig_pkts"] + r["resp_pkts"] for r in two.rows) == len(pkts)
