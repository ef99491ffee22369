"""Severity follows evidence: weak alerts alone stay low; corroborated, they leave as one raised
alert per incident (detector.detect.corroboration)."""

from __future__ import annotations

from detector.alerts import Alert
from detector.detect.corroboration import RULES, WINDOW_NS, settle

S = 10**9


def alert(technique, severity="low", src="10.0.0.1", dst="10.0.0.2", ts=100 * S, end=None, category="mitm"):
    return Alert(ts, end or ts, category, technique, severity, 0.3, f"{technique} {src}->{dst}", "t/1", dst, src, dst)


def test_a_weak_alert_alone_stays_low_and_untouched():
    a = alert("ttl_change")
    (out,) = settle([a])
    assert out is a and out.severity == "low" and "corroborated_by" not in out.evidence


def test_two_weak_signals_on_one_connection_leave_as_one_high_alert():
    ttl, rex = alert("ttl_change"), alert("rexmit_inconsistency", ts=130 * S, src="10.0.0.2", dst="10.0.0.1")
    (out,) = settle([rex, ttl])
    assert out.technique == "ttl_change"  # it comes first in RULES: it is the one kept
    assert out.severity == "high" and out.ts_end_ns == 130 * S
    assert [c["technique"] for c in out.evidence["corroborated_by"]] == ["rexmit_inconsistency"]
    # the alerts handed in are left as they were (a daemon asks its detectors again)
    assert ttl.severity == rex.severity == "low" and "corroborated_by" not in ttl.evidence


def test_a_strong_corroborator_is_kept_raised_and_the_weak_folded_into_it():
    cert = alert("tls_self_signed", src="10.0.0.9", dst="192.0.2.7")
    mismatch = alert("tls_name_mismatch", "medium", src="10.0.0.9", dst="192.0.2.7", ts=101 * S)
    (out,) = settle([cert, mismatch])
    assert out.technique == "tls_name_mismatch" and out.severity == "high"
    assert out.evidence["corroborated_by"][0]["technique"] == "tls_self_signed"


def test_certificate_alerts_corroborate_for_the_same_server_only():
    """A self-signed certificate on the NAS and another server's changed certificate, seen by one
    client, are two things."""
    nas = alert("tls_self_signed", src="10.0.0.9", dst="10.0.0.200")
    other = alert("tls_cert_change", "high", src="10.0.0.9", dst="192.0.2.7")
    out = settle([nas, other])
    assert [a.technique for a in out] == ["tls_self_signed", "tls_cert_change"] and out[0].severity == "low"


def test_a_strong_corroborator_of_higher_severity_is_never_lowered():
    arp = alert("arp_spoof", "critical", src="10.0.0.1", dst="10.0.0.254")
    (out,) = settle([alert("ttl_change"), arp])
    assert out.technique == "arp_spoof" and out.severity == "critical"


def test_corroboration_needs_a_shared_address():
    ttl, rex = alert("ttl_change"), alert("rexmit_inconsistency", src="10.9.9.9", dst="10.9.9.8")
    out = settle([ttl, rex])
    assert out == [ttl, rex] and {a.severity for a in out} == {"low"}


def test_corroboration_needs_time_overlap_within_the_window():
    ttl = alert("ttl_change", ts=100 * S)
    late = alert("rexmit_inconsistency", ts=100 * S + WINDOW_NS + 1)
    near = alert("rexmit_inconsistency", ts=100 * S + WINDOW_NS)
    assert {a.severity for a in settle([ttl, late])} == {"low"}
    assert settle([alert("ttl_change", ts=100 * S), near])[0].severity == "high"


def test_only_the_named_techniques_corroborate():
    ttl = alert("ttl_change")
    other = alert("http_upload", "medium", category="exfiltration")
    out = settle([ttl, other])
    assert out == [ttl, other] and ttl.severity == "low" and other.severity == "medium"
    assert "http_upload" not in RULES["ttl_change"].by


def test_a_strong_alert_joined_through_a_weak_one_still_leaves_apart():
    """ARP spoof and ICMP redirect both corroborate one TTL change: the weak alert is folded
    into the more severe one, the other strong incident is still its own alert."""
    ttl = alert("ttl_change", src="10.0.0.5", dst="10.0.0.6")
    arp = alert("arp_spoof", "high", src="10.0.0.5", dst="10.0.0.1")
    redirect = alert("icmp_redirect", "medium", src="10.0.0.7", dst="10.0.0.6")
    out = settle([ttl, arp, redirect])
    assert [a.technique for a in out] == ["arp_spoof", "icmp_redirect"]
    assert {c["technique"] for c in out[0].evidence["corroborated_by"]} == {"ttl_change", "icmp_redirect"}


# -- end to end: the tap's resent-sequence check and the TTL signal, on crafted captures ----------

def _session(tmp_path, segments, name="s.pcap"):
    """A telnet-like session: handshake, then ``segments`` as (seq offset, bytes, ttl) from the
    client, each echoed by the server."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups
    from scapy.utils import wrpcap

    c, s = "198.51.100.7", "10.1.0.5"
    cs, ss = 1000, 5000
    pkts = [E / IP(src=c, dst=s, ttl=50) / TCP(sport=40000, dport=23, flags="S", seq=cs - 1),
            E / IP(src=s, dst=c, ttl=64) / TCP(sport=23, dport=40000, flags="SA", seq=ss - 1, ack=cs),
            E / IP(src=c, dst=s, ttl=50) / TCP(sport=40000, dport=23, flags="A", seq=cs, ack=ss)]
    for k, (off, data, ttl) in enumerate(segments):
        pkts.append(E / IP(src=c, dst=s, ttl=ttl) / TCP(sport=40000, dport=23, flags="PA", seq=cs + off,
                                                             ack=ss) / data)
        pkts.append(E / IP(src=s, dst=c, ttl=64) / TCP(sport=23, dport=40000, flags="PA", seq=ss,
                                                             ack=cs + off + len(data)) / data)
        ss += len(data)
    for j, p in enumerate(pkts):
        p.time = 1_700_000_000 + j * 0.2
    path = tmp_path / name
    wrpcap(str(path), pkts)
    return path


def _alerts(path):
    from detector.config import load_config
    from detector.pipeline.analyze_job import run_analyze

    return run_analyze([str(path)], load_config(None), None, progress=False).alerts


def test_a_retransmission_of_the_same_bytes_is_not_inconsistent(tmp_path):
    path = _session(tmp_path, [(0, b"hello\n", 50), (0, b"hello\n", 50), (6, b"more", 50), (6, b"mo", 50)])
    assert not [a for a in _alerts(path) if a.technique == "rexmit_inconsistency"]


def test_a_sequence_number_resent_with_other_bytes_is_reported_low(tmp_path):
    path = _session(tmp_path, [(0, b"test\n", 50), (0, b"testing\n", 50)])
    (a,) = [a for a in _alerts(path) if a.technique == "rexmit_inconsistency"]
    assert a.severity == "low" and a.evidence["segments"] == 1 and a.src_port == 40000


def test_a_route_change_mid_connection_is_low(tmp_path):
    """The client's TTL moves by 12 hops halfway through and stays there: a new path, no
    injection (no sequence number resent with other bytes)."""
    segs = [(k, b"x", 50 if k < 10 else 38) for k in range(20)]
    alerts = _alerts(_session(tmp_path, segs))
    (ttl,) = [a for a in alerts if a.technique == "ttl_change"]
    assert ttl.severity == "low" and not [a for a in alerts if a.severity_rank >= 1]


def test_an_injected_segment_with_another_ttl_is_high(tmp_path):
    """shijack-style: a forged segment (another hop count) takes sequence numbers the real client
    then sends its own bytes at."""
    segs = [(0, b"a", 50), (1, b"b", 50), (2, b"rm -rf /\n", 38), (2, b"c", 50), (3, b"d", 50)]
    alerts = [a for a in _alerts(_session(tmp_path, segs)) if a.category == "mitm"]
    (a,) = alerts
    assert a.technique == "ttl_change" and a.severity == "high"
    assert a.evidence["corroborated_by"][0]["technique"] == "rexmit_inconsistency"
