"""Every field of every record, once its starts are settled (:mod:`kernels.flow_scan`).

Each field of the CPU's flow-state row (:mod:`kernels.flowstate`) is a scan over the packets
of a record (counters, sizes, TTLs, inter-arrival times, history letters) or of a chain (the
sequence high-water marks), seeded with the table's values where a record goes on from the
table. The TCP history follows ``update_history``, ``zero_window`` and ``update_seq``: a
packet adds at most one letter of each kind, in that order, so a record's history is the
first HIST_LEN letters of its packets' letters in capture order.

Sequence numbers are unwrapped along each run of one direction (consecutive differences in
32-bit sequence space), so the high-water mark is a running maximum. Where a difference to
the mark would not fit in 32-bit sequence space (the CPU would then compare modulo 2**32), or
where dropping an out-of-window SYN or RST would move the mark for later packets, the segment
is flagged and left to the sequential walk.
"""

from __future__ import annotations

from typing import NamedTuple

from kernels import seg_scan as ss
from kernels.fsm_scan import compact
from kernels.flow_scan import CONTINUE, FRESH, RESTART, Chains, Held, Lanes, Records
from kernels.flowstate import (
    CLOSE_TS,
    D_ACK,
    D_BYTES,
    D_CWR,
    D_ECE,
    D_FIN,
    D_H_FIN,
    D_H_RST,
    D_H_SYN,
    D_HSEEN,
    D_IAT_MAX,
    D_IAT_MIN,
    D_IAT_SUM,
    D_IP_BYTES,
    D_LAST_PKT,
    D_PKTS,
    D_PSH,
    D_RST,
    D_RXMIT,
    D_SEQ_LAST,
    D_SYN,
    D_SZ_MAX,
    D_SZ_MIN,
    D_SZ_SUM,
    D_SZ_SUMSQ,
    D_T_NEXT,
    D_TTL_MAX,
    D_TTL_MIN,
    D_URG,
    D_W_NEXT,
    D_ZWIN,
    EXPIRE_AT,
    F_A_IS_ORIG,
    F_FLIPPED,
    F_INTERIM,
    FIRST_TS,
    FLAGS,
    FO_IAT_M2,
    FR_IAT_M2,
    H_ACK,
    H_DATA,
    H_FIN,
    H_FINRST,
    H_MULTI,
    H_RST,
    H_SYN,
    H_SYNACK,
    HIST_LEN,
    HIST_N,
    ICMP_CODE,
    L_A,
    L_D,
    L_F,
    L_FLIP,
    L_H,
    L_I,
    L_Q,
    L_R,
    L_S,
    L_T,
    L_W,
    LAST_SEEN,
    LAST_TS,
    LOWER,
    NF,
    NI,
    O_STATE,
    ORIG,
    R_STATE,
    RESP,
    TCP_CLOSED,
    TCP_RESET,
)
from kernels.packet_columns import TH_ACK, TH_CWR, TH_ECE, TH_FIN, TH_PSH, TH_RST, TH_SYN, TH_URG
from kernels.tcp_fsm import CLOSE_BITS
from kernels.tcp_state import TOO_LARGE_SEQ_DELTA

BIG = 1 << 62
U32 = 0xFFFFFFFF
SEQ_PASSES = 2  # passes to settle which out-of-window SYNs and RSTs the high-water mark skips
_FLAG_COUNTS = ((D_SYN, TH_SYN), (D_ACK, TH_ACK), (D_FIN, TH_FIN), (D_RST, TH_RST), (D_PSH, TH_PSH),
                (D_URG, TH_URG), (D_ECE, TH_ECE), (D_CWR, TH_CWR))


class Out(NamedTuple):
    """The records of a range: state columns per record (``st`` (NI, records), ``fs`` (NF,
    records), ``hist`` (HIST_LEN, records) uint8), each packet's place in its record (``dir``
    1 or 2, ``nth``, ``first_ts``), and ``hard`` (per packet): its segment needs the
    sequential walk."""

    st: object
    fs: object
    hist: object
    dir: object
    nth: object
    first_ts: object
    hard: object


class _Ctx(NamedTuple):
    xp: object
    fsm: object
    lanes: Lanes
    held: Held
    recs: Records
    ch: Chains
    cont: object  # bool per packet: its record goes on from the table
    rec: object  # record number per packet
    nrec: int
    ends: object  # index of each record's last packet


def record_fields(xp, fsm, lanes: Lanes, held: Held, recs: Records, ch: Chains, nrec: int) -> Out:
    """The state row of every record (as the CPU engine would hold it after the record's last
    packet), and each packet's direction, number and record start."""
    rec = xp.cumsum(recs.start) - 1
    cont = recs.kind[ch.rec_start] == CONTINUE
    ends = compact(xp, ss.ends(xp, recs.start), nrec)
    c = _Ctx(xp, fsm, lanes, held, recs, ch, cont, rec, nrec, ends)
    st = xp.zeros((NI, nrec), dtype=xp.int64)
    fs = xp.zeros((NF, nrec), dtype=xp.float64)
    letters = []
    nth = xp.zeros(lanes.ts.shape[0], dtype=xp.int64)
    hard = xp.zeros(lanes.ts.shape[0], dtype=bool)
    for side, base, m2 in ((True, ORIG, FO_IAT_M2), (False, RESP, FR_IAT_M2)):
        mine = ch.is_orig == side
        before = _direction(c, st, fs, mine, base, m2)
        nth = xp.where(mine, before, nth)
        lt, hard_d = _tcp_direction(c, st, mine, base, side)
        letters.append(lt)
        hard |= hard_d
    _whole_flow(c, st)
    hist = _history(c, st, letters)
    direction = xp.where(ch.is_orig, 1, 2)
    return Out(st, fs, hist, direction, nth, ch.first_ts, hard)


def _at_end(c: _Ctx, per_packet):
    return per_packet[c.ends]


def _carry(c: _Ctx, field, default):
    """The table's value of ``field`` for packets of records that go on from the table."""
    return c.xp.where(c.cont, c.held.st[field][c.lanes.seg], default)


def _sum(c: _Ctx, values):
    return ss.cumsum(c.xp, values, c.ch.rec_start)


def _direction(c: _Ctx, st, fs, mine, base, m2_field):
    """Counters, sizes, TTLs and inter-arrival times of one direction; returns each packet's
    count of earlier packets in its direction (``flow_nth``)."""
    xp, ln = c.xp, c.lanes
    one = mine.astype(xp.int64)
    pk_in = _carry(c, base + D_PKTS, 0)
    pk = _sum(c, one) + pk_in
    pk_before = pk - one
    st[base + D_PKTS] = _at_end(c, pk)
    st[base + D_IP_BYTES] = _at_end(c, _carry(c, base + D_IP_BYTES, 0) + _sum(c, ln.ip_len * one))
    size = ln.ip_len
    st[base + D_SZ_MIN] = _at_end(c, xp.minimum(_carry(c, base + D_SZ_MIN, BIG),
                                              ss.scan(xp, xp.where(mine, size, BIG), c.recs.start, "min")))
    st[base + D_SZ_MAX] = _at_end(c, xp.maximum(_carry(c, base + D_SZ_MAX, 0),
                                              ss.scan(xp, xp.where(mine, size, 0), c.recs.start, "max")))
    st[base + D_SZ_SUM] = _at_end(c, _carry(c, base + D_SZ_SUM, 0) + _sum(c, size * one))
    st[base + D_SZ_SUMSQ] = _at_end(c, _carry(c, base + D_SZ_SUMSQ, 0) + _sum(c, size * size * one))
    st[base + D_TTL_MIN] = _at_end(c, xp.minimum(_carry(c, base + D_TTL_MIN, 256),
                                               ss.scan(xp, xp.where(mine, ln.ttl, 256), c.recs.start, "min")))
    st[base + D_TTL_MAX] = _at_end(c, xp.maximum(_carry(c, base + D_TTL_MAX, 0),
                                               ss.scan(xp, xp.where(mine, ln.ttl, 0), c.recs.start, "max")))
    tcp_mine = mine & ln.tcp_ok
    for field, bit in _FLAG_COUNTS:
        counted = (tcp_mine & ((ln.flags & bit) != 0)).astype(xp.int64)
        st[base + field] = _at_end(c, _carry(c, base + field, 0) + _sum(c, counted))
    # inter-arrival times: from the previous packet of this direction in the record, or from the
    # table's last packet of the direction
    last = ss.last_index(xp, mine, c.recs.start)
    prev = ss.exclusive(xp, last, c.recs.start, -1)
    carried_last = _carry(c, base + D_LAST_PKT, 0)
    prev_ts = xp.where(prev >= 0, ln.ts[xp.maximum(prev, 0)], carried_last)
    has_gap = mine & (pk_before > 0)
    gap = xp.where(has_gap, xp.maximum(ln.ts - prev_ts, 0), 0)
    st[base + D_LAST_PKT] = _at_end(c, xp.where(last >= 0, ln.ts[xp.maximum(last, 0)], carried_last))
    st[base + D_IAT_MIN] = _at_end(c, xp.minimum(_carry(c, base + D_IAT_MIN, BIG),
                                               ss.scan(xp, xp.where(has_gap, gap, BIG), c.recs.start, "min")))
    st[base + D_IAT_MAX] = _at_end(c, xp.maximum(_carry(c, base + D_IAT_MAX, 0),
                                               ss.scan(xp, xp.where(has_gap, gap, 0), c.recs.start, "max")))
    gaps_here = _at_end(c, _sum(c, has_gap.astype(xp.int64)))
    sum_here = _at_end(c, _sum(c, gap))
    sum_in = _at_end(c, _carry(c, base + D_IAT_SUM, 0))
    st[base + D_IAT_SUM] = sum_in + sum_here
    fs[m2_field] = _merged_m2(c, gap, has_gap, gaps_here, sum_here, _at_end(c, xp.maximum(pk_in - 1, 0)), sum_in,
                              m2_field)
    return pk_before


def _merged_m2(c: _Ctx, gap, has_gap, n_b, s_b, n_a, s_a, m2_field):
    """Sum of squared deviations of the gaps (seconds squared): this range's by two passes,
    merged with the table's by Chan, Golub and LeVeque's formula."""
    xp = c.xp
    mean_b = s_b / xp.maximum(n_b, 1)
    dev = xp.where(has_gap, (gap - mean_b[c.rec]) * 1e-9, 0.0)
    m2_b = xp.bincount(c.rec, weights=dev * dev, minlength=c.nrec)[:c.nrec]
    m2_a = xp.where(c.cont[c.ends], c.held.fs[m2_field][c.lanes.seg[c.ends]], 0.0)
    mean_a = s_a / xp.maximum(n_a, 1)
    delta = (mean_b - mean_a) * 1e-9
    n = xp.maximum(n_a + n_b, 1)
    cross = delta * delta * (n_a * n_b / n)
    return xp.where(n_b == 0, m2_a, xp.where(n_a == 0, m2_b, m2_a + m2_b + cross))


def _pow10(xp, count):
    """Whether each count is 1, 10, 100, ..."""
    hit = xp.zeros(count.shape, dtype=bool)
    p = 1
    for _ in range(19):
        hit |= count == p
        p *= 10
    return hit


def _next_pow10(xp, count):
    """``_scaled``'s next-letter count after ``count`` occurrences (0 before the first)."""
    nxt = xp.ones(count.shape, dtype=xp.int64)
    for _ in range(19):
        nxt = xp.where(nxt <= count, nxt * 10, nxt)
    return xp.where(count > 0, nxt, 0)


def _seq_delta(xp, a, b):
    d = (a - b) & U32
    return xp.where(d >= 0x80000000, d - 0x100000000, d)


def _tcp_direction(c: _Ctx, st, mine, base, is_orig):
    """History letters, retransmissions, zero windows, payload bytes and the sequence
    high-water mark of one direction. Returns the packets' letters (three per packet: the
    history's, the zero window's and the retransmission's, 0 for none) and which packets'
    segments need the sequential walk."""
    xp, ln, fsm, ch = c.xp, c.lanes, c.fsm, c.ch
    up = 0 if is_orig else LOWER
    ok = mine & ln.tcp_ok
    syn = (ln.flags & TH_SYN) != 0
    fin = (ln.flags & TH_FIN) != 0
    rst = (ln.flags & TH_RST) != 0
    ack = (ln.flags & TH_ACK) != 0
    ep = (fsm.o_state if is_orig else fsm.r_state)[ch.before]
    peer = (fsm.r_state if is_orig else fsm.o_state)[ch.before]
    seg_len = ln.plen + syn + fin - xp.where(rst, ln.plen, 0)
    end = (ln.seq + seg_len) & U32
    # -- update_history: one letter per kind of packet, the first time; SYN, FIN and RST again
    # when their sequence number changed
    nbits = syn.astype(xp.int64) + fin + rst
    multi = ok & (nbits > 1)
    single = ok & (nbits == 1)
    plain = ok & (nbits == 0)
    bit = xp.where(multi, xp.where(fin & rst, H_FINRST, H_MULTI),
                   xp.where(single & syn, xp.where(ack, H_SYNACK, H_SYN),
                            xp.where(single & fin, H_FIN, xp.where(single & rst, H_RST,
                                     xp.where(plain & (ln.plen > 0), H_DATA, xp.where(plain & ack, H_ACK, 0))))))
    letter = xp.where(multi, xp.where(fin & rst, L_I, L_Q),
                      xp.where(single & syn, xp.where(ack, L_H, L_S),
                               xp.where(single & fin, L_F, xp.where(single & rst, L_R,
                                        xp.where(plain & (ln.plen > 0), L_D, L_A))))) + up
    udp = mine & (ln.proto == 17)  # update_flow: Zeek marks each UDP side with D / d
    bit = xp.where(udp, H_DATA, bit)
    letter = xp.where(udp, L_D + up, letter)
    seen_in = _carry(c, base + D_HSEEN, 0)
    seen_incl = ss.scan(xp, bit, c.recs.start, "or") | seen_in
    seen_before = ss.exclusive(xp, seen_incl, c.recs.start, seen_in)
    st[base + D_HSEEN] = _at_end(c, seen_incl)
    first = (bit != 0) & ((seen_before & bit) == 0)
    again = xp.zeros_like(first)
    # a FIN's mark is its sequence number past the payload, not counting the FIN itself, as
    # tcp_state.update_history keeps it: a flow walked in one batch and scanned in the next
    # compares the two
    fin_end = (ln.seq + ln.plen) & U32
    for field, which, value in ((D_H_SYN, single & syn, ln.seq), (D_H_FIN, single & fin, fin_end),
                                (D_H_RST, single & rst, ln.seq)):
        carried = _carry(c, base + field, 0)
        last = ss.last_index(xp, which, c.recs.start)
        latest = xp.where(last >= 0, value[xp.maximum(last, 0)], carried)
        prior = ss.exclusive(xp, latest, c.recs.start, carried)
        again |= which & ~first & (bit != 0) & (value != prior)
        st[base + field] = _at_end(c, latest)
    l_hist = xp.where(first | again, letter, 0)
    # -- zero_window: 'W' at the 1st, 10th, 100th ... zero-window advertisement
    zw = ok & (ln.win == 0) & ~rst & ~syn & (peer != TCP_CLOSED) & (ep != TCP_RESET)
    zw_count = _carry(c, base + D_ZWIN, 0) + _sum(c, zw.astype(xp.int64))
    l_win = xp.where(zw & _pow10(xp, zw_count), L_W + up, 0)
    st[base + D_ZWIN] = _at_end(c, zw_count)
    st[base + D_W_NEXT] = _next_pow10(xp, st[base + D_ZWIN])
    # -- update_seq
    new_bytes, rxmit, hard = _sequence(c, st, ok, ep, syn, rst, end, base)
    rx_count = _carry(c, base + D_RXMIT, 0) + _sum(c, rxmit.astype(xp.int64))
    l_rx = xp.where(rxmit & _pow10(xp, rx_count), L_T + up, 0)
    st[base + D_RXMIT] = _at_end(c, rx_count)
    st[base + D_T_NEXT] = _next_pow10(xp, st[base + D_RXMIT])
    payload = xp.where(ok, new_bytes, xp.where(mine, ln.plen, 0))
    st[base + D_BYTES] = _at_end(c, _carry(c, base + D_BYTES, 0) + _sum(c, payload))
    return (l_hist, l_win, l_rx), hard


def _sequence(c: _Ctx, st, ok, ep, syn, rst, end, base):
    """``update_seq`` for one direction: payload bytes that advanced the sequence space, which
    packets were retransmissions, and which segments need the sequential walk."""
    xp, ln, ch = c.xp, c.lanes, c.ch
    # D_PKTS == 0 restarts tracking at a record's first packet of the direction; so does a SYN
    # unless the endpoint closed or reset
    mine_all = (ch.is_orig == (base == ORIG))
    pk_before = _sum(c, mine_all.astype(xp.int64)) - mine_all + _carry(c, base + D_PKTS, 0)
    restart = ok & ((pk_before == 0) | (syn & (ep != TCP_CLOSED) & (ep != TCP_RESET)))
    run_head = restart | ch.chain_head
    carried = xp.where(ch.from_row, c.held.st[base + D_SEQ_LAST][ln.seg], 0)
    base_value = xp.where(restart, xp.where(syn, end, ln.seq), carried)
    run_start = ss.start_index(xp, run_head)
    run_base = base_value[run_start]
    last = ss.last_index(xp, ok, run_head)
    prev = ss.exclusive(xp, last, run_head, -1)
    prev_end = xp.where(prev >= 0, end[xp.maximum(prev, 0)], run_base)
    step = xp.where(ok, _seq_delta(xp, end, prev_end), 0)
    w = run_base + ss.cumsum(xp, step, run_start)  # unwrapped end of each packet
    eligible = ok & (ep != TCP_RESET)
    lowest = -(1 << 62)
    skipped = xp.zeros(ok.shape, dtype=bool)
    for _ in range(SEQ_PASSES):
        counted = eligible & ~skipped
        mark_incl = xp.maximum(ss.scan(xp, xp.where(counted, w, lowest), run_head, "max"), run_base)
        mark = ss.exclusive(xp, mark_incl, run_head, run_base)
        delta = w - mark
        was = skipped
        skipped = ok & (syn | rst) & ((delta > TOO_LARGE_SEQ_DELTA) | (delta < -TOO_LARGE_SEQ_DELTA))
    # the last pass's marks hold if its skipped packets are the ones it left out (as far as the
    # mark goes: a skipped packet below the mark would not have raised it anyway), and every
    # difference fits 32-bit sequence space as the CPU's does
    hard = ok & (skipped != was) & (delta > 0)
    hard |= ok & ((delta >= (1 << 31)) | (delta < -(1 << 31)))
    new_bytes = xp.where(skipped, xp.where(rst, 0, ln.plen),
                         xp.where(ep == TCP_RESET, 0, xp.where(delta > 0, xp.minimum(delta, ln.plen), 0)))
    rxmit = ok & ~skipped & (ep != TCP_RESET) & (delta <= 0) & (ln.plen > 0)
    final = xp.maximum(mark_incl, run_base) & U32
    st[base + D_SEQ_LAST] = _at_end(c, final)
    return new_bytes, rxmit, hard


def _whole_flow(c: _Ctx, st):
    xp, ln, ch, fsm = c.xp, c.lanes, c.ch, c.fsm
    after = _at_end(c, ch.after)
    codes = fsm.codes[after]
    st[O_STATE] = codes & 0xFFFF
    st[R_STATE] = (codes >> 16) & 0xFFFF
    flipped = ch.a_is_orig != ln.from_a  # at a fresh chain's head
    head = ch.chain_start
    row_flags = c.held.st[FLAGS][ln.seg]
    fl_orig = xp.where(ch.from_row, row_flags & (F_A_IS_ORIG | F_FLIPPED),
                       xp.where(ch.a_is_orig, F_A_IS_ORIG, 0) | xp.where(flipped[head], F_FLIPPED, 0))
    kind = c.recs.kind[ch.rec_start]
    interim = (kind == RESTART) | (c.cont & ((row_flags & F_INTERIM) != 0))
    st[FLAGS] = _at_end(c, fl_orig | xp.where(interim, F_INTERIM, 0)) | ((codes >> 32) & CLOSE_BITS)
    st[FIRST_TS] = _at_end(c, ch.first_ts)
    st[LAST_TS] = _at_end(c, ch.last_ts)
    st[LAST_SEEN] = _at_end(c, ch.last_seen)
    st[EXPIRE_AT] = _at_end(c, ch.expire_at)
    st[CLOSE_TS] = _at_end(c, ch.close_ts)
    st[ICMP_CODE] = _at_end(c, xp.where(ch.from_row, c.held.st[ICMP_CODE][ln.seg], ln.icmp_code[head]))


def _history(c: _Ctx, st, letters):
    """The first HIST_LEN letters of each record: its start's ('^' for a flipped new flow, or
    the table's), then its packets' in capture order, three kinds per packet."""
    xp, ln, ch = c.xp, c.lanes, c.ch
    kind = c.recs.kind[ch.rec_start]
    flipped = (ch.a_is_orig != ln.from_a)[ch.chain_start] & ~ch.from_row
    fresh_flip = (kind == FRESH) & flipped
    n_in = xp.where(c.cont, c.held.st[HIST_N][ln.seg], xp.where(fresh_flip, 1, 0))
    (o1, o2, o3), (r1, r2, r3) = letters
    per_packet = [xp.where(ch.is_orig, o, r) for o, r in ((o1, r1), (o2, r2), (o3, r3))]
    count = sum((p != 0).astype(xp.int64) for p in per_packet)
    pos = n_in + _sum(c, count) - count  # where the packet's first letter goes
    # one spare row takes every letter past HIST_LEN (and the packets' empty slots)
    hist = xp.zeros((HIST_LEN + 1, c.nrec), dtype=xp.uint8)
    rows = ln.seg[c.ends]
    hist[:HIST_LEN] = xp.where(c.cont[c.ends][None, :], c.held.hist[:, rows], 0)
    hist[0] = xp.where(fresh_flip[c.ends], L_FLIP, hist[0])
    for p in per_packet:
        put = (p != 0) & (pos < HIST_LEN)
        hist[xp.where(put, pos, HIST_LEN), c.rec] = p.astype(xp.uint8)
        pos = pos + (p != 0)
    st[HIST_N] = xp.minimum(_at_end(c, pos), HIST_LEN)
    return hist[:HIST_LEN]
