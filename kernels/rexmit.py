"""TCP segments that resend a sequence number with other bytes (Zeek's ``rexmit_inconsistency``).

A sender that retransmits resends the same bytes. Two segments of one direction of a connection
that start at the same sequence number and differ in the bytes they both carry were written by
two different senders: one of them injected its segment (session hijacking), or a middlebox
rewrote one. A bounded table remembers, for the most recent TCP data segments, a hash of the
segment's key (addresses, ports, sequence number), its first 8 payload bytes and its TTL; a
later segment with the same key whose common first bytes differ is reported. The table is
direct-mapped: a newer segment overwrites an older one in its slot, so memory is fixed and
segments are compared across batches for as long as they stay in the table.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel
from kernels.flowkey import mix64

TABLE_BITS = 16  # 65,536 recent data segments (1.5 MiB)
PREFIX = 8  # payload bytes compared


class RexmitTable:
    """The remembered segments (key hash, first bytes, how many of them, TTL), one per slot."""

    def __init__(self, bits: int = TABLE_BITS):
        size = 1 << bits
        self.key = np.zeros(size, np.uint64)
        self.word = np.zeros(size, np.uint64)
        self.length = np.zeros(size, np.uint8)
        self.ttl = np.zeros(size, np.uint8)

    def find(self, buf, rec_off, cols, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the first ``n`` that resend a remembered sequence number with other bytes,
        and the TTL the remembered segment arrived with."""
        rows = np.empty(n, np.int64)
        prev_ttl = np.empty(n, np.uint8)
        m = inconsistent_rexmits(buf, rec_off, cols, n, self.key, self.word, self.length, self.ttl, rows, prev_ttl)
        return rows[:m], prev_ttl[:m]


@cpu_kernel
def inconsistent_rexmits(buf, rec_off, cols, n, t_key, t_word, t_len, t_ttl, out_rows, out_ttl):
    mask = np.uint64(t_key.shape[0] - 1)
    m = 0
    for i in range(n):
        if cols.ip_ver[i] == 0 or cols.proto[i] != 6 or cols.status[i] != 0 or cols.payload_len[i] == 0:
            continue
        if cols.frag[i] & 1:  # a fragment: its payload is not the segment's
            continue
        start = np.int64(cols.payload_off[i])
        take = min(np.int64(cols.cap_len[i]) - start, np.int64(cols.payload_len[i]), np.int64(PREFIX))
        if take <= 0:
            continue
        src = rec_off[i] + start
        word = np.uint64(0)
        for k in range(take):
            word |= np.uint64(buf[src + k]) << np.uint64(8 * k)
        ports = (np.uint64(cols.sport[i]) << np.uint64(16)) | np.uint64(cols.dport[i])
        key = mix64(cols.src_ip_hi[i] ^ mix64(cols.src_ip_lo[i] ^ mix64(cols.dst_ip_hi[i] ^ mix64(
            cols.dst_ip_lo[i] ^ mix64(ports ^ (np.uint64(cols.tcp_seq[i]) << np.uint64(32)))))))
        key |= np.uint64(1)  # 0 marks an empty slot
        slot = key & mask
        if t_key[slot] == key:
            common = min(take, np.int64(t_len[slot]))
            if common > 0:
                keep = np.uint64(0xFFFFFFFFFFFFFFFF) if common == 8 else (np.uint64(1) << np.uint64(8 * common)) - np.uint64(1)
                if (word ^ t_word[slot]) & keep:
                    out_rows[m] = i
                    out_ttl[m] = t_ttl[slot]
                    m += 1
        t_key[slot] = key
        t_word[slot] = word
        t_len[slot] = take
        t_ttl[slot] = cols.ttl[i]
    return m
