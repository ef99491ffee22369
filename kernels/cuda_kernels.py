"""``numba.cuda`` kernels of the GPU backend, built on first use.

The per-element logic is the CPU's own: these kernels call the same Numba functions
(``decode_record``, ``canonical_key``, ``packet_ends_flow``, ``init_flow``, ``update_flow``),
which Numba compiles for the GPU. What is GPU-specific is only how work is spread:

- decoding: one thread per packet;
- IP fragments: one thread per fragment, first fragments claiming cache slots with atomics;
- flow accounting is array code (:mod:`kernels.flow_account`); only the few segments whose
  record starts the scans cannot settle are walked, one thread per segment (``walk``);
- flow records: one thread per emitted flow (``finalize_rows``), the CPU's ``record_row``;
- payload signatures for the L7 tap's choice of packets: one thread per packet (``classify``);
- segmented scans: one thread per chunk of 32 (``scan_chunks``, ``scan_carry``).

``numba.cuda`` is imported inside :func:`kernels`, so importing this module never touches it.
On a GPU each kernel is compiled once per kernel sources and GPU model, then loaded from disk
(:mod:`kernels.cuda_cache`). Every kernel is registered with the arguments the engine launches it
with (:mod:`kernels.cuda_registry`; ``detector/flows/gpu_engine.py`` launches them), so that CI
compiles them for a real GPU without one (:mod:`kernels.cuda_compile_check`).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from kernels.chunk_scan import Partial, carry_chunk, scan_chunk
from kernels.cuda_registry import arg, register
from kernels.decode import decode_record
from kernels.flow_records import IP_TEXT_MAX, Oriented, Rows, Scratch, Text, record_row
from kernels.flow_walk import walk_one
from kernels.flowkey import is_flow_packet, mix64, packet_flow_hash
from kernels.fragments import STAT_OVERWRITTEN, STAT_RESOLVED, STAT_UNRESOLVED
from kernels.l7_select import classify_one
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

    # -- the sequential walk of unsettled segments -------------------------------------------
    @cached_jit
    def walk(cols, segs, likely, cfg, state, res):
        """One thread per segment the scans could not settle (kernels.flow_account)."""
        g = cuda.grid(1)
        if g < segs.lo.shape[0]:
            walk_one(cols, segs, likely, cfg, state, res, g)

    # -- flow records ------------------------------------------------------------------------
    @cached_jit
    def finalize_rows(rows, n, cid_seed, ori, text, lens):
        """One thread per emitted flow: its orientation, uid, Community ID and addresses as text,
        each address in a slot of IP_TEXT_MAX bytes, its length in ``lens`` (packed afterwards,
        kernels.flow_records). The SHA-1's work space is the thread's own (local memory)."""
        k = cuda.grid(1)
        if k >= n:
            return
        scratch = Scratch(cuda.local.array(64, np.uint8), cuda.local.array(80, np.int64),
                          cuda.local.array(20, np.uint8))
        at = k * IP_TEXT_MAX
        oh_end, rh_end = record_row(rows, k, cid_seed, ori, text, at, at, scratch)
        lens[0, k] = oh_end - at
        lens[1, k] = rh_end - at

    # -- segmented scans in a fixed number of launches (kernels.chunk_scan) -------------------
    @cached_jit
    def scan_chunks(values, heads, n, op, part):
        c = cuda.grid(1)
        if c < part.tot_v.shape[0]:
            scan_chunk(values, heads, n, op, part, c)

    @cached_jit
    def scan_carry(out, carry, first, n, op):
        c = cuda.grid(1)
        if c < first.shape[0]:
            carry_chunk(out, carry, first, n, op, c)

    # -- what the L7 tap needs -------------------------------------------------------------
    @cached_jit
    def classify(buf, off, cols, n, sig, fid):
        """One thread per packet: what its payload starts like, its flow id (kernels.l7_select)."""
        i = cuda.grid(1)
        if i < n:
            classify_one(buf, off, cols, i, sig, fid)

    return SimpleNamespace(decode=decode, frag_claim=frag_claim, frag_write=frag_write, frag_lookup=frag_lookup,
                           walk=walk, finalize_rows=finalize_rows, classify=classify, scan_chunks=scan_chunks,
                           scan_carry=scan_carry)


# -- the arguments each kernel is launched with (as GpuFlowEngine launches it; a test compares) --
_U8, _U16, _U32, _U64, _I64, _F64 = np.uint8, np.uint16, np.uint32, np.uint64, np.int64, np.float64


def _walk_args():
    from kernels.flow_walk import Segments, Walk, Walked

    state = Walk(arg(_I64, 2), arg(_F64, 2), arg(_U8, 2), arg(_U8))
    res = Walked(arg(_U64, 2), arg(_I64, 2), arg(_F64, 2), arg(_U8, 2), arg(_U8), arg(_I64), arg(_I64))
    return (allocate(1), Segments(arg(_I64), arg(_I64), arg(_I64), arg(_I64)), arg(_U8), arg(_I64), state, res)


register("kernels.cuda_kernels.decode", lambda: kernels().decode, lambda: (
    arg(_U8), arg(_I64), arg(_U32), arg(_U32), arg(_I64), arg(_U16), 0, allocate(1), arg(_U64)))
register("kernels.cuda_kernels.frag_claim", lambda: kernels().frag_claim, lambda: (
    allocate(1), arg(_I64), 0, arg(_I64), arg(_U64, 2), arg(_I64), arg(_I64)))
register("kernels.cuda_kernels.frag_write", lambda: kernels().frag_write, lambda: (
    allocate(1), arg(_I64), 0, arg(_I64), arg(_U64, 2), arg(_U32), arg(_I64)))
register("kernels.cuda_kernels.frag_lookup", lambda: kernels().frag_lookup, lambda: (
    allocate(1), arg(_I64), 0, arg(_U64, 2), arg(_U32), arg(_I64), 0, arg(_U64), arg(_I64)))
register("kernels.cuda_kernels.walk", lambda: kernels().walk, _walk_args)


def _finalize_args():
    ori = Oriented(*(arg(_U64) for _ in range(4)), arg(_U16), arg(_U16), arg(_U8), arg(_U16), arg(_U8))
    text = Text(*(arg(_U8) for _ in range(4)))
    return (Rows(arg(_U64, 2), arg(_I64, 2), arg(_U8, 2)), 0, 0, ori, text, arg(_I64, 2))


register("kernels.cuda_kernels.finalize_rows", lambda: kernels().finalize_rows, _finalize_args)
register("kernels.cuda_kernels.scan_chunks", lambda: kernels().scan_chunks, lambda: (
    arg(_I64), arg(np.bool_), 0, 0, Partial(arg(_I64), arg(_I64), arg(np.bool_), arg(np.int32))))
register("kernels.cuda_kernels.scan_carry", lambda: kernels().scan_carry, lambda: (
    arg(_I64), arg(_I64), arg(np.int32), 0, 0))
register("kernels.cuda_kernels.classify", lambda: kernels().classify, lambda: (
    arg(_U8), arg(_I64), allocate(1), 0, arg(_U8), arg(_U64)))
