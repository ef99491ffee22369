"""The flow table's compiled core: an open-addressing hash table of flow state.

Flows live in preallocated arrays (one row per flow, see :mod:`kernels.flowstate`); the hash
table maps a key to a row with linear probing and backward-shift deletion, so lookups stay
short without tombstones. Ended flows are copied to an output buffer ("emitted") and their row
returns to a free list.

Every expiry decision is made per packet from the flow's own ``EXPIRE_AT``, so a record's
content does not depend on batch boundaries; periodic scans only emit flows that no packet
touches again. The kernels stop early (returning the index reached and a code) when the output
buffer or the table is full, and the caller drains or evicts, then calls again.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, row_fn
from kernels.flowkey import canonical_key, is_flow_packet
from kernels.flowstate import (
    C_ACTIVE,
    C_ATTEMPT,
    C_CLOSE_DELAY,
    C_IDLE_ICMP,
    C_IDLE_OTHER,
    C_IDLE_TCP,
    C_IDLE_UDP,
    CLOSE_TS,
    D_ACK,
    D_BYTES,
    D_CWR,
    D_ECE,
    D_FIN,
    D_IAT_MAX,
    D_IAT_MIN,
    D_IAT_SUM,
    D_IP_BYTES,
    D_LAST_PKT,
    D_PKTS,
    D_PSH,
    D_RST,
    D_SEQ_LAST,
    D_SYN,
    D_SZ_MAX,
    D_SZ_MIN,
    D_SZ_SUM,
    D_SZ_SUMSQ,
    D_TTL_MAX,
    D_TTL_MIN,
    D_URG,
    END_ACTIVE,
    END_EVICTED,
    END_FIN,
    END_IDLE,
    END_RST,
    EXPIRE_AT,
    F_A_IS_ORIG,
    F_CLOSED,
    F_FLIPPED,
    F_INTERIM,
    F_O_DID_CLOSE,
    F_R_DID_CLOSE,
    FIRST_TS,
    FLAGS,
    FO_IAT_M2,
    FR_IAT_M2,
    H_DATA,
    HIST_N,
    ICMP_CODE,
    L_D,
    L_FLIP,
    LAST_SEEN,
    LAST_TS,
    LOWER,
    M_ACTIVE,
    M_CREATED,
    M_EVICTED,
    M_HWM,
    M_NFREE,
    M_OUT_N,
    M_PROBE_MAX,
    N_DIR,
    O_STATE,
    ORIG,
    R_STATE,
    RESP,
    TCP_RESET,
)
from kernels.packet_columns import ST_OK, TH_ACK, TH_CWR, TH_ECE, TH_FIN, TH_PSH, TH_RST, TH_SYN, TH_URG
from kernels.tcp_state import (
    add_history,
    close_complete,
    is_attempt,
    is_closed_or_reset,
    record_once,
    update_history,
    update_seq,
    update_state,
    zero_window,
)

DONE = 0
OUT_FULL = 1  # the output buffer needs draining
TABLE_FULL = 2  # no free row: evict, then call again
SLOTS_FULL = 3  # the slot table is half full: grow it, then call again

_BIG = np.int64(1) << np.int64(62)


@row_fn
def _find(slots, keys, h, a_hi, a_lo, b_hi, b_lo, w4, meta):
    """Row of the key, or -1. A slot is ``[hash, row + 1]``; 0 in the second word is empty,
    so a probe compares hashes without touching the flow rows."""
    mask = np.uint64(slots.shape[0] - 1)
    s = h & mask
    probes = 0
    while True:
        r = slots[s, 1]
        if r == 0:
            return -1
        if slots[s, 0] == h:
            f = np.int64(r) - 1
            if (keys[f, 0] == a_hi and keys[f, 1] == a_lo and keys[f, 2] == b_hi and keys[f, 3] == b_lo
                    and keys[f, 4] == w4):
                return f
        s = (s + np.uint64(1)) & mask
        probes += 1
        if probes > meta[M_PROBE_MAX]:
            meta[M_PROBE_MAX] = probes


@row_fn
def _place(slots, h, f):
    mask = np.uint64(slots.shape[0] - 1)
    s = h & mask
    while slots[s, 1] != 0:
        s = (s + np.uint64(1)) & mask
    slots[s, 0] = h
    slots[s, 1] = np.uint64(f + 1)


@row_fn
def _insert(slots, fhash, keys, used, free, meta, h, a_hi, a_lo, b_hi, b_lo, w4):
    nfree = meta[M_NFREE] - 1
    f = free[nfree]
    meta[M_NFREE] = nfree
    meta[M_ACTIVE] += 1
    meta[M_CREATED] += 1
    _place(slots, h, f)
    fhash[f] = h
    keys[f, 0] = a_hi
    keys[f, 1] = a_lo
    keys[f, 2] = b_hi
    keys[f, 3] = b_lo
    keys[f, 4] = w4
    used[f] = 1
    if f >= meta[M_HWM]:
        meta[M_HWM] = f + 1
    return f


@row_fn
def remove_flow(slots, fhash, used, free, meta, f):
    mask = np.uint64(slots.shape[0] - 1)
    target = np.uint64(f + 1)
    s = fhash[f] & mask
    while slots[s, 1] != target:
        s = (s + np.uint64(1)) & mask
    j = s
    while True:
        j = (j + np.uint64(1)) & mask
        if slots[j, 1] == 0:
            break
        home = slots[j, 0] & mask
        # the entry at j may move back to the hole at s unless its home lies cyclically in (s, j]
        if s <= j:
            stays = s < home <= j
        else:
            stays = home > s or home <= j
        if not stays:
            slots[s, 0] = slots[j, 0]
            slots[s, 1] = slots[j, 1]
            s = j
    slots[s, 0] = 0
    slots[s, 1] = 0
    used[f] = 0
    free[meta[M_NFREE]] = f
    meta[M_NFREE] += 1
    meta[M_ACTIVE] -= 1


@cpu_kernel
def rehash(old, new):
    """Move every entry of the slot table ``old`` into the (larger, empty) table ``new``."""
    for s in range(old.shape[0]):
        if old[s, 1] != 0:
            _place(new, old[s, 0], np.int64(old[s, 1]) - 1)


@row_fn
def emit_flow(keys, st, fs, hist, f, reason, okeys, ost, ofs, ohist, oreason, meta):
    k = meta[M_OUT_N]
    for c in range(keys.shape[1]):
        okeys[k, c] = keys[f, c]
    for c in range(st.shape[1]):
        ost[k, c] = st[f, c]
    for c in range(fs.shape[1]):
        ofs[k, c] = fs[f, c]
    for c in range(hist.shape[1]):
        ohist[k, c] = hist[f, c]
    oreason[k] = reason
    meta[M_OUT_N] = k + 1


@row_fn
def closed_reason(st, f):
    if (st[f, O_STATE] & 0xFF) == TCP_RESET or (st[f, R_STATE] & 0xFF) == TCP_RESET:
        return END_RST
    return END_FIN


@row_fn
def expiry_reason(st, f):
    if st[f, FLAGS] & F_CLOSED:
        return closed_reason(st, f)
    return END_IDLE


@row_fn
def _reset_counters(st, fs, f):
    for base in range(ORIG, RESP + 1, N_DIR):
        for c in range(N_DIR):
            if c != D_SEQ_LAST:
                st[f, base + c] = 0
        st[f, base + D_SZ_MIN] = _BIG
        st[f, base + D_IAT_MIN] = _BIG
        st[f, base + D_TTL_MIN] = 256
    for c in range(fs.shape[1]):
        fs[f, c] = 0.0


@row_fn
def init_flow(st, fs, hist, f, cols, i, from_a, likely):
    for c in range(st.shape[1]):
        st[f, c] = 0
    _reset_counters(st, fs, f)
    proto = cols.proto[i]
    flags = cols.tcp_flags[i]
    sp = cols.sport[i]
    dp = cols.dport[i]
    flip = False
    if proto == 6:
        pure_syn = cols.status[i] == ST_OK and (flags & TH_SYN) != 0 and (flags & TH_ACK) == 0
        # Zeek's guess for a connection seen mid-stream: the side on a server port responds
        if not pure_syn and likely[sp] and (not likely[dp] or sp < dp):
            flip = True
    elif proto == 17 or proto == 132:
        flip = likely[sp] != 0 and likely[dp] == 0
    fl = 0
    if from_a != flip:
        fl |= F_A_IS_ORIG
    if flip:
        fl |= F_FLIPPED
        add_history(hist, st, f, L_FLIP)
    st[f, FLAGS] = fl
    st[f, FIRST_TS] = cols.ts_ns[i]
    st[f, ICMP_CODE] = cols.icmp_code[i]


@row_fn
def _idle_timeout(cfg, proto):
    if proto == 6:
        return cfg[C_IDLE_TCP]
    if proto == 17 or proto == 132:
        return cfg[C_IDLE_UDP]
    if proto == 1 or proto == 58:
        return cfg[C_IDLE_ICMP]
    return cfg[C_IDLE_OTHER]


@row_fn
def update_flow(st, fs, hist, f, cols, i, from_a, cfg):
    ts = cols.ts_ns[i]
    proto = cols.proto[i]
    is_orig = from_a == ((st[f, FLAGS] & F_A_IS_ORIG) != 0)
    base = ORIG if is_orig else RESP
    plen = np.int64(cols.payload_len[i])
    fl = st[f, FLAGS]
    if not ((fl & F_O_DID_CLOSE) and (fl & F_R_DID_CLOSE)):
        st[f, LAST_TS] = ts
    if proto == 6 and cols.status[i] == ST_OK:
        flags = cols.tcp_flags[i]
        seq = np.int64(cols.tcp_seq[i])
        ep_state = st[f, O_STATE if is_orig else R_STATE] & 0xFF
        update_history(hist, st, f, is_orig, flags, seq, plen)
        zero_window(hist, st, f, is_orig, flags, cols.tcp_win[i])
        new_bytes = update_seq(hist, st, f, is_orig, flags, seq, plen, ep_state)
        update_state(st, f, is_orig, flags, plen)
        st[f, base + D_SYN] += (flags & TH_SYN) != 0
        st[f, base + D_ACK] += (flags & TH_ACK) != 0
        st[f, base + D_FIN] += (flags & TH_FIN) != 0
        st[f, base + D_RST] += (flags & TH_RST) != 0
        st[f, base + D_PSH] += (flags & TH_PSH) != 0
        st[f, base + D_URG] += (flags & TH_URG) != 0
        st[f, base + D_ECE] += (flags & TH_ECE) != 0
        st[f, base + D_CWR] += (flags & TH_CWR) != 0
    else:
        new_bytes = plen
        if proto == 17:  # Zeek marks every UDP conversation's sides with D / d
            record_once(hist, st, f, base, H_DATA, L_D if is_orig else L_D + LOWER)
    if ts > st[f, LAST_SEEN]:
        st[f, LAST_SEEN] = ts
    if st[f, base + D_PKTS] > 0:
        iat = ts - st[f, base + D_LAST_PKT]
        if iat < 0:  # reordered capture
            iat = 0
        if iat < st[f, base + D_IAT_MIN]:
            st[f, base + D_IAT_MIN] = iat
        if iat > st[f, base + D_IAT_MAX]:
            st[f, base + D_IAT_MAX] = iat
        # Welford's update, with the running means taken from the exact integer sum: a sum of
        # squares minus the squared mean cancels catastrophically for regular gaps (beacons),
        # and there the CPU's and the GPU's (fused multiply-add) roundings would disagree.
        gaps = st[f, base + D_PKTS] - 1
        mean_old = st[f, base + D_IAT_SUM] / gaps if gaps > 0 else 0.0
        st[f, base + D_IAT_SUM] += iat
        mean_new = st[f, base + D_IAT_SUM] / (gaps + 1)
        fs[f, FO_IAT_M2 if is_orig else FR_IAT_M2] += ((iat - mean_old) * 1e-9) * ((iat - mean_new) * 1e-9)
    st[f, base + D_LAST_PKT] = ts
    st[f, base + D_PKTS] += 1
    st[f, base + D_BYTES] += new_bytes
    size = np.int64(cols.ip_len[i])
    st[f, base + D_IP_BYTES] += size
    if size < st[f, base + D_SZ_MIN]:
        st[f, base + D_SZ_MIN] = size
    if size > st[f, base + D_SZ_MAX]:
        st[f, base + D_SZ_MAX] = size
    st[f, base + D_SZ_SUM] += size
    st[f, base + D_SZ_SUMSQ] += size * size
    ttl = np.int64(cols.ttl[i])
    if ttl < st[f, base + D_TTL_MIN]:
        st[f, base + D_TTL_MIN] = ttl
    if ttl > st[f, base + D_TTL_MAX]:
        st[f, base + D_TTL_MAX] = ttl
    if proto == 6:
        if not (st[f, FLAGS] & F_CLOSED) and close_complete(st, f):
            st[f, FLAGS] |= F_CLOSED
            st[f, CLOSE_TS] = ts
        if st[f, FLAGS] & F_CLOSED:
            st[f, EXPIRE_AT] = st[f, CLOSE_TS] + cfg[C_CLOSE_DELAY]
        elif is_attempt(st, f):
            st[f, EXPIRE_AT] = st[f, FIRST_TS] + cfg[C_ATTEMPT]
        else:
            st[f, EXPIRE_AT] = st[f, LAST_SEEN] + cfg[C_IDLE_TCP]
    else:
        st[f, EXPIRE_AT] = st[f, LAST_SEEN] + _idle_timeout(cfg, proto)


@row_fn
def note_packet_flow(st, f, cols, i, from_a):
    """Tell the packet's row which flow record (and direction) it was counted in."""
    is_orig = from_a == ((st[f, FLAGS] & F_A_IS_ORIG) != 0)
    cols.flow_dir[i] = 1 if is_orig else 2
    cols.flow_nth[i] = st[f, (ORIG if is_orig else RESP) + D_PKTS] - 1
    cols.flow_first_ts[i] = st[f, FIRST_TS]


@row_fn
def packet_ends_flow(st, f, cols, i, cfg):
    """Before packet ``i`` is added to flow row ``f``: the reason the flow ends first (its
    timer expired, or a new SYN reuses a closed connection's ports), END_ACTIVE when the active
    timeout cuts an interim record, or -1 when the packet simply continues the flow."""
    ts = cols.ts_ns[i]
    if ts > st[f, EXPIRE_AT]:
        return expiry_reason(st, f)
    flags = cols.tcp_flags[i]
    if (cols.proto[i] == 6 and cols.status[i] == ST_OK and (flags & TH_SYN) and not (flags & TH_ACK)
            and is_closed_or_reset(st, f)):
        return closed_reason(st, f)
    if cfg[C_ACTIVE] > 0 and ts - st[f, FIRST_TS] >= cfg[C_ACTIVE]:
        return END_ACTIVE
    return -1


@row_fn
def restart_flow(st, fs, f, ts):
    """After an interim record: the same flow (key, orientation, TCP state) counts afresh."""
    _reset_counters(st, fs, f)
    st[f, HIST_N] = 0
    st[f, FIRST_TS] = ts
    st[f, FLAGS] |= F_INTERIM


@row_fn
def packet_shard(h, nshards):
    """The flow-table shard of a packet with flow hash ``h``: from the hash's top 24 bits, as the
    slot index uses the low ones; a multiply and shift (Lemire's range reduction), not a
    division, as every flow thread computes it for every packet of a batch."""
    return ((h >> np.uint64(40)) * np.uint64(nshards)) >> np.uint64(24)


@cpu_kernel
def rows_of_shard(pkt_hash, n, nshards, k, rows):
    """Put the rows ``0..n`` of shard ``k`` into ``rows``, in capture order; returns how many.
    Each flow thread collects its own in one pass over the hashes, in parallel: grouping every
    shard's rows on one thread (a counting sort) was serial work that kept many cores waiting."""
    m = 0
    shard = np.uint64(k)
    for i in range(n):
        rows[m] = i  # written always, kept only when the row is ours: no branch to mispredict
        m += packet_shard(pkt_hash[i], nshards) == shard
    return m


@cpu_kernel
def update_flows(cols, pkt_hash, rows, start, stop, likely, cfg,
                 keys, fhash, st, fs, hist, used, slots, free, meta,
                 okeys, ost, ofs, ohist, oreason):
    """Account the packets at positions ``start..stop``: of ``rows`` (a shard's rows, in
    capture order) when it is not empty, else of the batch itself.

    Returns ``(next_position, code)``; ``code`` is DONE, OUT_FULL, TABLE_FULL or SLOTS_FULL.
    """
    ocap = okeys.shape[0]
    listed = rows.shape[0] > 0
    for j in range(start, stop):
        # unsigned: Numba adds no negative-index wraparound to the packet's column loads
        i = np.uint64(rows[j]) if listed else np.uint64(j)
        if not is_flow_packet(cols, i):
            continue
        h = pkt_hash[i]
        if meta[M_OUT_N] >= ocap:
            return j, OUT_FULL
        a_hi, a_lo, b_hi, b_lo, w4, from_a = canonical_key(cols, i)
        f = _find(slots, keys, h, a_hi, a_lo, b_hi, b_lo, w4, meta)
        if f >= 0:
            reason = packet_ends_flow(st, f, cols, i, cfg)
            if reason == END_ACTIVE:
                emit_flow(keys, st, fs, hist, f, END_ACTIVE, okeys, ost, ofs, ohist, oreason, meta)
                restart_flow(st, fs, f, cols.ts_ns[i])
            elif reason >= 0:
                emit_flow(keys, st, fs, hist, f, reason, okeys, ost, ofs, ohist, oreason, meta)
                remove_flow(slots, fhash, used, free, meta, f)
                f = -1
        if f < 0:
            if meta[M_NFREE] == 0:
                return j, TABLE_FULL
            if 2 * (meta[M_ACTIVE] + 1) > slots.shape[0]:
                return j, SLOTS_FULL
            f = _insert(slots, fhash, keys, used, free, meta, h, a_hi, a_lo, b_hi, b_lo, w4)
            init_flow(st, fs, hist, f, cols, i, from_a, likely)
        update_flow(st, fs, hist, f, cols, i, from_a, cfg)
        note_packet_flow(st, f, cols, i, from_a)
    return stop, DONE


@cpu_kernel
def expire_flows(now, start, flush_reason, keys, fhash, st, fs, hist, used, slots, free, meta,
                 okeys, ost, ofs, ohist, oreason):
    """Emit flows whose ``EXPIRE_AT`` is before ``now`` (or every flow, with reason
    ``flush_reason`` when it is >= 0), scanning rows from ``start``.

    Returns the row reached: the table's size when done, less when the output filled up.
    """
    ocap = okeys.shape[0]
    for f in range(start, meta[M_HWM]):
        if not used[f]:
            continue
        if flush_reason >= 0:
            reason = flush_reason
        elif st[f, EXPIRE_AT] < now:
            reason = expiry_reason(st, f)
        else:
            continue
        if meta[M_OUT_N] >= ocap:
            return f
        emit_flow(keys, st, fs, hist, f, reason, okeys, ost, ofs, ohist, oreason, meta)
        remove_flow(slots, fhash, used, free, meta, f)
    return used.shape[0]  # done: the rows past the high-water mark were never used


@cpu_kernel
def evict_flows(victims, start, keys, fhash, st, fs, hist, used, slots, free, meta,
                okeys, ost, ofs, ohist, oreason):
    """Emit and remove the rows in ``victims`` (from index ``start``); returns the index reached."""
    ocap = okeys.shape[0]
    for j in range(start, victims.shape[0]):
        f = victims[j]
        if not used[f]:
            continue
        if meta[M_OUT_N] >= ocap:
            return j
        emit_flow(keys, st, fs, hist, f, END_EVICTED, okeys, ost, ofs, ohist, oreason, meta)
        remove_flow(slots, fhash, used, free, meta, f)
        meta[M_EVICTED] += 1
    return victims.shape[0]
