"""Captures that stress flow accounting, written with the project's own synth (columns in,
capture bytes out): long flows, every kind of split inside a batch, port reuse, out-of-order
timestamps, sequence-number wraparound, and random TCP conversations on a handful of keys.
"""

from __future__ import annotations

import numpy as np

from detector.synth.encode import encode
from detector.synth.packets import KIND_IP, PacketSpec, ip_words

S = 1_000_000_000
T0 = 1_700_000_000 * S
SYN, FIN, RST, PSH, ACK = 0x02, 0x01, 0x04, 0x08, 0x10

A = ip_words("10.1.0.1")
B = ip_words("10.2.0.2")


def spec(ts, src, dst, sport, dport, *, proto=6, flags=0, seq=0, payload=0, ttl=64, win=8192) -> PacketSpec:
    """Packets from columns (scalars broadcast): ``src``/``dst`` are (hi, lo) address words or
    arrays of them."""
    n = len(ts)
    src_hi, src_lo = (np.broadcast_to(np.asarray(x, dtype=np.uint64), (n,)) for x in src)
    dst_hi, dst_lo = (np.broadcast_to(np.asarray(x, dtype=np.uint64), (n,)) for x in dst)
    return PacketSpec.build(n, ts_ns=ts, kind=KIND_IP, ip_ver=4, src_hi=src_hi, src_lo=src_lo, dst_hi=dst_hi,
                            dst_lo=dst_lo, proto=proto, sport=sport, dport=dport, flags=flags, seq=seq, ack=1,
                            win=win, ttl=ttl, src_mac=0x020000000001, dst_mac=0x020000000002,
                            payload_len=payload, cap_payload=0, payload_off=0)


def capture(*specs: PacketSpec, sort: bool = True) -> bytes:
    """One pcap of the packets of every spec, in time order unless ``sort`` is False."""
    from dataclasses import fields

    cols = {f.name: np.concatenate([getattr(s, f.name) for s in specs]) for f in fields(PacketSpec)}
    whole = PacketSpec(**cols)
    if sort:
        order = np.argsort(whole.ts_ns, kind="stable")
        whole = PacketSpec(**{k: v[order] for k, v in cols.items()})
    return encode(whole, np.zeros(1, dtype=np.uint8))


def long_flow(n: int = 100_000) -> bytes:
    """One TCP connection of ``n`` packets: handshake, bulk data one way, ACKs back, FIN/FIN;
    a few retransmissions and zero windows on the way, and sequence numbers that wrap."""
    half = n // 2
    t = T0 + np.arange(n, dtype=np.int64) * 10_000
    up = np.arange(n) % 2 == 0
    src = (np.where(up, A[0], B[0]), np.where(up, A[1], B[1]))
    dst = (np.where(up, B[0], A[0]), np.where(up, B[1], A[1]))
    sport = np.where(up, 40000, 22)
    dport = np.where(up, 22, 40000)
    flags = np.where(up, ACK | PSH, ACK)
    payload = np.where(up, 1400, 0)
    seq = (0xFFFF0000 + np.cumsum(payload) - payload).astype(np.uint64) & 0xFFFFFFFF
    seq = np.where(up, seq, 777)
    flags[:3] = [SYN, SYN | ACK, ACK]
    payload[:3] = 0
    seq[:3] = [0xFFFF0000 - 1, 777 - 1, 0xFFFF0000]
    rx = np.arange(10, n - 10, max(1, n // 50))  # retransmit: the previous segment of that side again
    seq[rx] = seq[rx - 2]
    win = np.where(np.arange(n) % 997 == 0, 0, 8192)
    flags[-2:] = [FIN | ACK, FIN | ACK]
    del half
    return capture(spec(t, src, dst, sport, dport, flags=flags, seq=seq, payload=payload, win=win))


def splits() -> bytes:
    """Flows of one key split inside a batch by each kind of end: UDP idle gaps, an unanswered
    SYN retried after the attempt timer, a FIN close then the close delay, a RST then port
    reuse by a new SYN, and a flow long enough for active-timeout interim records."""
    parts = []
    t = T0 + np.array([0, 1, 70, 71, 200, 400, 401], dtype=np.int64) * S
    parts.append(spec(t, A, B, 5353, 53, proto=17, payload=30))
    t = T0 + np.array([0, 3, 6, 12, 13], dtype=np.int64) * S
    parts.append(spec(t, A, B, 41000, 25, flags=SYN, seq=1000))
    t = T0 + np.array([0, 0.1, 0.2, 0.3, 0.4, 0.5, 9, 9.1], dtype=np.float64) * S
    parts.append(spec(t.astype(np.int64), (np.array([A[0], B[0]] * 4), np.array([A[1], B[1]] * 4)),
                      (np.array([B[0], A[0]] * 4), np.array([B[1], A[1]] * 4)),
                      np.array([41001, 80] * 4), np.array([80, 41001] * 4),
                      flags=np.array([SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, FIN | ACK, SYN, SYN | ACK]),
                      seq=np.array([10, 50, 11, 11, 111, 51, 5000, 6000]), payload=np.array([0, 0, 0, 100, 0, 0, 0, 0])))
    t = T0 + np.array([0, 0.1, 0.2, 0.3, 0.5], dtype=np.float64) * S
    parts.append(spec(t.astype(np.int64), (np.array([A[0], B[0], A[0], A[0], B[0]]), np.array([A[1], B[1], A[1], A[1], B[1]])),
                      (np.array([B[0], A[0], B[0], B[0], A[0]]), np.array([B[1], A[1], B[1], B[1], A[1]])),
                      np.array([41002, 443, 41002, 41002, 443]), np.array([443, 41002, 443, 443, 41002]),
                      flags=np.array([SYN, SYN | ACK, RST, SYN, SYN | ACK]), seq=np.array([1, 9, 2, 7000, 9000])))
    t = T0 + np.arange(0, 60, 2, dtype=np.int64) * S
    parts.append(spec(t, A, B, 41003, 5201, flags=ACK | PSH, seq=np.arange(len(t)) * 100, payload=100))
    return capture(*parts)


def out_of_order() -> bytes:
    """A conversation whose timestamps go backwards now and then (merged taps)."""
    n = 400
    rng = np.random.default_rng(5)
    t = T0 + np.cumsum(rng.integers(1, 3 * S // 10, n)).astype(np.int64)
    swap = rng.random(n) < 0.2
    t[swap] -= 2 * S
    up = rng.random(n) < 0.5
    src = (np.where(up, A[0], B[0]), np.where(up, A[1], B[1]))
    dst = (np.where(up, B[0], A[0]), np.where(up, B[1], A[1]))
    sport = np.where(up, 40005, 80)
    dport = np.where(up, 80, 40005)
    return capture(spec(t, src, dst, sport, dport, flags=ACK | PSH, seq=np.arange(n) * 10, payload=10), sort=False)


def random_tcp(seed: int, n: int = 3000, keys: int = 6, wild: float = 0.03) -> bytes:
    """Random TCP and UDP packets on a few keys: every flag combination, random sequence
    numbers (some far out of window), zero windows, payloads, gaps from microseconds to
    minutes. Nothing a real stack would send in this order, which is the point. ``wild``: the
    share of packets with a random sequence number."""
    rng = np.random.default_rng(seed)
    k = rng.integers(0, keys, n)
    up = rng.random(n) < 0.5
    a_lo = A[1] + k
    src = (np.full(n, A[0]), np.where(up, a_lo, B[1]))
    dst = (np.full(n, A[0]), np.where(up, B[1], a_lo))
    port_a = 40000 + k
    port_b = np.where(k % 3 == 0, 443, 9000 + k)
    sport = np.where(up, port_a, port_b)
    dport = np.where(up, port_b, port_a)
    gap = rng.choice(np.array([1_000, 100_000, S // 10, 2 * S, 8 * S, 70 * S, 400 * S]), n,
                     p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02])
    t = T0 + np.cumsum(gap).astype(np.int64)
    flag_pool = np.array([ACK, ACK | PSH, SYN, SYN | ACK, FIN | ACK, RST, RST | ACK, FIN, SYN | FIN, FIN | RST, 0])
    flags = rng.choice(flag_pool, n, p=[0.35, 0.25, 0.08, 0.06, 0.06, 0.05, 0.04, 0.03, 0.03, 0.02, 0.03])
    base = rng.integers(0, 2**32, keys * 2)
    side = k * 2 + up
    seq = (base[side] + np.cumsum(rng.integers(0, 3000, n)) * rng.choice([1, 1, 1, 0], n)).astype(np.uint64)
    jump = rng.random(n) < wild
    seq = np.where(jump, rng.integers(0, 2**32, n).astype(np.uint64), seq) & np.uint64(0xFFFFFFFF)
    payload = rng.choice(np.array([0, 0, 1, 100, 1400]), n)
    win = np.where(rng.random(n) < 0.05, 0, 8192)
    proto = np.where(k == keys - 1, 17, 6)
    ttl = rng.choice(np.array([64, 63, 128]), n)
    return capture(spec(t, src, dst, sport, dport, proto=proto, flags=flags, seq=seq, payload=payload, win=win, ttl=ttl))
