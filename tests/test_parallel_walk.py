"""The record walk on several threads gives the sequential walk's batches to the byte: the same
records in the same order, the same batch sizes and offsets, and the same error at the same
offset, whatever the payloads look like and wherever the chunks fall."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.errors import CaptureError
from detector.sources import open_capture
from detector.sources.parallel_walk import ParallelWalk, SequentialWalk, WalkPlan, make_walk
from detector.sources.read_ahead import read_ahead
from kernels import capture_resync as rs
from tests.capture_files import Iface, Rec, custom_block, pcap_bytes, pcapng_section

S = 1_000_000_000
T0 = 1_700_000_000 * S
ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"


def plan(threads: int = 2, chunk: int = 256, rows: int = 1 << 12, copy_rows: int = 1) -> WalkPlan:
    """Threads for any file, however small, in chunks of ``chunk`` bytes and ``rows`` rows."""
    return WalkPlan(threads=threads, chunk_bytes=chunk, chunk_rows=rows, min_chunk_bytes=64, min_file_bytes=0,
                    min_copy_rows=copy_rows)


def snapshot(batch) -> tuple:
    return (batch.n, batch.file_offset, batch.off.tobytes(), batch.caplen.tobytes(), batch.wirelen.tobytes(),
            batch.ts_ns.tobytes(), batch.link.tobytes())


def read_all(path, walk: WalkPlan | None, batch: int = 64) -> tuple:
    """Every batch of ``path`` and the error that ended the walk (offset, message), and the walk's stats."""
    reader = open_capture(str(path), batch, walk=walk)
    got, err = [], None
    try:
        for b in reader.batches():
            got.append(snapshot(b))
    except CaptureError as exc:
        err = (exc.offset, str(exc))
    finally:
        reader.src.close()
    return got, err, reader.walk_stats


def assert_same_walk(path, walk: WalkPlan, batch: int = 64):
    """The parallel walk's batches and error are the sequential walk's; returns its stats."""
    seq_batches, seq_err, _ = read_all(path, None, batch)
    par_batches, par_err, stats = read_all(path, walk, batch)
    assert par_err == seq_err
    assert len(par_batches) == len(seq_batches)
    assert par_batches == seq_batches
    assert stats is not None, "the walk did not run on threads"
    return stats


def frames(n: int, size=lambda k: 40 + k % 200) -> list[Rec]:
    return [Rec(T0 + k * 1000, ETH + bytes([k % 251]) * size(k)) for k in range(n)]


def fake_pcap_headers(count: int, ts_ns: int = T0, little: bool = True) -> bytes:
    """Bytes that read as ``count`` empty pcap records in a row, of the capture's time: what a
    chunk's guess lands on when it falls in such a payload."""
    sec, frac = divmod(ts_ns, S)
    return struct.pack(("<" if little else ">") + "IIII", sec, frac // 1000, 0, 60) * count


def fake_pcapng_blocks(count: int, little: bool = True) -> bytes:
    """Bytes that read as ``count`` empty Enhanced Packet Blocks in a row, trailers and all."""
    o = "<" if little else ">"
    return struct.pack(o + "IIIIIIII", 6, 32, 0, 0, 0, 0, 60, 32) * count


@pytest.fixture(scope="module")
def synth_captures(tmp_path_factory):
    """hpc-mix from the project's own generator, in each format the readers take."""
    from detector.cli import main

    out = {}
    for name, extra in [("pcap-us", []), ("pcap-ns", ["--nanosecond"]), ("pcap-snap128", ["--snaplen", "128"]),
                        ("pcapng-us", ["--format", "pcapng"]), ("pcapng-ns", ["--format", "pcapng", "--nanosecond"])]:
        d = tmp_path_factory.mktemp(name)
        assert main(["synth", "hpc-mix", "-o", str(d), "--packets", "6000", "--seed", "3", *extra]) == 0
        out[name] = next(p for p in d.iterdir() if p.suffix in (".pcap", ".pcapng"))
    return out


@pytest.mark.parametrize("name", ["pcap-us", "pcap-ns", "pcap-snap128", "pcapng-us", "pcapng-ns"])
@pytest.mark.parametrize("threads, chunk", [(2, 4096), (3, 64 << 10), (4, 777)])
def test_synthetic_captures(synth_captures, name, threads, chunk):
    stats = assert_same_walk(synth_captures[name], plan(threads, chunk), batch=1000)
    assert stats.kept > 0  # chunks after the first were walked from their guessed start


@pytest.mark.parametrize("little", [True, False])
@pytest.mark.parametrize("nanosecond", [True, False])
def test_pcap_either_byte_order_and_resolution(tmp_path, little, nanosecond):
    path = tmp_path / "c.pcap"
    path.write_bytes(pcap_bytes(frames(500), little=little, nanosecond=nanosecond))
    assert assert_same_walk(path, plan(3, 1024)).kept > 0


@pytest.mark.parametrize("little", [True, False])
def test_pcapng_either_byte_order_and_several_interfaces(tmp_path, little):
    recs = frames(500)
    for k, r in enumerate(recs):
        r.iface = k % 2
    path = tmp_path / "c.pcapng"
    path.write_bytes(pcapng_section(recs, [Iface(1), Iface(101, tsresol=9)], little=little))
    assert assert_same_walk(path, plan(3, 1024)).kept > 0


@pytest.mark.parametrize("threads", [2, 4])
def test_payloads_made_of_fake_pcap_headers(tmp_path, threads):
    """Every payload is a run of fake headers, so most guesses land on one: the walks do not
    meet there, and those chunks are walked again from where the walk before them ended."""
    recs = [Rec(T0 + k * 1000, ETH + fake_pcap_headers(8 + k % 13)) for k in range(400)]
    path = tmp_path / "fake.pcap"
    path.write_bytes(pcap_bytes(recs))
    stats = assert_same_walk(path, plan(threads, 300))
    assert stats.rewalked > 0


def test_payloads_made_of_fake_pcapng_blocks(tmp_path):
    recs = [Rec(T0 + k * 1000, fake_pcapng_blocks(4 + k % 9)) for k in range(400)]
    path = tmp_path / "fake.pcapng"
    path.write_bytes(pcapng_section(recs, [Iface(1)]))
    stats = assert_same_walk(path, plan(3, 300))
    assert stats.rewalked > 0


def test_guesses_that_keep_failing_hand_the_file_to_one_thread(tmp_path):
    recs = [Rec(T0 + k * 1000, fake_pcap_headers(40)) for k in range(300)]
    path = tmp_path / "fake.pcap"
    path.write_bytes(pcap_bytes(recs))
    stats = assert_same_walk(path, plan(2, 64))
    assert stats.alone > 0 and stats.kept == 0


@pytest.mark.parametrize("count", [0, 1, 2, 5])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_tiny_files(tmp_path, count, fmt):
    recs = frames(count)
    path = tmp_path / f"tiny.{fmt}"
    path.write_bytes(pcap_bytes(recs) if fmt == "pcap" else pcapng_section(recs, [Iface(1)]))
    assert_same_walk(path, plan(4, 64), batch=1)
    assert_same_walk(path, plan(4, 64), batch=3)


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_chunks_smaller_than_one_record(tmp_path, fmt):
    recs = frames(60, size=lambda k: 1500 + 37 * k)
    path = tmp_path / f"big.{fmt}"
    path.write_bytes(pcap_bytes(recs) if fmt == "pcap" else pcapng_section(recs, [Iface(1)]))
    assert_same_walk(path, plan(4, 64), batch=7)


@pytest.mark.parametrize("cut", [1, 5, 15, 16, 17, 60])
@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_truncated_final_record(tmp_path, fmt, cut):
    recs = frames(300)
    data = pcap_bytes(recs) if fmt == "pcap" else pcapng_section(recs, [Iface(1)])
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[:-cut])
    assert_same_walk(path, plan(3, 512))
    _, err, _ = read_all(path, plan(3, 512))
    assert "truncated final" in err[1]


def pcap_record_offsets(data: bytes) -> list[int]:
    offs, pos = [], 24
    while pos + 16 <= len(data):
        offs.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return offs


@pytest.mark.parametrize("which", [1, 77, 150, 299])
def test_caplen_above_snaplen_is_reported_where_the_sequential_walk_reports_it(tmp_path, which):
    data = bytearray(pcap_bytes(frames(300), snaplen=1500))
    at = pcap_record_offsets(bytes(data))[which]
    data[at + 8:at + 12] = struct.pack("<I", 300_000)
    path = tmp_path / "bad.pcap"
    path.write_bytes(bytes(data))
    assert_same_walk(path, plan(3, 512))
    _, err, _ = read_all(path, plan(3, 512))
    assert err == (at, f"{path}: offset {at}: record claims 300000 captured bytes, above 262144 (the snap length, "
                       f"or libpcap's limit): corrupt record header")


def pcapng_block_offsets(data: bytes, btype: int = 6) -> list[int]:
    pos, out = 0, []
    while pos + 8 <= len(data):
        t, blen = struct.unpack_from("<II", data, pos)
        if t == btype:
            out.append(pos)
        pos += blen
    return out


@pytest.mark.parametrize("damage", ["length", "trailer", "interface"])
@pytest.mark.parametrize("which", [2, 160])
def test_corrupt_pcapng_blocks(tmp_path, damage, which):
    good = pcapng_section(frames(300), [Iface(1)])
    at = pcapng_block_offsets(good)[which]
    bad = bytearray(good)
    blen = struct.unpack_from("<I", good, at + 4)[0]
    if damage == "length":
        bad[at + 4:at + 8] = struct.pack("<I", 13)
    elif damage == "trailer":
        bad[at + blen - 4:at + blen] = struct.pack("<I", blen + 4)
    else:
        bad[at + 8:at + 12] = struct.pack("<I", 5)
    path = tmp_path / "bad.pcapng"
    path.write_bytes(bytes(bad))
    assert_same_walk(path, plan(3, 512))
    _, err, _ = read_all(path, plan(3, 512))
    assert err[0] == at


def test_simple_packet_blocks_take_the_time_of_the_block_before(tmp_path):
    """A chunk that starts with Simple Packet Blocks cannot know their time; the walk corrects
    it from the chunk before."""
    recs = frames(400)
    for k, r in enumerate(recs):
        r.simple = (k // 7) % 3 != 0  # runs of SPBs between runs of EPBs
    path = tmp_path / "spb.pcapng"
    path.write_bytes(pcapng_section(recs, [Iface(1)]))
    assert_same_walk(path, plan(3, 256), batch=10)
    assert_same_walk(path, plan(2, 64), batch=1)


def test_sections_interfaces_and_unknown_blocks_between_packets(tmp_path):
    first = frames(200)
    second = frames(200)
    for r in second[::3]:
        r.iface = 1
    data = (pcapng_section(first, [Iface(1)], extra_blocks=custom_block())
            + pcapng_section(second, [Iface(1), Iface(101, tsresol=9)], little=False, extra_blocks=custom_block(False)))
    path = tmp_path / "multi.pcapng"
    path.write_bytes(data)
    assert_same_walk(path, plan(3, 300), batch=50)


record_strategy = st.tuples(
    st.integers(0, 400),  # payload length
    st.sampled_from(["bytes", "fake", "zeros"]),
    st.integers(0, 3000),  # microseconds after the record before
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(record_strategy, max_size=120), fmt=st.sampled_from(["pcap", "pcapng"]),
       threads=st.integers(2, 4), chunk=st.integers(64, 900), batch=st.integers(1, 40),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, 1 << 16), st.integers(0, 255))),
       cut=st.integers(0, 40), little=st.booleans())
def test_any_capture_any_chunking(tmp_path, records, fmt, threads, chunk, batch, damage, cut, little):
    recs, t = [], T0
    for k, (length, kind, gap) in enumerate(records):
        t += gap * 1000
        if kind == "fake":
            body = (fake_pcap_headers(length // 16 + 1, t, little) if fmt == "pcap"
                    else fake_pcapng_blocks(length // 32 + 1, little))
        elif kind == "zeros":
            body = bytes(length)
        else:
            body = bytes((k * 7 + i) % 256 for i in range(length))
        recs.append(Rec(t, body))
    data = bytearray(pcap_bytes(recs, little=little) if fmt == "pcap" else pcapng_section(recs, [Iface(1)], little))
    if damage is not None and len(data) > 32:
        data[32 + damage[0] % (len(data) - 32)] = damage[1]
    path = tmp_path / f"h.{fmt}"
    path.write_bytes(bytes(data[:len(data) - min(cut, len(data) - 32)]))
    assert_same_walk(path, plan(threads, chunk), batch)


def test_reading_ahead_on_a_thread_gives_the_same_batches(tmp_path):
    path = tmp_path / "ahead.pcap"
    path.write_bytes(pcap_bytes(frames(3000)))
    expected, _, _ = read_all(path, None, batch=256)
    reader = open_capture(str(path), 256, walk=plan(2, 4096))
    try:
        got = [snapshot(b) for b in read_ahead(reader, depth=2)]
    finally:
        reader.src.close()
    assert got == expected and reader.walk_stats.kept > 0


def test_only_large_mapped_files_are_walked_on_threads(tmp_path):
    path = tmp_path / "s.pcap"
    data = pcap_bytes(frames(50))
    path.write_bytes(data)
    gz = tmp_path / "s.pcap.gz"
    gz.write_bytes(gzip.compress(data))
    cases = [(path, WalkPlan(threads=2), SequentialWalk),  # below the default size
             (path, WalkPlan(threads=1, min_file_bytes=0), SequentialWalk),
             (gz, plan(2), SequentialWalk),  # streamed: a refill moves the bytes threads would read
             (path, plan(2), ParallelWalk)]
    for p, walk, kind in cases:
        reader = open_capture(str(p), 64, walk=walk)
        try:
            assert isinstance(make_walk(reader.src, walk), kind), (p, walk)
        finally:
            reader.src.close()


def test_guesses_on_clean_captures_find_the_next_record(synth_captures):
    """On a capture whose payloads hold no fake headers, the guess from any offset is the
    first record that starts there or after: the walks meet and no chunk is walked twice."""
    data = np.fromfile(synth_captures["pcap-us"], dtype=np.uint8)
    starts = np.array(pcap_record_offsets(data.tobytes()[:400_000]))
    fmt = (True, 1000, 262144)
    for p in range(24, int(starts[-2]), 997):
        want = int(starts[np.searchsorted(starts, p)])
        assert rs.resync_pcap(data, p, (len(data), len(data)), fmt, 24) == want


def test_flows_are_the_same_with_the_walk_on_threads(tmp_path, monkeypatch, synth_captures):
    import pyarrow.parquet as pq

    from detector.config import FlowConfig
    from detector.pipeline import flows_job
    from detector.pipeline.flows_job import run_flows

    plans, threaded = [], []
    # the default plan keeps files under 64 MB on one thread: these small ones are let in
    monkeypatch.setattr(flows_job, "WalkPlan", lambda threads: plans.append(threads) or plan(threads, 8192))
    real_window = ParallelWalk._window
    monkeypatch.setattr(ParallelWalk, "_window", lambda self, *a: threaded.append(1) or real_window(self, *a))
    inputs = [str(synth_captures["pcap-us"]), str(synth_captures["pcapng-ns"])]
    tables = {}
    for walk_threads in (1, 2):
        out = tmp_path / f"flows-{walk_threads}.parquet"
        cfg = FlowConfig(walk_threads=walk_threads, batch_size=2048)
        result = run_flows(inputs, str(out), "parquet", cfg, progress=False)
        assert result.exit_code == 0
        tables[walk_threads] = pq.read_table(out)
        assert bool(threaded) == (walk_threads == 2)
    assert plans == [1, 2]
    assert tables[1].num_rows > 100 and tables[1].equals(tables[2])


@pytest.mark.parametrize("cores, flow_threads, configured, expected", [
    (2, 1, 0, 1),  # a reader thread on the spare core: it walks alone, as before
    (2, 2, 0, 2),  # no core to spare: the walk runs between batches, on the flow threads' cores
    (16, 1, 0, 15),
    (16, 4, 3, 3),  # configured
])
def test_walk_threads_follow_the_configuration_or_the_cores(monkeypatch, cores, flow_threads, configured, expected):
    from types import SimpleNamespace

    from detector.config import FlowConfig
    from detector.flows import engine

    monkeypatch.setattr(engine, "available_cores", lambda: cores)
    cfg = FlowConfig(threads=flow_threads, walk_threads=configured)
    assert engine.walk_threads(SimpleNamespace(threads=flow_threads), cfg) == expected
