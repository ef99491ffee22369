"""FlowEngine: raw record batches in, ended flow records out, on one or several CPU threads.

Decoding splits a batch into contiguous ranges, one per thread. Flow accounting splits by
flow: thread ``k`` owns shard ``k``, the flows whose key hash falls in its share of the hash
range (``packet_shard``), so no two threads ever touch one flow and every flow sees its packets
in capture order. Each thread first collects its shard's rows of the batch in one pass over the
hashes, then walks those packets only. The kernels release the GIL, so plain threads run them
in parallel.

Two threads work as a pipeline instead, in one flow table: the caller's thread decodes a batch
a block of rows at a time, publishing each block, and the other accounts the published rows a
block or so behind (:mod:`kernels.handoff`: the hand-over is a progress counter inside the
kernels, so blocks are small enough to be still in a cache when accounted). Decoding and
accounting cost about the same. The flows are exactly those of one thread: a batch is
pipelined only while the table has room for all of it (so the room policy, which looks at a
whole batch, has nothing to do), and from its first IP fragment on, the rest is decoded before
it is accounted (a datagram's first fragment may come later in the batch).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import numpy as np

from detector.backend import Backend
from detector.config import FlowConfig
from detector.flows.table import EmittedFlows, FlowTable, in_groups
from detector.sources.batch import RawBatch
from kernels import flowtable as kft
from kernels import handoff as hk
from kernels import packet_columns as pc
from kernels.decode import TALLY_WIRE_BYTES, decode_records
from kernels.flowkey import flow_hashes_at
from kernels.fragments import FragmentCache

HANDOFF_BLOCK = 2048  # rows published at a time to the accounting thread (two threads; 300 kB of columns)
RECORD_GROUP = 16384  # ended flows gathered before they are handed on (records cost per group)
END_GROUP = 4 * RECORD_GROUP  # ... and handed on in groups of about this many at most


def _wait_all(futures, fifo: ThreadPoolExecutor | None = None, on_interrupt=None) -> None:
    """Wait until every future is done, through a Ctrl-C too (raised again afterwards): no kernel
    may still run on a flow table when the caller goes on (finish() flushes the same tables).
    ``fifo``, a one-worker pool: also wait for tasks queued there whose future a Ctrl-C inside
    submit() lost (it runs tasks in order: once one queued after them ran, so did they).
    ``on_interrupt`` is called at each Ctrl-C (to tell a task waiting for more work to stop)."""
    interrupted = False
    while True:
        try:
            wait([*futures, fifo.submit(int)] if fifo is not None else futures)
            break
        except KeyboardInterrupt:
            interrupted = True
            if on_interrupt is not None:
                on_interrupt()
    if interrupted:
        raise KeyboardInterrupt


def make_engine(cfg: FlowConfig, backend: Backend):
    """The flow engine for ``backend``: :class:`FlowEngine` (CPU) or the GPU twin."""
    if backend.is_gpu:
        from detector.flows.gpu_engine import GpuFlowEngine

        return GpuFlowEngine(cfg, backend)
    return FlowEngine(cfg)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def spare_core(engine) -> bool:
    """Whether a core is left over after the engine's threads: reading, and building and writing
    flow records, then get threads of their own. Measured on 2M packets, 2-core VM, best of 8-10
    side by side: one flow thread plus the reader thread is 1.10x one thread alone, and writing
    in the background 1.03-1.05x more; a reader thread beside two flow threads ranged from 0.92x
    to 1.06x (three busy threads on two cores), so it stays off there."""
    return available_cores() > engine.threads


def walk_threads(engine, cfg: FlowConfig) -> int:
    """Threads that locate the records of a large mapped capture (``flows.walk_threads``; 0:
    automatic). Beside a reader thread (a core left over) the walk takes the cores the flow
    threads leave; without one it runs between batches, when the flow threads wait for it, and
    takes as many as they have. One core left, or one flow thread on one core: one thread, the
    sequential walk."""
    if cfg.walk_threads:
        return cfg.walk_threads
    left = available_cores() - engine.threads
    return left if left > 0 else engine.threads


@dataclass
class PacketCounts:
    """What the decoder made of the records it was given."""

    records: int = 0
    wire_bytes: int = 0
    by_status: np.ndarray = field(default_factory=lambda: np.zeros(8, dtype=np.int64))

    @property
    def ip(self) -> int:
        return int(self.by_status[pc.ST_OK] + self.by_status[pc.ST_L4_TRUNCATED])

    @property
    def non_ip(self) -> int:
        return int(self.by_status[pc.ST_NOT_IP])

    @property
    def bad(self) -> int:
        return int(self.by_status[pc.ST_BAD_IP] + self.by_status[pc.ST_BAD_LINK])


class FlowEngine:
    def __init__(self, cfg: FlowConfig):
        self.cfg = cfg
        self._evicted_before_release = 0
        self.threads = cfg.threads or available_cores()
        # two threads: one decodes while the other accounts what was decoded before it, in one
        # flow table; from three, ranges are decoded and shards accounted in parallel
        self.pipelined = self.threads == 2
        parts = 1 if self.pipelined else self.threads  # decode ranges, flow-table shards, workers
        n = cfg.batch_size
        self.cols = pc.allocate(n)
        self.pkt_hash = np.empty(n, dtype=np.uint64)
        # per decode range, each on cache lines of its own (16 words: 128 bytes)
        self.tally = np.zeros((parts, 16), dtype=np.int64)
        self.progress = np.zeros(hk.PROGRESS_WORDS, dtype=np.int64)  # pipelined: rows handed over
        # with several shards: each shard's rows of the batch, collected by its own thread
        self.rows = [np.empty(n, dtype=np.int64) for _ in range(parts)] if parts > 1 else []
        per_shard = max(16, -(-cfg.max_flows // parts))
        self.shards = [FlowTable(cfg, capacity=per_shard) for _ in range(parts)]
        self.frags = FragmentCache(cfg.fragment_slots, int(cfg.fragment_timeout * 1e9))
        self.counts = PacketCounts()
        self.flows_out = 0
        self.seconds = {"decode": 0.0, "flows": 0.0}  # where process() spends its time (detector bench)
        self.last_ts: int | None = None
        # pipelined: the caller's thread decodes, the one worker accounts
        self._pool = ThreadPoolExecutor(parts, thread_name_prefix="flows") if self.threads > 1 else None

    # -- per batch -------------------------------------------------------------------------
    def _decode(self, b: RawBatch, k: int, start: int, stop: int) -> None:
        decode_records(b.buf, b.off, b.caplen, b.wirelen, b.ts_ns, b.link, start, stop, self.cols, self.pkt_hash,
                       self.tally[k])

    def _run_parallel(self, fn, args_list) -> None:
        if self._pool is None or len(args_list) == 1:  # one task: on this thread, not queued
            for args in args_list:
                fn(*args)
        else:
            futures = [self._pool.submit(fn, *args) for args in args_list]
            try:
                for fut in futures:
                    fut.result()
            finally:
                _wait_all(futures)

    def _account_shard(self, k: int, n: int) -> None:
        rows = self.rows[k]
        m = kft.rows_of_shard(self.pkt_hash, n, len(self.shards), k, rows)
        self.shards[k].account(self.cols, self.pkt_hash, n, rows[:m])

    def _decode_and_account_pipelined(self, b: RawBatch) -> None:
        """Decode ``b`` on this thread, a block at a time, while the pool's one worker accounts
        each block once it is published. From the first block with an IP fragment, the rest of
        the batch is decoded and its fragments matched over the whole batch before it is
        published. Whatever stops this thread before all is published (a Ctrl-C, wherever it
        lands) stops the worker too, and only what it accounted is counted, so flows and counts
        agree."""
        shard, n, progress = self.shards[0], b.n, self.progress
        self._stop_worker()  # none of an earlier batch may still be waiting (a Ctrl-C can land anywhere)
        progress[:] = 0
        worker, published_all = None, False
        try:
            worker = self._pool.submit(shard.follow, progress, self.cols, self.pkt_hash, n)
            t0 = time.perf_counter()
            published, decoded = hk.decode_publishing(b.buf, b.off, b.caplen, b.wirelen, b.ts_ns, b.link, 0, n,
                                                      self.cols, self.pkt_hash, self.tally[0], HANDOFF_BLOCK, progress)
            if published < n:  # no fragment before it: matched as over the whole batch
                self._decode(b, 0, decoded, n)
                self._resolve_fragments(n)
                hk.publish(progress, n)
            published_all = True
            self.seconds["decode"] += time.perf_counter() - t0
        finally:
            if not published_all:
                self._ask_worker_to_stop()
            try:  # a Ctrl-C meanwhile comes out of here, once the worker is done
                _wait_all([worker] if worker is not None else [], fifo=self._pool,
                          on_interrupt=self._ask_worker_to_stop)
            finally:
                ok = worker is not None and worker.done() and worker.exception() is None
                accounted = worker.result() if ok else 0
                self._count(b, 0, accounted, exact=accounted < n)
        worker.result()

    def _ask_worker_to_stop(self) -> None:
        # a plain store, not a kernel (nothing to compile or dispatch while a Ctrl-C may come
        # again): the flag hands no data over, so it needs no release ordering
        self.progress[hk.STOP] = 1

    def _stop_worker(self) -> None:
        """Two threads: ask any accounting task still waiting for rows to return, and wait until
        the pool's one worker is idle."""
        if self.pipelined and self._pool is not None:
            self._ask_worker_to_stop()
            _wait_all([], fifo=self._pool)

    def _resolve_fragments(self, n: int) -> None:
        """Non-first fragments of rows ``0..n`` take their datagram's ports and flow hash."""
        frag_idx = np.flatnonzero(self.cols.frag[:n] & pc.FRAG_IS_FRAGMENT)
        if len(frag_idx):
            self.frags.resolve(self.cols, frag_idx)
            flow_hashes_at(self.cols, frag_idx, self.pkt_hash)

    def _count(self, b: RawBatch, lo: int, hi: int, exact: bool = False) -> None:
        """Rows ``lo..hi`` are accounted: their packets, statuses and wire bytes (tallied by
        decode_records over what it decoded; ``exact``: counted from these rows' columns
        instead, as more rows may have been decoded than accounted), and the latest timestamp."""
        self.counts.records += hi - lo
        tally = self.tally.sum(axis=0)
        self.tally[:] = 0
        if exact:
            tally[:TALLY_WIRE_BYTES] = np.bincount(self.cols.status[lo:hi] & 7, minlength=TALLY_WIRE_BYTES)
            tally[TALLY_WIRE_BYTES] = int(b.wirelen[lo:hi].sum())
        self.counts.by_status += tally[:TALLY_WIRE_BYTES]
        self.counts.wire_bytes += int(tally[TALLY_WIRE_BYTES])
        if hi <= lo:
            return
        ts_max = int(b.ts_ns[lo:hi].max())
        self.last_ts = ts_max if self.last_ts is None else max(self.last_ts, ts_max)

    def decode(self, b: RawBatch) -> None:
        """Decode ``b`` into :attr:`cols` and :attr:`pkt_hash` (non-first fragments take their
        datagram's flow hash), without accounting it."""
        n = b.n
        parts = len(self.tally)
        bounds = np.linspace(0, n, parts + 1).astype(int)
        self.tally[:] = 0
        self._run_parallel(self._decode, [(b, k, int(bounds[k]), int(bounds[k + 1])) for k in range(parts)])
        self._resolve_fragments(n)

    def process(self, b: RawBatch) -> list[EmittedFlows]:
        """Account one batch; returns the flows that ended (in groups, see RECORD_GROUP)."""
        n = b.n
        if n == 0:
            return []
        decoded_before = self.seconds["decode"]
        t0 = time.perf_counter()
        if self.pipelined and self._pool is not None and self.shards[0].free_rows() >= n:
            self._decode_and_account_pipelined(b)
            t1 = t0 + self.seconds["decode"] - decoded_before
        else:
            self.decode(b)
            t1 = time.perf_counter()
            self.seconds["decode"] += t1 - t0
            if len(self.shards) == 1:
                self.shards[0].account(self.cols, self.pkt_hash, n)
            else:
                self._run_parallel(self._account_shard, [(k, n) for k in range(len(self.shards))])
            self._count(b, 0, n)
        due = [(shard,) for shard in self.shards if shard.expiry_due(self.last_ts)]
        if due:
            self._run_parallel(lambda shard: shard.maybe_expire(self.last_ts), due)
        # records are built in large groups: building has a fixed cost per column and group
        if sum(s.pending for s in self.shards) < RECORD_GROUP:
            self.seconds["flows"] += time.perf_counter() - t1
            return []
        out = self._drain()
        self.seconds["flows"] += time.perf_counter() - t1
        return out

    def expire(self, now_ns: int) -> list[EmittedFlows]:
        """Ends the flows idle at ``now_ns`` (the wall clock, for live input) and returns every
        ended flow not yet returned."""
        for shard in self.shards:
            shard.maybe_expire(now_ns)
        return self._drain()

    def finish(self, last_ts: int | None = None) -> list[EmittedFlows]:
        """End of input, as :meth:`finish_groups`, all at once."""
        return list(self.finish_groups(last_ts))

    def finish_groups(self, last_ts: int | None = None):
        """End of input: flows already idle at the last timestamp (``last_ts``, default the
        latest seen) end as idle, whatever the expiry scans' timing was; every other open flow
        ends with reason ``eof``. A partition of an archive passes the archive's last timestamp,
        so its flows end exactly as in one pass over the whole archive."""
        now = self.last_ts if last_ts is None else last_ts
        self._stop_worker()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        return self._ending(now)

    def _ending(self, now: int | None):
        """The open flows, ended shard by shard and handed on a group at a time as they are
        emitted: a full table (a flood's million half-open connections) is never all records
        at once."""
        held: list[EmittedFlows] = []  # a shard's last, small part waits for the next shard's
        for shard in self.shards:
            for em in shard.end_in_groups(now, END_GROUP):
                held.append(em)
                if sum(len(e) for e in held) >= END_GROUP:
                    yield self._handed(held)
                    held = []
        if held:
            yield self._handed(held)

    def _handed(self, parts: list[EmittedFlows]) -> EmittedFlows:
        em = parts[0] if len(parts) == 1 else EmittedFlows.concat(parts)
        self.flows_out += len(em)
        return em

    def _drain(self) -> list[EmittedFlows]:
        parts = [e for s in self.shards for e in s.drain(RECORD_GROUP)]  # parked parts as they are
        self.flows_out += sum(len(e) for e in parts)
        if len(self.shards) > 1 and sum(len(e) for e in parts) <= END_GROUP:
            parts = in_groups(parts, END_GROUP)  # the shards' few rows as one group, as before
        return parts

    # -- reporting -------------------------------------------------------------------------
    @property
    def active_flows(self) -> int:
        return sum(s.active for s in self.shards)

    @property
    def evicted(self) -> int:
        return sum(s.evicted for s in self.shards) + self._evicted_before_release

    def release(self) -> None:
        """After :meth:`finish_groups` was drained: the flow tables' memory goes while the
        detectors report (a flood's table is most of a run's peak); the engine takes no more
        packets, and its counts stay."""
        self._evicted_before_release = self.evicted
        self.shards = []

    @property
    def fragment_stats(self) -> dict[str, int]:
        s = self.frags.stats
        return {"resolved": int(s[0]), "unresolved": int(s[1]), "overwritten": int(s[2])}
