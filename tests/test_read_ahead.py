"""Reading ahead on a thread: the same batches in the same order, none overwritten while in
use, errors where plain reading raises them, and the thread gone when the loop ends."""

from __future__ import annotations

import gzip
import threading
import time

import numpy as np
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from detector.errors import CaptureError
from detector.pipeline.ingest import Ingest
from detector.sources import open_capture
from detector.sources.read_ahead import can_read_ahead, read_ahead
from tests.capture_files import Iface, Rec, pcap_bytes, pcapng_section

S = 1_000_000_000
T0 = 1_700_000_000 * S
BATCH = 256  # the smallest batch a reader takes: 3000 packets make a dozen batches


def frames(n: int) -> list[Rec]:
    out = []
    for k in range(n):
        l4 = TCP(sport=40000 + k % 97, dport=22) if k % 3 else UDP(sport=5000 + k % 89, dport=53)
        out.append(Rec(T0 + k * 1000, bytes(Ether() / IP(src=f"10.0.{k % 7}.1", dst="10.1.0.2") / l4 / (b"p" * (k % 50)))))
    return out


def snapshot(batch) -> tuple:
    """A batch's records as bytes: what it must still hold while the consumer uses it."""
    data = b"".join(bytes(batch.buf[o:o + c]) for o, c in zip(batch.off, batch.caplen))
    return (batch.n, batch.file_offset, data, batch.ts_ns.tobytes(), batch.wirelen.tobytes(), batch.link.tobytes())


def plain_snapshots(path: str) -> list[tuple]:
    reader = open_capture(path, BATCH)
    try:
        return [snapshot(b) for b in reader.batches()]
    finally:
        reader.src.close()


@pytest.fixture(params=["pcap", "pcapng"])
def capture(request, tmp_path):
    recs = frames(3000)
    if request.param == "pcap":
        data = pcap_bytes(recs)
    else:
        data = pcapng_section(recs, [Iface(1)])
    path = tmp_path / f"cap.{request.param}"
    path.write_bytes(data)
    return str(path)


def test_same_batches_in_order_and_none_overwritten_while_in_use(capture):
    expected = plain_snapshots(capture)
    assert len(expected) >= 10
    reader = open_capture(capture, BATCH)
    assert can_read_ahead(reader)
    got = []
    try:
        for batch in read_ahead(reader, depth=1):
            before = snapshot(batch)
            time.sleep(0.002)  # the reader thread runs ahead meanwhile: it must not touch this batch
            assert snapshot(batch) == before
            got.append(before)
    finally:
        reader.src.close()
    assert got == expected


def test_an_error_arrives_after_the_batches_before_it(tmp_path):
    data = pcap_bytes(frames(3000))
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-7])
    reader = open_capture(str(path), BATCH)
    with pytest.raises(CaptureError) as plain:
        for _ in reader.batches():
            pass
    reader.src.close()

    seen = 0
    reader = open_capture(str(path), BATCH)
    with pytest.raises(CaptureError) as ahead:
        for batch in read_ahead(reader):
            seen += batch.n
    reader.src.close()
    assert str(ahead.value) == str(plain.value)
    assert "truncated final record" in str(ahead.value)
    assert seen == 2999


def test_leaving_the_loop_early_stops_the_reader_thread(capture):
    reader = open_capture(capture, BATCH)
    batches = read_ahead(reader)
    next(batches)
    time.sleep(0.01)
    batches.close()
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())
    reader.src.close()


def test_ingest_reads_ahead_with_the_same_records_and_errors(tmp_path):
    good = tmp_path / "a.pcap"
    good.write_bytes(pcap_bytes(frames(3000)))
    cut = tmp_path / "b.pcap"
    cut.write_bytes(pcap_bytes(frames(1000))[:-5])
    results = []
    for ahead in (False, True):
        ingest = Ingest([str(good), str(cut)], BATCH, read_ahead=ahead)
        ts = np.concatenate([b.ts_ns.copy() for b in ingest.batches()])
        results.append((ts.tobytes(), [s.records for s in ingest.inputs], [str(e) for e in ingest.errors]))
    assert results[0] == results[1]
    assert results[1][1] == [3000, 999]


def test_streamed_input_is_not_read_ahead(tmp_path):
    path = tmp_path / "c.pcap.gz"
    path.write_bytes(gzip.compress(pcap_bytes(frames(10))))
    reader = open_capture(str(path), BATCH)
    try:
        assert not can_read_ahead(reader)  # a refill moves bytes that handed-out batches point into
    finally:
        reader.src.close()


def test_a_held_mapping_releases_only_behind_the_batches_in_use(tmp_path, monkeypatch):
    from detector.sources import bytesource

    path = tmp_path / "d.pcap"
    path.write_bytes(pcap_bytes(frames(3000)))
    monkeypatch.setattr(bytesource, "RELEASE_EVERY", 1)
    src = bytesource.MappedSource(str(path))
    real, dropped = src._mm, []

    class Spy:  # records what would be dropped from the process
        def madvise(self, _option, start, length):
            dropped.append(start + length)

    src._mm = Spy()
    src.hold(2)
    page = bytesource.mmap.PAGESIZE
    for upto in (5 * page, 9 * page, 14 * page, 20 * page):
        src.release(upto)
    assert dropped == [5 * page, 9 * page]  # the last two release points are still in use
    src._mm = real
    src.close()


def test_leaving_an_ingest_loop_stops_the_reader_before_the_file_is_closed(tmp_path):
    path = tmp_path / "e.pcap"
    path.write_bytes(pcap_bytes(frames(3000)))
    ingest = Ingest([str(path)], BATCH, read_ahead=True)
    batches = ingest.batches()
    first = next(batches)
    assert first.n == BATCH
    batches.close()  # what a `break` out of the job's loop does
    assert not any(t.name == "read-ahead" and t.is_alive() for t in threading.enumerate())
    assert ingest.inputs[0].records == BATCH and ingest.inputs[0].error is None
