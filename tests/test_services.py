"""The flow record's ``service``: named from the first captured payload, as Zeek's dynamic
protocol detection does, whatever the ports; and the detectors that read it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from detector.detect.base import FlowView
from detector.detect.corroboration import settle
from detector.detect.long_connection import LongConnection
from detector.detect.port_mismatch import PortMismatch
from detector.flows.services import uid_fids
from detector.l7.tap import uid_text, uid_texts
from kernels import service_sig as sv

T = 1_700_000_000 * 10**9


def _flows_of(tmp_path, sessions, snap=65535):
    """``detector flows`` over TCP/UDP exchanges: (proto, port, first payload, reply)."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether

    E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups
    from scapy.utils import wrpcap

    from detector.config import FlowConfig
    from detector.pipeline.flows_job import run_flows

    pkts = []
    for k, (proto, port, first, reply) in enumerate(sessions):
        c, s, cp = "10.0.0.5", f"192.0.2.{k + 1}", 40000 + k
        if proto == "tcp":
            pkts += [E / IP(src=c, dst=s) / TCP(sport=cp, dport=port, flags="S", seq=99),
                     E / IP(src=s, dst=c) / TCP(sport=port, dport=cp, flags="SA", seq=499, ack=100),
                     E / IP(src=c, dst=s) / TCP(sport=cp, dport=port, flags="A", seq=100, ack=500)]
            if first:
                pkts.append(E / IP(src=c, dst=s) / TCP(sport=cp, dport=port, flags="PA", seq=100, ack=500) / first)
            if reply:
                pkts.append(E / IP(src=s, dst=c) / TCP(sport=port, dport=cp, flags="PA", seq=500,
                                                             ack=100 + len(first)) / reply)
        else:
            pkts += [E / IP(src=c, dst=s) / UDP(sport=cp, dport=port) / first]
    for j, p in enumerate(pkts):
        p.time = 1_700_000_000 + j * 0.01
    cap = tmp_path / "s.pcap"
    wrpcap(str(cap), pkts, snaplen=snap)
    out = tmp_path / "f.csv"
    run_flows([str(cap)], str(out), "csv", FlowConfig(), progress=False)
    import csv

    return {int(r["resp_p"]): r["service"] for r in csv.DictReader(open(out))}


def test_services_are_named_by_content_not_by_port(tmp_path):
    from detector.synth import dns
    from detector.synth import messages as msg

    hello = msg.client_hello(np.random.default_rng(1), "example.org")
    got = _flows_of(tmp_path, [
        ("tcp", 8443, hello, b""), ("tcp", 443, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b""),
        ("tcp", 2222, b"SSH-2.0-OpenSSH_9.6\r\n", b""), ("tcp", 25, b"", b"220 mail.example.org ESMTP\r\n"),
        ("tcp", 21, b"", b"220 ProFTPD ready\r\n"), ("tcp", 80, bytes([0x8F, 2]) + b"\x00" * 30, b""),
        ("udp", 5353, dns.query(7, "printer.local"), b""), ("tcp", 5900, b"", b"RFB 003.008\n"),
        ("tcp", 6881, b"\x13BitTorrent protocol" + bytes(48), b""),
    ])
    assert got == {8443: "ssl", 443: "http", 2222: "ssh", 25: "smtp", 21: "ftp", 80: "", 5353: "dns", 5900: "rfb",
                   6881: "bittorrent"}


def test_a_short_snap_length_names_nothing_it_cannot_judge(tmp_path):
    """Cut to 68 bytes, a TCP segment with timestamps keeps 2 bytes of payload: not enough to
    call it unrecognised (an SSH port speaking something else), so no port mismatch."""
    import dpkt
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from detector.config import load_config
    from detector.pipeline.analyze_job import run_analyze

    E = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    opts = [("Timestamp", (1, 2)), ("NOP", None), ("NOP", None)]
    frames = [E / IP(src="10.0.0.5", dst="192.0.2.1") / TCP(sport=40000, dport=22, flags="S", seq=1, options=opts),
              E / IP(src="192.0.2.1", dst="10.0.0.5") / TCP(sport=22, dport=40000, flags="SA", seq=9, ack=2,
                                                            options=opts),
              E / IP(src="10.0.0.5", dst="192.0.2.1") / TCP(sport=40000, dport=22, flags="PA", seq=2, ack=10,
                                                            options=opts) / (b"\x00\x07" + bytes(60))]
    for snap, name in ((68, "cut.pcap"), (65535, "whole.pcap")):
        with open(tmp_path / name, "wb") as fh:
            w = dpkt.pcap.Writer(fh, snaplen=snap)
            for j, f in enumerate(frames):
                w.writepkt(bytes(f)[:snap], 1_700_000_000 + j)
    def mismatches(name):
        alerts = run_analyze([str(tmp_path / name)], load_config(None), None, progress=False).alerts
        return [a for a in alerts if a.technique == "port_mismatch"]
    assert mismatches("cut.pcap") == []
    assert len(mismatches("whole.pcap")) == 1  # all 62 bytes seen, and they are not SSH


def test_dns_over_tcp_carries_its_length_prefix(tmp_path):
    from detector.synth import dns

    q = dns.query(9, "example.org")
    got = _flows_of(tmp_path, [("tcp", 53, len(q).to_bytes(2, "big") + q, b""), ("tcp", 54, b"\x00\x03abc", b"")])
    assert got == {53: "dns", 54: ""}


def test_uids_decode_back_to_their_flow_ids():
    fids = np.array([0, 1, 61, 62, 2**63 + 12345, 2**64 - 1], np.uint64)
    uids = pa.array([uid_text(int(f)) for f in fids] + ["-", "C123"])
    assert uid_fids(uids).tolist() == fids.tolist() + [0, 0]


def test_uids_of_many_flows_at_once_are_each_flows_uid():
    fids = np.concatenate([np.random.default_rng(7).integers(0, 2**64, 5000, dtype=np.uint64),
                           np.array([0, 1, 61, 62, 62**10, 2**64 - 1], np.uint64)])
    assert uid_texts(fids) == [uid_text(int(f)) for f in fids]
    assert uid_texts(np.zeros(0, np.uint64)) == []


def test_the_service_codes_have_one_name_each():
    from detector.flows.services import NAMES, service_name

    assert service_name(sv.SVC_BANNER220, 21) == "ftp" and service_name(sv.SVC_BANNER220, 587) == "smtp"
    assert service_name(sv.SVC_UNKNOWN, 80) is None and len(set(NAMES.values())) == len(NAMES)


# -- the detectors that read it -------------------------------------------------------------------

def records(rows):
    """Flow records from dicts (the fields these detectors read) and their first-payload codes."""
    cols = {k: [r[k] for r in rows] for k in ("ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p", "proto", "service",
                                               "history", "duration", "orig_bytes", "resp_bytes", "community_id")}
    cols["ts"] = pa.array(cols["ts"], pa.timestamp("ns"))
    cols["service"] = pa.array(cols["service"], pa.string())
    return FlowView(pa.RecordBatch.from_pydict(cols), {"first_payload": np.array([r["code"] for r in rows], np.int16)})


def flow(port=80, service=None, code=0, history="ShADadF", start_s=0.0, dur_s=10.0, proto="tcp", cport=40000,
         client="10.0.0.5", server="198.51.100.7"):
    return {"ts": T + int(start_s * 1e9), "uid": "Cx", "orig_h": client, "orig_p": cport, "resp_h": server,
            "resp_p": port, "proto": proto, "service": service, "history": history, "duration": dur_s,
            "orig_bytes": 1000, "resp_bytes": 2000, "community_id": "1:x", "code": code}


@pytest.mark.parametrize("row,reported", [
    (flow(80, None, 0), True),  # payload nobody recognised on 80
    (flow(80, "ssl", sv.SVC_SSL), True),  # TLS on 80
    (flow(80, "http", sv.SVC_HTTP), False),
    (flow(443, "ssl", sv.SVC_SSL), False),
    (flow(443, "ssh", sv.SVC_SSH), True),  # sslh, or a tunnel
    (flow(80, None, -1), False),  # no payload captured: nothing to judge
    (flow(80, None, 0, history="DadA"), False),  # a record continuing an earlier one
    (flow(8443, None, 0), False),  # not a watched port
    (flow(53, None, 0, proto="udp", history=""), True),
])
def test_port_mismatch_judges_started_connections_with_payload(row, reported):
    d = PortMismatch()
    d.observe_flows(records([row]))
    alerts = d.finish()
    assert len(alerts) == int(reported)
    assert all(a.severity == "low" and a.technique == "port_mismatch" for a in alerts)


def test_a_connection_is_long_over_its_interim_records():
    """Three 30-minute records of one five-tuple, back to back, in any order (its last piece,
    a minute, is shorter than track_from_s and left out)."""
    pieces = [flow(start_s=k * 1800, dur_s=1800, history="ShAD" if k == 0 else "Dd") for k in range(3)]
    pieces.append(flow(start_s=5400, dur_s=60, history="DdF"))
    d = LongConnection()
    d.observe_flows(records(pieces[::-1]))
    (a,) = d.finish()
    assert a.technique == "long_connection" and a.evidence["records"] == 3 and a.evidence["hours"] == 1.5
    assert a.severity == "medium" and a.evidence["new_destination"]  # outbound, to a server nobody reached before


def test_long_connection_boundaries():
    p = LongConnection.Params()
    short = LongConnection()
    short.observe_flows(records([flow(dur_s=p.min_duration_s - 1)]))
    assert short.finish() == []
    inbound = LongConnection()  # an outside user's long SSH session to a login node
    inbound.observe_flows(records([flow(22, "ssh", sv.SVC_SSH, dur_s=p.min_duration_s, client="198.51.100.7",
                                        server="10.0.0.5")]))
    (a,) = inbound.finish()
    assert a.severity == "low"
    gap = LongConnection()  # two sessions on one five-tuple, an hour apart, are two connections
    gap.observe_flows(records([flow(dur_s=2000), flow(start_s=2000 + p.gap_s + 1000, dur_s=2000)]))
    assert gap.finish() == []


def test_a_long_connection_speaking_another_protocol_on_80_is_high():
    rows = [flow(start_s=k * 1800, dur_s=1800, history="ShAD" if k == 0 else "Dd") for k in range(3)]
    long_, mismatch = LongConnection(), PortMismatch()
    for d in (long_, mismatch):
        d.observe_flows(records(rows))
    (a,) = settle(long_.finish() + mismatch.finish())
    assert a.technique == "long_connection" and a.severity == "high"
    assert a.evidence["corroborated_by"][0]["technique"] == "port_mismatch"
