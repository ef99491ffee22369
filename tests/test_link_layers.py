"""Link layers beyond Ethernet (kernels/link_layers.py): the same IP packets give the same flows
over PPP, Cisco HDLC, NFLOG and 802.11 (bare, radiotap, PPI) as over Ethernet, frames that carry
no IP are counted as such, and cut-short headers are malformed, not errors."""

from __future__ import annotations

import dataclasses

import pyarrow as pa
import pytest

from detector.config import FlowConfig
from detector.flows.engine import FlowEngine
from detector.flows.records import FLOW_SCHEMA, RecordBuilder
from detector.pipeline.ingest import Ingest
from tests import link_frames as lf
from tests.capture_files import Rec, pcap_bytes


@pytest.fixture(scope="module")
def ip_packets(tmp_path_factory):
    """(timestamp, IP packet) of a synthetic site's untagged IP traffic."""
    from detector.sources import open_capture
    from detector.synth.encode import encode
    from detector.synth.scenarios import hpc_mix

    sc = hpc_mix(packets=4000, seed=9)
    path = tmp_path_factory.mktemp("mix") / "mix.pcap"
    path.write_bytes(encode(sc.packets, sc.pool))
    out = []
    reader = open_capture(str(path), 1 << 16)
    for b in reader.batches():
        for j in range(b.n):
            frame = bytes(b.buf[b.off[j]: b.off[j] + b.caplen[j]])
            if frame[12:14] in (b"\x08\x00", b"\x86\xdd"):
                out.append((int(b.ts_ns[j]), frame[14:]))
    reader.src.close()
    assert len(out) > 3000
    return out


def flows_of(path, cfg=None):
    cfg = cfg or FlowConfig()
    engine, builder = FlowEngine(cfg), RecordBuilder(cfg)
    ingest = Ingest([str(path)], cfg.batch_size)
    out = [e for b in ingest.batches() for e in engine.process(b)] + engine.finish()
    table = pa.Table.from_batches([builder.build(e) for e in out], schema=FLOW_SCHEMA)
    return table.sort_by([("uid", "ascending")]), engine.counts, ingest


@pytest.mark.parametrize("name", sorted(lf.WRAPS))
def test_same_flows_as_over_ethernet(tmp_path, ip_packets, name):
    link_type, wrap = lf.WRAPS[name]
    eth, other = tmp_path / "eth.pcap", tmp_path / f"{name}.pcap"
    eth.write_bytes(pcap_bytes([Rec(ts, lf.ethernet(ip)) for ts, ip in ip_packets]))
    other.write_bytes(pcap_bytes([Rec(ts, wrap(ip)) for ts, ip in ip_packets], link_type=link_type))
    want, want_counts, _ = flows_of(eth)
    got, got_counts, ingest = flows_of(other)
    assert not ingest.errors
    assert got.num_rows == want.num_rows > 50
    assert got.equals(want), name
    assert got_counts.by_status.tolist() == want_counts.by_status.tolist()


def test_frames_without_ip_are_counted_not_refused(tmp_path):
    from scapy.layers.inet import IP, TCP

    pkt = bytes(IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=1234, dport=443, flags="S"))
    frames = [lf.wifi_other("beacon"), lf.wifi_other("encrypted"), lf.wifi(pkt), lf.wifi(pkt)[:20]]
    path = tmp_path / "wifi.pcap"
    path.write_bytes(pcap_bytes([Rec(1_700_000_000 * 10**9 + k, f) for k, f in enumerate(frames)], link_type=105))
    table, counts, _ = flows_of(path, dataclasses.replace(FlowConfig(), batch_size=16))
    assert table.num_rows == 1 and table.column("orig_h")[0].as_py() == "10.1.1.1"
    assert counts.records == 4


@pytest.mark.parametrize("name", sorted(lf.ERF_WRAPS))
def test_erf_files_give_the_same_flows_as_pcap(tmp_path, ip_packets, name):
    """ERF (Endace DAG) records of each decoded type, with padding records and extension
    headers between them, against the same packets in a pcap over Ethernet."""
    kind, wrap = lf.ERF_WRAPS[name]
    eth, erf = tmp_path / "eth.pcap", tmp_path / f"{name}.erf"
    eth.write_bytes(pcap_bytes([Rec(ts, lf.ethernet(ip)) for ts, ip in ip_packets], nanosecond=True))
    records = []
    for k, (ts, ip) in enumerate(ip_packets):
        t = kind if kind is not None else (23 if ip[0] >> 4 == 6 else 22)
        records.append(lf.erf_record(ts, t, wrap(ip), extensions=k % 3))
        if k % 100 == 0:
            records.append(lf.erf_record(ts, 48, b"\0" * 24))  # padding: no packet
    erf.write_bytes(b"".join(records))
    want, _, _ = flows_of(eth)
    got, got_counts, ingest = flows_of(erf)
    assert not ingest.errors and ingest.inputs[0].format == "erf"
    assert got.num_rows == want.num_rows > 50
    assert got.equals(want), name
    assert got_counts.records == len(ip_packets)


def test_erf_types_not_decoded_are_counted_and_a_cut_record_is_an_error(tmp_path):
    from scapy.layers.inet import IP, TCP

    pkt = bytes(IP(src="10.1.1.1", dst="10.2.2.2") / TCP(sport=1234, dport=443, flags="S"))
    t0 = 1_700_000_000 * 10**9
    data = lf.erf_record(t0, 2, lf.ethernet(pkt)) + lf.erf_record(t0 + 1, 3, b"\0" * 53) + \
        lf.erf_record(t0 + 2, 22, pkt)
    path = tmp_path / "mixed.erf"
    path.write_bytes(data + lf.erf_record(t0 + 3, 22, pkt)[:20])
    _, counts, ingest = flows_of(path)
    assert counts.records == 4 - 1
    assert any("1 ERF record(s) of types the decoder does not read" in w for w in ingest.inputs[0].warnings)
    (err,) = ingest.errors
    assert f"offset {len(data)}: truncated final record" in str(err)
