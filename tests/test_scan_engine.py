"""The data-parallel flow engine (sorts and segmented scans, :mod:`kernels.flow_account`) on
NumPy gives the CPU engine's flows, field by field (the inter-arrival std to FLOAT_RTOL), on
synthetic traffic, on captures built to stress each part of it, on random conversations, and
on every shared capture. The same array program runs on CuPy in the GPU backend; these tests
run it everywhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detector.config import FlowConfig
from detector.flows.engine import FlowEngine
from detector.flows.records import FLOW_SCHEMA, RecordBuilder
from detector.flows.scan_engine import ScanFlowEngine
from detector.pipeline.ingest import Ingest
from tests import flow_cases as fc
from tests.conftest import CORPUS, REPO, ZEEK_TRACES
from tests.flow_compare import assert_same


def records(engine, paths, cfg):
    builder = RecordBuilder(cfg)
    out = []
    for batch in Ingest([str(p) for p in paths], cfg.batch_size).batches():
        out += engine.process(batch)
    out += engine.finish()
    table = pa.Table.from_batches([builder.build(e) for e in out], schema=FLOW_SCHEMA)
    return table.sort_by([("uid", "ascending"), ("ts", "ascending")])


def both(paths, engine_cls=ScanFlowEngine, **cfg):
    """Records of the CPU engine and of the scan engine, and the scan engine."""
    config = dataclasses.replace(FlowConfig(), **cfg)
    scan = engine_cls(config)
    return records(FlowEngine(config), paths, config), records(scan, paths, config), scan


def write(tmp_path, name, data: bytes):
    p = tmp_path / f"{name}.pcap"
    p.write_bytes(data)
    return p


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    from detector.synth.encode import encode
    from detector.synth.scenarios import hpc_mix

    sc = hpc_mix(packets=20_000, seed=3)
    path = tmp_path_factory.mktemp("mix") / "mix.pcap"
    path.write_bytes(encode(sc.packets, sc.pool))
    return path


@pytest.mark.parametrize("batch_size", [256, 4096, 262144])
def test_equal_on_synthetic_mix(mix, batch_size):
    cpu, scan, engine = both([mix], batch_size=batch_size)
    assert cpu.num_rows > 300
    assert_same(cpu, scan)
    assert engine.table.stats.walked_packets == 0  # ordinary traffic never needs the walk


def test_equal_on_every_scenario(synth_dir):
    paths = sorted(synth_dir.glob("*.pcap"))
    assert len(paths) > 20
    for path in paths:
        cpu, scan, _ = both([path], batch_size=4096)
        assert_same(cpu, scan)


def test_one_flow_of_100k_packets(tmp_path):
    """A long flow is one segment: one thread never walks it, and it settles in one round."""
    cpu, scan, engine = both([write(tmp_path, "long", fc.long_flow(100_000))])
    assert cpu.num_rows == 1 and cpu["orig_pkts"][0].as_py() + cpu["resp_pkts"][0].as_py() == 100_000
    assert cpu["orig_retrans_pkts"][0].as_py() > 10  # the retransmissions were seen
    assert_same(cpu, scan)
    stats = engine.table.stats
    assert (stats.segments, stats.rounds, stats.walked_packets) == (1, 1, 0)


def test_long_flow_across_many_batches(tmp_path):
    cpu, scan, engine = both([write(tmp_path, "long", fc.long_flow(20_000))], batch_size=1000)
    assert_same(cpu, scan)
    assert engine.table.stats.ranges == 20 and engine.table.stats.walked_packets == 0


@pytest.mark.parametrize("cfg", [{}, {"active_timeout": 10.0}, {"batch_size": 256, "active_timeout": 7.0}])
def test_splits_inside_a_batch(tmp_path, cfg):
    """Idle gaps, the attempt timer, a close then the close delay, port reuse after a RST and
    interim records: records of one key split inside one batch, as the CPU splits them."""
    cpu, scan, _ = both([write(tmp_path, "splits", fc.splits())], **cfg)
    reasons = set(cpu["end_reason"].to_pylist())
    assert {"idle", "fin", "rst"} <= reasons
    if cfg.get("active_timeout"):
        assert "active" in reasons
    assert_same(cpu, scan)


def test_out_of_order_timestamps(tmp_path):
    for batch_size in (256, 262144):
        cpu, scan, _ = both([write(tmp_path, "ooo", fc.out_of_order())], batch_size=batch_size)
        assert_same(cpu, scan)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31), batch_size=st.sampled_from([256, 1000, 4096]),
       active=st.sampled_from([0.0, 30.0, 1800.0]), keys=st.integers(1, 8))
@example(seed=4786, batch_size=256, active=0.0, keys=8)  # a FIN's mark compared between the walk and the scans
def test_random_conversations(tmp_path, seed, batch_size, active, keys):
    """Random flags, sequence numbers (some far out of window), gaps and directions on a few
    keys: whichever way each segment is settled (scans, or the walk), the flows are the CPU's."""
    path = write(tmp_path, "rnd", fc.random_tcp(seed, n=1500, keys=keys))
    cpu, scan, _ = both([path], batch_size=batch_size, active_timeout=active)
    assert_same(cpu, scan)


def test_scans_settle_most_random_conversations(tmp_path):
    """Given rounds enough, the scans settle random conversations themselves (so the test
    above checks them, not only the walk); sequence numbers stay in window here, as random
    ones far apart are the walk's by design."""

    class ManyRounds(ScanFlowEngine):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.table.rounds = 64

    walked = total = 0
    for seed in range(4):
        cpu, scan, engine = both([write(tmp_path, f"r{seed}", fc.random_tcp(seed, n=1500, keys=4, wild=0.0))],
                                 engine_cls=ManyRounds, batch_size=4096, active_timeout=0.0)
        assert_same(cpu, scan)
        walked += engine.table.stats.walked_packets
        total += engine.table.stats.packets
    assert walked < total // 4


def test_unsettled_segments_are_walked_and_counted(tmp_path):
    """Interim records every 10 s of a 60 s flow chain one record's start to the next: more
    rounds than allowed, so the segment is walked, and counted."""
    cpu, scan, engine = both([write(tmp_path, "splits", fc.splits())], active_timeout=10.0)
    assert_same(cpu, scan)
    assert engine.table.stats.unsettled_segments >= 1
    assert engine.table.stats.walked_packets >= 30


def test_sequence_numbers_the_scans_cannot_follow_are_walked(tmp_path):
    """Segments going back 1.5 GB twice: the CPU compares modulo 2**32, so 3 GB back reads as
    1.3 GB ahead. The scans cannot see that and leave the segment to the walk."""
    t = fc.T0 + np.arange(4, dtype=np.int64) * 1000
    seq = np.array([3_500_000_000, 2_000_000_000, 500_000_000, 600_000_000], dtype=np.uint64)
    data = fc.capture(fc.spec(t, fc.A, fc.B, 40000, 80, flags=fc.ACK | fc.PSH, seq=seq, payload=100))
    cpu, scan, engine = both([write(tmp_path, "seq", data)])
    assert_same(cpu, scan)
    assert engine.table.stats.seq_segments == 1
    assert cpu["orig_bytes"][0].as_py() > 100  # the CPU counted the wrapped-ahead data as new


def test_full_table_evicts_as_the_cpu(mix):
    cpu, scan, engine = both([mix], batch_size=1000, max_flows=16)
    assert engine.evicted > 0
    assert_same(cpu, scan)


class _CollidingHashes:
    """Flow hashes cut to 3 bits, so that most keys share a hash with others."""

    def decode(self, b):
        super().decode(b)
        self.pkt_hash[: b.n] &= np.uint64(7)


def test_colliding_hashes(mix):
    class CpuColliding(_CollidingHashes, FlowEngine):
        pass

    class ScanColliding(ScanFlowEngine):
        def _decoder(self):
            dec = super()._decoder()
            plain = dec.decode

            def decode(b, counts):
                plain(b, counts)
                dec.pkt_hash[: b.n] &= np.uint64(7)

            dec.decode = decode
            return dec

    config = FlowConfig(batch_size=4096)
    scan = ScanColliding(config)
    cpu_table = records(CpuColliding(config), [mix], config)
    assert_same(cpu_table, records(scan, [mix], config))
    assert scan.table.stats.collisions > 0 and scan.table.probes > 1


def _captures():
    found = []
    for root in (CORPUS, ZEEK_TRACES):
        if (root / "MANIFEST.tsv").is_file():
            found += sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".trace",
                                                                                          ".gz", ".cap"))
    return found


CAPTURES = _captures()


@pytest.mark.corpus
@pytest.mark.parametrize("path", CAPTURES, ids=[f"{p.parent.name}/{p.name}" for p in CAPTURES])
def test_equal_on_shared_captures(path):
    from detector.errors import CaptureError

    try:
        cpu, scan, _ = both([path], batch_size=4096)
    except CaptureError as exc:
        pytest.skip(f"not readable by either engine: {exc}")
    assert_same(cpu, scan)
