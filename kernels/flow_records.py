"""From emitted flow-state rows to record fields: orientation, ``conn_state``, and the text
columns (addresses, uid, Community ID, history) as byte buffers with offsets."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kernels._jit import cpu_kernel, device_fn, row_fn
from kernels.flowkey import canonical_key, mix64
from kernels.flowstate import (
    D_BYTES,
    D_PKTS,
    F_A_IS_ORIG,
    FIRST_TS,
    FLAGS,
    HIST_N,
    O_STATE,
    ORIG,
    R_STATE,
    RESP,
)
from kernels.parse import icmp_counterpart
from kernels.sha1 import sha1_short
from kernels.tcp_state import CS_OTH, tcp_conn_state, udp_conn_state
from kernels.textfmt import is_v4_mapped, write_base62_u64, write_base64, write_ip

IP_TEXT_MAX = 39  # longest textual IPv6 address
UID_LEN = 12  # 'C' + 11 base62 digits (a full 64-bit value)
CID_LEN = 30  # '1:' + base64 of 20 bytes


@device_fn
def write_uid(dst, pos, k0, k1, k2, k3, k4, first_ts):
    """A flow record's uid: 'C' and 11 base62 digits of a hash of its key and first timestamp."""
    u = mix64(k0 ^ mix64(k1 ^ mix64(k2 ^ mix64(k3 ^ mix64(k4 ^ np.uint64(first_ts))))))
    dst[pos] = 67  # 'C'
    write_base62_u64(dst, pos + 1, u, UID_LEN - 1)


@cpu_kernel
def packet_uids(cols, idx, out):
    """The uid of the flow record each packet ``idx[j]`` was counted in, into ``out`` (UID_LEN
    bytes each)."""
    for j in range(idx.shape[0]):
        i = idx[j]
        a_hi, a_lo, b_hi, b_lo, w4, _ = canonical_key(cols, i)
        write_uid(out, j * UID_LEN, a_hi, a_lo, b_hi, b_lo, w4, cols.flow_first_ts[i])


@device_fn
def _put_addr(msg, pos, hi, lo, v4):
    if v4:
        a = lo & np.uint64(0xFFFFFFFF)
        for k in range(4):
            msg[pos + k] = (a >> np.uint64(24 - 8 * k)) & np.uint64(0xFF)
        return pos + 4
    for k in range(8):
        msg[pos + k] = (hi >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)
        msg[pos + 8 + k] = (lo >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)
    return pos + 16


@device_fn
def community_id(o_hi, o_lo, r_hi, r_lo, o_port, r_port, proto, seed, msg, w, digest, dst, pos):
    """Community ID v1 of a flow, written as text at ``dst[pos:]``; returns the new position."""
    v4 = is_v4_mapped(o_hi, o_lo)
    has_ports = proto == 6 or proto == 17 or proto == 132 or proto == 1 or proto == 58
    one_way = False
    if proto == 1 or proto == 58:
        one_way = icmp_counterpart(o_port, proto == 58) < 0
    swap = False
    if not one_way:
        if o_hi != r_hi:
            swap = o_hi > r_hi
        elif o_lo != r_lo:
            swap = o_lo > r_lo
        else:
            swap = has_ports and o_port > r_port
    if swap:
        o_hi, o_lo, r_hi, r_lo = r_hi, r_lo, o_hi, o_lo
        o_port, r_port = r_port, o_port
    msg[0] = (seed >> 8) & 0xFF
    msg[1] = seed & 0xFF
    p = _put_addr(msg, 2, o_hi, o_lo, v4)
    p = _put_addr(msg, p, r_hi, r_lo, v4)
    msg[p] = proto
    msg[p + 1] = 0
    p += 2
    if has_ports:
        msg[p] = (o_port >> 8) & 0xFF
        msg[p + 1] = o_port & 0xFF
        msg[p + 2] = (r_port >> 8) & 0xFF
        msg[p + 3] = r_port & 0xFF
        p += 4
    sha1_short(msg, p, w, digest, 0)
    dst[pos] = 49  # '1'
    dst[pos + 1] = 58  # ':'
    return write_base64(dst, pos + 2, digest, 0, 20)


class Rows(NamedTuple):
    """Emitted flows as record rows: key words (n, 5), integer state (n, NI), history (n, HIST_LEN)."""

    keys: np.ndarray
    st: np.ndarray
    hist: np.ndarray


class Packed(NamedTuple):
    """Text packed as it is written (the CPU): address and history offsets, history bytes."""

    oh_off: np.ndarray
    rh_off: np.ndarray
    hist: np.ndarray
    hist_off: np.ndarray


class Oriented(NamedTuple):
    """A record's key as Zeek reports it (originator first) and its connection state."""

    o_hi: np.ndarray
    o_lo: np.ndarray
    r_hi: np.ndarray
    r_lo: np.ndarray
    o_port: np.ndarray
    r_port: np.ndarray
    proto: np.ndarray
    vlan: np.ndarray
    conn_state: np.ndarray


class Text(NamedTuple):
    """Byte buffers the text columns are written into; ``oh``/``rh`` from positions the caller
    chooses (packed on the CPU, one fixed slot per record on the GPU), uid and Community ID in
    fixed slots."""

    oh: np.ndarray
    rh: np.ndarray
    uid: np.ndarray
    cid: np.ndarray


class Scratch(NamedTuple):
    """The Community ID's SHA-1 work space on the CPU: ``msg`` (uint8, 64), ``w`` (int64, 80),
    ``digest`` (uint8, 20). A GPU thread has its own in local memory."""

    msg: np.ndarray
    w: np.ndarray
    digest: np.ndarray


@row_fn
def record_row(rows, k, cid_seed, ori, text, oh_pos, rh_pos, scratch):
    """Record ``k``'s orientation, ``conn_state``, addresses as text (at ``oh_pos``/``rh_pos``),
    uid and Community ID; returns where the two addresses end."""
    okeys, ost, ohist = rows.keys, rows.st, rows.hist
    w4 = okeys[k, 4]
    a_port = np.int64(w4 >> np.uint64(48))
    b_port = np.int64((w4 >> np.uint64(32)) & np.uint64(0xFFFF))
    pr = np.int64((w4 >> np.uint64(16)) & np.uint64(0xFF))
    ori.proto[k] = pr
    ori.vlan[k] = np.int64(w4 & np.uint64(0xFFFF))
    if ost[k, FLAGS] & F_A_IS_ORIG:
        o_hi, o_lo, r_hi, r_lo = okeys[k, 0], okeys[k, 1], okeys[k, 2], okeys[k, 3]
        o_port, r_port = a_port, b_port
    else:
        o_hi, o_lo, r_hi, r_lo = okeys[k, 2], okeys[k, 3], okeys[k, 0], okeys[k, 1]
        o_port, r_port = b_port, a_port
    ori.o_hi[k], ori.o_lo[k], ori.r_hi[k], ori.r_lo[k] = o_hi, o_lo, r_hi, r_lo
    ori.o_port[k], ori.r_port[k] = o_port, r_port
    if pr == 6:
        ori.conn_state[k] = tcp_conn_state(ost[k, O_STATE], ost[k, R_STATE], ost[k, ORIG + D_BYTES],
                                           ost[k, RESP + D_BYTES], ohist[k], ost[k, HIST_N])
    elif pr == 17:
        ori.conn_state[k] = udp_conn_state(ost[k, ORIG + D_PKTS], ost[k, RESP + D_PKTS])
    else:
        ori.conn_state[k] = CS_OTH
    oh_end = write_ip(text.oh, oh_pos, o_hi, o_lo)
    rh_end = write_ip(text.rh, rh_pos, r_hi, r_lo)
    write_uid(text.uid, k * UID_LEN, okeys[k, 0], okeys[k, 1], okeys[k, 2], okeys[k, 3], okeys[k, 4],
              ost[k, FIRST_TS])
    community_id(o_hi, o_lo, r_hi, r_lo, o_port, r_port, pr, cid_seed, scratch.msg, scratch.w, scratch.digest,
                 text.cid, k * CID_LEN)
    return oh_end, rh_end


@cpu_kernel
def finalize(rows, n, cid_seed, ori, text, packed, scratch):
    """Every record of ``rows`` (:class:`Rows`), its text packed as it is written."""
    oh_pos = 0
    rh_pos = 0
    h_pos = 0
    packed.oh_off[0] = 0
    packed.rh_off[0] = 0
    packed.hist_off[0] = 0
    for k in range(n):
        oh_pos, rh_pos = record_row(rows, k, cid_seed, ori, text, oh_pos, rh_pos, scratch)
        packed.oh_off[k + 1] = oh_pos
        packed.rh_off[k + 1] = rh_pos
        nh = rows.st[k, HIST_N]
        for j in range(nh):
            packed.hist[h_pos + j] = rows.hist[k, j]
        h_pos += nh
        packed.hist_off[k + 1] = h_pos


def pack_slots(xp, slots, lens):
    """Text written one fixed-width slot per record (``slots``, shape (n, width)), ``lens[k]``
    bytes used in row k, packed into one buffer with offsets (n + 1): Arrow's string layout."""
    n = int(slots.shape[0])
    offsets = xp.zeros(n + 1, dtype=xp.int64)
    xp.cumsum(lens, out=offsets[1:])
    used = xp.arange(slots.shape[1])[None, :] < lens[:, None]
    return slots[used], offsets
