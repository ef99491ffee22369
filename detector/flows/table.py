"""FlowTable: bounded, stateful flow accounting across batches and files.

A thin owner of the arrays that :mod:`kernels.flowtable` works on. It keeps the kernels
resumable: when their output buffer fills up it parks the emitted rows and calls again; when
the table is full it evicts the least recently seen flows (counted, and reported).
"""

from __future__ import annotations

import time

import numpy as np

from detector.config import FlowConfig
from kernels import flowstate as fsd
from kernels import flowtable as kft
from kernels import handoff as hk
from kernels import packet_columns as pc
from kernels.flowkey import KEY_WORDS
from kernels.xp_ops import distinct, lexsort

NS = 1_000_000_000
EVICT_FRACTION = 16  # a full table evicts 1/16 of its flows at once, oldest first
SCAN_INTERVAL_NS = NS  # capture time between two expiry scans
INITIAL_SLOTS = 1 << 14
NO_ROWS = np.zeros(0, dtype=np.int64)  # update_flows' "positions are the batch's own rows"


def config_vector(cfg: FlowConfig) -> np.ndarray:
    v = np.zeros(fsd.N_CFG, dtype=np.int64)
    v[fsd.C_IDLE_TCP] = int(cfg.tcp_idle_timeout * NS)
    v[fsd.C_IDLE_UDP] = int(cfg.udp_idle_timeout * NS)
    v[fsd.C_IDLE_ICMP] = int(cfg.icmp_idle_timeout * NS)
    v[fsd.C_IDLE_OTHER] = int(cfg.other_idle_timeout * NS)
    v[fsd.C_ACTIVE] = int(cfg.active_timeout * NS)
    v[fsd.C_ATTEMPT] = int(cfg.tcp_attempt_timeout * NS)
    v[fsd.C_CLOSE_DELAY] = int(cfg.tcp_close_delay * NS)
    return v


def server_port_map(ports) -> np.ndarray:
    m = np.zeros(65536, dtype=np.uint8)
    m[np.asarray(ports, dtype=np.int64)] = 1
    return m


def flow_packet_mask(xp, cols, n: int | None = None, *, at=None):
    """Which of the first ``n`` rows, or of rows ``at``, are flow packets."""
    st, ver = (cols.status[:n], cols.ip_ver[:n]) if at is None else (cols.status[at], cols.ip_ver[at])
    return (ver != 0) & ((st == pc.ST_OK) | (st == pc.ST_L4_TRUNCATED))


def new_flow_bound(xp, cols, pkt_hash, a: int, b: int, rows=None) -> int:
    """How many flows positions ``a..b`` could start: their distinct flow hashes. Positions
    are rows of the batch, or of ``rows`` (a shard's) when given."""
    if rows is None:
        mask = flow_packet_mask(xp, cols, b)[a:]
        h = pkt_hash[a:b]
    else:
        at = rows[a:b]
        mask = flow_packet_mask(xp, cols, at=at)
        h = pkt_hash[at]
    return int(distinct(xp, h[mask]).shape[0])


def account_ranges(table, cols, pkt_hash, a: int, b: int, account, rows=None) -> None:
    """The room policy both engines follow, so that they end the same flows. Before accounting
    positions ``a..b`` (rows of the batch, or of ``rows``): if their new flows might not fit,
    evict the least recently seen flows; if they still cannot fit, split the range in two (in
    capture order) and do the same for each half. ``account(a, b)`` is called on each range
    that fits. ``table`` provides ``xp``, ``free_rows()``, ``capacity`` and ``evict_oldest(k)``."""
    free = table.free_rows()
    if free >= b - a:  # even if every packet started a flow: the fast path
        account(a, b)
        return
    need = new_flow_bound(table.xp, cols, pkt_hash, a, b, rows)
    if free < need:
        table.evict_oldest(need - free + table.capacity // EVICT_FRACTION)
        free = table.free_rows()
    if free >= need or b - a == 1:
        account(a, b)
        return
    mid = (a + b) // 2
    account_ranges(table, cols, pkt_hash, a, mid, account, rows)
    account_ranges(table, cols, pkt_hash, mid, b, account, rows)


def eviction_victims(xp, used, st, keys, k: int):
    """The ``k`` least recently seen flows, ties broken by key, so that the CPU and the GPU
    engines evict the same flows."""
    rows = xp.flatnonzero(used)
    if rows.shape[0] == 0:
        return rows.astype(xp.int64)
    if 0 < k < rows.shape[0]:  # only the rows as old as the k-th oldest can be victims: sort those
        seen = st[rows, fsd.LAST_SEEN]
        rows = rows[seen <= xp.partition(seen, k - 1)[k - 1]]
    kk = keys[rows]
    order = lexsort(xp, (kk[:, 4], kk[:, 3], kk[:, 2], kk[:, 1], kk[:, 0], st[rows, fsd.LAST_SEEN]))
    return rows[order[:k]].astype(xp.int64)


class EmittedFlows:
    """Rows of ended flows: keys, integer and float state, history, end reason.

    ``device``: where the arrays live when they are a GPU's (an object with ``xp`` and
    ``finalize``, which the record builder calls); None for host arrays."""

    __slots__ = ("device", "fs", "hist", "keys", "reason", "st")
    _ARRAYS = ("keys", "st", "fs", "hist", "reason")

    def __init__(self, keys, st, fs, hist, reason, device=None):
        self.keys, self.st, self.fs, self.hist, self.reason = keys, st, fs, hist, reason
        self.device = device

    def __len__(self) -> int:
        return len(self.reason)

    @staticmethod
    def concat(parts: list[EmittedFlows]) -> EmittedFlows:
        return EmittedFlows(*(np.concatenate([getattr(p, a) for p in parts]) for a in EmittedFlows._ARRAYS))


def in_groups(parts: list[EmittedFlows], group: int) -> list[EmittedFlows]:
    """Consecutive parts joined into groups of at least ``group`` rows (the last may be smaller)."""
    out, run, rows = [], [], 0
    for p in parts:
        run.append(p)
        rows += len(p)
        if rows >= group:
            out.append(run[0] if len(run) == 1 else EmittedFlows.concat(run))
            run, rows = [], 0
    if run:
        out.append(run[0] if len(run) == 1 else EmittedFlows.concat(run))
    return out


class FlowTable:
    """One shard of flow state. ``capacity`` flows at most; ``out_capacity`` rows buffered."""

    def __init__(self, cfg: FlowConfig, capacity: int | None = None, out_capacity: int = 32768):
        self.cfg = cfg
        cap = int(capacity or cfg.max_flows)
        self.capacity = cap
        self.max_slots = 1 << max(4, (2 * cap - 1).bit_length())
        self.cfgv = config_vector(cfg)
        self.likely = server_port_map(cfg.server_ports)
        self.keys = np.empty((cap, KEY_WORDS), dtype=np.uint64)
        self.fhash = np.empty(cap, dtype=np.uint64)
        self.st = np.empty((cap, fsd.NI), dtype=np.int64)
        self.fs = np.empty((cap, fsd.NF), dtype=np.float64)
        self.hist = np.empty((cap, fsd.HIST_LEN), dtype=np.uint8)
        self.used = np.zeros(cap, dtype=np.uint8)
        # the slot table starts small (it is probed at random, so its size is cache misses)
        # and doubles whenever it is half full
        self.slots = np.zeros((min(self.max_slots, INITIAL_SLOTS), 2), dtype=np.uint64)
        self.free = np.arange(cap - 1, -1, -1, dtype=np.int32)
        self.meta = np.zeros(fsd.N_META, dtype=np.int64)
        self.meta[fsd.M_NFREE] = cap
        self.okeys = np.empty((out_capacity, KEY_WORDS), dtype=np.uint64)
        self.ost = np.empty((out_capacity, fsd.NI), dtype=np.int64)
        self.ofs = np.empty((out_capacity, fsd.NF), dtype=np.float64)
        self.ohist = np.empty((out_capacity, fsd.HIST_LEN), dtype=np.uint8)
        self.oreason = np.empty(out_capacity, dtype=np.uint8)
        self._parked: list[EmittedFlows] = []
        self._last_scan = None

    # -- state -----------------------------------------------------------------------------
    @property
    def active(self) -> int:
        return int(self.meta[fsd.M_ACTIVE])

    @property
    def pending(self) -> int:
        """Ended flows not drained yet."""
        return int(self.meta[fsd.M_OUT_N]) + sum(len(p) for p in self._parked)

    @property
    def evicted(self) -> int:
        return int(self.meta[fsd.M_EVICTED])

    @property
    def created(self) -> int:
        return int(self.meta[fsd.M_CREATED])

    def _tables(self):
        return (self.keys, self.fhash, self.st, self.fs, self.hist, self.used, self.slots, self.free, self.meta)

    def _outputs(self):
        return (self.okeys, self.ost, self.ofs, self.ohist, self.oreason)

    def _park(self) -> None:
        n = int(self.meta[fsd.M_OUT_N])
        if n:
            self._parked.append(EmittedFlows(self.okeys[:n].copy(), self.ost[:n].copy(), self.ofs[:n].copy(),
                                             self.ohist[:n].copy(), self.oreason[:n].copy()))
            self.meta[fsd.M_OUT_N] = 0

    # -- operations ------------------------------------------------------------------------
    def update(self, cols, pkt_hash: np.ndarray, start: int, stop: int, rows: np.ndarray = NO_ROWS) -> None:
        """Account the flow packets at positions ``start..stop``: rows of ``cols``, or of
        ``rows`` when it is not empty."""
        i = start
        while True:
            i, code = kft.update_flows(cols, pkt_hash, rows, i, stop, self.likely, self.cfgv,
                                       *self._tables(), *self._outputs())
            if code == kft.DONE:
                return
            self.make_room(code)

    def follow(self, progress: np.ndarray, cols, pkt_hash: np.ndarray, n: int) -> int:
        """Account rows ``0..n`` of the batch as another thread decodes and publishes them
        (:mod:`kernels.handoff`); returns how many were accounted (fewer when asked to stop).
        The caller makes sure the table has room for every row first (no evictions here)."""
        j = 0
        while j < n:
            j, code = hk.account_published(progress, cols, pkt_hash, NO_ROWS, j, n, self.likely, self.cfgv,
                                           *self._tables(), *self._outputs())
            if code == hk.WAITING:
                time.sleep(0)  # the decoder is behind, or off its core: let it have this one
            elif code == hk.STOPPED:
                return j
            elif code != kft.DONE:
                self.make_room(code)
        return n

    def make_room(self, code: int) -> None:
        """What an accounting kernel that stopped with ``code`` needs before it is called again."""
        if code == kft.OUT_FULL:
            self._park()
        elif code == kft.SLOTS_FULL and len(self.slots) < self.max_slots:
            bigger = np.zeros((2 * len(self.slots), 2), dtype=np.uint64)
            kft.rehash(self.slots, bigger)
            self.slots = bigger
        else:
            self.evict_oldest(max(1, self.capacity // EVICT_FRACTION))

    def expiry_due(self, now_ns: int) -> bool:
        """Whether :meth:`maybe_expire` would scan at ``now_ns``."""
        return self._last_scan is None or now_ns - self._last_scan >= SCAN_INTERVAL_NS or now_ns < self._last_scan

    def maybe_expire(self, now_ns: int) -> None:
        """Emit idle flows, at most once per second of capture time."""
        if self.expiry_due(now_ns):
            self._last_scan = now_ns
            self._expire(now_ns, -1)

    def expire_idle(self, now_ns: int) -> None:
        """Emit every flow idle at ``now_ns``, scan interval or not."""
        self._expire(now_ns, -1)

    def flush(self, reason: int = fsd.END_EOF) -> None:
        """End every flow (end of input)."""
        self._expire(0, reason)

    def _expire(self, now_ns: int, reason: int) -> None:
        row = 0
        while row < self.capacity:
            row = kft.expire_flows(now_ns, row, reason, *self._tables(), *self._outputs())
            if row < self.capacity:
                self._park()

    def evict_oldest(self, k: int) -> None:
        victims = eviction_victims(np, self.used, self.st, self.keys, k)
        j = 0
        while j < len(victims):
            j = kft.evict_flows(victims, j, *self._tables(), *self._outputs())
            if j < len(victims):
                self._park()

    xp = np

    def free_rows(self) -> int:
        return int(self.meta[fsd.M_NFREE])

    def account(self, cols, pkt_hash: np.ndarray, n: int, rows: np.ndarray | None = None, start: int = 0) -> None:
        """Account the flow packets among rows ``start..n``, or among ``rows`` (this shard's
        rows of the batch, in capture order), making room first (:func:`account_ranges`)."""
        if rows is None:
            account_ranges(self, cols, pkt_hash, start, n, lambda a, b: self.update(cols, pkt_hash, a, b))
        else:
            account_ranges(self, cols, pkt_hash, 0, len(rows), lambda a, b: self.update(cols, pkt_hash, a, b, rows),
                           rows)

    def drain(self, group: int | None = None) -> list[EmittedFlows]:
        """Take every row emitted since the last call, in capture order: one part, or parts of
        about ``group`` rows (so that a flood's evictions or the end of input are built into
        records a bounded group at a time, not all at once)."""
        self._park()
        parts, self._parked = self._parked, []
        return in_groups(parts, group or max(1, sum(len(p) for p in parts)))

    def end_in_groups(self, now_ns: int | None, group: int):
        """End every flow (end of input: idle at ``now_ns`` as idle, the rest as ``eof``),
        handing them on in parts of about ``group`` rows as they are emitted."""
        for now, reason in ((now_ns, -1), (0, fsd.END_EOF)):
            if now is None:
                continue
            row = 0
            while row < self.capacity:
                row = kft.expire_flows(now, row, reason, *self._tables(), *self._outputs())
                if row < self.capacity:
                    self._park()
                if self.pending >= group:
                    yield from self.drain(group)
        yield from self.drain(group)
