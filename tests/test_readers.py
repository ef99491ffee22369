"""Capture formats and link types: every combination gives the same flow."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
import subprocess
import sys

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from tests.capture_files import Iface, Rec, custom_block, pcap_bytes, pcapng_section
from tests.conftest import capture_span

S = 1_000_000_000
T0 = 1_700_000_123 * S + 456_789_000  # microsecond-exact
IP4 = bytes(IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=1234, dport=443, flags="S", seq=1))
IP6 = bytes(IPv6(src="2001:db8::a", dst="2001:db8::b") / UDP(sport=5000, dport=6000) / b"hello")


def sll(ip: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x02\x00\x00\x00\x00\x01\0\0", proto) + ip


def sll2(ip: bytes, proto: int = 0x0800) -> bytes:
    return struct.pack(">HHIHBB8s", proto, 0, 3, 1, 0, 6, b"\x02\x00\x00\x00\x00\x01\0\0") + ip


LINK_CASES = {
    "ethernet": (1, bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0800)) + IP4),
    "raw-101": (101, IP4),
    "raw-dlt12": (12, IP4),
    "raw-dlt14": (14, IP4),
    "ipv4-228": (228, IP4),
    "ipv6-229": (229, IP6),
    "sll": (113, sll(IP4)),
    "sll-ipv6": (113, sll(IP6, 0x86DD)),
    "sll2": (276, sll2(IP4)),
    "null-le": (0, struct.pack("<I", 2) + IP4),
    "null-be": (0, struct.pack(">I", 2) + IP4),
    "null-ipv6-freebsd": (0, struct.pack("<I", 28) + IP6),
    "loop": (108, struct.pack(">I", 2) + IP4),
}


def check_flow(run, v6: bool):
    assert run.result.exit_code == 0, run.result.errors
    assert len(run.rows) == 1
    f = run.rows[0]
    if v6:
        assert (f["orig_h"], f["orig_p"], f["resp_h"], f["resp_p"], f["proto"]) == (
            "2001:db8::a", 5000, "2001:db8::b", 6000, "udp")
        assert f["orig_bytes"] == 5
    else:
        assert (f["orig_h"], f["orig_p"], f["resp_h"], f["resp_p"], f["proto"]) == (
            "10.1.1.1", 1234, "10.2.2.2", 443, "tcp")
        assert f["history"] == "S"
    assert f["ts_ns"] // 1000 == T0 // 1000


@pytest.mark.parametrize("case", sorted(LINK_CASES))
def test_link_types(flows, case):
    link_type, frame = LINK_CASES[case]
    run = flows(pcap_bytes([Rec(T0, frame)], link_type=link_type))
    check_flow(run, frame is LINK_CASES["ipv6-229"][1] or frame.endswith(IP6))


@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_byte_orders_and_resolutions(flows, little, nanosecond):
    frame = LINK_CASES["ethernet"][1]
    ts = T0 + (789 if nanosecond else 0)
    run = flows(pcap_bytes([Rec(ts, frame), Rec(ts + 5 * S, frame)], little=little, nanosecond=nanosecond))
    check_flow(run, False)
    f = run.rows[0]
    assert f["orig_pkts"] == 2
    assert f["ts_ns"] == ts  # pyarrow timestamp in ns: exact
    assert capture_span(f) == pytest.approx(5.0)


@pytest.mark.parametrize("little", [True, False])
def test_pcapng_interfaces_resolutions_and_unknown_blocks(flows, little):
    eth_frame = LINK_CASES["ethernet"][1]
    ifaces = [Iface(1), Iface(101, tsresol=9), Iface(229, tsresol=0x94, tsoffset_s=100)]  # 2^-20 s units
    recs = [Rec(T0, eth_frame, iface=0), Rec(T0 + 1 * S + 123, IP4, iface=1), Rec(T0 + 2 * S, IP6, iface=2)]
    data = pcapng_section(recs, ifaces, little=little, extra_blocks=custom_block(little))
    run = flows(data)
    assert run.result.exit_code == 0, run.result.errors
    tcp = run.one(proto="tcp")
    assert tcp["orig_pkts"] == 2 and tcp["ts_ns"] == T0
    assert capture_span(tcp) == pytest.approx(1.000000123, abs=1e-9)
    udp = run.one(proto="udp")
    # 2^-20 s resolution: within one unit of the true time
    assert abs(udp["ts_ns"] - (T0 + 2 * S)) <= 954


def test_pcapng_several_sections_with_both_byte_orders(flows):
    first = pcapng_section([Rec(T0, IP4)], [Iface(101)], little=True)
    second = pcapng_section([Rec(T0 + S, IP6)], [Iface(229)], little=False)
    third = pcapng_section([Rec(T0 + 2 * S, IP4)], [Iface(101)], little=True, simple=True)
    run = flows(first + second + third)
    assert run.result.exit_code == 0, run.result.errors
    assert run.total_packets() == 3
    assert run.one(proto="udp")["orig_h"] == "2001:db8::a"


def test_pcapng_obsolete_packet_block(flows):
    o = "<"
    shb_if = pcapng_section([], [Iface(101)])
    body = struct.pack(o + "HHIIII", 0, 0, (T0 // 1000) >> 32, (T0 // 1000) & 0xFFFFFFFF, len(IP4), len(IP4))
    body += IP4 + b"\0" * (-len(IP4) % 4)
    block = struct.pack(o + "II", 2, 12 + len(body)) + body + struct.pack(o + "I", 12 + len(body))
    check_flow(flows(shb_if + block), False)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_captures(flows, tmp_path, compress):
    p = tmp_path / "c.pcap.gz"
    p.write_bytes(compress(pcap_bytes([Rec(T0, LINK_CASES["ethernet"][1])])))
    check_flow(flows(p), False)


def test_folder_read_in_time_order_and_flow_spans_files(flows, tmp_path):
    folder = tmp_path / "ring"
    (folder / "sub").mkdir(parents=True)
    frame = bytes(Ether() / IP(src="10.1.1.1", dst="10.2.2.2") / UDP(sport=1, dport=2) / b"x")
    # names sort opposite to time: the reader must order by first timestamp
    (folder / "a.pcap").write_bytes(pcap_bytes([Rec(T0 + 20 * S, frame)]))
    (folder / "sub" / "b.pcap").write_bytes(pcap_bytes([Rec(T0 + 10 * S, frame)]))
    (folder / "c.pcapng").write_bytes(pcapng_section([Rec(T0, frame)], [Iface(1)]))
    (folder / "notes.txt").write_text("not a capture")
    run = flows(folder)
    assert run.result.exit_code == 0, run.result.errors
    assert len(run.rows) == 1
    f = run.rows[0]
    assert f["orig_pkts"] == 3 and f["ts_ns"] == T0 and capture_span(f) == pytest.approx(20.0)


def test_stdin_streaming(tmp_path):
    data = pcap_bytes([Rec(T0 + k * S, LINK_CASES["ethernet"][1]) for k in range(3)])
    out = tmp_path / "f.csv"
    proc = subprocess.run([sys.executable, "-m", "detector", "flows", "-", "-o", str(out), "--format", "csv"],
                          input=gzip.compress(data), capture_output=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.returncode == 0, proc.stderr.decode()
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and '"10.1.1.1"' in lines[1]
    assert "3 packets" in proc.stderr.decode()
