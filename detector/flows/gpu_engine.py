"""GpuFlowEngine: the FlowEngine's twin on a CUDA GPU (or Numba's CUDA simulator).

Per batch: the capture bytes the batch covers go to the device (through a pinned staging
buffer, asynchronously), every packet is decoded by one thread, fragments get their ports, the
flow packets are grouped by flow hash with a stable sort, and one thread per group updates the
device-resident flow table (see :mod:`kernels.cuda_kernels`). Flow state never leaves the
device; only ended flows are copied back, and their records are finalised on the host (logged
once), exactly as the CPU engine does.

The array glue is written against the backend's ``xp`` (CuPy on a GPU, NumPy under the
simulator), so the same code runs in both.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from detector.backend import Backend
from detector.config import FlowConfig
from detector.flows.engine import RECORD_GROUP, PacketCounts
from detector.flows.table import (
    INITIAL_SLOTS,
    SCAN_INTERVAL_NS,
    EmittedFlows,
    account_ranges,
    config_vector,
    eviction_victims,
    flow_packet_mask,
    server_port_map,
)
from detector.sources.batch import RawBatch
from kernels import flowstate as fsd
from kernels import packet_columns as pc
from kernels.flowkey import KEY_WORDS

log = logging.getLogger("detector.gpu")


class GpuFlowEngine:
    def __init__(self, cfg: FlowConfig, backend: Backend, profile: bool = False):
        """``profile``: synchronise around host-to-device copies and time them (benchmarks)."""
        from kernels.cuda_kernels import kernels

        self.cfg = cfg
        self.backend = backend
        self.xp = xp = backend.xp
        self.k = kernels()
        self.block = 32 if backend.simulated else 256
        self.threads = 1
        cap = self.capacity = int(cfg.max_flows)
        self.keys = xp.zeros((cap, KEY_WORDS), dtype=xp.uint64)
        self.fhash = xp.zeros(cap, dtype=xp.uint64)
        self.st = xp.zeros((cap, fsd.NI), dtype=xp.int64)
        self.fs = xp.zeros((cap, fsd.NF), dtype=xp.float64)
        self.hist = xp.zeros((cap, fsd.HIST_LEN), dtype=xp.uint8)
        self.used = xp.zeros(cap, dtype=xp.uint8)
        self.free = xp.arange(cap - 1, -1, -1, dtype=xp.int64)
        meta = np.zeros(fsd.N_META, dtype=np.int64)
        meta[fsd.M_NFREE] = cap
        self.meta = xp.asarray(meta)
        self.max_slots = 1 << max(4, (2 * cap - 1).bit_length())
        self._new_slots(min(self.max_slots, INITIAL_SLOTS))
        self.cfgv = xp.asarray(config_vector(cfg))
        self.likely = xp.asarray(server_port_map(cfg.server_ports))
        self._out_capacity = 0
        self._ensure_out(max(cfg.batch_size, 4096))
        self.cols = pc.allocate(cfg.batch_size, xp)
        self.pkt_hash = xp.zeros(cfg.batch_size, dtype=xp.uint64)
        fslots = cfg.fragment_slots
        self.frag_keys = xp.zeros((fslots, 5), dtype=xp.uint64)
        self.frag_ports = xp.zeros(fslots, dtype=xp.uint32)
        self.frag_ts = xp.full(fslots, -1, dtype=xp.int64)
        self.frag_stats = xp.zeros(3, dtype=xp.int64)
        self.frag_timeout = int(cfg.fragment_timeout * 1e9)
        self._staging = None
        self._copied = None  # event recorded after the last copies out of self._staging
        self.profile = profile
        self.h2d_seconds = 0.0
        self.h2d_bytes = 0
        self.counts = PacketCounts()
        self.flows_out = 0
        self.last_ts: int | None = None
        self._last_scan: int | None = None
        self._parked: list[EmittedFlows] = []
        log.info("flow accounting on the %s (%s); flow records are finalised on the host",
                 "CUDA simulator" if backend.simulated else "GPU", backend.device)

    # -- device plumbing -------------------------------------------------------------------
    def _dev(self, a):
        """An array as a numba.cuda kernel argument (zero-copy view of a CuPy array)."""
        if self.backend.simulated:
            return a
        from numba import cuda

        return cuda.as_cuda_array(a)

    def _launch(self, kernel, n, *args):
        if n <= 0:
            return
        blocks = (n + self.block - 1) // self.block
        kernel[blocks, self.block](*args)

    def _to_device(self, *hosts: np.ndarray) -> list:
        """Host arrays to the device through one reused pinned buffer, each in its own region.

        Copies from pinned memory are asynchronous: a region must not be rewritten while a copy
        may still read it. (Reusing one region for every array let a batch's timestamps arrive
        holding its link types, seen on an H200.) So the arrays of one call get disjoint
        regions, and the next call first waits for the event recorded after these copies."""
        if self.backend.simulated:
            return [np.array(h) for h in hosts]
        import cupyx

        xp = self.xp
        spans, total = [], 0
        for h in hosts:
            spans.append(total)
            total += -(-h.nbytes // 256) * 256  # keep every region aligned
        if self._copied is not None:
            self._copied.synchronize()
        if self._staging is None or self._staging.nbytes < total:
            grown = 2 * self._staging.nbytes if self._staging is not None else 0
            self._staging = cupyx.empty_pinned(max(total, grown, 1 << 24), dtype=np.uint8)
        if self.profile:
            xp.cuda.get_current_stream().synchronize()
            t0 = time.perf_counter()
        out = []
        for h, start in zip(hosts, spans):
            assert h.ndim == 1 and h.flags.c_contiguous, "batch columns are 1-D and contiguous"
            view = self._staging[start: start + h.nbytes]
            view[:] = h.view(np.uint8).reshape(-1)
            dev = xp.empty(h.nbytes, dtype=xp.uint8)
            dev.set(view)
            out.append(dev.view(h.dtype) if h.dtype != np.uint8 else dev)
            self.h2d_bytes += h.nbytes
        self._copied = xp.cuda.Event()
        self._copied.record()
        if self.profile:
            self._copied.synchronize()
            self.h2d_seconds += time.perf_counter() - t0
        return out

    def _host(self, a) -> np.ndarray:
        """Device to host; a synchronisation point."""
        return a.get() if hasattr(a, "get") else np.asarray(a)

    def _meta(self) -> np.ndarray:
        return self._host(self.meta)  # sync

    def _set_meta(self, field: int, value: int) -> None:
        self.meta[field] = value

    def _new_slots(self, n: int) -> None:
        self.slot_hash = self.xp.zeros(n, dtype=self.xp.uint64)
        self.slot_row = self.xp.zeros(n, dtype=self.xp.uint64)

    def _rebuild_slots(self, n: int | None = None) -> None:
        self._new_slots(n or len(self.slot_row))
        hwm = int(self._meta()[fsd.M_HWM])
        self._launch(self.k.rebuild_slots, hwm, self._dev(self.used), self._dev(self.fhash), hwm,
                     self._dev(self.slot_hash), self._dev(self.slot_row))

    def _ensure_out(self, n: int) -> None:
        if n <= self._out_capacity:
            return
        xp = self.xp
        cap = max(n, 2 * self._out_capacity)
        pending = int(self._meta()[fsd.M_OUT_N]) if self._out_capacity else 0
        new = (xp.zeros((cap, KEY_WORDS), xp.uint64), xp.zeros((cap, fsd.NI), xp.int64),
               xp.zeros((cap, fsd.NF), xp.float64), xp.zeros((cap, fsd.HIST_LEN), xp.uint8),
               xp.zeros(cap, xp.uint8))
        if pending:
            for dst, src in zip(new, self._outputs()):
                dst[:pending] = src[:pending]
        self.okeys, self.ost, self.ofs, self.ohist, self.oreason = new
        self._out_capacity = cap

    def _outputs(self):
        return (self.okeys, self.ost, self.ofs, self.ohist, self.oreason)

    def _table_args(self):
        d = self._dev
        return (d(self.keys), d(self.fhash), d(self.st), d(self.fs), d(self.hist), d(self.used),
                d(self.slot_hash), d(self.slot_row), d(self.free), d(self.meta))

    def _out_args(self):
        return tuple(self._dev(a) for a in self._outputs())

    # -- per batch -------------------------------------------------------------------------
    def process(self, b: RawBatch) -> list[EmittedFlows]:
        n = b.n
        if n == 0:
            return []
        xp, d = self.xp, self._dev
        lo = int(b.off[0])
        hi = int((b.off + b.caplen).max())
        buf, off, caplen, wirelen, ts, link = self._to_device(
            b.buf[lo:hi], b.off - lo, b.caplen, b.wirelen, b.ts_ns, b.link)
        for col in self.cols:
            col[:n] = 0
        cols = pc.PacketColumns(*(d(c) for c in self.cols))
        self._launch(self.k.decode, n, d(buf), d(off), d(caplen), d(wirelen), d(ts), d(link), n, cols,
                     d(self.pkt_hash))
        self._fragments(n, cols)
        self._account(n, cols)
        status = self.cols.status[:n]
        self.counts.records += n
        self.counts.wire_bytes += int(b.wirelen.sum())
        self.counts.by_status += self._host(xp.bincount(status, minlength=8))[:8]
        ts_max = int(b.ts_ns.max())
        self.last_ts = ts_max if self.last_ts is None else max(self.last_ts, ts_max)
        if self._last_scan is None or self.last_ts - self._last_scan >= SCAN_INTERVAL_NS or \
                self.last_ts < self._last_scan:
            self._last_scan = self.last_ts
            self._end_rows(now=self.last_ts)
        if self.pending < RECORD_GROUP:
            return []
        return self._drain()

    def _fragments(self, n: int, cols) -> None:
        xp, d = self.xp, self._dev
        idx = xp.flatnonzero(self.cols.frag[:n] & pc.FRAG_IS_FRAGMENT)
        nidx = int(idx.shape[0])
        if not nidx:
            return
        owner = xp.zeros(self.frag_keys.shape[0], dtype=xp.int64)
        args = (cols, d(idx), nidx)
        self._launch(self.k.frag_claim, nidx, *args, d(owner), d(self.frag_keys), d(self.frag_ts),
                     d(self.frag_stats))
        self._launch(self.k.frag_write, nidx, *args, d(owner), d(self.frag_keys), d(self.frag_ports),
                     d(self.frag_ts))
        self._launch(self.k.frag_lookup, nidx, *args, d(self.frag_keys), d(self.frag_ports), d(self.frag_ts),
                     self.frag_timeout, d(self.pkt_hash), d(self.frag_stats))

    def free_rows(self) -> int:
        return int(self._meta()[fsd.M_NFREE])

    def _account(self, n: int, cols) -> None:
        account_ranges(self, self.cols, self.pkt_hash, 0, n, lambda a, b: self._account_range(a, b, cols))

    def _account_range(self, a: int, b: int, cols) -> None:
        xp, d = self.xp, self._dev
        idx = a + xp.flatnonzero(flow_packet_mask(xp, self.cols, b)[a:])
        if idx.shape[0] == 0:
            return
        hashes = self.pkt_hash[idx]
        order = idx[xp.argsort(hashes, kind="stable")]
        sorted_h = self.pkt_hash[order]
        starts = xp.flatnonzero(xp.concatenate((xp.ones(1, dtype=bool), sorted_h[1:] != sorted_h[:-1])))
        seg_start = xp.concatenate((starts, xp.asarray([order.shape[0]], dtype=starts.dtype)))
        n_seg = int(starts.shape[0])
        meta = self._meta()  # account_ranges made room for n_seg new flows
        need = 2 * (int(meta[fsd.M_ACTIVE]) + n_seg)
        if need > len(self.slot_row):
            size = len(self.slot_row)
            while size < need and size < self.max_slots:
                size *= 2
            self._rebuild_slots(size)
        self._ensure_out(int(meta[fsd.M_OUT_N]) + int(order.shape[0]))
        self._launch(self.k.account, n_seg, cols, d(self.pkt_hash), d(order), d(seg_start), n_seg, d(self.likely),
                     d(self.cfgv), d(self.keys), d(self.fhash), d(self.st), d(self.fs), d(self.hist), d(self.used),
                     d(self.slot_hash), d(self.slot_row), d(self.free), d(self.meta), *self._out_args())

    def _end_rows(self, now: int = 0, flush_reason: int = -1, rows=None, evict: bool = False) -> None:
        xp, d = self.xp, self._dev
        meta = self._meta()
        if rows is None:
            rows = xp.arange(int(meta[fsd.M_HWM]), dtype=xp.int64)
        nrows = int(rows.shape[0])
        if not nrows:
            return
        self._ensure_out(int(meta[fsd.M_OUT_N]) + min(nrows, int(meta[fsd.M_ACTIVE])))
        self._launch(self.k.end_rows, nrows, d(rows), nrows, now, flush_reason, evict, d(self.keys), d(self.st),
                     d(self.fs), d(self.hist), d(self.used), d(self.free), d(self.meta), *self._out_args())
        self._rebuild_slots()

    def evict_oldest(self, k: int) -> None:
        victims = eviction_victims(self.xp, self.used, self.st, self.keys, k)
        if victims.shape[0]:
            self._end_rows(rows=victims, evict=True)

    def expire(self, now_ns: int) -> list[EmittedFlows]:
        """Ends the flows idle at ``now_ns`` (wall clock, live input); returns the ended flows."""
        self._end_rows(now=now_ns)
        return self._drain()

    def finish(self, last_ts: int | None = None) -> list[EmittedFlows]:
        """As :meth:`FlowEngine.finish`: idle at the last timestamp ends as idle, the rest as eof."""
        now = self.last_ts if last_ts is None else last_ts
        if now is not None:
            self._end_rows(now=now)
        self._end_rows(flush_reason=fsd.END_EOF)
        return self._drain()

    @property
    def pending(self) -> int:
        return int(self._meta()[fsd.M_OUT_N]) + sum(len(p) for p in self._parked)

    def _drain(self) -> list[EmittedFlows]:
        k = int(self._meta()[fsd.M_OUT_N])
        if k:
            host = [self._host(a[:k]) for a in self._outputs()]
            self._parked.append(EmittedFlows(*host))
            self._set_meta(fsd.M_OUT_N, 0)
        if not self._parked:
            return []
        parts, self._parked = self._parked, []
        em = parts[0] if len(parts) == 1 else EmittedFlows.concat(parts)
        self.flows_out += len(em)
        return [em]

    # -- reporting -------------------------------------------------------------------------
    @property
    def active_flows(self) -> int:
        return int(self._meta()[fsd.M_ACTIVE])

    @property
    def evicted(self) -> int:
        return int(self._meta()[fsd.M_EVICTED])

    @property
    def fragment_stats(self) -> dict[str, int]:
        s = self._host(self.frag_stats)
        return {"resolved": int(s[0]), "unresolved": int(s[1]), "overwritten": int(s[2])}
