"""Endace ERF files (:mod:`kernels.erf_scan`). ERF has no magic number: a file is taken as ERF
when its first records read as ERF records (known types, lengths that chain, timestamps in
order), as Wireshark and libtrace decide."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

from detector.sources.batch import RawBatch, RecordRing
from detector.sources.bytesource import ByteSource
from detector.sources.parallel_walk import record_batches, walked_batches
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


class ErfRecords:
    """What the record walk needs of an ERF file (walked on the reader's thread only)."""

    align = 8

    def walk(self, buf, pos, bounds, last_ts, out, first, limit):
        return es.walk_erf(buf, pos, bounds, out, first, limit)


class ErfReader:
    format = "erf"

    def __init__(self, src: ByteSource, batch_size: int):
        self.src = src
        self.path = src.path
        self.walk_plan = None  # one walk: records of any length, no header to resynchronise on
        self.walk_stats = None
        self.records_ring = RecordRing(batch_size)
        self.records = 0
        self.undecoded = 0  # records of ERF types the decoder does not read (ATM, InfiniBand, ...)

    def batches(self) -> Iterator[RawBatch]:
        return walked_batches(self)

    def _batches(self, walk) -> Iterator[RawBatch]:
        return record_batches(self, walk, ErfRecords(), 0)

    def counted(self, rec, n: int) -> None:
        self.undecoded += int(np.count_nonzero(rec.link[:n] == es.UNDECODED))

    def error_detail(self, code: int, pos: int) -> str:
        return es.ERROR_TEXT[code]
