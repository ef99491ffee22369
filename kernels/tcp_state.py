"""TCP connection tracking after Zeek's TCP analyzer: endpoint states, history letters,
retransmissions, and the end-of-connection ``conn_state``.

Followed: ``TCPSessionAdapter::UpdateStateMachine`` and ``update_history`` (Zeek 6/7) and
``conn_state()`` in ``base/protocols/conn/main.zeek``. Not followed: content gaps ('G'),
checksum validation ('C'), window recision, and the SYN/SYN-ACK role-reversal flip.
"""

from __future__ import annotations

from kernels._jit import row_fn
from kernels.flowstate import (
    D_H_FIN,
    D_H_RST,
    D_H_SYN,
    D_HSEEN,
    D_PKTS,
    D_RXMIT,
    D_SEQ_LAST,
    D_T_NEXT,
    D_W_NEXT,
    D_ZWIN,
    F_CLOSED,
    F_O_DID_CLOSE,
    F_R_DID_CLOSE,
    FLAGS,
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
    L_A,
    L_D,
    L_F,
    L_FLIP,
    L_G,
    L_H,
    L_I,
    L_Q,
    L_R,
    L_S,
    L_T,
    L_W,
    LOWER,
    O_STATE,
    ORIG,
    R_STATE,
    RESP,
    TCP_CLOSED,
    TCP_ESTABLISHED,
    TCP_INACTIVE,
    TCP_PARTIAL,
    TCP_RESET,
    TCP_SYN_ACK_SENT,
    TCP_SYN_SENT,
)
from kernels.packet_columns import TH_ACK, TH_FIN, TH_RST, TH_SYN

TOO_LARGE_SEQ_DELTA = 1048576
_U32 = 0xFFFFFFFF


@row_fn
def seq_delta(a, b):
    """``a - b`` in 32-bit sequence space, as a signed number."""
    d = (a - b) & _U32
    if d >= 0x80000000:
        d -= 0x100000000
    return d


@row_fn
def add_history(hist, st, fi, letter):
    n = st[fi, HIST_N]
    if n < HIST_LEN:
        hist[fi, n] = letter
        st[fi, HIST_N] = n + 1


@row_fn
def record_once(hist, st, fi, base, bit, letter):
    """Record ``letter`` the first time ``bit`` is seen; True if it had been seen before."""
    seen = st[fi, base + D_HSEEN]
    if seen & bit:
        return True
    st[fi, base + D_HSEEN] = seen | bit
    add_history(hist, st, fi, letter)
    return False


@row_fn
def _scaled(hist, st, fi, base, count_field, next_field, letter):
    """Letters recorded on a log scale: at the 1st, 10th, 100th ... occurrence."""
    c = st[fi, base + count_field] + 1
    st[fi, base + count_field] = c
    nxt = st[fi, base + next_field]
    if nxt == 0:
        nxt = 1
    if c == nxt:
        add_history(hist, st, fi, letter)
        st[fi, base + next_field] = nxt * 10
    else:
        st[fi, base + next_field] = nxt


@row_fn
def update_history(hist, st, fi, is_orig, flags, seq, plen):
    base = ORIG if is_orig else RESP
    up = 0 if is_orig else LOWER  # upper case for the originator
    syn = (flags & TH_SYN) != 0
    fin = (flags & TH_FIN) != 0
    rst = (flags & TH_RST) != 0
    nbits = int(syn) + int(fin) + int(rst)
    if nbits > 1:
        if fin and rst:
            record_once(hist, st, fi, base, H_FINRST, L_I + up)
        else:
            record_once(hist, st, fi, base, H_MULTI, L_Q + up)
    elif nbits == 1:
        if syn:
            ack = (flags & TH_ACK) != 0
            letter = (L_H if ack else L_S) + up
            bit = H_SYNACK if ack else H_SYN
            if record_once(hist, st, fi, base, bit, letter) and seq != st[fi, base + D_H_SYN]:
                add_history(hist, st, fi, letter)
            st[fi, base + D_H_SYN] = seq
        if fin:
            end = (seq + plen) & _U32
            if record_once(hist, st, fi, base, H_FIN, L_F + up) and end != st[fi, base + D_H_FIN]:
                add_history(hist, st, fi, L_F + up)
            st[fi, base + D_H_FIN] = end
        if rst:
            if record_once(hist, st, fi, base, H_RST, L_R + up) and seq != st[fi, base + D_H_RST]:
                add_history(hist, st, fi, L_R + up)
            st[fi, base + D_H_RST] = seq
    else:
        if plen > 0:
            record_once(hist, st, fi, base, H_DATA, L_D + up)
        elif flags & TH_ACK:
            record_once(hist, st, fi, base, H_ACK, L_A + up)


@row_fn
def update_seq(hist, st, fi, is_orig, flags, seq, plen, ep_state):
    """Track the highest sequence number; count retransmissions ('T').

    Returns the payload bytes that advanced the sequence space (retransmitted bytes excluded).
    """
    base = ORIG if is_orig else RESP
    syn = (flags & TH_SYN) != 0
    fin = (flags & TH_FIN) != 0
    rst = (flags & TH_RST) != 0
    seg = plen + int(syn) + int(fin)
    if rst:
        seg -= plen
    end = (seq + seg) & _U32
    if st[fi, base + D_PKTS] == 0 or (syn and ep_state != TCP_CLOSED and ep_state != TCP_RESET):
        # first packet of this endpoint (or a new SYN): start sequence tracking here; for a
        # partial connection the first segment itself is new data
        st[fi, base + D_SEQ_LAST] = end if syn else seq
    delta = seq_delta(end, st[fi, base + D_SEQ_LAST])
    if (syn or rst) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
        return 0 if rst else plen
    if ep_state == TCP_RESET:
        return 0
    if delta > 0:
        st[fi, base + D_SEQ_LAST] = end
        return min(delta, plen)
    if plen > 0:
        _scaled(hist, st, fi, base, D_RXMIT, D_T_NEXT, L_T + (0 if is_orig else LOWER))
    return 0


@row_fn
def zero_window(hist, st, fi, is_orig, flags, win):
    if win != 0 or (flags & TH_RST) or (flags & TH_SYN):
        return
    ep = st[fi, O_STATE if is_orig else R_STATE] & 0xFF
    peer = st[fi, R_STATE if is_orig else O_STATE] & 0xFF
    if peer == TCP_CLOSED or ep == TCP_RESET:
        return
    base = ORIG if is_orig else RESP
    _scaled(hist, st, fi, base, D_ZWIN, D_W_NEXT, L_W + (0 if is_orig else LOWER))


@row_fn
def _set_state(st, fi, field, new):
    old = st[fi, field] & 0xFF
    if new != old:
        st[fi, field] = new | (old << 8)


@row_fn
def update_state(st, fi, is_orig, flags, plen):
    """One step of the endpoint state machine. Returns True when this packet closes a side."""
    ef = O_STATE if is_orig else R_STATE
    pf = R_STATE if is_orig else O_STATE
    es = st[fi, ef] & 0xFF
    ps = st[fi, pf] & 0xFF
    p_prev = (st[fi, pf] >> 8) & 0xFF
    syn = (flags & TH_SYN) != 0
    ack = (flags & TH_ACK) != 0
    fin = (flags & TH_FIN) != 0
    rst = (flags & TH_RST) != 0
    new = es
    closes = False
    if es == TCP_INACTIVE or es == TCP_SYN_SENT or es == TCP_SYN_ACK_SENT:
        if es == TCP_INACTIVE and syn:
            if is_orig:
                new = TCP_SYN_ACK_SENT if ack else TCP_SYN_SENT
            else:
                if ps == TCP_SYN_SENT:
                    _set_state(st, fi, pf, TCP_ESTABLISHED)
                new = TCP_ESTABLISHED
        if fin:
            new = TCP_CLOSED
        if rst:
            new = TCP_RESET
        closes = fin or rst
        if new == TCP_INACTIVE:  # no control flag moved it
            orig_state = st[fi, O_STATE] & 0xFF
            if (not is_orig) and plen == 0 and orig_state == TCP_SYN_SENT:
                pass  # an ACK of the SYN before the SYN-ACK: not a partial connection
            elif ack and ps == TCP_ESTABLISHED:
                new = TCP_ESTABLISHED
            else:
                new = TCP_PARTIAL
    elif es == TCP_ESTABLISHED or es == TCP_PARTIAL:
        if syn and es == TCP_PARTIAL and ps == TCP_INACTIVE and not ack:
            new = TCP_SYN_SENT
        if fin and not rst:
            new = TCP_CLOSED
            closes = True
            if ps == TCP_RESET and p_prev == TCP_CLOSED:
                _set_state(st, fi, pf, TCP_CLOSED)  # FIN then RST from the peer: a normal close
        if rst:
            new = TCP_RESET
            closes = True
    elif es == TCP_CLOSED:
        if rst and ps != TCP_CLOSED:
            new = TCP_RESET
            closes = True
    _set_state(st, fi, ef, new)
    if closes:
        st[fi, FLAGS] |= F_O_DID_CLOSE if is_orig else F_R_DID_CLOSE
    return closes


@row_fn
def close_complete(st, fi):
    """Both sides closed, or one reset, or one closed towards a side that never spoke."""
    o = st[fi, O_STATE] & 0xFF
    r = st[fi, R_STATE] & 0xFF
    if o == TCP_RESET or r == TCP_RESET:
        return True
    fl = st[fi, FLAGS]
    if (fl & F_O_DID_CLOSE) and (fl & F_R_DID_CLOSE):
        return True
    if (fl & F_O_DID_CLOSE) and r == TCP_INACTIVE:
        return True
    if (fl & F_R_DID_CLOSE) and o == TCP_INACTIVE:
        return True
    return False


@row_fn
def is_attempt(st, fi):
    o = st[fi, O_STATE] & 0xFF
    r = st[fi, R_STATE] & 0xFF
    return (o == TCP_SYN_SENT or o == TCP_SYN_ACK_SENT) and r == TCP_INACTIVE


@row_fn
def is_closed_or_reset(st, fi):
    o = st[fi, O_STATE] & 0xFF
    r = st[fi, R_STATE] & 0xFF
    return (st[fi, FLAGS] & F_CLOSED) != 0 or o == TCP_CLOSED or o == TCP_RESET or r == TCP_CLOSED or r == TCP_RESET


# conn_state codes; names in CONN_STATES
CS_S0, CS_S1, CS_SF, CS_REJ, CS_S2, CS_S3, CS_RSTO, CS_RSTR, CS_RSTOS0, CS_RSTRH, CS_SH, CS_SHR, CS_OTH = range(13)
CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH")


@row_fn
def _history_rstos0(hist, n):
    """Zeek's ``/^\\^?S[^HAFGIQ]*R.*/`` on the history buffer."""
    k = 0
    if n > 0 and hist[0] == L_FLIP:
        k = 1
    if k >= n or hist[k] != L_S:
        return False
    for j in range(k + 1, n):
        c = hist[j]
        if c == L_R:
            return True
        if c == L_H or c == L_A or c == L_F or c == L_G or c == L_I or c == L_Q:
            return False
    return False


@row_fn
def tcp_conn_state(o_state, r_state, o_bytes, r_bytes, hist, n):
    os_ = o_state & 0xFF
    rs = r_state & 0xFF
    o_inactive = os_ == TCP_INACTIVE or os_ == TCP_PARTIAL
    r_inactive = rs == TCP_INACTIVE or rs == TCP_PARTIAL
    if rs == TCP_RESET:
        if os_ == TCP_SYN_SENT or os_ == TCP_SYN_ACK_SENT or (os_ == TCP_RESET and o_bytes == 0 and r_bytes == 0):
            return CS_REJ
        if o_inactive:
            return CS_RSTRH
        return CS_RSTR
    if os_ == TCP_RESET:
        if r_inactive:
            if _history_rstos0(hist, n):
                return CS_RSTOS0
            return CS_OTH
        return CS_RSTO
    if rs == TCP_CLOSED and os_ == TCP_CLOSED:
        return CS_SF
    if os_ == TCP_CLOSED:
        return CS_SH if r_inactive else CS_S2
    if rs == TCP_CLOSED:
        return CS_SHR if o_inactive else CS_S3
    if os_ == TCP_SYN_SENT and rs == TCP_INACTIVE:
        return CS_S0
    if os_ == TCP_ESTABLISHED and rs == TCP_ESTABLISHED:
        return CS_S1
    return CS_OTH


@row_fn
def udp_conn_state(o_pkts, r_pkts):
    if o_pkts > 0:
        return CS_SF if r_pkts > 0 else CS_S0
    return CS_SHR if r_pkts > 0 else CS_OTH

