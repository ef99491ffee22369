"""pcapng files: several sections (each with its own byte order) and several interfaces
(each with its own link type, snap length, timestamp resolution and offset).

Packet blocks (EPB, SPB and the obsolete PB) are walked by a compiled kernel; section and
interface blocks are parsed here; every other block type is skipped after its length and
trailer are checked.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from detector.errors import CaptureError
from detector.sources import linktypes
from detector.sources.batch import RawBatch, RecordRing
from detector.sources.bytesource import MAX_WINDOW, ByteSource, refill_or_end
from detector.sources.parallel_walk import WalkPlan, walked_batches
from kernels import capture_resync as rs
from kernels import capture_scan as cs

SHB = 0x0A0D0D0A
IDB = 0x00000001
BOM = 0x1A2B3C4D
OPT_END = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14


@dataclass(frozen=True)
class Interface:
    link_type: int
    snaplen: int
    ts_kind: int
    ts_factor: int
    ts_offset_ns: int


def _ts_conversion(tsresol: int) -> tuple[int, int]:
    """(kind, factor) turning timestamp units of ``if_tsresol`` into nanoseconds."""
    if tsresol & 0x80:
        return cs.TS_POW2, tsresol & 0x7F
    if tsresol <= 9:
        return cs.TS_MUL, 10 ** (9 - tsresol)
    return cs.TS_DIV, 10 ** (tsresol - 9)


class PcapngRecords:
    """What the record walk (:mod:`~detector.sources.parallel_walk`) needs of a pcapng section:
    its byte order and interfaces, as they stand at the packet blocks walked."""

    align = 4  # every block is a multiple of 4 bytes long

    def __init__(self, little: bool, n_if: int, ifs: tuple):
        self.little, self.n_if, self.ifs = little, n_if, ifs

    def walk(self, buf, pos, bounds, last_ts, out, first, limit):
        return cs.walk_pcapng(buf, pos, bounds, (self.little, self.n_if, last_ts), self.ifs, out, first, limit)

    def resync(self, buf, start, bounds, known):
        return rs.resync_pcapng(buf, start, bounds, (self.little, self.n_if, 0), known)


class PcapngReader:
    """Reads records from a :class:`ByteSource` holding a pcapng file; ``walk`` says whether a
    large mapped file is walked on several threads."""

    format = "pcapng"

    def __init__(self, src: ByteSource, batch_size: int, walk: WalkPlan | None = None):
        self.src = src
        self.walk_plan = walk
        self.walk_stats = None
        self.path = src.path
        self.little = True
        self.sections = 0
        self._ifaces: list[Interface] = []
        self._arrays = None
        self._pos = 0
        self.records_ring = RecordRing(batch_size)
        self._last_ts = 0
        self.records = 0
        self.unsupported: dict[int, int] = {}  # link type -> interface count, for the summary
        pos = src.ensure(0, 12)
        if pos < 0:
            src.raise_pending()
            raise CaptureError(self.path, 0, "file ends inside the first pcapng block header")
        if struct.unpack("<I", bytes(src.buf[pos:pos + 4]))[0] != SHB:
            raise CaptureError(self.path, 0, "bad magic: a pcapng file must start with a Section Header Block")

    @property
    def interfaces(self) -> dict[int, int]:
        return {i: f.link_type for i, f in enumerate(self._ifaces)}

    def _u32(self, pos: int) -> int:
        b = bytes(self.src.buf[pos:pos + 4])
        return struct.unpack("<I" if self.little else ">I", b)[0]

    def _block(self, pos: int) -> tuple[int, int, int]:
        """Make the whole block at ``pos`` available. Returns ``(pos, type, length)``."""
        src = self.src
        btype, blen = self._u32(pos), self._u32(pos + 4)
        if blen < 12 or blen % 4:
            raise CaptureError(self.path, src.base + pos, cs.ERROR_TEXT[cs.ERR_BLOCK_LEN] + f" (length {blen})")
        if blen > MAX_WINDOW:
            raise CaptureError(self.path, src.base + pos, f"block length {blen} is absurd (corrupt block)")
        start = src.base + pos
        pos = src.ensure(pos, blen)
        if pos < 0:
            src.raise_pending()
            raise CaptureError(self.path, start, f"truncated final block: the file ends inside a {blen}-byte block "
                               f"(the capture was cut short)")
        if self._u32(pos + blen - 4) != blen:
            raise CaptureError(self.path, src.base + pos, cs.ERROR_TEXT[cs.ERR_BLOCK_TRAILER])
        return pos, btype, blen

    def _section(self, pos: int) -> int:
        src = self.src
        start = src.base + pos
        pos = src.ensure(pos, 12)
        if pos < 0:
            raise CaptureError(self.path, start, "truncated Section Header Block")
        bom_le = struct.unpack("<I", bytes(src.buf[pos + 8:pos + 12]))[0]
        if bom_le == BOM:
            self.little = True
        elif struct.unpack(">I", bytes(src.buf[pos + 8:pos + 12]))[0] == BOM:
            self.little = False
        else:
            raise CaptureError(self.path, start, "Section Header Block has a bad byte-order magic")
        pos, _, blen = self._block(pos)
        if blen < 28:
            raise CaptureError(self.path, start, "Section Header Block is too short")
        major = struct.unpack("<H" if self.little else ">H", bytes(src.buf[pos + 12:pos + 14]))[0]
        if major != 1:
            raise CaptureError(self.path, start, f"pcapng major version {major} is not supported")
        self.sections += 1
        self._ifaces = []
        self._arrays = None
        return pos + blen

    def _interface(self, pos: int) -> int:
        src = self.src
        pos, _, blen = self._block(pos)
        if blen < 20:
            raise CaptureError(self.path, src.base + pos, "Interface Description Block is too short")
        order = "<" if self.little else ">"
        link_type, _, snaplen = struct.unpack(order + "HHI", bytes(src.buf[pos + 8:pos + 16]))
        tsresol, offset_s = 6, 0
        o, stop = pos + 16, pos + blen - 4
        while o + 4 <= stop:
            code, olen = struct.unpack(order + "HH", bytes(src.buf[o:o + 4]))
            if code == OPT_END:
                break
            if o + 4 + olen > stop:
                raise CaptureError(self.path, src.base + o, "interface option runs past the end of its block")
            value = bytes(src.buf[o + 4:o + 4 + olen])
            if code == OPT_IF_TSRESOL and olen >= 1:
                tsresol = value[0]
            elif code == OPT_IF_TSOFFSET and olen >= 8:
                offset_s = struct.unpack(order + "q", value[:8])[0]
            o += 4 + ((olen + 3) & ~3)
        if (tsresol & 0x80 and (tsresol & 0x7F) > 62) or (not tsresol & 0x80 and tsresol > 18):
            raise CaptureError(self.path, src.base + pos, f"if_tsresol {tsresol} is out of range")
        kind, factor = _ts_conversion(tsresol)
        if not linktypes.is_supported(link_type):
            self.unsupported[link_type] = self.unsupported.get(link_type, 0) + 1
        self._ifaces.append(Interface(link_type, snaplen, kind, factor, offset_s * 1_000_000_000))
        self._arrays = None
        return pos + blen

    def _interface_arrays(self):
        if self._arrays is None:
            f = self._ifaces
            self._arrays = (
                np.array([i.link_type for i in f] or [0], dtype=np.uint16),
                np.array([i.snaplen for i in f] or [0], dtype=np.int64),
                np.array([i.ts_kind for i in f] or [0], dtype=np.int64),
                np.array([i.ts_factor for i in f] or [1], dtype=np.int64),
                np.array([i.ts_offset_ns for i in f] or [0], dtype=np.int64),
            )
        return self._arrays

    def batches(self) -> Iterator[RawBatch]:
        return walked_batches(self)

    def _batches(self, walk) -> Iterator[RawBatch]:
        src, rec = self.src, self.records_ring.current
        pos = self._pos
        while True:
            if pos + 12 > src.end:
                pos = refill_or_end(src, self.path, pos, "block", "its header")
                if pos is None:
                    return
                continue
            btype = self._u32(pos)
            if btype == SHB or (self.sections == 0):
                if btype != SHB:
                    raise CaptureError(self.path, src.base + pos, "first block is not a Section Header Block")
                pos = self._section(pos)
                continue
            if btype == IDB:
                pos = self._interface(pos)
                continue
            if btype not in (2, 3, 6):
                pos, _, blen = self._block(pos)
                pos += blen
                continue
            records = PcapngRecords(self.little, len(self._ifaces), self._interface_arrays())
            start = pos
            n, pos, code = walk.scan(records, src.buf, pos, src.end, rec, self._last_ts)
            if n:
                self._last_ts = int(rec.ts_ns[n - 1])
                self.records += n
                yield rec.batch(src.buf, n, self.path, src.base + start)
                src.release(pos)
                rec = self.records_ring.handed_out()
            if code in (cs.SCAN_FULL, cs.SCAN_OTHER_BLOCK):
                continue
            if code == cs.SCAN_NEED_MORE:
                if not src.eof:
                    pos = src.refill(pos)
                elif pos + 12 <= src.end:
                    self._block(pos)  # raises: the block is cut short
                continue
            if code == cs.ERR_BLOCK_LEN:
                self._block(pos)  # raises, with the length in the message
            raise CaptureError(self.path, src.base + pos, cs.ERROR_TEXT[code])
