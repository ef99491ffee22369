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
functions (:mod:`kernels.flow_walk`), and counted.

Written against ``xp`` (NumPy or CuPy). The host learns what it must (array sizes) through
``read``, which brings one small vector from the device: four times for a range that settles in
two rounds (the usual case), plus once per extra round, never per flow or per packet.
"""

from __future__ import annotations

from typing import NamedTuple

from kernels import flow_fields, flow_scan
from kernels import seg_scan as ss
from kernels.flow_walk import Segments, Walk, Walked, emitted_mask, walk_segments
from kernels.flowkey import KEY_WORDS
from kernels.flowstate import (
    END_EVICTED,
    END_FIN,
    END_IDLE,
    END_RST,
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
)
from kernels.fsm_scan import Sizes, compact
from kernels.packet_columns import ST_L4_TRUNCATED, ST_OK
from kernels.stage_clock import NO_CLOCK
from kernels.tcp_fsm import machine
from kernels.xp_ops import lexsort

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
        self.collisions = 0  # ranges where two keys shared a 64-bit hash

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Group(NamedTuple):
    """A range's flow packets sorted by key: capture ``rows``, their hashes ``h``, ``keys``
    (five words), ``from_a``, ``seg`` numbers and ``new_key`` (first of a key)."""

    rows: object
    h: object
    keys: tuple
    from_a: object
    seg: object
    new_key: object


def packet_keys(xp, cols, rows):
    """Canonical keys of packets ``rows`` (:func:`kernels.flowkey.canonical_key`): the five
    key words and whether the packet is from endpoint A."""
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

    def __init__(self, xp, capacity: int, cfg_vector, likely, read, rounds: int = ROUNDS, clock=NO_CLOCK):
        self.xp = xp
        self.capacity = capacity
        self.cfg = [int(v) for v in cfg_vector]
        self.likely = xp.asarray(likely)
        self.read = read
        self.rounds = rounds
        self.clock = clock
        self.walker = walk_segments  # the GPU engine walks with one CUDA thread per segment
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
        self.probes = 1  # index entries compared per lookup: the longest run of one hash
        self._run = xp.zeros((), dtype=xp.int64)  # that run as last computed, read with the next sizes
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
        row = xp.full(h.shape[0], -1, dtype=xp.int64)
        if m == 0:
            return row
        pos = xp.searchsorted(self.ihash, h)
        # keys whose hashes are equal sit next to each other in the index: compare each
        for k in range(self.probes):
            at = xp.minimum(pos + k, m - 1)
            cand = self.irow[at]
            same = (self.ihash[at] == h) & (pos + k < m)
            for w in range(KEY_WORDS):
                same &= self.keys[w, cand] == keys[w]
            row = xp.where((row < 0) & same, cand, row)
        return row

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
        if m + k > 1:  # a 64-bit hash shared by live keys: rare; read with the next sizes
            same = ih[1:] == ih[:-1]
            heads = ~same
            heads[0] = True
            self._run = ss.cumsum(xp, same.astype(xp.int64), ss.start_index(xp, heads)).max()

    def _index_drop(self, keep_count: int):
        """Forget the index entries of rows no longer used (``keep_count`` stay)."""
        keep = compact(self.xp, self.used[self.irow], keep_count)
        self.ihash, self.irow = self.ihash[keep], self.irow[keep]

    # -- rows ------------------------------------------------------------------------------
    def _take_rows(self, k: int):
        rows = self.free[self.nfree - k:self.nfree][::-1]
        self.nfree -= k
        return rows

    def end_rows(self, mask, reason, k: int | None = None) -> Emitted:
        """Emit and free the rows in ``mask`` (``k`` of them, read from the device when not
        given) with ``reason`` (per row)."""
        xp = self.xp
        if k is None:
            k = int(self.read(mask.sum()))
        rows = compact(xp, mask, k)
        out = Emitted(self.keys[:, rows], self.st[:, rows], self.fs[:, rows], self.hist[:, rows],
                      reason[rows].astype(xp.uint8))
        self.used[rows] = False
        self.free[self.nfree:self.nfree + k] = rows
        self.nfree += k
        self._index_drop(self.capacity - self.nfree)
        return out

    def expired(self, now: int, flush_reason: int = -1) -> Emitted:
        """Emit the flows whose timer ran out before ``now`` (every flow with ``flush_reason``)."""
        xp = self.xp
        if flush_reason >= 0:
            return self.end_rows(self.used, xp.full(self.capacity, flush_reason, dtype=xp.int64), self.active)
        due = self.used & (self.st[EXPIRE_AT] < now)
        return self.end_rows(due, self.expiry_reason(self.st))

    def expiry_reason(self, st):
        xp = self.xp
        reset = ((st[O_STATE] & 0xFF) == TCP_RESET) | ((st[R_STATE] & 0xFF) == TCP_RESET)
        return xp.where((st[FLAGS] & F_CLOSED) != 0, xp.where(reset, END_RST, END_FIN), END_IDLE)

    def evict_oldest(self, k: int) -> Emitted:
        """The ``k`` least recently seen flows, ties broken by key, as the CPU engine."""
        xp = self.xp
        rows = compact(xp, self.used, self.active)
        order = lexsort(xp, (self.keys[4, rows], self.keys[3, rows], self.keys[2, rows], self.keys[1, rows],
                              self.keys[0, rows], self.st[LAST_SEEN, rows]))
        k = min(k, self.active)
        mask = xp.zeros(self.capacity, dtype=bool)
        mask[rows[order[:k]]] = True
        self.evicted += k
        return self.end_rows(mask, xp.full(self.capacity, END_EVICTED, dtype=xp.int64), k)

    # -- one range -------------------------------------------------------------------------
    def account(self, cols, pkt_hash, a: int, b: int):
        """Account the flow packets of rows ``a..b``; returns the records that ended (or None)
        and writes each packet's ``flow_dir``, ``flow_nth`` and ``flow_first_ts``."""
        xp, read, clock, stats = self.xp, self.read, self.clock, self.stats
        with clock.stage("sort"):
            status = cols.status[a:b]
            flow = (cols.ip_ver[a:b] != 0) & ((status == ST_OK) | (status == ST_L4_TRUNCATED))
            m = int(read(flow.sum()))
            if m == 0:
                return None
            g = _group(xp, cols, a + compact(xp, flow, m), pkt_hash)
            lanes = _lanes(xp, cols, g)
            got = read(xp.concatenate((xp.stack((_collides(xp, g).any(), g.new_key.sum(), self._run)),
                                       flow_scan.first_plan(xp, lanes))))
            self.probes = max(self.probes, int(got[2]) + 1)
            if got[0]:  # two keys share a 64-bit hash: group by the whole key
                stats.collisions += 1
                g = _regroup(xp, g)
                lanes = _lanes(xp, cols, g)
                got = read(xp.concatenate((xp.stack((g.new_key.sum(), g.new_key.sum(), self._run)),
                                           flow_scan.first_plan(xp, lanes))))
            nseg = int(got[1])
            heads = compact(xp, g.new_key, nseg)
        stats.ranges += 1
        stats.packets += m
        stats.segments += nseg
        with clock.stage("scans"):
            seg_rows = self._lookup(g.h[heads], tuple(w[heads] for w in g.keys))
            held = self._held(seg_rows)
            found = flow_scan.find_records(xp, self.fsm, lanes, held, self.cfg, self.likely, self.rounds, read,
                                           Sizes(*(int(v) for v in got[3:])))
            stats.rounds += found.rounds
            out = flow_fields.record_fields(xp, self.fsm, lanes, held, found.recs, found.chains, found.nrec)
        with clock.stage("merge"):
            return self._merge(cols, g, heads, seg_rows, held, found, out, nseg)

    def _merge(self, cols, g: Group, heads, seg_rows, held, found, out, nseg):
        """Write the packets' places, each key's last record to its row; the ended records."""
        xp, stats = self.xp, self.stats
        recs, reasons, nrec = found.recs, found.reasons, found.nrec
        m = g.rows.shape[0]
        walk_seg = _per_segment(xp, found.unsettled | out.hard, g.seg, nseg)
        unsettled_seg = _per_segment(xp, found.unsettled, g.seg, nseg)
        scanned_pkt = ~walk_seg[g.seg]
        cols.flow_dir[g.rows] = out.dir.astype(cols.flow_dir.dtype)
        cols.flow_nth[g.rows] = out.nth.astype(cols.flow_nth.dtype)
        cols.flow_first_ts[g.rows] = out.first_ts
        rec_ends = compact(xp, ss.ends(xp, recs.start), nrec)
        rec_seg = g.seg[rec_ends]
        scanned = ~walk_seg[rec_seg]
        last_of_seg = ss.ends(xp, g.new_key)[rec_ends]
        head_reason = reasons[heads]
        held_ended = (head_reason >= 0) & held.has & ~walk_seg
        ended = ~last_of_seg & scanned
        keep = last_of_seg & scanned
        new_rows = keep & (seg_rows[rec_seg] < 0)
        walked_pkt = ~scanned_pkt
        n = [int(v) for v in self.read(xp.stack((
            walk_seg.sum(), unsettled_seg.sum(), walked_pkt.sum(), (recs.start & (recs.kind == flow_scan.FRESH)
                                                                    & scanned_pkt).sum(),
            held_ended.sum(), ended.sum(), keep.sum(), new_rows.sum())))]
        n_walk, n_unsettled, n_walked_pkt, created, n_held_ended, n_ended, n_keep, n_new = n
        stats.walked_segments += n_walk
        stats.unsettled_segments += n_unsettled
        stats.seq_segments += n_walk - n_unsettled
        stats.walked_packets += n_walked_pkt
        self.created += created
        # a record ended before the next one of its key: why is read at the next one's start
        next_start = xp.minimum(rec_ends + 1, m - 1)
        pick = compact(xp, held_ended, n_held_ended)
        parts = [Emitted(self.keys[:, seg_rows[pick]], held.st[:, pick], held.fs[:, pick], held.hist[:, pick],
                         head_reason[pick].astype(xp.uint8))]
        pick = compact(xp, ended, n_ended)
        parts.append(Emitted(xp.stack([w[rec_ends[pick]] for w in g.keys]), out.st[:, pick], out.fs[:, pick],
                             out.hist[:, pick], reasons[next_start[pick]].astype(xp.uint8)))
        pick = compact(xp, keep, n_keep)
        self._store(g, rec_ends[pick], seg_rows[rec_seg[pick]], n_new, (out.st[:, pick], out.fs[:, pick],
                                                                         out.hist[:, pick]))
        if n_walk:
            parts.append(self._walk(cols, g, heads, seg_rows, held, walk_seg, n_walk, n_walked_pkt))
        return _concat(xp, parts)

    def _held(self, seg_rows) -> flow_scan.Held:
        xp = self.xp
        has = seg_rows >= 0
        r = xp.maximum(seg_rows, 0)
        st = xp.where(has[None, :], self.st[:, r], 0)
        state = xp.where(has, flow_scan.held_state_ids(xp, self.fsm, st), 0)
        return flow_scan.Held(has, st, xp.where(has[None, :], self.fs[:, r], 0.0),
                              xp.where(has[None, :], self.hist[:, r], 0).astype(xp.uint8), state)

    def _store(self, g: Group, pick, rows, n_new: int, state):
        """Write records (``state``: st, fs, hist columns) to their keys' rows; ``pick``: a
        packet of each record's key; ``rows``: -1 for a key the table does not hold (``n_new``
        of them), which gets a free row."""
        xp = self.xp
        if n_new:
            new = compact(xp, rows < 0, n_new)
            fresh = self._take_rows(n_new)
            rows = rows.copy()
            rows[new] = fresh
            at = pick[new]
            for w in range(KEY_WORDS):
                self.keys[w, fresh] = g.keys[w][at]
            self.fhash[fresh] = g.h[at]
            self.used[fresh] = True
            self._index_add(g.h[at], fresh)
        st, fs, hist = state
        self.st[:, rows] = st
        self.fs[:, rows] = fs
        self.hist[:, rows] = hist

    def _walk(self, cols, g: Group, heads, seg_rows, held, walk_seg, k: int, n_out: int) -> Emitted:
        """The segments the scans could not settle, packet by packet with the CPU engine's own
        functions (:mod:`kernels.flow_walk`); their last records go to the table."""
        xp = self.xp
        segs = compact(xp, walk_seg, k)
        lo = heads[segs]
        hi = xp.concatenate((heads[1:], xp.asarray([g.rows.shape[0]], dtype=heads.dtype)))[segs]
        lengths = hi - lo
        out_at = xp.cumsum(lengths) - lengths
        walk = Walk(xp.ascontiguousarray(held.st[:, segs].T), xp.ascontiguousarray(held.fs[:, segs].T),
                    xp.ascontiguousarray(held.hist[:, segs].T), held.has[segs].astype(xp.uint8))
        res = Walked(xp.zeros((n_out, KEY_WORDS), xp.uint64), xp.zeros((n_out, NI), xp.int64),
                     xp.zeros((n_out, NF), xp.float64), xp.zeros((n_out, HIST_LEN), xp.uint8),
                     xp.zeros(n_out, xp.uint8), xp.zeros(k, xp.int64), xp.zeros(k, xp.int64))
        with self.clock.stage("walk"):
            self.walker(cols, Segments(g.rows, lo, hi, out_at), self.likely, xp.asarray(self.cfg, dtype=xp.int64),
                        walk, res)
        mine = emitted_mask(xp, out_at, res.emitted, n_out)
        created, n_emitted, n_new = (int(v) for v in self.read(xp.stack((res.created.sum(), mine.sum(),
                                                                          (seg_rows[segs] < 0).sum()))))
        self.created += created
        self._store(g, lo, seg_rows[segs], n_new, (walk.st.T, walk.fs.T, walk.hist.T))
        idx = compact(xp, mine, n_emitted)
        return Emitted(res.keys[idx].T, res.st[idx].T, res.fs[idx].T, res.hist[idx].T, res.reason[idx])


def _group(xp, cols, rows, pkt_hash) -> Group:
    """Sort packets by (hash, capture order)."""
    h = pkt_hash[rows]
    order = xp.argsort(h, kind="stable")
    rows, h = rows[order], h[order]
    keys, from_a = packet_keys(xp, cols, rows)
    new_key = _key_changes(xp, keys, _changes(xp, h))
    return Group(rows, h, keys, from_a, xp.cumsum(new_key) - 1, new_key)


def _collides(xp, g: Group):
    """Where the key changes but the hash does not: two keys share a hash."""
    return g.new_key != _changes(xp, g.h)


def _regroup(xp, g: Group) -> Group:
    """Sort by (hash, whole key, capture order) instead."""
    order = lexsort(xp, (g.rows, g.keys[4], g.keys[3], g.keys[2], g.keys[1], g.keys[0], g.h))
    keys = tuple(w[order] for w in g.keys)
    h = g.h[order]
    new_key = _key_changes(xp, keys, _changes(xp, h))
    return Group(g.rows[order], h, keys, g.from_a[order], xp.cumsum(new_key) - 1, new_key)


def _changes(xp, v):
    return xp.concatenate((xp.ones(1, dtype=bool), v[1:] != v[:-1]))


def _key_changes(xp, keys, changes):
    out = changes.copy()
    for w in keys:
        out[1:] |= w[1:] != w[:-1]
    return out


def _per_segment(xp, flags, seg, nseg: int):
    """Per segment: whether any of its packets is flagged."""
    out = xp.zeros(nseg + 1, dtype=bool)
    out[xp.where(flags, seg, nseg)] = True  # the spare slot takes the unflagged
    return out[:nseg]


def _concat(xp, parts) -> Emitted | None:
    parts = [p for p in parts if p.reason.shape[0]]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    return Emitted(*(xp.concatenate([getattr(p, f) for p in parts], axis=-1) for f in Emitted._fields))


def _lanes(xp, cols, g: Group) -> flow_scan.Lanes:
    rows, i64 = g.rows, xp.int64
    status = cols.status[rows]
    proto = cols.proto[rows].astype(i64)
    return flow_scan.Lanes(rows, cols.ts_ns[rows], proto, (proto == 6) & (status == ST_OK),
                           cols.tcp_flags[rows].astype(i64), cols.tcp_seq[rows].astype(i64),
                           cols.payload_len[rows].astype(i64), cols.ip_len[rows].astype(i64),
                           cols.ttl[rows].astype(i64), cols.tcp_win[rows].astype(i64),
                           cols.icmp_code[rows].astype(i64), cols.sport[rows].astype(i64),
                           cols.dport[rows].astype(i64), g.from_a, g.seg, g.new_key)
