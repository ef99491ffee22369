"""The GPU backend's flow engine: :class:`ScanFlowEngine` on CuPy, decoding on the device.

Per batch, the capture bytes the batch covers go to the device through a pinned staging
buffer, every packet is decoded by one thread, fragments get their ports (the kernels of
:mod:`kernels.cuda_kernels`), and flows are accounted as sorts and segmented scans
(:class:`kernels.flow_account.ScanTable`). The few segments that the scans cannot settle are
walked with one thread each. Flow state never leaves the device; ended flows are finished into
record columns there (:class:`DeviceRecords`), and those columns come back.

Under Numba's CUDA simulator the array glue is NumPy and the kernels run in the simulator, so
the whole path runs on machines without a GPU.
"""

from __future__ import annotations

import logging

import numpy as np

from detector.backend import Backend
from detector.config import FlowConfig
from detector.flows.engine import PacketCounts
from detector.flows.records import HostText, oriented
from detector.flows.scan_engine import ScanFlowEngine
from detector.flows.table import EmittedFlows
from detector.sources.batch import RawBatch
from kernels import chunk_scan
from kernels import flow_records as kfr
from kernels import flowstate as fsd
from kernels import packet_columns as pc
from kernels.host_copy import to_host

log = logging.getLogger("detector.gpu")
SIMULATOR_SCAN_KERNELS = False  # under Numba's simulator, scans as array code unless a test asks


class DeviceDecoder:
    """Packet columns decoded on the device (CuPy arrays; NumPy under the simulator)."""

    def __init__(self, cfg: FlowConfig, backend: Backend, kernels, clock):
        xp = backend.xp
        self.backend = backend
        self.xp = xp
        self.k = kernels
        self.clock = clock
        self.block = 32 if backend.simulated else 256
        self.cols = pc.allocate(cfg.batch_size, xp)
        self.pkt_hash = xp.zeros(cfg.batch_size, dtype=xp.uint64)
        fslots = cfg.fragment_slots
        self.frag_keys = xp.zeros((fslots, 5), dtype=xp.uint64)
        self.frag_ports = xp.zeros(fslots, dtype=xp.uint32)
        self.frag_ts = xp.full(fslots, -1, dtype=xp.int64)
        self.frag_stats = xp.zeros(3, dtype=xp.int64)
        self.frag_timeout = int(cfg.fragment_timeout * 1e9)
        self.status_counts = xp.zeros(8, dtype=xp.int64)
        self._staging = None
        self._copied = None  # event recorded after the last copies out of self._staging
        self.batch_bytes = None
        self.h2d_bytes = 0

    def dev(self, a):
        """An array as a numba.cuda kernel argument (zero-copy view of a CuPy array)."""
        if self.backend.simulated:
            return a
        from numba import cuda

        return cuda.as_cuda_array(a)

    def devs(self, arrays):
        """A named tuple of arrays (packet columns, a kernel's state) as kernel arguments."""
        return type(arrays)(*(self.dev(a) for a in arrays))

    def launch(self, kernel, n, *args):
        if n <= 0:
            return
        self.clock.launches += 1
        kernel[(n + self.block - 1) // self.block, self.block](*args)

    def _to_device(self, *hosts: np.ndarray) -> list:
        """Host arrays to the device through one reused pinned buffer, each in its own region.

        Copies from pinned memory are asynchronous: a region must not be rewritten while a copy
        may still read it. (Reusing one region for every array let a batch's timestamps arrive
        holding its link types, seen on an H200.) So the arrays of one call get disjoint
        regions, and the next call first waits for the event recorded after these copies."""
        if self.backend.simulated:
            return [np.array(h) for h in hosts]
        import cupyx

        xp = self.xp
        spans, total = [], 0
        for h in hosts:
            spans.append(total)
            total += -(-h.nbytes // 256) * 256  # keep every region aligned
        if self._copied is not None:
            self._copied.synchronize()
        if self._staging is None or self._staging.nbytes < total:
            grown = 2 * self._staging.nbytes if self._staging is not None else 0
            self._staging = cupyx.empty_pinned(max(total, grown, 1 << 24), dtype=np.uint8)
        out = []
        for h, start in zip(hosts, spans):
            assert h.ndim == 1 and h.flags.c_contiguous, "batch columns are 1-D and contiguous"
            view = self._staging[start: start + h.nbytes]
            view[:] = h.view(np.uint8).reshape(-1)
            dev = xp.empty(h.nbytes, dtype=xp.uint8)
            dev.set(view)
            out.append(dev.view(h.dtype) if h.dtype != np.uint8 else dev)
            self.h2d_bytes += h.nbytes
        self._copied = xp.cuda.Event()
        self._copied.record()
        return out

    def decode(self, b: RawBatch, counts: PacketCounts) -> None:
        n, xp, d = b.n, self.xp, self.dev
        lo = int(b.off[0])
        hi = int((b.off + b.caplen).max())
        self.batch_bytes = None  # the previous batch's bytes go before this batch's arrive
        with self.clock.stage("copy"):
            buf, off, caplen, wirelen, ts, link = self._to_device(
                b.buf[lo:hi], b.off - lo, b.caplen, b.wirelen, b.ts_ns, b.link)
        with self.clock.stage("decode"):
            for col in self.cols:
                col[:n] = 0
            cols = self.devs(self.cols)
            self.launch(self.k.decode, n, d(buf), d(off), d(caplen), d(wirelen), d(ts), d(link), n, cols,
                        d(self.pkt_hash))
            self.batch_bytes = (buf, off)  # for the L7 tap's signatures (payload_signatures)
            self._fragments(n, cols)
            # counted on the device; read with the batch's other counters at its end
            self.status_counts += xp.bincount(self.cols.status[:n], minlength=8)[:8]
        counts.wire_bytes += int(b.wirelen.sum())

    def _fragments(self, n: int, cols) -> None:
        xp, d = self.xp, self.dev
        idx = xp.flatnonzero(self.cols.frag[:n] & pc.FRAG_IS_FRAGMENT)
        nidx = int(idx.shape[0])  # a sync: fragments are rare, and most batches have none
        if not nidx:
            return
        owner = xp.zeros(self.frag_keys.shape[0], dtype=xp.int64)
        args = (cols, d(idx), nidx)
        self.launch(self.k.frag_claim, nidx, *args, d(owner), d(self.frag_keys), d(self.frag_ts), d(self.frag_stats))
        self.launch(self.k.frag_write, nidx, *args, d(owner), d(self.frag_keys), d(self.frag_ports), d(self.frag_ts))
        self.launch(self.k.frag_lookup, nidx, *args, d(self.frag_keys), d(self.frag_ports), d(self.frag_ts),
                    self.frag_timeout, d(self.pkt_hash), d(self.frag_stats))

    def take_status_counts(self, sync) -> np.ndarray:
        counts = np.asarray(sync(self.status_counts), dtype=np.int64).copy()
        self.status_counts[:] = 0
        return counts

    @property
    def fragment_stats(self) -> dict[str, int]:
        s = self.frag_stats.get() if hasattr(self.frag_stats, "get") else self.frag_stats
        return {"resolved": int(s[0]), "unresolved": int(s[1]), "overwritten": int(s[2])}


class DeviceWalker:
    """The sequential walk of unsettled segments: one CUDA thread per segment."""

    def __init__(self, decoder: DeviceDecoder):
        self.decoder = decoder

    def __call__(self, cols, segs, likely, cfg, walk, res):
        dec = self.decoder
        d = dec.dev
        dec.launch(dec.k.walk, int(segs.lo.shape[0]), dec.devs(cols), dec.devs(segs), d(likely), d(cfg),
                   dec.devs(walk), dec.devs(res))


class DeviceScan:
    """Segmented scans as a fixed number of kernel launches (:mod:`kernels.chunk_scan`): nine per
    scan instead of some 160 array operations."""

    def __init__(self, decoder: DeviceDecoder):
        self.decoder = decoder

    def __call__(self, values, heads, op: str):
        xp = self.decoder.xp
        return chunk_scan.scan_levels(xp, self, xp.ascontiguousarray(values),
                                      xp.ascontiguousarray(heads, dtype=bool), chunk_scan.OP_CODES[op])

    def chunks(self, values, heads, n, op, part):
        dec, d = self.decoder, self.decoder.dev
        dec.launch(dec.k.scan_chunks, part.tot_v.shape[0], d(values), d(heads), n, op, dec.devs(part))

    def carry(self, out, carry, first, n, op):
        dec, d = self.decoder, self.decoder.dev
        dec.launch(dec.k.scan_carry, first.shape[0], d(out), d(carry), d(first), n, op)


class KernelXp:
    """The array library with the GPU's own segmented scan (``kernels.seg_scan.scan`` uses it)."""

    def __init__(self, xp, scan: DeviceScan):
        self._xp = xp
        self.segmented_scan = scan

    def __getattr__(self, name):
        return getattr(self._xp, name)


class DeviceRecords:
    """Flow records finished on the device (:meth:`RecordBuilder.build` calls :meth:`finalize`
    for flows emitted here): one thread per record, the CPU's ``record_row``; text packed by a
    prefix sum of its lengths; the columns come back in one copy per drain.

    A flows job may build records on its sink thread: the kernels then run there, on the same
    (default) stream, and the step clock's counts are only exact in a profiled run on one
    thread (``benchmarks/gpu_flows.py``)."""

    def __init__(self, decoder: DeviceDecoder):
        self.decoder = decoder
        self.xp = decoder.xp

    def finalize(self, em: EmittedFlows, cid_seed: int) -> tuple[kfr.Oriented, HostText]:
        dec, xp, d = self.decoder, self.xp, self.decoder.dev
        n = len(em)
        width = kfr.IP_TEXT_MAX
        with dec.clock.stage("records"):
            ori = oriented(xp, n)
            text = kfr.Text(xp.empty(max(1, n * width), xp.uint8), xp.empty(max(1, n * width), xp.uint8),
                            xp.empty(max(1, n * kfr.UID_LEN), xp.uint8), xp.empty(max(1, n * kfr.CID_LEN), xp.uint8))
            lens = xp.empty((2, n), xp.int64)  # each address's length: originator, responder
            dec.launch(dec.k.finalize_rows, n, dec.devs(kfr.Rows(em.keys, em.st, em.hist)), n, int(cid_seed),
                       dec.devs(ori), dec.devs(text), d(lens))
            packed = [kfr.pack_slots(xp, slots, used) for slots, used in (
                (text.oh[:n * width].reshape(n, width), lens[0]), (text.rh[:n * width].reshape(n, width), lens[1]),
                (em.hist, em.st[:, fsd.HIST_N]))]
        with dec.clock.stage("copy_out"):
            (oh, oh_off), (rh, rh_off), (hist, hist_off) = packed
            got = [_some(a) for a in to_host(xp, [oh, oh_off, rh, rh_off, hist, hist_off, text.uid, text.cid])]
            return ori, HostText((got[0], got[1]), (got[2], got[3]), (got[4], got[5]), got[6], got[7])


def _some(a: np.ndarray) -> np.ndarray:
    """Arrow's buffers want at least one byte."""
    return a if a.size else np.zeros(1, a.dtype)


class GpuFlowEngine(ScanFlowEngine):
    """The data-parallel engine with its columns on the device."""

    def __init__(self, cfg: FlowConfig, backend: Backend, profile: bool = False, scan_kernels: bool | None = None):
        """``scan_kernels``: segmented scans as kernels (default on a GPU; the simulator runs the
        array version unless asked, its threads being slow)."""
        self.backend = backend
        super().__init__(cfg, backend.xp, profile=profile)
        if scan_kernels if scan_kernels is not None else (not backend.simulated or SIMULATOR_SCAN_KERNELS):
            self.table.xp = KernelXp(backend.xp, DeviceScan(self.decoder))
        self.table.walker = DeviceWalker(self.decoder)
        self.records = DeviceRecords(self.decoder)
        log.info("flow accounting on the %s (%s) as sorts and scans, flow records finished there",
                 "CUDA simulator" if backend.simulated else "GPU", backend.device)

    def _decoder(self):
        from kernels.cuda_kernels import kernels

        return DeviceDecoder(self.cfg, self.backend, kernels(), self.clock)

    def _emitted(self, cat: list) -> EmittedFlows:
        """Ended flows stay on the device, as record rows; the record builder finishes them there."""
        xp = self.xp
        return EmittedFlows(*(xp.ascontiguousarray(a.T) if a.ndim == 2 else a for a in cat), device=self.records)

    def payload_signatures(self, n: int):
        """Per packet of the last batch, on the device: what its payload starts like and its flow
        id (``kernels.l7_select.classify_one``), so that only the packets the L7 tap may read
        come back to the host."""
        dec, xp, d = self.decoder, self.xp, self.decoder.dev
        sig, fid = xp.zeros(n, xp.uint8), xp.empty(n, xp.uint64)
        if n == 0 or dec.batch_bytes is None:
            return sig
        buf, off = dec.batch_bytes
        with self.clock.stage("tap"):
            dec.launch(dec.k.classify, n, d(buf), d(off), dec.devs(dec.cols), n, d(sig), d(fid))
        return sig

    def _counted(self) -> None:
        self.counts.by_status += self.decoder.take_status_counts(self._sync)

    @property
    def h2d_bytes(self) -> int:
        return self.decoder.h2d_bytes


__all__ = ["GpuFlowEngine"]
