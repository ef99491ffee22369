"""Capture bytes from a :class:`PacketSpec`: classic pcap (microsecond or nanosecond) or pcapng,
Ethernet link type, written by one compiled pass over all packets.

Packets whose payload is cut (``cap_payload < payload_len``) keep their true wire length in
the record header, as a capture with a short snap length would.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from detector.synth.packets import KIND_ARP, PacketSpec
from kernels._jit import cpu_kernel

PCAP_SNAPLEN = 262144
FMT_PCAP = 0
FMT_PCAPNG = 1


@cpu_kernel
def _csum_add(buf, start, n, acc):
    for j in range(0, n - 1, 2):
        acc += (np.int64(buf[start + j]) << 8) | np.int64(buf[start + j + 1])
    if n & 1:
        acc += np.int64(buf[start + n - 1]) << 8
    return acc


@cpu_kernel
def _csum_fold(acc):
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return (~acc) & 0xFFFF


@cpu_kernel
def _put16(b, o, v):
    b[o] = (v >> 8) & 0xFF
    b[o + 1] = v & 0xFF


@cpu_kernel
def _put32(b, o, v):
    b[o] = (v >> 24) & 0xFF
    b[o + 1] = (v >> 16) & 0xFF
    b[o + 2] = (v >> 8) & 0xFF
    b[o + 3] = v & 0xFF


@cpu_kernel
def _put48(b, o, v):
    for k in range(6):
        b[o + k] = (v >> np.uint64(40 - 8 * k)) & np.uint64(0xFF)


@cpu_kernel
def _put64(b, o, v):
    for k in range(8):
        b[o + k] = (v >> np.uint64(56 - 8 * k)) & np.uint64(0xFF)


@cpu_kernel
def _put_le32(b, o, v):
    b[o] = v & 0xFF
    b[o + 1] = (v >> 8) & 0xFF
    b[o + 2] = (v >> 16) & 0xFF
    b[o + 3] = (v >> 24) & 0xFF


@cpu_kernel
def _l4_len(proto):
    if proto == 6:
        return 20
    if proto == 17:
        return 8
    if proto == 1 or proto == 58:
        return 8
    return 0


@cpu_kernel
def frame_lengths(kind, vlan, ip_ver, proto, payload_len, cap_payload, cap_out, wire_out):
    for i in range(kind.shape[0]):
        l2 = 14 + (4 if vlan[i] else 0)
        if kind[i] == KIND_ARP:
            cap_out[i] = l2 + 28
            wire_out[i] = l2 + 28
            continue
        l3 = 20 if ip_ver[i] == 4 else 40
        l4 = _l4_len(proto[i])
        cap_out[i] = l2 + l3 + l4 + cap_payload[i]
        wire_out[i] = l2 + l3 + l4 + payload_len[i]


@cpu_kernel
def encode_frames(ts_ns, kind, src_mac, dst_mac, vlan, ip_ver, src_hi, src_lo, dst_hi, dst_lo, proto, sport,
                  dport, flags, seq, ack, win, ttl, ip_id, payload_len, cap_payload, payload_off, arp_op, arp_tha,
                  pool, caplen, wirelen, rec_off, fmt, nanosecond, out):
    for i in range(ts_ns.shape[0]):
        r = rec_off[i]
        cap = caplen[i]
        if fmt == FMT_PCAP:
            sec = ts_ns[i] // 1_000_000_000
            frac = ts_ns[i] % 1_000_000_000
            if not nanosecond:
                frac //= 1000
            _put_le32(out, r, sec)
            _put_le32(out, r + 4, frac)
            _put_le32(out, r + 8, cap)
            _put_le32(out, r + 12, wirelen[i])
            o = r + 16
        else:
            blen = 28 + ((cap + 3) & ~3) + 4
            units = ts_ns[i] // 1000 if not nanosecond else ts_ns[i]
            _put_le32(out, r, 6)
            _put_le32(out, r + 4, blen)
            _put_le32(out, r + 8, 0)
            _put_le32(out, r + 12, (units >> 32) & 0xFFFFFFFF)
            _put_le32(out, r + 16, units & 0xFFFFFFFF)
            _put_le32(out, r + 20, cap)
            _put_le32(out, r + 24, wirelen[i])
            for k in range(cap, (cap + 3) & ~3):
                out[r + 28 + k] = 0
            _put_le32(out, r + blen - 4, blen)
            o = r + 28
        _put48(out, o, dst_mac[i])
        _put48(out, o + 6, src_mac[i])
        p = o + 12
        if vlan[i]:
            _put16(out, p, 0x8100)
            _put16(out, p + 2, vlan[i])
            p += 4
        if kind[i] == KIND_ARP:
            _put16(out, p, 0x0806)
            a = p + 2
            _put16(out, a, 1)
            _put16(out, a + 2, 0x0800)
            out[a + 4] = 6
            out[a + 5] = 4
            _put16(out, a + 6, arp_op[i])
            _put48(out, a + 8, src_mac[i])
            _put32(out, a + 14, np.int64(src_lo[i] & np.uint64(0xFFFFFFFF)))
            _put48(out, a + 18, arp_tha[i])
            _put32(out, a + 24, np.int64(dst_lo[i] & np.uint64(0xFFFFFFFF)))
            continue
        pr = proto[i]
        l4 = _l4_len(pr)
        plen = payload_len[i]
        if ip_ver[i] == 4:
            _put16(out, p, 0x0800)
            q = p + 2
            _put16(out, q, 0x4500)
            _put16(out, q + 2, 20 + l4 + plen)
            _put16(out, q + 4, ip_id[i])
            _put16(out, q + 6, 0x4000)
            out[q + 8] = ttl[i]
            out[q + 9] = pr
            _put16(out, q + 10, 0)
            _put32(out, q + 12, np.int64(src_lo[i] & np.uint64(0xFFFFFFFF)))
            _put32(out, q + 16, np.int64(dst_lo[i] & np.uint64(0xFFFFFFFF)))
            _put16(out, q + 10, _csum_fold(_csum_add(out, q, 20, 0)))
            t = q + 20
            pseudo = _csum_add(out, q + 12, 8, 0) + pr + l4 + plen
        else:
            _put16(out, p, 0x86DD)
            q = p + 2
            _put32(out, q, 0x60000000)
            _put16(out, q + 4, l4 + plen)
            out[q + 6] = pr
            out[q + 7] = ttl[i]
            _put64(out, q + 8, src_hi[i])
            _put64(out, q + 16, src_lo[i])
            _put64(out, q + 24, dst_hi[i])
            _put64(out, q + 32, dst_lo[i])
            t = q + 40
            pseudo = _csum_add(out, q + 8, 32, 0) + pr + l4 + plen
        cp = cap_payload[i]
        src = payload_off[i]
        for k in range(cp):
            out[t + l4 + k] = pool[src + k]
        if pr == 6:
            _put16(out, t, sport[i])
            _put16(out, t + 2, dport[i])
            _put32(out, t + 4, seq[i])
            _put32(out, t + 8, ack[i])
            out[t + 12] = 0x50
            out[t + 13] = flags[i]
            _put16(out, t + 14, win[i])
            _put16(out, t + 16, 0)
            _put16(out, t + 18, 0)
            csum_at = t + 16
        elif pr == 17:
            _put16(out, t, sport[i])
            _put16(out, t + 2, dport[i])
            _put16(out, t + 4, 8 + plen)
            _put16(out, t + 6, 0)
            csum_at = t + 6
        elif pr == 1 or pr == 58:
            out[t] = sport[i]
            out[t + 1] = dport[i]
            _put16(out, t + 2, 0)
            _put16(out, t + 4, seq[i] >> 16)
            _put16(out, t + 6, seq[i] & 0xFFFF)
            csum_at = t + 2
        else:
            csum_at = -1
        if csum_at >= 0 and cp == plen:
            acc = _csum_add(out, t, l4 + cp, 0)
            if pr != 1:
                acc += pseudo
            v = _csum_fold(acc)
            if v == 0 and pr == 17:
                v = 0xFFFF
            _put16(out, csum_at, v)


def encode(spec: PacketSpec, pool: np.ndarray, fmt: str = "pcap", nanosecond: bool = False,
           snaplen: int = PCAP_SNAPLEN) -> bytes:
    """The whole capture file for ``spec``'s packets, in order. With a ``snaplen`` below the
    frame sizes, payloads are cut so that no record exceeds it (headers are always kept)."""
    n = len(spec)
    caplen = np.empty(n, dtype=np.int64)
    wirelen = np.empty(n, dtype=np.int64)
    cap_payload = spec.cap_payload
    frame_lengths(spec.kind, spec.vlan, spec.ip_ver, spec.proto, spec.payload_len, cap_payload, caplen, wirelen)
    over = caplen > snaplen
    if over.any():
        headers = caplen - cap_payload
        cap_payload = np.where(over, np.clip(snaplen - headers, 0, None), cap_payload).astype(np.uint32)
        caplen = headers + cap_payload
        snaplen = max(snaplen, int(caplen.max()))
    spec = dataclasses.replace(spec, cap_payload=cap_payload)
    if fmt == "pcap":
        rec = 16 + caplen
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        header = struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, 1)
        code = FMT_PCAP
    elif fmt == "pcapng":
        rec = 28 + ((caplen + 3) & ~3) + 4
        shb = struct.pack("<IIIHHq", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1) + struct.pack("<I", 28)
        opts = struct.pack("<HHB3x", 9, 1, 9 if nanosecond else 6) + struct.pack("<HH", 0, 0)
        idb_len = 20 + len(opts)
        idb = struct.pack("<IIHHI", 1, idb_len, 1, 0, snaplen) + opts + struct.pack("<I", idb_len)
        header = shb + idb
        code = FMT_PCAPNG
    else:
        raise ValueError(f"unknown capture format {fmt!r}")
    rec_off = np.empty(n, dtype=np.int64)
    if n:
        rec_off[0] = len(header)
        np.cumsum(rec[:-1], out=rec_off[1:])
        rec_off[1:] += len(header)
    total = len(header) + int(rec.sum())
    out = np.empty(total, dtype=np.uint8)
    out[: len(header)] = np.frombuffer(header, dtype=np.uint8)
    encode_frames(spec.ts_ns, spec.kind, spec.src_mac, spec.dst_mac, spec.vlan, spec.ip_ver, spec.src_hi,
                  spec.src_lo, spec.dst_hi, spec.dst_lo, spec.proto, spec.sport, spec.dport, spec.flags, spec.seq,
                  spec.ack, spec.win, spec.ttl, spec.ip_id, spec.payload_len, spec.cap_payload, spec.payload_off,
                  spec.arp_op, spec.arp_tha, pool, caplen, wirelen, rec_off, code, nanosecond, out)
    return out.tobytes()
