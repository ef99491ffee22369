"""Flow accounting as sorts and segmented scans (NumPy on the CPU, CuPy on the GPU).

The packets of a batch are sorted by (flow key, capture order), so each flow's packets form a
*segment*. Within a segment, a flow may end and another start (an idle gap, the attempt or
close timer, a SYN reusing closed ports, the active timeout): those split the segment into
*records*. Whether a packet splits depends on the state before it, which depends on where
its record started, so splits are found as a fixed point (:func:`find_records`): assume a set
of record starts, compute the state before every packet under that assumption, and see where
the CPU engine would split. Where both agree everywhere, the assumption is the CPU's own (by
induction over a segment's packets); where not, everything before the first disagreement was
right, so each round settles at least one more split, and usually all of them.

State that records keep across an active-timeout split (the TCP state machine, the last-seen
time, the close time, the sequence high-water marks) is computed per *chain*: the records
between two fresh starts. Counters start afresh in each record.

Every field is computed from the CPU engine's own definitions (``update_flow``,
``packet_ends_flow``, :mod:`kernels.tcp_state` through :mod:`kernels.tcp_fsm`), and the result
equals the CPU engine's field by field; the inter-arrival variance is merged as Chan et al.'s
parallel formula, equal to the CPU's running one to rounding.
"""

from __future__ import annotations

from typing import NamedTuple

from kernels import fsm_scan
from kernels import seg_scan as ss
from kernels.flowstate import (
    C_ACTIVE,
    C_ATTEMPT,
    C_CLOSE_DELAY,
    C_IDLE_ICMP,
    C_IDLE_OTHER,
    C_IDLE_TCP,
    C_IDLE_UDP,
    CLOSE_TS,
    END_ACTIVE,
    END_FIN,
    END_IDLE,
    END_RST,
    EXPIRE_AT,
    F_A_IS_ORIG,
    FIRST_TS,
    FLAGS,
    LAST_SEEN,
    LAST_TS,
    O_STATE,
    R_STATE,
)
from kernels.packet_columns import TH_ACK, TH_FIN, TH_RST, TH_SYN
from kernels.tcp_fsm import IDENTITY, pack, symbol_of

FRESH = 0  # a new flow: init_flow
CONTINUE = 1  # the flow held in the table goes on
RESTART = 2  # an interim record after the active timeout: restart_flow


class Lanes(NamedTuple):
    """One range's flow packets, sorted by (flow key, capture order); int64 unless noted."""

    row: object  # the packet's row in the batch
    ts: object
    proto: object
    tcp_ok: object  # bool: TCP with a readable header (status OK)
    flags: object
    seq: object
    plen: object
    ip_len: object
    ttl: object
    win: object
    icmp_code: object
    sport: object
    dport: object
    from_a: object  # bool: sent by key endpoint A
    seg: object  # segment (flow key) number
    seg_head: object  # bool: first packet of its segment


class Held(NamedTuple):
    """The table's state of each segment's flow (columns per segment; ``has`` says which
    segments have one): ``st`` (NI, segments), ``fs`` (NF, segments), ``hist`` (HIST_LEN,
    segments), ``state`` (TCP machine state id)."""

    has: object
    st: object
    fs: object
    hist: object
    state: object


class Records(NamedTuple):
    """A set of record starts: ``start`` (bool per packet) and ``kind`` (FRESH, CONTINUE or
    RESTART, read where ``start``)."""

    start: object
    kind: object


class Chains(NamedTuple):
    """What records of one chain share, per packet (after the packet unless named *before*)."""

    rec_start: object  # index of the packet's record's first packet
    chain_head: object  # bool
    chain_start: object  # index of the chain's first packet
    from_row: object  # bool per packet: its chain goes on from the table's flow
    a_is_orig: object  # bool
    is_orig: object  # bool: the packet is from the originator
    before: object  # TCP machine state before the packet
    after: object
    first_ts: object  # its record's first timestamp
    last_seen: object
    last_ts: object
    close_ts: object
    expire_at: object


def idle_timeout(xp, cfg, proto):
    return xp.where(proto == 6, cfg[C_IDLE_TCP],
                    xp.where((proto == 17) | (proto == 132), cfg[C_IDLE_UDP],
                             xp.where((proto == 1) | (proto == 58), cfg[C_IDLE_ICMP], cfg[C_IDLE_OTHER])))


def initial_flip(xp, lanes: Lanes, likely):
    """``init_flow``'s guess of which side is the originator: True where the first packet's
    receiver is taken as the originator (Zeek's '^')."""
    sp_l = likely[lanes.sport] != 0
    dp_l = likely[lanes.dport] != 0
    pure_syn = lanes.tcp_ok & ((lanes.flags & TH_SYN) != 0) & ((lanes.flags & TH_ACK) == 0)
    tcp = (lanes.proto == 6) & ~pure_syn & sp_l & (~dp_l | (lanes.sport < lanes.dport))
    udp = ((lanes.proto == 17) | (lanes.proto == 132)) & sp_l & ~dp_l
    return tcp | udp


def chain_heads(lanes: Lanes, recs: Records):
    """Where a chain starts: a segment's first packet, or a record that does not go on from
    the one before (not an interim record)."""
    return recs.start & ((recs.kind != RESTART) | lanes.seg_head)


def moving(xp, lanes: Lanes, recs: Records):
    """The packets that may move the TCP machine: SYN, FIN or RST, and each side's first
    packet of a chain (the sides told apart by sender, which needs no orientation)."""
    heads = chain_heads(lanes, recs)
    out = heads | (lanes.tcp_ok & ((lanes.flags & (TH_SYN | TH_FIN | TH_RST)) != 0))
    for side in (lanes.from_a, ~lanes.from_a):
        seen = ss.scan(xp, side.astype(xp.int64), heads, "max")
        out |= side & (ss.exclusive(xp, seen, heads, 0) == 0)
    return out


def chain_state(xp, fsm, lanes: Lanes, held: Held, recs: Records, cfg, likely, step, sizes):
    """The per-chain and per-record state before and after every packet, given record starts;
    the TCP machine is stepped at ``step`` (planned as ``sizes``, :mod:`kernels.fsm_scan`).
    Returns ``(chains, wrong)``: ``wrong`` marks packets not stepped that moved the machine."""
    start = recs.start
    rec_start = ss.start_index(xp, start)
    chain_head = chain_heads(lanes, recs)
    chain_start = ss.start_index(xp, chain_head)
    has = held.has[lanes.seg]
    # a chain goes on from the table's flow where it is its segment's first and the segment's
    # first record is not fresh
    seg_start = ss.start_index(xp, lanes.seg_head)
    from_row = has & (recs.kind[seg_start] != FRESH) & (chain_start == seg_start)
    flip = initial_flip(xp, lanes, likely)
    row_flags = held.st[FLAGS][lanes.seg]
    a_head = xp.where(from_row, (row_flags & F_A_IS_ORIG) != 0, lanes.from_a != flip)
    a_is_orig = a_head[chain_start]
    is_orig = lanes.from_a == a_is_orig
    # the TCP machine, from the table's state or a new flow's
    sym = xp.where(lanes.tcp_ok, symbol_of(xp, is_orig, lanes.flags, lanes.plen), IDENTITY)
    begin = xp.where(from_row, held.state[lanes.seg], 0)
    before, wrong = fsm_scan.states_before(xp, fsm.table, sym, chain_head, begin, step, sizes)
    after = fsm.table[sym, before]
    closed_after = fsm.closed[after]
    # times kept across a chain
    row_first = held.st[FIRST_TS][lanes.seg]
    head_first = xp.where(recs.kind == CONTINUE, row_first, lanes.ts)
    first_ts = head_first[rec_start]
    carry_seen = xp.where(from_row, held.st[LAST_SEEN][lanes.seg], 0)
    last_seen = xp.maximum(ss.scan(xp, lanes.ts, chain_head, "max"), carry_seen)
    counts = ~fsm.both_did_close[before]
    last = ss.last_index(xp, counts, chain_head)
    last_ts = xp.where(last >= 0, lanes.ts[xp.maximum(last, 0)], xp.where(from_row, held.st[LAST_TS][lanes.seg], 0))
    closes = closed_after & ~fsm.closed[before]
    last = ss.last_index(xp, closes, chain_head)
    close_ts = xp.where(last >= 0, lanes.ts[xp.maximum(last, 0)],
                        xp.where(from_row, held.st[CLOSE_TS][lanes.seg], 0))
    tcp = lanes.proto == 6
    expire_at = xp.where(tcp & closed_after, close_ts + cfg[C_CLOSE_DELAY],
                         xp.where(tcp & fsm.attempt[after], first_ts + cfg[C_ATTEMPT],
                                  last_seen + idle_timeout(xp, cfg, lanes.proto)))
    return Chains(rec_start, chain_head, chain_start, from_row, a_is_orig, is_orig, before, after, first_ts,
                  last_seen, last_ts, close_ts, expire_at), wrong


def end_reason(xp, fsm, lanes: Lanes, state, expire_at, first_ts, cfg):
    """``packet_ends_flow`` for each packet against the given flow state before it: the
    reason its flow ends first, END_ACTIVE for an interim split, or -1."""
    closed_reason = xp.where(fsm.reset[state], END_RST, END_FIN)
    expired = lanes.ts > expire_at
    pure_syn = lanes.tcp_ok & ((lanes.flags & TH_SYN) != 0) & ((lanes.flags & TH_ACK) == 0)
    reuse = pure_syn & fsm.closed_or_reset[state]
    active = (cfg[C_ACTIVE] > 0) & (lanes.ts - first_ts >= cfg[C_ACTIVE])
    return xp.where(expired, xp.where(fsm.closed[state], closed_reason, END_IDLE),
                    xp.where(reuse, closed_reason, xp.where(active, END_ACTIVE, -1)))


def head_reasons(xp, fsm, lanes: Lanes, held: Held, cfg):
    """At each segment's first packet, whether it ends the flow the table holds (-1 where it
    goes on, or where the table holds none)."""
    seg = lanes.seg
    r = end_reason(xp, fsm, lanes, held.state[seg], held.st[EXPIRE_AT][seg], held.st[FIRST_TS][seg], cfg)
    return xp.where(lanes.seg_head & held.has[seg], r, -1)


def split_reasons(xp, fsm, lanes: Lanes, ch: Chains, cfg):
    """Where the CPU engine would end a record before a packet, given the state after the
    packet before it in the same segment (-1: it goes on)."""
    prev = xp.concatenate((xp.zeros(1, dtype=xp.int64), xp.arange(lanes.ts.shape[0] - 1, dtype=xp.int64)))
    r = end_reason(xp, fsm, lanes, ch.after[prev], ch.expire_at[prev], ch.first_ts[prev], cfg)
    return xp.where(lanes.seg_head, -1, r)


def starts_from(xp, lanes: Lanes, head_kind, reasons) -> Records:
    """Record starts where the reasons say a record ends before a packet (segments' first
    packets start a record of ``head_kind``)."""
    kind = xp.where(lanes.seg_head, head_kind, xp.where(reasons == END_ACTIVE, RESTART, FRESH))
    return Records(lanes.seg_head | (reasons >= 0), kind)


def first_plan(xp, lanes: Lanes):
    """:func:`kernels.fsm_scan.plan` for the first round of :func:`find_records` (whose chains
    are the segments), as a device vector to read with the caller's other sizes."""
    recs = Records(lanes.seg_head, xp.zeros(lanes.ts.shape[0], dtype=xp.int64))
    return fsm_scan.plan(xp, moving(xp, lanes, recs), lanes.seg_head)


class Found(NamedTuple):
    """Settled record starts: ``recs``, their ``chains``, ``reasons`` (why the record before
    each start ended; at a segment's first packet, why the table's flow ended, or -1),
    ``unsettled`` (per packet: its segment did not settle and is to be walked), ``nrec``
    (records) and the ``rounds`` run."""

    recs: Records
    chains: Chains
    reasons: object
    unsettled: object
    nrec: int
    rounds: int


def find_records(xp, fsm, lanes: Lanes, held: Held, cfg, likely, rounds: int, read, sizes) -> Found:
    """Iterate record starts to the CPU engine's (see the module's docstring), stepping the
    TCP machine at :func:`moving`'s packets plus those that proved to move it. ``sizes``: the
    first round's (:func:`kernels.fsm_scan.plan` of ``moving`` for the segments' first records).
    ``read(vector)`` brings a device vector to the host: once per round."""
    hr = head_reasons(xp, fsm, lanes, held, cfg)
    has = held.has[lanes.seg]
    head_kind = xp.where(hr == END_ACTIVE, RESTART, xp.where((hr >= 0) | ~has, FRESH, CONTINUE))
    recs = starts_from(xp, lanes, head_kind, xp.full(lanes.ts.shape[0], -1, dtype=xp.int64))
    forced = xp.zeros(lanes.ts.shape[0], dtype=bool)
    step = moving(xp, lanes, recs)
    for k in range(rounds + 1):
        ch, wrong = chain_state(xp, fsm, lanes, held, recs, cfg, likely, step, sizes)
        reasons = split_reasons(xp, fsm, lanes, ch, cfg)
        new = starts_from(xp, lanes, head_kind, reasons)
        bad = (new.start != recs.start) | (new.start & (new.kind != recs.kind)) | wrong
        if k == rounds:
            nrec = int(read(recs.start.sum()))
            return Found(recs, ch, xp.where(lanes.seg_head, hr, reasons), _segment_any(xp, lanes, bad), nrec, k + 1)
        forced |= wrong
        step = moving(xp, lanes, new) | forced
        got = read(xp.concatenate((xp.stack((bad.any(), recs.start.sum())), fsm_scan.plan(xp, step, chain_heads(
            lanes, new)))))
        if not got[0]:
            return Found(recs, ch, xp.where(lanes.seg_head, hr, reasons), xp.zeros(lanes.ts.shape[0], dtype=bool),
                         int(got[1]), k + 1)
        recs, sizes = new, fsm_scan.Sizes(*(int(v) for v in got[2:]))
    raise AssertionError("unreachable")


def _segment_any(xp, lanes: Lanes, flags):
    """Per packet: whether any packet of its segment is flagged."""
    last = ss.ends(xp, lanes.seg_head)
    per_seg = ss.scan(xp, flags.astype(xp.int64), lanes.seg_head, "max")
    at_end = xp.where(last, per_seg, 0)
    n_seg_plus = lanes.seg.shape[0] + 1
    out = xp.zeros(n_seg_plus, dtype=xp.int64)
    out[xp.where(last, lanes.seg, n_seg_plus - 1)] = at_end
    return out[lanes.seg] != 0


def held_state_ids(xp, fsm, st):
    """TCP machine ids of table rows (``st`` as (NI, rows))."""
    codes = pack(st[O_STATE], st[R_STATE], st[FLAGS])
    pos = xp.clip(xp.searchsorted(fsm.sorted_codes, codes), 0, fsm.code_order.shape[0] - 1)
    return fsm.code_order[pos]
