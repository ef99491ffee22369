"""Golden tests: small captures built here, flows compared field by field with values
derived by hand from the packets (and Zeek's documented semantics)."""

from __future__ import annotations

import communityid
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import Dot1Q, Ether

from tests.capture_files import Rec, pcap_bytes
from tests.conftest import capture_span

S = 1_000_000_000
T0 = 1_700_000_000 * S
C, SV = "10.0.0.5", "192.0.2.80"
CMAC, SMAC = "02:00:00:00:00:05", "02:00:00:00:00:80"


def eth(pkt, src=CMAC, dst=SMAC):
    return bytes(Ether(src=src, dst=dst) / pkt)


def tcp_session():
    """A complete HTTP-like exchange: 3-way handshake, 100 B request, 1000 B response, FIN/FIN/ACK."""
    c = dict(src=C, dst=SV, ttl=64)
    s = dict(src=SV, dst=C, ttl=50)
    pk = [
        (0.000, eth(IP(**c) / TCP(sport=40000, dport=80, flags="S", seq=100))),
        (0.010, eth(IP(**s) / TCP(sport=80, dport=40000, flags="SA", seq=500, ack=101), SMAC, CMAC)),
        (0.020, eth(IP(**c) / TCP(sport=40000, dport=80, flags="A", seq=101, ack=501))),
        (0.030, eth(IP(**c) / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501) / (b"G" * 100))),
        (0.050, eth(IP(**s) / TCP(sport=80, dport=40000, flags="PA", seq=501, ack=201) / (b"R" * 1000),
                    SMAC, CMAC)),
        (0.060, eth(IP(**c) / TCP(sport=40000, dport=80, flags="FA", seq=201, ack=1501))),
        (0.070, eth(IP(**s) / TCP(sport=80, dport=40000, flags="FA", seq=1501, ack=202), SMAC, CMAC)),
        (0.080, eth(IP(**c) / TCP(sport=40000, dport=80, flags="A", seq=202, ack=1502))),
    ]
    return [Rec(T0 + int(t * S), d) for t, d in pk]


def test_tcp_session_fields(flows):
    run = flows(pcap_bytes(tcp_session()))
    assert run.result.exit_code == 0
    f = run.one(proto="tcp")
    assert (f["orig_h"], f["orig_p"], f["resp_h"], f["resp_p"]) == (C, 40000, SV, 80)
    assert f["orig_pkts"] == 5 and f["resp_pkts"] == 3
    assert f["orig_bytes"] == 100 and f["resp_bytes"] == 1000
    # IP total lengths: 4 bare segments of 40 B + 140 B; 2 bare of 40 B + 1040 B
    assert f["orig_ip_bytes"] == 4 * 40 + 140 and f["resp_ip_bytes"] == 2 * 40 + 1040
    assert f["conn_state"] == "SF"
    assert f["history"] == "ShADdFf"
    # Zeek's duration stops at the packet that completes the close (the responder's FIN)
    assert capture_span(f) == pytest.approx(0.070)
    assert f["ts_ns"] == T0
    assert f["end_reason"] == "eof"
    assert (f["orig_syn"], f["orig_fin"], f["orig_ack"], f["orig_psh"], f["orig_rst"]) == (1, 1, 4, 1, 0)
    assert (f["resp_syn"], f["resp_fin"], f["resp_ack"], f["resp_psh"]) == (1, 1, 3, 1)
    assert (f["orig_size_min"], f["orig_size_max"]) == (40, 140)
    assert f["orig_size_mean"] == pytest.approx((4 * 40 + 140) / 5)
    assert f["orig_ttl_min"] == 64 and f["orig_ttl_max"] == 64 and f["resp_ttl_min"] == 50
    # originator packets at 0, 20, 30, 60, 80 ms: gaps 20, 10, 30, 20 ms
    assert f["orig_iat_min"] == pytest.approx(0.010) and f["orig_iat_max"] == pytest.approx(0.030)
    assert f["orig_iat_mean"] == pytest.approx(0.020)
    assert f["orig_iat_std"] == pytest.approx((((0.0) ** 2 + 0.01 ** 2 + 0.01 ** 2 + 0.0) / 4) ** 0.5)
    # responder packets at 10, 50, 70 ms
    assert f["resp_iat_min"] == pytest.approx(0.020) and f["resp_iat_max"] == pytest.approx(0.040)
    assert f["orig_retrans_pkts"] == 0
    assert f["community_id"] == communityid.CommunityID().calc(communityid.FlowTuple.make_tcp(C, SV, 40000, 80))
    assert f["uid"].startswith("C") and len(f["uid"]) == 12


def test_fin_close_ends_flow_after_close_delay(flows):
    recs = tcp_session()
    later = eth(IP(src=C, dst=SV) / UDP(sport=5353, dport=5353) / b"x")
    recs.append(Rec(T0 + 30 * S, later))  # time moves on: the closed TCP flow is emitted
    run = flows(pcap_bytes(recs))
    assert run.one(proto="tcp")["end_reason"] == "fin"


def test_retransmission_counted_once_in_bytes(flows):
    recs = tcp_session()
    retx = eth(IP(src=C, dst=SV) / TCP(sport=40000, dport=80, flags="PA", seq=101, ack=501) / (b"G" * 100))
    recs.insert(4, Rec(T0 + int(0.035 * S), retx))
    f = flows(pcap_bytes(recs)).one(proto="tcp")
    assert f["orig_pkts"] == 6 and f["orig_bytes"] == 100
    assert f["orig_retrans_pkts"] == 1
    assert f["history"] == "ShADTdFf"


def test_udp_request_response(flows):
    q = eth(IP(src=C, dst="10.0.0.53", ttl=64) / UDP(sport=33333, dport=53) / (b"q" * 30))
    r = eth(IP(src="10.0.0.53", dst=C, ttl=64) / UDP(sport=53, dport=33333) / (b"r" * 70), SMAC, CMAC)
    run = flows(pcap_bytes([Rec(T0, q), Rec(T0 + 2_000_000, r)]))
    f = run.one(proto="udp")
    assert (f["orig_h"], f["orig_p"], f["resp_p"]) == (C, 33333, 53)
    assert (f["orig_pkts"], f["resp_pkts"], f["orig_bytes"], f["resp_bytes"]) == (1, 1, 30, 70)
    assert (f["orig_ip_bytes"], f["resp_ip_bytes"]) == (58, 98)
    assert f["conn_state"] == "SF" and f["history"] == "Dd"
    assert capture_span(f) == pytest.approx(0.002)


def test_udp_from_server_port_is_flipped(flows):
    r = eth(IP(src="10.0.0.53", dst=C) / UDP(sport=53, dport=33333) / b"r")
    f = flows(pcap_bytes([Rec(T0, r)])).one(proto="udp")
    assert (f["orig_h"], f["orig_p"], f["resp_h"], f["resp_p"]) == (C, 33333, "10.0.0.53", 53)
    assert f["history"] == "^d" and f["conn_state"] == "SHR"


def test_icmp_echo_request_and_reply_share_a_flow(flows):
    recs = []
    for k in range(2):
        recs.append(Rec(T0 + k * S, eth(IP(src=C, dst=SV) / ICMP(type=8, id=7, seq=k) / (b"p" * 56))))
        recs.append(Rec(T0 + k * S + 1_000_000, eth(IP(src=SV, dst=C) / ICMP(type=0, id=7, seq=k) / (b"p" * 56),
                                                   SMAC, CMAC)))
    f = flows(pcap_bytes(recs)).one(proto="icmp")
    assert (f["orig_h"], f["orig_p"], f["resp_p"]) == (C, 8, 0)
    assert (f["orig_pkts"], f["resp_pkts"]) == (2, 2)
    assert f["orig_bytes"] == 2 * 56 and f["conn_state"] == "OTH"
    assert f["community_id"] == communityid.CommunityID().calc(communityid.FlowTuple.make_icmp(C, SV, 8, 0))


def test_unanswered_syns_then_a_late_retry(flows):
    syn = eth(IP(src=C, dst=SV) / TCP(sport=41000, dport=25, flags="S", seq=9))
    recs = [Rec(T0, syn), Rec(T0 + 1 * S, syn), Rec(T0 + 3 * S, syn), Rec(T0 + 12 * S, syn)]
    run = flows(pcap_bytes(recs))
    first, second = sorted(run.rows, key=lambda r: r["ts"])
    # an attempt lasts Zeek's tcp_attempt_delay (5 s): the retry at 12 s is a new connection
    assert first["orig_pkts"] == 3 and first["conn_state"] == "S0" and first["history"] == "S"
    assert first["end_reason"] == "idle"
    assert second["orig_pkts"] == 1 and second["conn_state"] == "S0"


def test_rejected_connection(flows):
    syn = eth(IP(src=C, dst=SV) / TCP(sport=41001, dport=23, flags="S", seq=9))
    rst = eth(IP(src=SV, dst=C) / TCP(sport=23, dport=41001, flags="RA", seq=0, ack=10), SMAC, CMAC)
    f = flows(pcap_bytes([Rec(T0, syn), Rec(T0 + 1000, rst)])).one(proto="tcp")
    assert f["conn_state"] == "REJ" and f["history"] == "Sr"


def test_port_reuse_after_close_starts_a_new_flow(flows):
    recs = tcp_session()
    syn = eth(IP(src=C, dst=SV) / TCP(sport=40000, dport=80, flags="S", seq=90000))
    recs.append(Rec(T0 + 1 * S, syn))
    run = flows(pcap_bytes(recs))
    rows = sorted(run.rows, key=lambda r: r["ts"])
    assert len(rows) == 2
    assert rows[0]["end_reason"] == "fin" and rows[0]["conn_state"] == "SF"
    assert rows[1]["conn_state"] == "S0"


def test_midstream_tcp_is_oriented_by_server_port(flows):
    data = eth(IP(src=SV, dst=C) / TCP(sport=443, dport=50001, flags="PA", seq=5, ack=7) / (b"x" * 10), SMAC, CMAC)
    f = flows(pcap_bytes([Rec(T0, data)])).one(proto="tcp")
    assert (f["orig_h"], f["orig_p"], f["resp_p"]) == (C, 50001, 443)
    assert f["history"] == "^d" and f["conn_state"] == "OTH"


def test_idle_timeout_splits_udp(flows):
    p = eth(IP(src=C, dst=SV) / UDP(sport=7000, dport=7001) / b"x")
    run = flows(pcap_bytes([Rec(T0, p), Rec(T0 + 61 * S, p)]))
    rows = sorted(run.rows, key=lambda r: r["ts"])
    assert [r["end_reason"] for r in rows] == ["idle", "eof"]
    run = flows(pcap_bytes([Rec(T0, p), Rec(T0 + 61 * S, p)]), udp_idle_timeout=120)
    assert len(run.rows) == 1 and run.rows[0]["orig_pkts"] == 2


def test_active_timeout_emits_interim_records(flows):
    p = eth(IP(src=C, dst=SV) / UDP(sport=7000, dport=7001) / b"x")
    recs = [Rec(T0 + k * 10 * S, p) for k in range(10)]  # 90 s of one flow
    run = flows(pcap_bytes(recs), active_timeout=30)
    rows = sorted(run.rows, key=lambda r: r["ts"])
    assert [r["orig_pkts"] for r in rows] == [3, 3, 3, 1]
    assert [r["end_reason"] for r in rows] == ["active", "active", "active", "eof"]
    assert len({r["uid"] for r in rows}) == 4
    assert sum(r["orig_pkts"] for r in rows) == 10


def test_ipv6_with_extension_header(flows):
    pkt = eth(IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=60) / IPv6ExtHdrHopByHop() /
              TCP(sport=50000, dport=22, flags="S", seq=1))
    f = flows(pcap_bytes([Rec(T0, pkt)])).one(proto="tcp")
    assert (f["orig_h"], f["orig_p"], f["resp_h"], f["resp_p"]) == ("2001:db8::1", 50000, "2001:db8::2", 22)
    assert f["orig_ip_bytes"] == 40 + 8 + 20 and f["orig_ttl_min"] == 60
    tpl = communityid.FlowTuple.make_tcp("2001:db8::1", "2001:db8::2", 50000, 22)
    assert f["community_id"] == communityid.CommunityID().calc(tpl)


def test_vlan_tags(flows):
    inner = IP(src=C, dst=SV) / UDP(sport=1000, dport=2000) / b"abc"
    one = bytes(Ether(src=CMAC, dst=SMAC) / Dot1Q(vlan=42) / inner)
    two = bytes(Ether(src=CMAC, dst=SMAC, type=0x88A8) / Dot1Q(vlan=7) / Dot1Q(vlan=42) / inner)
    run = flows(pcap_bytes([Rec(T0, one), Rec(T0 + 1000, two)]))
    assert sorted(r["vlan"] for r in run.rows) == [7, 42]
    assert all(r["orig_p"] == 1000 and r["orig_bytes"] == 3 for r in run.rows)


def test_snaplen_cut_packets_keep_true_sizes(flows):
    full = eth(IP(src=C, dst=SV) / TCP(sport=40000, dport=5001, flags="PA", seq=1, ack=1) / (b"d" * 8948))
    run = flows(pcap_bytes([Rec(T0, full[:96], wire_len=len(full))], snaplen=96))
    f = run.one(proto="tcp")
    assert f["orig_ip_bytes"] == 20 + 20 + 8948 and f["orig_bytes"] == 8948


def test_every_flow_kept_when_table_overflows(flows):
    recs = [Rec(T0 + k * 1000, eth(IP(src=C, dst=SV) / UDP(sport=10000 + k, dport=53) / b"q")) for k in range(200)]
    recs += [Rec(T0 + 10**6 + k * 1000, eth(IP(src=C, dst=SV) / UDP(sport=10000 + k, dport=53) / b"q"))
             for k in range(200)]
    run = flows(pcap_bytes(recs), max_flows=32)
    assert run.summary["evicted_flows"] > 0
    assert run.total_packets() == 400
    assert {r["end_reason"] for r in run.rows} <= {"evicted", "eof"}


def test_local_nets_mark_direction(flows):
    p = eth(IP(src=C, dst=SV) / UDP(sport=7000, dport=7001) / b"x")
    f = flows(pcap_bytes([Rec(T0, p)]), local_nets=("10.0.0.0/8",)).one(proto="udp")
    assert f["local_orig"] is True and f["local_resp"] is False
    assert flows(pcap_bytes([Rec(T0, p)])).one(proto="udp")["local_orig"] is None


def test_inter_arrival_std_is_accurate_for_nearly_regular_gaps(flows):
    """A beacon every second with 100 ns of jitter: the gaps' std (about 60 ns) must match a
    two-pass computation to 1e-9 relative. A sum of squares minus the squared mean cancels
    catastrophically here (the variance is 1e-15 of the mean square) and keeps no digit."""
    import numpy as np

    rng = np.random.default_rng(7)
    times = T0 + np.cumsum(S + rng.integers(-100, 101, 600))
    pkt = eth(IP(src=C, dst=SV) / UDP(sport=50000, dport=443) / b"x")
    run = flows(pcap_bytes([Rec(int(t), pkt) for t in times], nanosecond=True))
    f = run.one(proto="udp")
    gaps_ns = np.diff(times)  # integers: the reference is exact up to its last rounding
    assert f["orig_pkts"] == 600
    assert f["orig_iat_mean"] == pytest.approx(gaps_ns.mean() / 1e9, rel=1e-12, abs=0)
    assert f["orig_iat_std"] == pytest.approx(gaps_ns.std() / 1e9, rel=1e-9, abs=0)
