"""What a Dask worker does with one file of an archive: the census of its flow hashes, and
the partition's analysis (flows and L7 events of the flows seen in no other file; the packets
of the others copied out for the client to stitch).

Everything a partition produces goes to its own folder under the work folder, written under a
temporary name and renamed when complete, so that a restarted run can reuse it
(:func:`analyze_file` returns the stored result when the folder's stamp matches).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass, field

import numpy as np

from detector.config import Config
from detector.errors import CaptureError
from detector.flows.engine import FlowEngine, make_engine
from detector.flows.records import RecordBuilder
from detector.flows.services import ServiceNames
from detector.flows.table import flow_packet_mask
from detector.l7.tap import L7Tap
from detector.pipeline.ingest import reader_warnings
from detector.pipeline.stages import flow_config
from detector.pipeline.tap_input import tap_input
from detector.sources import open_capture
from detector.sources.batch import RawBatch
from kernels.capture_scan import copy_records
from kernels.xp_ops import distinct

FEED_FILE = "feed.pkl"
SHARED_FILE = "shared-{shard}.pkl"
DONE_FILE = "done.json"
RESULT_FILE = "result.pkl"
SHARDS = 16  # stitching shards: fixed, so that a rerun on another number of workers reuses partitions
END = 1 << 62  # the position of what is handed on at the end of input (open flows and streams)


@dataclass
class Census:
    """One file's flow hashes (distinct, sorted) and extent."""

    index: int
    path: str
    hashes: np.ndarray
    records: int = 0
    last_ts: int | None = None
    error: CaptureError | None = None
    task_failed: bool = False  # the task itself failed (not the capture): its flows are unknown


@dataclass
class PartitionResult:
    """What the client needs of a finished partition (the bulk stays in ``folder``)."""

    index: int
    path: str
    folder: str
    format: str = "?"
    records: int = 0  # captured records read
    accounted: int = 0  # of which accounted here (the rest are shared packets)
    wire_bytes: int = 0
    by_status: list[int] = field(default_factory=lambda: [0] * 8)
    flows: int = 0
    shared_packets: int = 0
    evicted: int = 0
    streams_dropped: int = 0
    parse_errors: int = 0
    error: CaptureError | None = None
    warnings: list[str] = field(default_factory=list)
    reused: bool = False


def single_thread(cfg: Config) -> Config:
    """Workers are the parallelism: each partition's flow table runs on one thread."""
    return dataclasses.replace(cfg, flows=dataclasses.replace(cfg.flows, threads=1))


def census_file(index: int, path: str, cfg: Config) -> Census:
    """Decode ``path`` and collect the flow hashes of its IP packets."""
    cfg = single_thread(cfg)
    decoder = FlowEngine(flow_config(cfg))
    found: list[np.ndarray] = []
    out = Census(index, path, np.empty(0, np.uint64))
    try:
        reader = open_capture(path, cfg.flows.batch_size)
    except CaptureError as exc:
        out.error = exc
        return out
    try:
        for b in reader.batches():
            decoder.decode(b)
            n = b.n
            out.records += n
            ts_max = int(b.ts_ns.max())
            out.last_ts = ts_max if out.last_ts is None else max(out.last_ts, ts_max)
            found.append(distinct(np, decoder.pkt_hash[:n][flow_packet_mask(np, decoder.cols, n)]))
    except CaptureError as exc:
        out.error = exc
    finally:
        reader.src.close()
    if found:
        out.hashes = distinct(np, np.concatenate(found))
    return out


def shared_hashes(censuses: list[Census]) -> np.ndarray:
    """Flow hashes seen in more than one file, sorted."""
    parts = [c.hashes for c in censuses if len(c.hashes)]
    if len(parts) < 2:
        return np.empty(0, np.uint64)
    values, counts = np.unique(np.concatenate(parts), return_counts=True)
    return values[counts > 1]


def _subset(b: RawBatch, rows: np.ndarray) -> RawBatch:
    return RawBatch(b.buf, b.off[rows], b.caplen[rows], b.wirelen[rows], b.ts_ns[rows], b.link[rows], b.path,
                    b.file_offset)


def _copy_out(b: RawBatch, rows: np.ndarray, batch_no: int) -> dict:
    """Records ``rows`` of ``b`` (the file's batch ``batch_no``) as a self-contained batch."""
    idx = rows.astype(np.int64)
    data = np.empty(int(b.caplen[idx].astype(np.int64).sum()), np.uint8)
    off = np.empty(len(idx), np.int64)
    copy_records(b.buf, b.off, b.caplen, idx, data, off)
    return {"buf": data, "off": off, "caplen": b.caplen[idx].copy(), "wirelen": b.wirelen[idx].copy(),
            "ts_ns": b.ts_ns[idx].copy(), "link": b.link[idx].copy(), "file_offset": b.file_offset,
            "batch": batch_no}


def shared_batches(folder: str, path: str, shard: int):
    """(batch number, batch) of the shared packets of ``shard`` a partition copied out, in
    capture order."""
    for d in _pickles(os.path.join(folder, SHARED_FILE.format(shard=shard))):
        yield d["batch"], RawBatch(d["buf"], d["off"], d["caplen"], d["wirelen"], d["ts_ns"], d["link"], path,
                                   d["file_offset"])


def _pickles(fn: str):
    with open(fn, "rb") as fh:
        while True:
            try:
                yield pickle.load(fh)
            except EOFError:
                return


def feed_items(folder: str):
    """What a task handed on, in its order: ``(position, record batches, events)``; the
    position is (file index, batch number), (END, file index) for what ends with the input."""
    yield from _pickles(os.path.join(folder, FEED_FILE))


def file_stamp(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stored(folder: str, stamp: dict) -> PartitionResult | None:
    """A finished task's result, if ``folder`` holds one for ``stamp`` with every file whole."""
    try:
        with open(os.path.join(folder, DONE_FILE), encoding="utf-8") as fh:
            done = json.load(fh)
        if done.get("stamp") != stamp:
            return None
        for name, size in done.get("files", {}).items():
            if os.path.getsize(os.path.join(folder, name)) != size:
                return None
        with open(os.path.join(folder, RESULT_FILE), "rb") as fh:
            res = pickle.load(fh)
    except (OSError, ValueError, pickle.UnpicklingError, EOFError, AttributeError):
        return None
    res.reused = True
    return res


class _Outputs:
    """A task's results folder: what it hands on (record batches and events, in order, as
    pickles), its result, written under a private temporary name and renamed to ``folder``
    when complete."""

    def __init__(self, folder: str, res: PartitionResult, cfg: Config):
        self.folder, self.res = folder, res
        self.tmp = f"{folder}.tmp-{uuid.uuid4().hex[:12]}"  # two tries of one task never share it
        os.makedirs(self.tmp)
        self.builder = RecordBuilder(flow_config(cfg))
        self.services = ServiceNames()
        self._feed = open(os.path.join(self.tmp, FEED_FILE), "wb")
        self.extra: list = []  # other open files of the task, closed with it

    def observe(self, tapped: RawBatch, cols) -> None:
        self.services.observe(tapped.buf, tapped.off, cols, tapped.n)

    def put(self, position: tuple[int, int], emitted, events) -> None:
        """Records (with their service, and first-payload codes) and events, in order."""
        rbs = [self.services.fill(self.builder.build(em)) for em in emitted]
        self.res.flows += sum(rb.num_rows for rb, _ in rbs)
        if rbs or events is not None:
            pickle.dump((position, rbs, events), self._feed, protocol=pickle.HIGHEST_PROTOCOL)

    def close(self) -> None:
        for fh in [self._feed, *self.extra]:
            fh.close()

    def abandon(self) -> None:
        self.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def commit(self, engine, tap, stamp: dict) -> PartitionResult:
        self.close()
        res, c = self.res, engine.counts
        res.accounted, res.wire_bytes, res.by_status = c.records, c.wire_bytes, [int(x) for x in c.by_status]
        res.evicted = engine.evicted
        res.streams_dropped, res.parse_errors = tap.dropped_streams, tap.parse_errors
        with open(os.path.join(self.tmp, RESULT_FILE), "wb") as fh:
            pickle.dump(res, fh, protocol=pickle.HIGHEST_PROTOCOL)
        files = {f: os.path.getsize(os.path.join(self.tmp, f)) for f in os.listdir(self.tmp)}
        with open(os.path.join(self.tmp, DONE_FILE), "w", encoding="utf-8") as fh:
            json.dump({"stamp": stamp, "path": res.path, "flows": res.flows, "records": res.records, "files": files},
                      fh)
        shutil.rmtree(self.folder, ignore_errors=True)
        os.rename(self.tmp, self.folder)
        return res


def _engine(cfg: Config, backend_name: str):
    from detector.backend import select_backend

    return make_engine(flow_config(cfg), select_backend(backend_name))


def analyze_file(index: int, path: str, cfg: Config, backend_name: str, shared_file: str, last_ts: int | None,
                 folder: str, stamp: dict) -> PartitionResult:
    """The partition of ``path`` (the archive's file ``index``): records and events of its
    flows that no other file has, and copies of the packets of those that other files share
    (hashes in ``shared_file``), one spool per stitching shard. ``last_ts`` is the archive's
    last timestamp (flows open at the end end as in one pass)."""
    stored = _stored(folder, stamp)
    if stored is not None:
        return stored
    cfg = single_thread(cfg)
    shared = np.load(shared_file) if shared_file else np.empty(0, np.uint64)
    engine, tap = _engine(cfg, backend_name), L7Tap()
    splitter = FlowEngine(flow_config(cfg)) if len(shared) else None
    res = PartitionResult(index, path, folder)
    out = _Outputs(folder, res, cfg)
    try:
        spools = [open(os.path.join(out.tmp, SHARED_FILE.format(shard=s)), "wb") for s in range(SHARDS)] \
            if splitter else []
        out.extra = spools
        _partition(path, cfg, engine, tap, splitter, shared, spools, out, index)
        out.put((END, index), engine.finish_groups(last_ts), tap.flush())
        return out.commit(engine, tap, stamp)
    except BaseException:
        out.abandon()
        raise


def _partition(path, cfg, engine, tap, splitter, shared, spools, out: _Outputs, index: int) -> None:
    res = out.res

    def account(b: RawBatch, j: int):
        emitted = engine.process(b)
        tapped, cols = tap_input(engine, b)
        out.observe(tapped, cols)
        out.put((index, j), emitted, tap.process(tapped, cols, tapped.n))

    try:
        reader = open_capture(path, cfg.flows.batch_size)
    except CaptureError as exc:
        res.error = exc
        return
    res.format = reader.format
    try:
        for j, b in enumerate(reader.batches()):
            res.records += b.n
            if splitter is None:
                account(b, j)
                continue
            splitter.decode(b)
            n = b.n
            h = splitter.pkt_hash[:n]
            pos = np.minimum(np.searchsorted(shared, h), len(shared) - 1)
            theirs = flow_packet_mask(np, splitter.cols, n) & (shared[pos] == h)
            if not theirs.any():
                account(b, j)
                continue
            shard = ((h >> np.uint64(40)) % np.uint64(SHARDS)).astype(np.int64)
            for s in distinct(np, shard[theirs]).tolist():
                pickle.dump(_copy_out(b, np.flatnonzero(theirs & (shard == s)), j), spools[s],
                            protocol=pickle.HIGHEST_PROTOCOL)
            res.shared_packets += int(theirs.sum())
            if not theirs.all():
                account(_subset(b, np.flatnonzero(~theirs)), j)
    except CaptureError as exc:
        res.error = exc
    finally:
        reader.src.close()
    res.warnings += reader_warnings(path, reader)


def stitch_shard(shard: int, parts: list[PartitionResult], cfg: Config, backend_name: str, last_ts: int | None,
                 folder: str, stamp: dict) -> PartitionResult:
    """The flows that cross files, one shard of them (by flow hash): their packets, copied out
    by every partition, run in file order through one flow table and L7 tap, so each such flow
    is one record with the state one pass gives it."""
    stored = _stored(folder, stamp)
    if stored is not None:
        return stored
    cfg = single_thread(cfg)
    engine, tap = _engine(cfg, backend_name), L7Tap()
    res = PartitionResult(-1 - shard, f"stitch shard {shard}", folder)
    out = _Outputs(folder, res, cfg)
    try:
        for part in parts:
            if not part.folder:
                continue
            for j, b in shared_batches(part.folder, part.path, shard):
                emitted = engine.process(b)
                tapped, cols = tap_input(engine, b)
                out.observe(tapped, cols)
                out.put((part.index, j), emitted, tap.process(tapped, cols, tapped.n))
                res.shared_packets += b.n
        out.put((END, END), engine.finish_groups(last_ts), tap.flush())
        return out.commit(engine, tap, stamp)
    except BaseException:
        out.abandon()
        raise
