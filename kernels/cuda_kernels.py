"""``numba.cuda`` kernels of the GPU backend, built on first use.

The per-element logic is the CPU's own: these kernels call the same Numba functions
(``decode_record``, ``canonical_key``, ``packet_ends_flow``, ``init_flow``, ``update_flow``,
``expiry_reason``, ...), which Numba compiles for the GPU. What is GPU-specific is only how
work is spread and how shared state is claimed:

- decoding: one thread per packet;
- flow accounting: packets are grouped by flow hash (a stable sort keeps capture order within
  a flow) and one thread walks one group, so every flow sees its packets in order, as on the CPU;
- the flow table lives on the device. A thread inserts a new key by popping a free row (atomic)
  and claiming a slot with compare-and-swap; a key is only ever handled by the thread of its
  group, so no two threads look for the same key. Ended flows that continue (active timeout,
  port reuse, idle gap) restart in their own row, so nothing is deleted while threads probe;
  expiry, eviction and flushing free rows in a separate launch, after which the slot table is
  rebuilt from the live rows.

``numba.cuda`` is imported inside :func:`kernels`, so importing this module never touches it.
On a GPU each kernel is compiled once per kernel sources and GPU model, then loaded from disk
(:mod:`kernels.cuda_cache`). Every kernel is registered with the arguments the engine launches it
with (:mod:`kernels.cuda_registry`; ``detector/flows/gpu_engine.py`` launches them), so that CI
compiles them for a real GPU without one (:mod:`kernels.cuda_compile_check`).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from kernels.cuda_registry import arg, register
from kernels.decode import decode_record
from kernels.flowkey import canonical_key, is_flow_packet, mix64, packet_flow_hash
from kernels.flowstate import (
    END_ACTIVE,
    END_EVICTED,
    EXPIRE_AT,
    M_ACTIVE,
    M_CREATED,
    M_EVICTED,
    M_HWM,
    M_NFREE,
    M_OUT_N,
)
from kernels.flowtable import (
    expiry_reason,
    init_flow,
    note_packet_flow,
    packet_ends_flow,
    restart_flow,
    update_flow,
)
from kernels.fragments import STAT_OVERWRITTEN, STAT_RESOLVED, STAT_UNRESOLVED
from kernels.packet_columns import FRAG_FIRST, FRAG_IS_FRAGMENT, FRAG_PORTS_RESOLVED, allocate

_KERNELS = None
cuda = None  # numba.cuda, bound by _build(); a module global so Numba's simulator can swap it


def kernels() -> SimpleNamespace:
    global _KERNELS
    if _KERNELS is None:
        _KERNELS = _build()
    return _KERNELS


def _build() -> SimpleNamespace:
    global cuda
    from kernels._jit import materialize
    from kernels.cuda_cache import cached_jit
    from kernels.numpy_compat import numpy_aliases_for_numba_cuda

    materialize()  # the shared functions must be Numba's (not compiled-ahead stand-ins) to compile for CUDA

    numpy_aliases_for_numba_cuda()
    from numba import cuda as numba_cuda

    cuda = numba_cuda

    # -- decoding ----------------------------------------------------------------------------
    @cached_jit
    def decode(buf, off, caplen, wirelen, ts_ns, link, n, cols, pkt_hash):
        i = cuda.grid(1)
        if i >= n:
            return
        decode_record(buf, off, caplen, wirelen, ts_ns, link, cols, pkt_hash, i)

    # -- fragments ---------------------------------------------------------------------------
    @cuda.jit(device=True)
    def frag_slot(cols, i, mask):
        word = (np.uint64(cols.proto[i]) << np.uint64(32)) | np.uint64(cols.ip_id[i])
        h = mix64(cols.src_ip_lo[i] ^ mix64(cols.dst_ip_lo[i] ^ mix64(
            cols.src_ip_hi[i] ^ mix64(cols.dst_ip_hi[i] ^ mix64(word)))))
        return h & mask, word

    @cuda.jit(device=True)
    def frag_same(keys, s, cols, i, word):
        return (keys[s, 0] == cols.src_ip_hi[i] and keys[s, 1] == cols.src_ip_lo[i]
                and keys[s, 2] == cols.dst_ip_hi[i] and keys[s, 3] == cols.dst_ip_lo[i] and keys[s, 4] == word)

    @cached_jit
    def frag_claim(cols, idx, nidx, owner, keys, ts, stats):
        """First fragments: the last one (in capture order) of each cache slot will own it, as
        when the CPU writes them one after the other. (The overwrite statistic counts first
        fragments that found another datagram in their slot before the batch; the CPU also
        counts collisions within a batch.)"""
        j = cuda.grid(1)
        if j >= nidx:
            return
        i = idx[j]
        if not (cols.frag[i] & FRAG_FIRST):
            return
        s, word = frag_slot(cols, i, np.uint64(keys.shape[0] - 1))
        cuda.atomic.max(owner, s, j + 1)
        if ts[s] >= 0 and not frag_same(keys, s, cols, i, word):
            cuda.atomic.add(stats, STAT_OVERWRITTEN, 1)

    @cached_jit
    def frag_write(cols, idx, nidx, owner, keys, ports, ts):
        j = cuda.grid(1)
        if j >= nidx:
            return
        i = idx[j]
        if not (cols.frag[i] & FRAG_FIRST):
            return
        s, word = frag_slot(cols, i, np.uint64(keys.shape[0] - 1))
        if owner[s] != j + 1:
            return
        keys[s, 0] = cols.src_ip_hi[i]
        keys[s, 1] = cols.src_ip_lo[i]
        keys[s, 2] = cols.dst_ip_hi[i]
        keys[s, 3] = cols.dst_ip_lo[i]
        keys[s, 4] = word
        ports[s] = (np.uint32(cols.sport[i]) << np.uint32(16)) | np.uint32(cols.dport[i])
        ts[s] = cols.ts_ns[i]

    @cached_jit
    def frag_lookup(cols, idx, nidx, keys, ports, ts, timeout_ns, pkt_hash, stats):
        j = cuda.grid(1)
        if j >= nidx:
            return
        i = idx[j]
        if (cols.frag[i] & FRAG_FIRST) or not (cols.frag[i] & FRAG_IS_FRAGMENT):
            return
        s, word = frag_slot(cols, i, np.uint64(keys.shape[0] - 1))
        if ts[s] >= 0 and frag_same(keys, s, cols, i, word) and abs(cols.ts_ns[i] - ts[s]) <= timeout_ns:
            cols.sport[i] = ports[s] >> np.uint32(16)
            cols.dport[i] = ports[s] & np.uint32(0xFFFF)
            cols.frag[i] |= FRAG_PORTS_RESOLVED
            if is_flow_packet(cols, i):
                pkt_hash[i] = packet_flow_hash(cols, i)
            cuda.atomic.add(stats, STAT_RESOLVED, 1)
        else:
            cuda.atomic.add(stats, STAT_UNRESOLVED, 1)

    # -- the device flow table ---------------------------------------------------------------
    @cuda.jit(device=True)
    def find(slot_hash, slot_row, keys, h, a_hi, a_lo, b_hi, b_lo, w4):
        mask = np.uint64(slot_row.shape[0] - 1)
        s = h & mask
        while True:
            r = slot_row[s]
            if r == 0:
                return -1
            if slot_hash[s] == h:
                f = np.int64(r) - 1
                if (keys[f, 0] == a_hi and keys[f, 1] == a_lo and keys[f, 2] == b_hi and keys[f, 3] == b_lo
                        and keys[f, 4] == w4):
                    return f
            s = (s + np.uint64(1)) & mask

    @cuda.jit(device=True)
    def claim_slot(slot_hash, slot_row, h, f):
        mask = np.uint64(slot_row.shape[0] - 1)
        s = h & mask
        while True:
            if cuda.atomic.cas(slot_row, s, np.uint64(0), np.uint64(f + 1)) == 0:
                slot_hash[s] = h
                return
            s = (s + np.uint64(1)) & mask

    @cuda.jit(device=True)
    def insert(slot_hash, slot_row, fhash, keys, used, free, meta, h, a_hi, a_lo, b_hi, b_lo, w4):
        top = cuda.atomic.sub(meta, M_NFREE, 1)  # the host made sure the stack holds enough rows
        f = free[top - 1]
        cuda.atomic.add(meta, M_ACTIVE, 1)
        cuda.atomic.add(meta, M_CREATED, 1)
        cuda.atomic.max(meta, M_HWM, f + 1)
        fhash[f] = h
        keys[f, 0] = a_hi
        keys[f, 1] = a_lo
        keys[f, 2] = b_hi
        keys[f, 3] = b_lo
        keys[f, 4] = w4
        used[f] = 1
        claim_slot(slot_hash, slot_row, h, f)
        return f

    @cuda.jit(device=True)
    def emit(keys, st, fs, hist, f, reason, okeys, ost, ofs, ohist, oreason, meta):
        k = cuda.atomic.add(meta, M_OUT_N, 1)
        for c in range(keys.shape[1]):
            okeys[k, c] = keys[f, c]
        for c in range(st.shape[1]):
            ost[k, c] = st[f, c]
        for c in range(fs.shape[1]):
            ofs[k, c] = fs[f, c]
        for c in range(hist.shape[1]):
            ohist[k, c] = hist[f, c]
        oreason[k] = reason

    @cached_jit
    def account(cols, pkt_hash, order, seg_start, n_seg, likely, cfg, keys, fhash, st, fs, hist, used,
                slot_hash, slot_row, free, meta, okeys, ost, ofs, ohist, oreason):
        """One thread per group of packets with one flow hash, in capture order."""
        g = cuda.grid(1)
        if g >= n_seg:
            return
        for j in range(seg_start[g], seg_start[g + 1]):
            i = order[j]
            h = pkt_hash[i]
            a_hi, a_lo, b_hi, b_lo, w4, from_a = canonical_key(cols, i)
            f = find(slot_hash, slot_row, keys, h, a_hi, a_lo, b_hi, b_lo, w4)
            if f >= 0:
                reason = packet_ends_flow(st, f, cols, i, cfg)
                if reason == END_ACTIVE:
                    emit(keys, st, fs, hist, f, END_ACTIVE, okeys, ost, ofs, ohist, oreason, meta)
                    restart_flow(st, fs, f, cols.ts_ns[i])
                elif reason >= 0:
                    emit(keys, st, fs, hist, f, reason, okeys, ost, ofs, ohist, oreason, meta)
                    # the key's next flow starts in the same row: nothing is deleted mid-launch
                    init_flow(st, fs, hist, f, cols, i, from_a, likely)
                    cuda.atomic.add(meta, M_CREATED, 1)
            else:
                f = insert(slot_hash, slot_row, fhash, keys, used, free, meta, h, a_hi, a_lo, b_hi, b_lo, w4)
                init_flow(st, fs, hist, f, cols, i, from_a, likely)
            update_flow(st, fs, hist, f, cols, i, from_a, cfg)
            note_packet_flow(st, f, cols, i, from_a)

    @cached_jit
    def end_rows(rows, nrows, now, flush_reason, evict, keys, st, fs, hist, used, free, meta,
                 okeys, ost, ofs, ohist, oreason):
        """Emit and free flows: those of ``rows`` that expired before ``now`` (or all of them,
        with ``flush_reason`` >= 0, or as evictions). The slot table is rebuilt afterwards."""
        j = cuda.grid(1)
        if j >= nrows:
            return
        f = rows[j]
        if not used[f]:
            return
        if evict:
            reason = END_EVICTED
        elif flush_reason >= 0:
            reason = flush_reason
        elif st[f, EXPIRE_AT] < now:
            reason = expiry_reason(st, f)
        else:
            return
        emit(keys, st, fs, hist, f, reason, okeys, ost, ofs, ohist, oreason, meta)
        used[f] = 0
        top = cuda.atomic.add(meta, M_NFREE, 1)
        free[top] = f
        cuda.atomic.sub(meta, M_ACTIVE, 1)
        if evict:
            cuda.atomic.add(meta, M_EVICTED, 1)

    @cached_jit
    def rebuild_slots(used, fhash, hwm, slot_hash, slot_row):
        f = cuda.grid(1)
        if f >= hwm or not used[f]:
            return
        claim_slot(slot_hash, slot_row, fhash[f], f)

    return SimpleNamespace(decode=decode, frag_claim=frag_claim, frag_write=frag_write, frag_lookup=frag_lookup,
                           account=account, end_rows=end_rows, rebuild_slots=rebuild_slots)



# -- the arguments each kernel is launched with (as GpuFlowEngine launches it; a test compares) --
_U8, _U16, _U32, _U64, _I64, _F64 = np.uint8, np.uint16, np.uint32, np.uint64, np.int64, np.float64


def _flow_rows():  # keys, state, floats, history: rows of the flow table, or of the ended flows
    return arg(_U64, 2), arg(_I64, 2), arg(_F64, 2), arg(_U8, 2)


def _ended():  # okeys, ost, ofs, ohist, oreason
    return (*_flow_rows(), arg(_U8))


register("kernels.cuda_kernels.decode", lambda: kernels().decode, lambda: (
    arg(_U8), arg(_I64), arg(_U32), arg(_U32), arg(_I64), arg(_U16), 0, allocate(1), arg(_U64)))
register("kernels.cuda_kernels.frag_claim", lambda: kernels().frag_claim, lambda: (
    allocate(1), arg(_I64), 0, arg(_I64), arg(_U64, 2), arg(_I64), arg(_I64)))
register("kernels.cuda_kernels.frag_write", lambda: kernels().frag_write, lambda: (
    allocate(1), arg(_I64), 0, arg(_I64), arg(_U64, 2), arg(_U32), arg(_I64)))
register("kernels.cuda_kernels.frag_lookup", lambda: kernels().frag_lookup, lambda: (
    allocate(1), arg(_I64), 0, arg(_U64, 2), arg(_U32), arg(_I64), 0, arg(_U64), arg(_I64)))
register("kernels.cuda_kernels.account", lambda: kernels().account, lambda: (
    allocate(1), arg(_U64), arg(_I64), arg(_I64), 0, arg(_U8), arg(_I64),
    arg(_U64, 2), arg(_U64), arg(_I64, 2), arg(_F64, 2), arg(_U8, 2), arg(_U8), arg(_U64), arg(_U64), arg(_I64),
    arg(_I64), *_ended()))
register("kernels.cuda_kernels.end_rows", lambda: kernels().end_rows, lambda: (
    arg(_I64), 0, 0, 0, False, *_flow_rows(), arg(_U8), arg(_I64), arg(_I64), *_ended()))
register("kernels.cuda_kernels.rebuild_slots", lambda: kernels().rebuild_slots, lambda: (
    arg(_U8), arg(_U64), 0, arg(_U64), arg(_U64)))
