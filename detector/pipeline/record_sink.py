"""RecordSink: ended flows -> flow records -> writer (and summary), optionally on its own thread.

Building records and writing Parquet cost about a fifth of ingest. With a background thread they
overlap with decoding on another core; the bounded queue holds the reader back (backpressure)
when the writer cannot keep up.
"""

from __future__ import annotations

import queue
import threading

from detector.flows.records import RecordBuilder
from detector.flows.table import EmittedFlows

_STOP = object()


class RecordSink:
    def __init__(self, builder: RecordBuilder, writer, summary=None, background: bool = False, depth: int = 4,
                 services=None):
        self.builder = builder
        self.services = services  # a ServiceNames that names the records' service
        self.writer = writer
        self.summary = summary
        self._error: BaseException | None = None
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._loop, name="record-sink", daemon=True)
            self._thread.start()

    def _write(self, em: EmittedFlows) -> None:
        rb = self.builder.build(em)
        if self.services is not None:
            rb = self.services.fill(rb)[0]
        self.writer.write(rb)
        if self.summary is not None:
            self.summary.add(rb)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is None:
                try:
                    self._write(item)
                except BaseException as exc:  # handed to the caller on its next put() or close()
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def put(self, em: EmittedFlows) -> None:
        self._raise()
        if self._queue is None:
            self._write(em)
        else:
            self._queue.put(em)

    def close(self) -> None:
        """Wait for everything queued to be written; re-raise a writing error."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._raise()
