"""Ingest: every input, in order, as record batches; unreadable parts are reported, not fatal.

A capture that fails part-way yields everything before the fault, then its error is recorded
and the next input is read. The caller decides the exit status from :attr:`Ingest.errors`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from detector.errors import CaptureError
from detector.sources import expand_inputs, linktypes, open_capture
from detector.sources.batch import RawBatch
from detector.sources.parallel_walk import WalkPlan
from detector.sources.read_ahead import can_read_ahead, read_ahead


@dataclass
class InputStatus:
    path: str
    format: str = "?"
    records: int = 0
    error: CaptureError | None = None
    warnings: list[str] = field(default_factory=list)


def file_size(path: str) -> int:
    """The size of ``path``, 0 when it cannot be read (its reader will say why)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


class InputLog:
    """What became of each input: the errors, and whether anything at all could be read."""

    def __init__(self):
        self.inputs: list[InputStatus] = []

    @property
    def errors(self) -> list[CaptureError]:
        return [s.error for s in self.inputs if s.error is not None]

    @property
    def unusable(self) -> bool:
        """True when nothing at all could be read."""
        return all(s.records == 0 and s.error is not None for s in self.inputs) and bool(self.inputs)


class Ingest(InputLog):
    """``read_ahead``: read mapped files on a thread of their own (:mod:`~detector.sources.read_ahead`);
    ``walk``: locate the records of large mapped files on threads (:mod:`~detector.sources.parallel_walk`)."""

    def __init__(self, paths: list[str], batch_size: int, read_ahead: bool = False, walk: WalkPlan | None = None):
        super().__init__()
        self.files = expand_inputs(paths)
        self.batch_size = batch_size
        self.read_ahead = read_ahead
        self.walk = walk
        self._current = None
        self._done_bytes = 0

    def total_bytes(self) -> int:
        return sum(file_size(f) for f in self.files if f != "-")

    def done_bytes(self) -> int:
        cur = self._current.src.consumed() if self._current is not None else 0
        return self._done_bytes + cur

    def batches(self) -> Iterator[RawBatch]:
        for path in self.files:
            status = InputStatus(path)
            self.inputs.append(status)
            try:
                reader = open_capture(path, self.batch_size, walk=self.walk)
            except CaptureError as exc:
                status.error = exc
                continue
            status.format = reader.format
            self._current = reader
            batches = read_ahead(reader) if self.read_ahead and can_read_ahead(reader) else reader.batches()
            try:
                for batch in batches:
                    status.records += batch.n
                    yield batch
            except CaptureError as exc:
                status.error = exc
            finally:
                batches.close()  # joins a reader thread: before the source closes
                self._current = None
                try:
                    self._done_bytes += os.path.getsize(path) if path != "-" else 0
                except OSError:
                    pass
                reader.src.close()
            status.warnings += reader_warnings(path, reader)


def reader_warnings(path: str, reader) -> list[str]:
    """What a reader read past or skipped: records longer than the snap length, interfaces of
    link types it cannot decode."""
    out = []
    over = getattr(reader, "over_snaplen", 0)
    if over:
        out.append(f"{path}: {over} record(s) captured more bytes than the file's snap length ({reader.snaplen}); "
                   f"read in full, as libpcap does (up to {reader.max_caplen} bytes)")
    undecoded = getattr(reader, "undecoded", 0)
    if undecoded:
        out.append(f"{path}: {undecoded} ERF record(s) of types the decoder does not read (ATM, InfiniBand, "
                   f"multichannel); counted as malformed")
    for lt, count in getattr(reader, "unsupported", {}).items():
        out.append(f"{path}: {count} interface(s) of {linktypes.unsupported_message(lt)}; their packets were skipped")
    return out
