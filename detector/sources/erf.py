"""Endace ERF files (:mod:`kernels.erf_scan`). ERF has no magic number: a file is taken as ERF
when its first records read as ERF records (known types, lengths that chain, timestamps in
order), as Wireshark and libtrace decide."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from detector.errors import CaptureError
from detector.sources.batch import RawBatch, RecordRing
from detector.sources.bytesource import ByteSource, refill_or_end
from kernels import capture_scan as cs
from kernels import erf_scan as es

CHECKED = 3  # records that must read as ERF (fewer when the file holds fewer)
KNOWN_TYPES = frozenset({*range(1, 26), es.TYPE_PAD})
YEAR_2100 = 4_102_444_800


def looks_like_erf(src: ByteSource) -> bool:
    """Whether the file starts with up to :data:`CHECKED` plausible ERF records."""
    pos, last, seen = 0, 0, 0
    while seen < CHECKED:
        at = src.ensure(pos, 16)
        if at < 0:
            return seen > 0 and src.eof
        head = bytes(src.buf[at:at + 16])
        seconds = struct.unpack_from("<Q", head)[0] >> 32
        typ, _, rlen, _, _ = struct.unpack_from(">BBHHH", head, 8)
        if (typ & 0x7F) not in KNOWN_TYPES or rlen < 16 or not 0 < seconds < YEAR_2100 or seconds < last:
            return False
        last, pos, seen = seconds, pos + rlen, seen + 1
    return True


class ErfReader:
    format = "erf"

    def __init__(self, src: ByteSource, batch_size: int):
        self.src = src
        self.path = src.path
        self.walk_plan = None
        self.walk_stats = None
        self.records_ring = RecordRing(batch_size)
        self.records = 0
        self.undecoded = 0  # records of ERF types the decoder does not read (ATM, InfiniBand, ...)

    def batches(self) -> Iterator[RawBatch]:
        src, rec = self.src, self.records_ring.current
        pos = 0
        while True:
            start = pos
            n, pos, code, _ = es.walk_erf(src.buf, pos, (cs.NO_STOP, src.end), rec.columns, 0, rec.capacity)
            if n:
                self.records += n
                self.undecoded += int(np.count_nonzero(rec.link[:n] == es.UNDECODED))
                yield rec.batch(src.buf, n, self.path, src.base + start)
                src.release(pos)
                rec = self.records_ring.handed_out()
            if code == cs.SCAN_FULL:
                continue
            if code == cs.SCAN_NEED_MORE:
                pos = refill_or_end(src, self.path, pos)
                if pos is None:
                    return
                continue
            raise CaptureError(self.path, src.base + pos, es.ERROR_TEXT[code])
