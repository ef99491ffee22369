"""Reading on a thread of its own: the next batch is located while the current one is decoded.

Walking the records of a batch (and taking the page faults of its mapped bytes) is about a
tenth of ingest on one core, and the one part of it that no flow thread shares. A reader
thread takes it off the path of the flow threads wherever another core is free. Only sources
whose bytes stay put (:attr:`ByteSource.stable`, i.e. mapped files) can be read ahead:
refilling a streamed window would move bytes a batch handed out still points into.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

from detector.sources.batch import RawBatch

_END = object()


def can_read_ahead(reader) -> bool:
    return bool(getattr(reader.src, "stable", False)) and hasattr(reader, "records_ring")


def read_ahead(reader, depth: int = 1) -> Iterator[RawBatch]:
    """``reader.batches()``, produced on a reader thread up to ``depth`` batches ahead of the
    consumer. Batches, then the reader's error if it fails, arrive in the order the reader
    produced them. Closing this generator (or leaving the loop) stops and joins the thread, so
    the caller may close the reader's source afterwards."""
    # in use at once: the consumer's batch, ``depth`` queued, and the one being scanned
    reader.records_ring.grow(depth + 2)
    reader.src.hold(depth + 1)
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        batches = reader.batches()
        try:
            for batch in batches:
                if not put(batch):
                    return
            put(_END)
        except BaseException as exc:  # re-raised on the consumer's side, in order
            put(exc)
        finally:
            batches.close()

    thread = threading.Thread(target=produce, name="read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        _join(thread)


def _join(thread: threading.Thread) -> None:
    """Wait for the reader thread, even through a second Ctrl-C (re-raised once it is gone):
    its source may be closed only after it stopped reading."""
    interrupted = None
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
