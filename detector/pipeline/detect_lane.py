"""The detectors' side of the pipeline on a thread of its own: while the flow engine and the L7
tap work on the next batch, the detectors take in the flows and events of the last one.

Work runs in the order it was handed over, on one thread, so the detectors see exactly what
they would see inline; a bounded queue holds the main thread back when detection falls behind
(memory stays bounded). Anything that reads the detectors (a report, the evictions, a model's
pins) waits first for the work handed over (:meth:`DetectLane.drain`). An error in a detector
is raised on the main thread at the next hand-over or wait, and at every one after it: later
work is skipped, since it would meet a half-updated state.

Flow accounting's kernels and NumPy's large operations release the GIL, and the detectors are
mostly array programs now, so the two sides overlap on two cores.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

DEPTH = 1  # batches handed over and not yet taken in, at most (a flood's drains are large: each queued one is held)


class DetectLane:
    """Runs the callables handed to :meth:`submit` in order: on a worker thread when
    ``threaded``, else at once on the caller's."""

    def __init__(self, threaded: bool):
        self.threaded = threaded
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, fn: Callable, *args) -> None:
        if not self.threaded:
            fn(*args)
            return
        self._raise()
        if self._thread is None:
            self._queue = queue.Queue(DEPTH)
            self._thread = threading.Thread(target=self._run, name="detector-detect", daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait until all the work handed over is done; raise what it raised."""
        if self._queue is not None:
            self._queue.join()
        self._raise()

    def close(self) -> None:
        """Wait for the work handed over, then end the worker thread (raising no error: that
        was raised at a hand-over or wait, or the run is ending on another)."""
        if self._thread is not None:
            self._queue.join()
            self._queue.put(None)
            self._thread.join()
            self._thread = self._queue = None

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                if self._error is None:  # after an error, later work would see a half-updated state
                    fn, args = item
                    fn(*args)
            except BaseException as exc:  # handed to the main thread, which decides
                self._error = exc
            finally:
                self._queue.task_done()
