"""Vectorised traffic generators: many sessions of one kind at a time, as a PacketSpec.

Each generator takes per-session arrays (endpoints, ports, start times, sizes) and lays out
every packet of every session with NumPy: TCP sessions get a three-way handshake, data in
both directions with consistent sequence and acknowledgement numbers, and a teardown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.synth.packets import KIND_ARP, PacketSpec
from detector.synth.site import path_ttl

TH_FIN, TH_SYN, TH_RST, TH_PSH, TH_ACK = 0x01, 0x02, 0x04, 0x08, 0x10

CLOSE_FIN = 0  # FIN, FIN-ACK, ACK
CLOSE_RST = 1  # the client resets after the data
CLOSE_OPEN = 2  # no teardown inside the capture
CLOSE_UNANSWERED = 3  # SYN only (plus retransmissions): S0
CLOSE_REJECTED = 4  # SYN answered by RST: REJ


@dataclass
class Endpoints:
    """Per-session endpoint arrays (length S)."""

    c_hi: np.ndarray
    c_lo: np.ndarray
    s_hi: np.ndarray
    s_lo: np.ndarray
    c_mac: np.ndarray
    s_mac: np.ndarray
    ip_ver: np.ndarray
    cport: np.ndarray
    sport: np.ndarray
    vlan: np.ndarray

    def __len__(self) -> int:
        return len(self.c_hi)


def _session_index(counts: np.ndarray):
    """For sessions with ``counts`` packets: each packet's session and position in it."""
    total = int(counts.sum())
    starts = np.zeros(len(counts), dtype=np.int64)
    if len(counts):
        np.cumsum(counts[:-1], out=starts[1:])
    sess = np.repeat(np.arange(len(counts)), counts)
    pos = np.arange(total, dtype=np.int64) - starts[sess]
    return sess, pos, starts


def _exclusive_group_cumsum(values: np.ndarray, sess: np.ndarray, starts: np.ndarray) -> np.ndarray:
    cs = np.cumsum(values)
    excl = cs - values
    return excl - excl[starts][sess]


def _ports_and_addresses(ep: Endpoints, sess: np.ndarray, c2s: np.ndarray, spec: PacketSpec, proto: int,
                         id_step: int) -> None:
    spec.proto[:] = proto
    spec.sport[:] = np.where(c2s, ep.cport[sess], ep.sport[sess])
    spec.dport[:] = np.where(c2s, ep.sport[sess], ep.cport[sess])
    spec.ip_id[:] = (np.arange(len(sess)) * id_step) & 0xFFFF
    _orient(ep, sess, c2s, spec)
    spec.ttl[:] = path_ttl(spec.src_hi, spec.src_lo)


def _orient(ep: Endpoints, sess: np.ndarray, c2s: np.ndarray, spec: PacketSpec) -> None:
    spec.src_hi[:] = np.where(c2s, ep.c_hi[sess], ep.s_hi[sess])
    spec.src_lo[:] = np.where(c2s, ep.c_lo[sess], ep.s_lo[sess])
    spec.dst_hi[:] = np.where(c2s, ep.s_hi[sess], ep.c_hi[sess])
    spec.dst_lo[:] = np.where(c2s, ep.s_lo[sess], ep.c_lo[sess])
    spec.src_mac[:] = np.where(c2s, ep.c_mac[sess], ep.s_mac[sess])
    spec.dst_mac[:] = np.where(c2s, ep.s_mac[sess], ep.c_mac[sess])
    spec.ip_ver[:] = ep.ip_ver[sess]
    spec.vlan[:] = ep.vlan[sess]


def tcp_sessions(rng: np.random.Generator, ep: Endpoints, start_ns: np.ndarray, n_c2s: np.ndarray,
                 n_s2c: np.ndarray, c2s_size: np.ndarray, s2c_size: np.ndarray, iat_ns: np.ndarray,
                 rtt_ns: np.ndarray, close: np.ndarray, capture_payload: np.ndarray,
                 payload_off: np.ndarray | None = None) -> PacketSpec:
    """TCP sessions. Sizes are per-session mean payload sizes (data packets vary around them,
    capped at the mean for bulk senders that fill whole segments). ``capture_payload`` caps the
    payload bytes written per packet (0 keeps headers only). ``payload_off`` (optional, per
    session) points the client's first data packet at real bytes in the payload pool."""
    S = len(ep)
    close = np.asarray(close)
    handshake = np.where(close == CLOSE_UNANSWERED, 3, np.where(close == CLOSE_REJECTED, 2, 3))
    data = np.where((close == CLOSE_UNANSWERED) | (close == CLOSE_REJECTED), 0, n_c2s + n_s2c)
    teardown = np.select([close == CLOSE_FIN, close == CLOSE_RST], [3, 1], 0)
    counts = (handshake + data + teardown).astype(np.int64)
    sess, pos, starts = _session_index(counts)
    n = len(sess)
    spec = PacketSpec.empty(n)
    hs = handshake[sess]
    dn = data[sess]
    cl = close[sess]
    in_hs = pos < hs
    in_data = (pos >= hs) & (pos < hs + dn)
    in_td = pos >= hs + dn
    td_pos = pos - hs - dn
    # direction: handshake c,s,c (unanswered: three client SYNs; rejected: SYN, RST)
    p_c2s = n_c2s / np.maximum(n_c2s + n_s2c, 1)
    c2s = np.ones(n, dtype=bool)
    normal_hs = (cl != CLOSE_UNANSWERED)
    c2s[in_hs & normal_hs & (pos == 1)] = False
    c2s[in_data] = rng.random(int(in_data.sum())) < p_c2s[sess[in_data]]
    opening = in_data & (pos == hs) if payload_off is not None else np.zeros(n, bool)
    c2s[opening] = True  # the client speaks first (a TLS ClientHello, an SSH banner)
    c2s[in_td & (cl == CLOSE_FIN) & (td_pos == 1)] = False
    flags = np.full(n, TH_ACK, dtype=np.uint8)
    flags[in_hs & (pos == 0)] = TH_SYN
    flags[in_hs & (pos == 1)] = TH_SYN | TH_ACK
    flags[in_hs & (cl == CLOSE_UNANSWERED)] = TH_SYN
    flags[in_hs & (cl == CLOSE_REJECTED) & (pos == 1)] = TH_RST | TH_ACK
    flags[in_td & (cl == CLOSE_FIN) & (td_pos < 2)] = TH_FIN | TH_ACK
    flags[in_td & (cl == CLOSE_RST)] = TH_RST | TH_ACK
    # payload sizes: the bulk side fills segments, the other side sends small requests or ACKs
    mean = np.where(c2s, c2s_size[sess], s2c_size[sess]).astype(np.float64)
    jitter = rng.random(n)
    size = np.where(mean >= 1000, mean, np.maximum(mean * (0.5 + jitter), 0)).astype(np.int64)
    # every other segment of a bulk sender is acknowledged by a pure ACK from its peer
    size = np.where(in_data, size, 0)
    ack_only = in_data & (mean < 64) & (rng.random(n) < 0.5) & ~opening
    size[ack_only] = 0
    flags[in_data & (size > 0)] |= TH_PSH
    spec.payload_len[:] = size
    cap = np.minimum(size, capture_payload[sess])
    spec.cap_payload[:] = cap
    if payload_off is not None:
        first_c_data = in_data & c2s & (size > 0)
        first_idx = np.full(S, -1, dtype=np.int64)
        idx = np.flatnonzero(first_c_data)
        # the first client data packet of each session carries the session's real bytes
        first_idx[sess[idx[::-1]]] = idx[::-1]
        has = first_idx >= 0
        spec.payload_off[first_idx[has]] = payload_off[has]
    # timestamps
    gap = np.where(in_hs | in_td, rtt_ns[sess] / 2, rng.exponential(1.0, n) * iat_ns[sess])
    gap[pos == 0] = 0
    if np.any(cl == CLOSE_UNANSWERED):  # SYN retransmissions after 1 s and 2 s more
        gap[in_hs & (cl == CLOSE_UNANSWERED) & (pos > 0)] = np.where(
            pos[in_hs & (cl == CLOSE_UNANSWERED) & (pos > 0)] == 1, 1e9, 2e9)
    t = _exclusive_group_cumsum(gap.astype(np.int64), sess, starts) + gap.astype(np.int64)
    spec.ts_ns[:] = start_ns[sess] + t
    # sequence numbers: per direction, what that side sent before this packet
    isn_c = rng.integers(0, 2**32, S, dtype=np.uint64)
    isn_s = rng.integers(0, 2**32, S, dtype=np.uint64)
    consume = size + ((flags & TH_SYN) != 0) + ((flags & TH_FIN) != 0)
    consume[cl == CLOSE_UNANSWERED] = 0  # retransmitted SYNs repeat the same sequence number
    sent_c = _exclusive_group_cumsum(np.where(c2s, consume, 0), sess, starts)
    sent_s = _exclusive_group_cumsum(np.where(c2s, 0, consume), sess, starts)
    mask32 = np.uint64(0xFFFFFFFF)
    seq_c = (isn_c[sess] + sent_c.astype(np.uint64)) & mask32
    seq_s = (isn_s[sess] + sent_s.astype(np.uint64)) & mask32
    spec.seq[:] = np.where(c2s, seq_c, seq_s)
    spec.ack[:] = np.where(flags & TH_ACK, np.where(c2s, seq_s, seq_c), 0)
    spec.win[:] = 502
    spec.flags[:] = flags
    _ports_and_addresses(ep, sess, c2s, spec, 6, 7919)
    return spec


def udp_exchanges(rng: np.random.Generator, ep: Endpoints, start_ns: np.ndarray, n_pkts: np.ndarray,
                  c2s_size: np.ndarray, s2c_size: np.ndarray, iat_ns: np.ndarray, answered: np.ndarray,
                  capture_payload: np.ndarray, q_off: np.ndarray | None = None, q_len: np.ndarray | None = None,
                  r_off: np.ndarray | None = None, r_len: np.ndarray | None = None) -> PacketSpec:
    """UDP request/response sessions: packets alternate client, server (unanswered: client only).
    With ``q_off``/``r_off`` the first request and response carry real bytes from the pool."""
    sess, pos, starts = _session_index(n_pkts.astype(np.int64))
    n = len(sess)
    spec = PacketSpec.empty(n)
    c2s = (pos % 2 == 0) | ~answered[sess]
    size = np.where(c2s, c2s_size[sess], s2c_size[sess]).astype(np.int64)
    if q_off is not None:
        first_q = c2s & (pos == 0)
        first_r = ~c2s & (pos == 1)
        size[first_q] = q_len[sess[first_q]]
        size[first_r] = r_len[sess[first_r]]
        spec.payload_off[first_q] = q_off[sess[first_q]]
        spec.payload_off[first_r] = r_off[sess[first_r]]
    spec.payload_len[:] = size
    spec.cap_payload[:] = np.minimum(size, capture_payload[sess])
    gap = np.where(c2s, rng.exponential(1.0, n) * iat_ns[sess], np.maximum(iat_ns[sess] / 50, 20_000))
    gap[pos == 0] = 0
    spec.ts_ns[:] = start_ns[sess] + _exclusive_group_cumsum(gap.astype(np.int64), sess, starts) + gap.astype(
        np.int64)
    _ports_and_addresses(ep, sess, c2s, spec, 17, 104729)
    return spec


def icmp_echoes(rng: np.random.Generator, ep: Endpoints, start_ns: np.ndarray, n_pairs: np.ndarray,
                payload: np.ndarray, interval_ns: np.ndarray) -> PacketSpec:
    """Echo request/reply pairs (ICMP or ICMPv6 by the session's IP version)."""
    sess, pos, starts = _session_index(2 * n_pairs.astype(np.int64))
    n = len(sess)
    spec = PacketSpec.empty(n)
    req = pos % 2 == 0
    v6 = ep.ip_ver[sess] == 6
    spec.proto[:] = np.where(v6, 58, 1)
    spec.sport[:] = np.where(req, np.where(v6, 128, 8), np.where(v6, 129, 0))
    spec.dport[:] = 0
    ident = rng.integers(1, 65535, len(ep))
    spec.seq[:] = (ident[sess].astype(np.uint64) << np.uint64(16)) | (pos // 2 + 1).astype(np.uint64)
    spec.payload_len[:] = payload[sess]
    spec.cap_payload[:] = payload[sess]
    pair = pos // 2
    spec.ts_ns[:] = start_ns[sess] + pair * interval_ns[sess] + np.where(req, 0, 400_000 + (pair % 7) * 10_000)
    _orient(ep, sess, req, spec)
    spec.ttl[:] = path_ttl(spec.src_hi, spec.src_lo)
    return spec


def arp_exchanges(ts_ns: np.ndarray, asker_mac: np.ndarray, asker_ip: np.ndarray, target_mac: np.ndarray,
                  target_ip: np.ndarray) -> PacketSpec:
    """ARP who-has (broadcast) and is-at pairs; IPs are the 32-bit IPv4 values."""
    n = len(ts_ns)
    spec = PacketSpec.empty(2 * n)
    spec.kind[:] = KIND_ARP
    spec.ts_ns[0::2] = ts_ns
    spec.ts_ns[1::2] = ts_ns + 150_000
    spec.src_mac[0::2] = asker_mac
    spec.dst_mac[0::2] = 0xFFFFFFFFFFFF
    spec.arp_op[0::2] = 1
    spec.src_lo[0::2] = asker_ip
    spec.dst_lo[0::2] = target_ip
    spec.arp_tha[0::2] = 0
    spec.src_mac[1::2] = target_mac
    spec.dst_mac[1::2] = asker_mac
    spec.arp_op[1::2] = 2
    spec.src_lo[1::2] = target_ip
    spec.dst_lo[1::2] = asker_ip
    spec.arp_tha[1::2] = asker_mac
    return spec
