"""One range of a batch accounted against a columnar flow table, as sorts, scans and gathers.

:class:`ScanTable` holds the flow state as columns (structure of arrays: ``st[field, row]``),
so expiry and eviction read only the fields they test. Its index is the live rows' key hashes,
sorted, so a batch's flows are found with one ``searchsorted``.

:meth:`ScanTable.account` sorts the range's flow packets by (key hash, capture order), marks
where the key changes, finds each key's row, settles where records start
(:func:`kernels.flow_scan.find_records`), computes every record's state
(:func:`kernels.flow_fields.record_fields`), writes each key's last record back to its row and
returns the records that ended. The few segments that do not settle in a few rounds, or whose
sequence numbers the scans cannot follow, are walked packet by packet with the CPU's own
functions (:func:`walk_segments`), and counted.

Written against ``xp`` (NumPy or CuPy). The host learns sizes through ``sync``, a handful of
times per range, never per flow or per packet.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kernels import flow_fields, flow_scan
from kernels import seg_scan as ss
from kernels._jit import cpu_kernel, row_fn
from kernels.flowkey import KEY_WORDS, canonical_key
from kernels.flowstate import (
    END_ACTIVE,
    END_EVICTED,
    EXPIRE_AT,
    F_CLOSED,
    FLAGS,
    HIST_LEN,
    LAST_SEEN,
    NF,
    NI,
    O_STATE,
    R_STATE,
    TCP_RESET,
    END_FIN,
    END_IDLE,
    END_RST,
)
from kernels.flowtable import emit_flow, init_flow, note_packet_flow, packet_ends_flow, restart_flow, update_flow
from kernels.packet_columns import ST_L4_TRUNCATED, ST_OK
from kernels.tcp_fsm import machine

ROUNDS = 4  # rounds of settling record starts before a segment is walked packet by packet


class Emitted(NamedTuple):
    """Ended records, one per column: ``keys`` (KEY_WORDS, n), ``st`` (NI, n), ``fs`` (NF, n),
    ``hist`` (HIST_LEN, n), ``reason`` (n)."""

    keys: object
    st: object
    fs: object
    hist: object
    reason: object


class Stats:
    """Counts for the benchmarks and tests: how much went which way."""

    def __init__(self):
        self.ranges = 0
        self.packets = 0
        self.segments = 0
        self.rounds = 0  # rounds of settling record starts, summed over ranges
        self.walked_segments = 0  # segments walked packet by packet
        self.walked_packets = 0
        self.unsettled_segments = 0  # of which: record starts not settled in the rounds
        self.seq_segments = 0  # of which: sequence numbers the scans cannot follow
        self.collisions = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def packet_keys(xp, cols, rows):
    """Canonical keys of packets ``rows``: (a_hi, a_lo, b_hi, b_lo, w4) and from_a."""
    s_hi, s_lo = cols.src_ip_hi[rows], cols.src_ip_lo[rows]
    d_hi, d_lo = cols.dst_ip_hi[rows], cols.dst_ip_lo[rows]
    sp = cols.sport[rows].astype(xp.uint64)
    dp = cols.dport[rows].astype(xp.uint64)
    a_first = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (sp <= dp))))
    tail = (cols.proto[rows].astype(xp.uint64) << xp.uint64(16)) | cols.vlan[rows].astype(xp.uint64)
    w_a = (sp << xp.uint64(48)) | (dp << xp.uint64(32)) | tail
    w_b = (dp << xp.uint64(48)) | (sp << xp.uint64(32)) | tail
    keys = (xp.where(a_first, s_hi, d_hi), xp.where(a_first, s_lo, d_lo), xp.where(a_first, d_hi, s_hi),
            xp.where(a_first, d_lo, s_lo), xp.where(a_first, w_a, w_b))
    return keys, a_first


class ScanTable:
    """The flow table as columns, with a sorted index of its keys' hashes."""

    def __init__(self, xp, capacity: int, cfg_vector, likely, sync, rounds: int = ROUNDS):
        self.xp = xp
        self.rounds = rounds
        self.capacity = capacity
        self.cfg = [int(v) for v in cfg_vector]
        self.likely = xp.asarray(likely)
        self.sync = sync
        self.fsm = machine().on(xp)
        self.keys = xp.zeros((KEY_WORDS, capacity), dtype=xp.uint64)
        self.fhash = xp.zeros(capacity, dtype=xp.uint64)
        self.st = xp.zeros((NI, capacity), dtype=xp.int64)
        self.fs = xp.zeros((NF, capacity), dtype=xp.float64)
        self.hist = xp.zeros((HIST_LEN, capacity), dtype=xp.uint8)
        self.used = xp.zeros(capacity, dtype=bool)
        self.free = xp.arange(capacity - 1, -1, -1, dtype=xp.int64)
        self.nfree = capacity
        self.ihash = xp.zeros(0, dtype=xp.uint64)
        self.irow = xp.zeros(0, dtype=xp.int64)
        self.created = 0
        self.evicted = 0
        self.stats = Stats()

    @property
    def active(self) -> int:
        return self.capacity - self.nfree

    # -- finding keys ----------------------------------------------------------------------
    def _lookup(self, h, keys):
        """Row of each key (hash ``h``), or -1."""
        xp = self.xp
        m = self.ihash.shape[0]
        if m == 0:
            return xp.full(h.shape[0], -1, dtype=xp.int64)
        pos = xp.searchsorted(self.ihash, h)
        row = xp.full(h.shape[0], -1, dtype=xp.int64)
        # equal hashes of different keys sit next to each other in the index: look at each
        for k in range(self.max_equal_hashes()):
            at = xp.minimum(pos + k, m - 1)
            cand = self.irow[at]
            same = (self.ihash[at] == h) & (pos + k < m)
            for w in range(KEY_WORDS):
                same &= self.keys[w, cand] == keys[w]
            row = xp.where((row < 0) & same, cand, row)
        return row

    def max_equal_hashes(self) -> int:
        return self._max_equal

    _max_equal = 1

    def _index_add(self, h, rows):
        """Merge new (hash, row) pairs into the sorted index."""
        xp = self.xp
        order = xp.argsort(h)
        h, rows = h[order], rows[order]
        m, k = self.ihash.shape[0], h.shape[0]
        at_new = xp.searchsorted(self.ihash, h, side="left") + xp.arange(k)
        at_old = xp.searchsorted(h, self.ihash, side="right") + xp.arange(m)
        ih = xp.empty(m + k, dtype=xp.uint64)
        ir = xp.empty(m + k, dtype=xp.int64)
        ih[at_new], ir[at_new] = h, rows
        ih[at_old], ir[at_old] = self.ihash, self.irow
        self.ihash, self.irow = ih, ir
        if m + k > 1:
            same = ih[1:] == ih[:-1]
            if bool(self.sync(same.any())):  # a 64-bit hash shared by two live keys: rare
                run = ss.cumsum(xp, same.astype(xp.int64), ss.start_index(xp, xp.concatenate(
                    (xp.ones(1, dtype=bool), ~same))))
                self._max_equal = max(self._max_equal, int(self.sync(run.max())) + 1)

    def _index_drop(self):
        """Forget index entries of rows no longer used."""
        keep = self.used[self.irow]
        self.ihash, self.irow = self.ihash[keep], self.irow[keep]

    # -- rows ------------------------------------------------------------------------------
    def _take_rows(self, k: int):
        rows = self.free[self.nfree - k:self.nfree][::-1]
        self.nfree -= k
        return rows

    def _give_rows(self, rows, k: int):
        self.free[self.nfree:self.nfree + k] = rows
        self.nfree += k

    def _rows_out(self, rows, reason) -> Emitted:
        return Emitted(self.keys[:, rows], self.st[:, rows], self.fs[:, rows], self.hist[:, rows], reason)

    def end_rows(self, mask, reason) -> Emitted:
        """Emit and free the rows in ``mask`` with ``reason`` (per row)."""
        xp = self.xp
        rows = xp.flatnonzero(mask)
        k = int(rows.shape[0])
        out = self._rows_out(rows, reason[rows].astype(xp.uint8))
        self.used[rows] = False
        self._give_rows(rows, k)
        self._index_drop()
        return out

    def expired(self, now: int, flush_reason: int = -1) -> Emitted:
        """Emit the flows whose timer ran out before ``now`` (every flow with ``flush_reason``)."""
        xp = self.xp
        if flush_reason >= 0:
            return self.end_rows(self.used, xp.full(self.capacity, flush_reason, dtype=xp.int64))
        due = self.used & (self.st[EXPIRE_AT] < now)
        return self.end_rows(due, self.expiry_reason(self.st))

    def expiry_reason(self, st):
        xp = self.xp
        reset = ((st[O_STATE] & 0xFF) == TCP_RESET) | ((st[R_STATE] & 0xFF) == TCP_RESET)
        return xp.where((st[FLAGS] & F_CLOSED) != 0, xp.where(reset, END_RST, END_FIN), END_IDLE)

    def evict_oldest(self, k: int) -> Emitted:
        """The ``k`` least recently seen flows, ties broken by key, as the CPU engine."""
        xp = self.xp
        rows = xp.flatnonzero(self.used)
        order = _lexsort(xp, (self.keys[4, rows], self.keys[3, rows], self.keys[2, rows], self.keys[1, rows],
                              self.keys[0, rows], self.st[LAST_SEEN, rows]))
        victims = rows[order[:k]]
        mask = xp.zeros(self.capacity, dtype=bool)
        mask[victims] = True
        n = int(victims.shape[0])
        self.evicted += n
        return self.end_rows(mask, xp.full(self.capacity, END_EVICTED, dtype=xp.int64))

    # -- one range -------------------------------------------------------------------------
    def account(self, cols, pkt_hash, a: int, b: int):
        """Account the flow packets of rows ``a..b``; returns the records that ended (or None)
        and writes each packet's ``flow_dir``, ``flow_nth`` and ``flow_first_ts``."""
        xp, sync = self.xp, self.sync
        status = cols.status[a:b]
        flow = (cols.ip_ver[a:b] != 0) & ((status == ST_OK) | (status == ST_L4_TRUNCATED))
        rows = a + xp.flatnonzero(flow)
        m = int(rows.shape[0])
        if m == 0:
            return None
        stats = self.stats
        stats.ranges += 1
        stats.packets += m
        g = _group(xp, cols, rows, pkt_hash, sync, stats)
        nseg = int(g.heads.shape[0])
        stats.segments += nseg
        lanes = _lanes(xp, cols, g.rows, g.from_a, g.seg, g.new_key)
        seg_rows = self._lookup(g.h[g.heads], tuple(w[g.heads] for w in g.keys))
        held = self._held(seg_rows)
        recs, ch, reasons, settled, used = flow_scan.find_records(xp, self.fsm, lanes, held, self.cfg, self.likely,
                                                            self.rounds, sync)
        stats.rounds += used
        nrec = int(sync(recs.start.sum()))
        out = flow_fields.record_fields(xp, self.fsm, lanes, held, recs, ch, nrec)
        walk_seg = xp.zeros(nseg, dtype=bool)
        walk_seg[g.seg[~settled]] = True
        unsettled = int(sync(walk_seg.sum()))
        stats.unsettled_segments += unsettled
        seq_seg = xp.zeros(nseg, dtype=bool)
        seq_seg[g.seg[out.hard]] = True
        walk_seg |= seq_seg
        on_scan = ~walk_seg[g.seg]
        cols.flow_dir[g.rows] = xp.where(on_scan, out.dir, 0).astype(cols.flow_dir.dtype)
        cols.flow_nth[g.rows] = out.nth.astype(cols.flow_nth.dtype)
        cols.flow_first_ts[g.rows] = out.first_ts
        self.created += int(sync((recs.start & (recs.kind == flow_scan.FRESH) & on_scan).sum()))
        rec_ends = xp.flatnonzero(ss.ends(xp, recs.start))
        rec_seg = g.seg[rec_ends]
        scanned = ~walk_seg[rec_seg]
        last_of_seg = ss.ends(xp, g.new_key)[rec_ends]
        # a record ended before the next one of its key: why is read at the next one's start
        next_start = xp.minimum(rec_ends + 1, m - 1)
        head_reason = reasons[g.heads]
        parts = [
            # the table's flows that a segment's first packet ended
            _select(xp, Emitted(self.keys[:, xp.maximum(seg_rows, 0)], held.st, held.fs, held.hist,
                                head_reason.astype(xp.uint8)), (head_reason >= 0) & held.has & ~walk_seg),
            _select(xp, Emitted(xp.stack([w[rec_ends] for w in g.keys]), out.st, out.fs, out.hist,
                                reasons[next_start].astype(xp.uint8)), ~last_of_seg & scanned),
        ]
        keep = xp.flatnonzero(last_of_seg & scanned)
        self._store(g, rec_ends[keep], seg_rows[rec_seg[keep]], out.st[:, keep], out.fs[:, keep], out.hist[:, keep])
        nwalk = int(sync(walk_seg.sum()))
        stats.seq_segments += nwalk - unsettled
        if nwalk:
            parts.append(self._walk(cols, g, seg_rows, held, walk_seg))
        return _concat(xp, parts)

    def _held(self, seg_rows) -> flow_scan.Held:
        xp = self.xp
        has = seg_rows >= 0
        r = xp.maximum(seg_rows, 0)
        st = xp.where(has[None, :], self.st[:, r], 0)
        state = xp.where(has, flow_scan.held_state_ids(xp, self.fsm, st), 0)
        return flow_scan.Held(has, st, xp.where(has[None, :], self.fs[:, r], 0.0),
                              xp.where(has[None, :], self.hist[:, r], 0).astype(xp.uint8), state)

    def _store(self, g, pick, rows, st, fs, hist):
        """Write records to their keys' rows; ``pick`` (a packet of each record's key) and
        ``rows`` (-1 for a key the table does not hold: it gets a free row)."""
        xp = self.xp
        new = xp.flatnonzero(rows < 0)
        k = int(self.sync(new.shape[0]))
        rows = rows.copy()
        if k:
            fresh = self._take_rows(k)
            rows[new] = fresh
            at = pick[new]
            for w in range(KEY_WORDS):
                self.keys[w, fresh] = g.keys[w][at]
            self.fhash[fresh] = g.h[at]
            self.used[fresh] = True
            self._index_add(g.h[at], fresh)
        self.st[:, rows] = st
        self.fs[:, rows] = fs
        self.hist[:, rows] = hist

    def _walk(self, cols, g, seg_rows, held, walk_seg) -> Emitted:
        """The segments the scans could not settle, packet by packet with the CPU engine's own
        functions (:func:`walk_segments`); their last records go to the table."""
        xp = self.xp
        segs = xp.flatnonzero(walk_seg)
        k = int(segs.shape[0])
        lo = g.heads[segs]
        hi = xp.concatenate((g.heads[1:], xp.asarray([g.rows.shape[0]], dtype=g.heads.dtype)))[segs]
        lengths = hi - lo
        out_at = xp.cumsum(lengths) - lengths
        n_out = int(self.sync(lengths.sum()))
        walk = Walk(xp.ascontiguousarray(held.st[:, segs].T), xp.ascontiguousarray(held.fs[:, segs].T),
                    xp.ascontiguousarray(held.hist[:, segs].T), held.has[segs].astype(xp.uint8))
        res = Walked(xp.zeros((n_out, KEY_WORDS), xp.uint64), xp.zeros((n_out, NI), xp.int64),
                     xp.zeros((n_out, NF), xp.float64), xp.zeros((n_out, HIST_LEN), xp.uint8),
                     xp.zeros(n_out, xp.uint8), xp.zeros(k, xp.int64), xp.zeros(k, xp.int64))
        self.walk_segments(cols, g.rows, lo, hi, out_at, self.likely, xp.asarray(self.cfg, dtype=xp.int64), walk, res)
        self.stats.walked_segments += k
        self.stats.walked_packets += int(self.sync(lengths.sum()))
        self.created += int(self.sync(res.created.sum()))
        self._store(g, lo, seg_rows[segs], walk.st.T, walk.fs.T, walk.hist.T)
        idx = xp.flatnonzero(_emitted_mask(xp, out_at, res.emitted, n_out))
        return Emitted(res.keys[idx].T, res.st[idx].T, res.fs[idx].T, res.hist[idx].T, res.reason[idx])

    def walk_segments(self, cols, order, lo, hi, out_at, likely, cfg, walk, res):
        walk_segments(cols, order, lo, hi, out_at, likely, cfg, walk, res)


class Group(NamedTuple):
    """A range's flow packets sorted by key: capture ``rows``, their hashes ``h``, ``keys``
    (five words), ``from_a``, ``seg`` numbers, ``new_key`` (first of a key) and ``heads``."""

    rows: object
    h: object
    keys: tuple
    from_a: object
    seg: object
    new_key: object
    heads: object


def _group(xp, cols, rows, pkt_hash, sync, stats) -> Group:
    """Sort packets by (hash, capture order); where two keys share a hash, by the whole key."""
    h = pkt_hash[rows]
    order = xp.argsort(h, kind="stable")
    rows, h = rows[order], h[order]
    keys, from_a = packet_keys(xp, cols, rows)
    new_hash = xp.concatenate((xp.ones(1, dtype=bool), h[1:] != h[:-1]))
    new_key = _key_changes(xp, keys, new_hash)
    if bool(sync((new_key != new_hash).any())):
        stats.collisions += 1
        order = _lexsort(xp, (rows, keys[4], keys[3], keys[2], keys[1], keys[0], h))
        rows, h, from_a = rows[order], h[order], from_a[order]
        keys = tuple(w[order] for w in keys)
        new_key = _key_changes(xp, keys, xp.concatenate((xp.ones(1, dtype=bool), h[1:] != h[:-1])))
    return Group(rows, h, keys, from_a, xp.cumsum(new_key) - 1, new_key, xp.flatnonzero(new_key))


def _key_changes(xp, keys, changes):
    out = changes.copy()
    for w in keys:
        out[1:] |= w[1:] != w[:-1]
    return out


class Walk(NamedTuple):
    """Row-format state of the walked segments' flows (one row each) and whether it is held."""

    st: object
    fs: object
    hist: object
    has: object


class Walked(NamedTuple):
    """What the walk emits: records in row format at each segment's ``out_at`` onwards, how
    many each segment ``emitted``, and how many flows each ``created``."""

    keys: object
    st: object
    fs: object
    hist: object
    reason: object
    emitted: object
    created: object


def _emitted_mask(xp, out_at, emitted, n_out):
    """Which output rows the walk filled: the first ``emitted[g]`` from ``out_at[g]``."""
    marks = xp.zeros(n_out + 1, dtype=xp.int64)
    marks[out_at] += 1
    seg_of = xp.cumsum(marks[:n_out]) - 1
    return xp.arange(n_out) - out_at[seg_of] < emitted[seg_of]


@row_fn
def _emit_row(walk, g, reason, res, k):
    for c in range(walk.st.shape[1]):
        res.st[k, c] = walk.st[g, c]
    for c in range(walk.fs.shape[1]):
        res.fs[k, c] = walk.fs[g, c]
    for c in range(walk.hist.shape[1]):
        res.hist[k, c] = walk.hist[g, c]
    res.reason[k] = reason


@row_fn
def walk_one(cols, order, lo, hi, out_at, likely, cfg, walk, res, g):
    """Segment ``g`` (packets ``order[lo:hi]``, one key) as ``update_flows`` walks it, in the
    walk's row ``g``: a record that ends is written to ``res`` from ``out_at``."""
    k = out_at
    has = walk.has[g] != 0
    for j in range(lo, hi):
        i = order[j]
        a_hi, a_lo, b_hi, b_lo, w4, from_a = canonical_key(cols, i)
        if has:
            reason = packet_ends_flow(walk.st, g, cols, i, cfg)
            if reason == END_ACTIVE:
                _emit_row(walk, g, END_ACTIVE, res, k)
                res.keys[k, 0], res.keys[k, 1], res.keys[k, 2], res.keys[k, 3], res.keys[k, 4] = (
                    a_hi, a_lo, b_hi, b_lo, w4)
                k += 1
                restart_flow(walk.st, walk.fs, g, cols.ts_ns[i])
            elif reason >= 0:
                _emit_row(walk, g, reason, res, k)
                res.keys[k, 0], res.keys[k, 1], res.keys[k, 2], res.keys[k, 3], res.keys[k, 4] = (
                    a_hi, a_lo, b_hi, b_lo, w4)
                k += 1
                has = False
        if not has:
            init_flow(walk.st, walk.fs, walk.hist, g, cols, i, from_a, likely)
            res.created[g] += 1
            has = True
        update_flow(walk.st, walk.fs, walk.hist, g, cols, i, from_a, cfg)
        note_packet_flow(walk.st, g, cols, i, from_a)
    res.emitted[g] = k - out_at


@cpu_kernel
def walk_segments(cols, order, lo, hi, out_at, likely, cfg, walk, res):
    """Every walked segment on the CPU (the GPU runs one thread per segment)."""
    for g in range(lo.shape[0]):
        walk_one(cols, order, lo[g], hi[g], out_at[g], likely, cfg, walk, res, g)


def _select(xp, em: Emitted, mask) -> Emitted:
    idx = xp.flatnonzero(mask)
    return Emitted(*(a[..., idx] for a in em))


def _concat(xp, parts) -> Emitted | None:
    parts = [p for p in parts if p.reason.shape[0]]
    if not parts:
        return None
    return Emitted(*(xp.concatenate([getattr(p, f) for p in parts], axis=-1) for f in Emitted._fields))


def _lexsort(xp, keys):
    from kernels.xp_ops import lexsort

    return lexsort(xp, keys)


def _lanes(xp, cols, rows, from_a, seg, seg_head) -> flow_scan.Lanes:
    i64 = xp.int64
    status = cols.status[rows]
    proto = cols.proto[rows].astype(i64)
    return flow_scan.Lanes(rows, cols.ts_ns[rows], proto, (proto == 6) & (status == ST_OK),
                           cols.tcp_flags[rows].astype(i64), cols.tcp_seq[rows].astype(i64),
                           cols.payload_len[rows].astype(i64), cols.ip_len[rows].astype(i64),
                           cols.ttl[rows].astype(i64), cols.tcp_win[rows].astype(i64),
                           cols.icmp_code[rows].astype(i64), cols.sport[rows].astype(i64),
                           cols.dport[rows].astype(i64), from_a, seg, seg_head)


