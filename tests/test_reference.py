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


def test_fragments_are_matched_within_a_chunk_whatever_the_thread_count(flows, tmp_path, monkeypatch):
    """Fragments meet their first fragment in the same chunk of rows or an earlier one: the two-
    thread pipeline accounts a chunk before the next is decoded, so every path matches chunk by
    chunk and gives the same flows. Out of order within a chunk is resolved; a first fragment
    that arrives in a later chunk than the others is not (their packets still count, portless)."""
    import detector.flows.engine as engine

    monkeypatch.setattr(engine, "CHUNK", 8)
    pkts = []
    for k in range(6):  # six datagrams of three fragments, the first fragment last
        big = IP(src="10.0.0.1", dst="10.0.0.2", id=100 + k) / UDP(sport=41000 + k, dport=9999) / (b"x" * 2500)
        frags = fragment(big, fragsize=1000)
        assert len(frags) == 3
        pkts += [bytes(Ether() / f) for f in frags[1:] + frags[:1]]
    path = tmp_path / "frag.pcap"
    path.write_bytes(pcap_bytes([Rec(T0 + k * 1000, p) for k, p in enumerate(pkts)]))
    # chunks of rows 0-7, 8-15, 16-23: datagrams 0, 1 (rows 0-5), 3 (9-11) and 4 (12-14) are whole
    # in a chunk; 2 (rows 6-8) loses both non-first fragments' ports, 5 (15-17) the one in row 15
    runs = {t: flows(path, threads=t) for t in (1, 2, 3)}
    by_port = {t: sorted((row["orig_p"], row["orig_pkts"]) for row in r.rows) for t, r in runs.items()}
    assert by_port[1] == by_port[2] == by_port[3]
    assert {p: n for p, n in by_port[1] if p} == {41000: 3, 41001: 3, 41002: 1, 41003: 3, 41004: 3, 41005: 2}
    assert all(r.summary["fragments"]["unresolved"] == 3 for r in runs.values())
    assert sum(n for _, n in by_port[1]) == len(pkts)
