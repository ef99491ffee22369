"""Give non-first IP fragments the ports of their datagram, so they count in its flow.

Only the first fragment carries the transport header. A direct-mapped cache keyed by
(source, destination, protocol, IP id) remembers each first fragment's ports; later fragments
of the datagram look them up. First fragments of a batch are registered before any lookup,
so fragments that arrive ahead of their first one in the same batch are still matched.
Fragments whose first fragment was never seen (or was pushed out of the cache, or is older
than the timeout) keep ports 0 and form their own flow; they are counted.
"""

from __future__ import annotations

import numpy as np

from kernels._jit import cpu_kernel, row_fn
from kernels.flowkey import mix64
from kernels.packet_columns import FRAG_FIRST, FRAG_IS_FRAGMENT, FRAG_PORTS_RESOLVED

DEFAULT_SLOTS = 1 << 16
STAT_RESOLVED = 0
STAT_UNRESOLVED = 1
STAT_OVERWRITTEN = 2


class FragmentCache:
    """State of the cache, kept across batches and files."""

    def __init__(self, slots: int = DEFAULT_SLOTS, timeout_ns: int = 60_000_000_000):
        assert slots & (slots - 1) == 0, "slots must be a power of two"
        self.keys = np.zeros((slots, 5), dtype=np.uint64)
        self.ports = np.zeros(slots, dtype=np.uint32)
        self.ts = np.full(slots, -1, dtype=np.int64)
        self.timeout_ns = timeout_ns
        self.stats = np.zeros(3, dtype=np.int64)

    def resolve(self, cols, frag_idx: np.ndarray) -> None:
        resolve_fragments(cols, frag_idx, self.keys, self.ports, self.ts, self.timeout_ns, self.stats)


@row_fn
def _frag_key_word(cols, i):
    return (np.uint64(cols.proto[i]) << np.uint64(32)) | np.uint64(cols.ip_id[i])


@row_fn
def _slot(cols, i, mask):
    h = mix64(cols.src_ip_lo[i] ^ mix64(cols.dst_ip_lo[i] ^ mix64(
        cols.src_ip_hi[i] ^ mix64(cols.dst_ip_hi[i] ^ mix64(_frag_key_word(cols, i))))))
    return h & mask


@row_fn
def _same(keys, s, cols, i):
    return (keys[s, 0] == cols.src_ip_hi[i] and keys[s, 1] == cols.src_ip_lo[i]
            and keys[s, 2] == cols.dst_ip_hi[i] and keys[s, 3] == cols.dst_ip_lo[i]
            and keys[s, 4] == _frag_key_word(cols, i))


@cpu_kernel
def resolve_fragments(cols, frag_idx, keys, ports, ts, timeout_ns, stats):
    mask = np.uint64(keys.shape[0] - 1)
    for j in range(frag_idx.shape[0]):
        i = frag_idx[j]
        if not (cols.frag[i] & FRAG_FIRST):
            continue
        s = _slot(cols, i, mask)
        if ts[s] >= 0 and not _same(keys, s, cols, i):
            stats[STAT_OVERWRITTEN] += 1
        keys[s, 0] = cols.src_ip_hi[i]
        keys[s, 1] = cols.src_ip_lo[i]
        keys[s, 2] = cols.dst_ip_hi[i]
        keys[s, 3] = cols.dst_ip_lo[i]
        keys[s, 4] = _frag_key_word(cols, i)
        ports[s] = (np.uint32(cols.sport[i]) << np.uint32(16)) | np.uint32(cols.dport[i])
        ts[s] = cols.ts_ns[i]
    for j in range(frag_idx.shape[0]):
        i = frag_idx[j]
        if (cols.frag[i] & FRAG_FIRST) or not (cols.frag[i] & FRAG_IS_FRAGMENT):
            continue
        s = _slot(cols, i, mask)
        if ts[s] >= 0 and _same(keys, s, cols, i) and abs(cols.ts_ns[i] - ts[s]) <= timeout_ns:
            cols.sport[i] = ports[s] >> np.uint32(16)
            cols.dport[i] = ports[s] & np.uint32(0xFFFF)
            cols.frag[i] |= FRAG_PORTS_RESOLVED
            stats[STAT_RESOLVED] += 1
        else:
            stats[STAT_UNRESOLVED] += 1
