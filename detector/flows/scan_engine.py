"""ScanFlowEngine: the data-parallel flow engine (sorts and segmented scans), on NumPy or CuPy.

It is the GPU backend's engine (CuPy, with the decode and fragment kernels of
:mod:`kernels.cuda_kernels`), and runs the same array program on NumPy, where the ordinary
test suite compares it with the CPU engine (:class:`detector.flows.engine.FlowEngine`) field by
field. Flow accounting is :class:`kernels.flow_account.ScanTable`; this class adds what the
CPU engine's driver does around it: decoding, IP fragments, the room policy, expiry once per
second of capture time, and handing ended flows on in groups.

Every device-to-host transfer goes through :meth:`_sync`, so the syncs per batch are counted
(``syncs``); they do not grow with the batch or with any flow's length.
"""

from __future__ import annotations

import logging

import numpy as np

from detector.config import FlowConfig
from detector.flows.engine import RECORD_GROUP, PacketCounts
from detector.flows.table import (
    EVICT_FRACTION,
    SCAN_INTERVAL_NS,
    EmittedFlows,
    account_ranges,
    config_vector,
    server_port_map,
)
from detector.sources.batch import RawBatch
from kernels import flowstate as fsd
from kernels import packet_columns as pc
from kernels.decode import TALLY_WIRE_BYTES, decode_records
from kernels.flow_account import Emitted, ScanTable
from kernels.flowkey import flow_hashes_at
from kernels.fragments import FragmentCache
from kernels.stage_clock import StageClock

log = logging.getLogger("detector.flows")


class HostDecoder:
    """Decoding on the CPU into NumPy columns (the engine's NumPy twin, and its tests)."""

    def __init__(self, cfg: FlowConfig):
        self.cols = pc.allocate(cfg.batch_size)
        self.pkt_hash = np.empty(cfg.batch_size, dtype=np.uint64)
        self.frags = FragmentCache(cfg.fragment_slots, int(cfg.fragment_timeout * 1e9))
        self.tally = np.zeros(16, dtype=np.int64)

    def decode(self, b: RawBatch, counts: PacketCounts) -> None:
        self.tally[:] = 0
        decode_records(b.buf, b.off, b.caplen, b.wirelen, b.ts_ns, b.link, 0, b.n, self.cols, self.pkt_hash,
                       self.tally)
        frag_idx = np.flatnonzero(self.cols.frag[:b.n] & pc.FRAG_IS_FRAGMENT)
        if len(frag_idx):
            self.frags.resolve(self.cols, frag_idx)
            flow_hashes_at(self.cols, frag_idx, self.pkt_hash)
        counts.by_status += self.tally[:TALLY_WIRE_BYTES]
        counts.wire_bytes += int(self.tally[TALLY_WIRE_BYTES])

    @property
    def fragment_stats(self) -> dict[str, int]:
        s = self.frags.stats
        return {"resolved": int(s[0]), "unresolved": int(s[1]), "overwritten": int(s[2])}


class Syncs:
    """Device values brought to the host, counted: the one place the engine waits for the
    device (a plain object, so the table holding it does not keep the engine alive)."""

    def __init__(self):
        self.count = 0

    def __call__(self, value):
        self.count += 1
        return value.get() if hasattr(value, "get") else value


class ScanFlowEngine:
    """``profile``: time each step with waits for the device around it (benchmarks)."""

    def __init__(self, cfg: FlowConfig, xp=np, profile: bool = False):
        self.cfg = cfg
        self.xp = xp
        self.threads = 1
        self._sync = Syncs()
        self.clock = StageClock(_waiter(xp) if profile else None)
        self.decoder = self._decoder()
        self.capacity = int(cfg.max_flows)
        self.table = ScanTable(xp, self.capacity, config_vector(cfg), server_port_map(cfg.server_ports), self._sync,
                               clock=self.clock)
        self.counts = PacketCounts()
        self.flows_out = 0
        self.last_ts: int | None = None
        self._last_scan: int | None = None
        self._parked: list[Emitted] = []

    def _decoder(self):
        return HostDecoder(self.cfg)

    @property
    def syncs(self) -> int:
        return self._sync.count

    # -- the room policy's interface (detector.flows.table.account_ranges) -------------------
    def free_rows(self) -> int:
        return self.table.nfree

    def evict_oldest(self, k: int) -> None:
        self._park(self.table.evict_oldest(k))

    @property
    def cols(self):
        return self.decoder.cols

    # -- per batch -------------------------------------------------------------------------
    def process(self, b: RawBatch) -> list[EmittedFlows]:
        n = b.n
        if n == 0:
            return []
        self.decoder.decode(b, self.counts)
        cols, pkt_hash = self.decoder.cols, self.decoder.pkt_hash
        account_ranges(self, cols, pkt_hash, 0, n, lambda a, z: self._park(self.table.account(cols, pkt_hash, a, z)))
        self._counted()
        self.counts.records += n
        ts_max = int(b.ts_ns.max())
        self.last_ts = ts_max if self.last_ts is None else max(self.last_ts, ts_max)
        if self._last_scan is None or self.last_ts - self._last_scan >= SCAN_INTERVAL_NS or \
                self.last_ts < self._last_scan:
            self._last_scan = self.last_ts
            self._park(self.table.expired(self.last_ts))
        if self.pending < RECORD_GROUP:
            return []
        return self._drain()

    def _counted(self) -> None:
        """Bring the batch's per-status packet counts to the host (decoded on the host: done)."""

    def _park(self, em: Emitted | None) -> None:
        if em is not None and em.reason.shape[0]:
            self._parked.append(em)

    @property
    def pending(self) -> int:
        return sum(int(p.reason.shape[0]) for p in self._parked)

    def expire(self, now_ns: int) -> list[EmittedFlows]:
        """Ends the flows idle at ``now_ns`` (wall clock, live input); returns the ended flows."""
        self._park(self.table.expired(now_ns))
        return self._drain()

    def finish_groups(self, last_ts: int | None = None):
        """As :meth:`FlowEngine.finish_groups` (here: all at once, then handed on)."""
        return iter(self.finish(last_ts))

    def finish(self, last_ts: int | None = None) -> list[EmittedFlows]:
        """As :meth:`FlowEngine.finish`: idle at the last timestamp ends as idle, the rest as eof."""
        now = self.last_ts if last_ts is None else last_ts
        if now is not None:
            self._park(self.table.expired(now))
        self._park(self.table.expired(0, fsd.END_EOF))
        return self._drain()

    def _drain(self) -> list[EmittedFlows]:
        if not self._parked:
            return []
        xp = self.xp
        parts, self._parked = self._parked, []
        cat = [xp.concatenate([getattr(p, f) for p in parts], axis=-1) for f in Emitted._fields]
        em = self._emitted(cat)
        self.flows_out += len(em)
        return [em]

    def _emitted(self, cat: list) -> EmittedFlows:
        """The ended flows (the table's columns as record rows) where the record builder reads them."""
        return EmittedFlows(*(np.ascontiguousarray(self._sync(a).T) if a.ndim == 2 else self._sync(a) for a in cat))

    # -- reporting -------------------------------------------------------------------------
    @property
    def active_flows(self) -> int:
        return self.table.active if self.table is not None else 0

    @property
    def evicted(self) -> int:
        return self.table.evicted if self.table is not None else self._evicted_before_release

    def release(self) -> None:
        """As :meth:`FlowEngine.release`: the table's memory goes, its counts stay."""
        self._evicted_before_release = self.evicted
        self.table = None

    @property
    def fragment_stats(self) -> dict[str, int]:
        return self.decoder.fragment_stats


def _waiter(xp):
    """A function that waits until the device is idle (nothing to wait for on NumPy)."""
    if xp is np:
        return lambda: None
    return lambda: xp.cuda.get_current_stream().synchronize()


__all__ = ["EVICT_FRACTION", "ScanFlowEngine"]
