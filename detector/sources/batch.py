"""RawBatch: captured records located in a byte buffer, before decoding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RawBatch:
    """``n`` records; record ``i`` is ``buf[off[i] : off[i] + caplen[i]]``.

    The arrays are views into buffers the reader reuses: a batch is valid until the reader
    is asked for the next one.
    """

    buf: np.ndarray  # uint8
    off: np.ndarray  # int64
    caplen: np.ndarray  # uint32
    wirelen: np.ndarray  # uint32
    ts_ns: np.ndarray  # int64
    link: np.ndarray  # uint16
    path: str
    file_offset: int  # file offset of the first record's header, for messages

    @property
    def n(self) -> int:
        return len(self.off)


class RecordArrays:
    """Reusable per-record arrays, sized once per reader.

    ``head`` holds where each record's header starts (``off`` is where its packet starts): a
    walk split over threads resumes from there. ``columns`` is the tuple the record walkers
    (:mod:`kernels.capture_scan`) fill, made once so that a call does not type it anew.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.off = np.empty(capacity, dtype=np.int64)
        self.caplen = np.empty(capacity, dtype=np.uint32)
        self.wirelen = np.empty(capacity, dtype=np.uint32)
        self.ts_ns = np.empty(capacity, dtype=np.int64)
        self.link = np.empty(capacity, dtype=np.uint16)
        self.head = np.empty(capacity, dtype=np.int64)
        self.columns = (self.off, self.caplen, self.wirelen, self.ts_ns, self.link, self.head)

    def batch(self, buf: np.ndarray, n: int, path: str, file_offset: int) -> RawBatch:
        return RawBatch(buf, self.off[:n], self.caplen[:n], self.wirelen[:n], self.ts_ns[:n],
                        self.link[:n], path, file_offset)


class RecordRing:
    """The per-record arrays of a reader's batches, used in turn.

    One set is enough while each batch is consumed before the next is read. A reader that runs
    ahead of its consumer (:func:`detector.sources.read_ahead.read_ahead`) needs one more set
    per batch it may have handed out and not yet seen consumed, so that none is overwritten
    while in use.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._sets = [RecordArrays(capacity)]
        self._i = 0

    def grow(self, count: int) -> None:
        while len(self._sets) < count:
            self._sets.append(RecordArrays(self.capacity))

    @property
    def current(self) -> RecordArrays:
        """The set the next batch is scanned into (a scan that finds no record may reuse it)."""
        return self._sets[self._i]

    def handed_out(self) -> RecordArrays:
        """The current set now backs a batch in use: move on to the next one."""
        self._i = (self._i + 1) % len(self._sets)
        return self._sets[self._i]
