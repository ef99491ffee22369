"""Fuzzing the readers and the decoder: damaged captures never crash the tool, and every IP
packet that is decoded is counted in exactly one flow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment
from scapy.layers.l2 import ARP, Dot1Q, Ether

from detector.config import FlowConfig
from detector.errors import DetectorError
from detector.pipeline.flows_job import run_flows
from tests.capture_files import Iface, Rec, pcap_bytes, pcapng_section

S = 1_000_000_000
T0 = 1_700_000_000 * S
SAMPLE_FRAMES = [
    bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S")),
    bytes(Ether() / Dot1Q(vlan=5) / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP() / b"xyz"),
    bytes(Ether() / IPv6(src="::1", dst="::2") / IPv6ExtHdrFragment(m=1) / UDP() / b"abc"),
    bytes(Ether() / IP(src="10.0.0.3", dst="10.0.0.2") / ICMP(type=3, code=1) / IP() / UDP()),
    bytes(Ether() / ARP(op=2)),
]


def _valid_capture(ng: bool) -> bytes:
    recs = [Rec(T0 + k * S, f) for k, f in enumerate(SAMPLE_FRAMES * 3)]
    return pcapng_section(recs, [Iface(1)]) if ng else pcap_bytes(recs)


def _run(tmp_path, data: bytes):
    p = tmp_path / "fuzz.cap"
    p.write_bytes(data)
    try:
        result = run_flows([str(p)], str(tmp_path / "out.csv"), "csv", FlowConfig(max_flows=64), progress=False)
    except DetectorError as exc:  # a clear, expected refusal (none is expected for flows today)
        pytest.fail(f"run_flows raised {exc!r} instead of reporting it")
    s = result.summary
    assert s["packets"] == s["ip_packets"] + s["non_ip_packets"] + s["bad_packets"]
    return result


mutations = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ng=st.booleans(), edits=mutations, cut=st.integers(0, 5000))
def test_mutated_captures_never_crash(tmp_path, ng, edits, cut):
    data = bytearray(_valid_capture(ng))
    for pos, val in edits:
        data[pos % len(data)] = val
    data = bytes(data[: max(0, len(data) - cut)])
    result = _run(tmp_path, data)
    assert result.exit_code in (0, 1, 2)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(link=st.sampled_from([0, 1, 12, 101, 108, 113, 228, 229, 276]),
       payloads=st.lists(st.binary(min_size=0, max_size=120), min_size=1, max_size=20))
def test_random_frames_of_every_link_type(tmp_path, link, payloads):
    result = _run(tmp_path, pcap_bytes([Rec(T0 + k, p) for k, p in enumerate(payloads)], link_type=link))
    assert result.exit_code == 0
    assert result.summary["packets"] == len(payloads)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=400), prefix=st.sampled_from([b"", b"\xd4\xc3\xb2\xa1", b"\n\r\r\n",
                                                                         b"\x1f\x8b\x08\x00"]))
def test_random_bytes(tmp_path, data, prefix):
    assert _run(tmp_path, prefix + data).exit_code in (0, 1, 2)


BOUNDS_SCRIPT = textwrap.dedent("""
    import random, sys
    import numpy as np
    from kernels import packet_columns as pc
    from kernels.decode import decode_records
    frames = [bytes.fromhex(h) for h in sys.argv[1:]]
    rng = random.Random(1)
    cols = pc.allocate(1)
    h = np.zeros(1, np.uint64)
    tally = np.zeros(9, np.int64)
    n = 0
    for frame in frames:
        for cut in range(len(frame) + 1):
            for link in (0, 1, 12, 101, 108, 113, 228, 229, 276):
                data = bytearray(frame[:cut])
                if data and rng.random() < 0.5:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                # each record in a buffer of exactly its length: any read past it is out of bounds
                buf = np.frombuffer(bytes(data), dtype=np.uint8) if data else np.zeros(0, np.uint8)
                decode_records(buf, np.zeros(1, np.int64), np.array([len(data)], np.uint32),
                               np.array([len(data)], np.uint32), np.zeros(1, np.int64),
                               np.array([link], np.uint16), 0, 1, cols, h, tally)
                n += 1
    print("decoded", n)
""")


@pytest.mark.slow
def test_decoder_never_reads_past_the_captured_bytes(tmp_path):
    """Compiled with bounds checking, every truncation of every sample frame, for every link
    type, decodes without an out-of-bounds read."""
    env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", BOUNDS_SCRIPT, *[f.hex() for f in SAMPLE_FRAMES]],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "decoded" in proc.stdout
