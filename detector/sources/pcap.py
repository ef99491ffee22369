"""Classic libpcap files: microsecond or nanosecond timestamps, either byte order."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from detector.errors import CaptureError
from detector.sources import linktypes
from detector.sources.batch import RawBatch, RecordRing
from detector.sources.bytesource import ByteSource
from detector.sources.parallel_walk import WalkPlan, record_batches, walked_batches
from kernels import capture_resync as rs
from kernels import capture_scan as cs

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
MAGIC_KUZNETZOV = 0xA1B2CD34
HEADER_LEN = 24
ABSURD_CAPLEN = 256 << 10  # above any snap length tcpdump, dumpcap or libpcap will write


class PcapRecords:
    """What the record walk (:mod:`~detector.sources.parallel_walk`) needs of a classic pcap file."""

    align = 1  # records are packed back to back: one may start at any byte

    def __init__(self, little: bool, ts_mult: int, max_caplen: int):
        self.fmt = (little, ts_mult, max_caplen)

    def walk(self, buf, pos, bounds, last_ts, out, first, limit):
        return cs.walk_pcap(buf, pos, bounds, self.fmt, out, first, limit)

    def resync(self, buf, start, bounds, known):
        return rs.resync_pcap(buf, start, bounds, self.fmt, known)


class PcapReader:
    """Reads records from a :class:`ByteSource` holding a classic pcap file; ``walk`` says
    whether a large mapped file is walked on several threads."""

    format = "pcap"

    def __init__(self, src: ByteSource, batch_size: int, walk: WalkPlan | None = None):
        self.src = src
        self.walk_plan = walk
        self.walk_stats = None
        self.path = src.path
        pos = src.ensure(0, HEADER_LEN)
        if pos < 0:
            src.raise_pending()
            raise CaptureError(self.path, 0, f"file ends inside the {HEADER_LEN}-byte pcap header")
        head = bytes(src.buf[pos:pos + HEADER_LEN])
        (magic_le,) = struct.unpack("<I", head[:4])
        (magic_be,) = struct.unpack(">I", head[:4])
        if magic_le in (MAGIC_US, MAGIC_NS):
            self.little, magic = True, magic_le
        elif magic_be in (MAGIC_US, MAGIC_NS):
            self.little, magic = False, magic_be
        elif MAGIC_KUZNETZOV in (magic_le, magic_be):
            raise CaptureError(self.path, 0, "Kuznetzov's modified pcap format is not supported; "
                               "convert it with 'editcap -F pcap'")
        else:
            raise CaptureError(self.path, 0, f"bad magic 0x{magic_be:08x}: not a pcap file")
        self.nanosecond = magic == MAGIC_NS
        order = "<" if self.little else ">"
        _, _, _, _, snaplen, network = struct.unpack(order + "HHiIII", head[4:])
        # the upper bits of the link-type field carry FCS information, not the type
        self.link_type = network & 0xFFFF
        if not linktypes.is_supported(self.link_type):
            raise CaptureError(self.path, 20, linktypes.unsupported_message(self.link_type))
        self.snaplen = snaplen
        # the snap length is advisory: libpcap reads records up to its own limit whatever the
        # header says (a merged or rewritten capture may exceed it); those are counted
        self.max_caplen = max(snaplen, ABSURD_CAPLEN) if 0 < snaplen <= (16 << 20) else ABSURD_CAPLEN
        self.over_snaplen = 0
        self.interfaces = {0: self.link_type}
        self._pos = pos + HEADER_LEN
        self.records_ring = RecordRing(batch_size)
        self.records = 0

    def batches(self) -> Iterator[RawBatch]:
        return walked_batches(self)

    def _batches(self, walk) -> Iterator[RawBatch]:
        records = PcapRecords(self.little, 1 if self.nanosecond else 1000, self.max_caplen)
        return record_batches(self, walk, records, self._pos)

    def counted(self, rec, n: int) -> None:
        rec.link[:n] = self.link_type
        if 0 < self.snaplen < self.max_caplen:
            self.over_snaplen += int(np.count_nonzero(rec.caplen[:n] > self.snaplen))

    def error_detail(self, code: int, pos: int) -> str:
        if code != cs.ERR_CAPLEN:
            return cs.ERROR_TEXT[code]
        src = self.src
        incl = int(np.frombuffer(bytes(src.buf[pos + 8:pos + 12]), dtype="<u4" if self.little else ">u4")[0])
        return (f"record claims {incl} captured bytes, above {self.max_caplen} (the snap length, or "
                f"libpcap's limit): corrupt record header")
