"""Where a batch's time goes, step by step, and how often it launches and waits.

The flow engines time their steps (copy, decode, sort, scans, merge, ...) through one
:class:`StageClock`. With ``sync`` (a function that waits for the device) the clock waits
before and after each step, so device time lands in the right step: for benchmarks only, as
the waits themselves cost time. Without it, only the host's time is seen.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


class StageClock:
    def __init__(self, sync=None):
        self.sync = sync
        self.seconds: dict[str, float] = {}
        self.launches = 0  # kernel launches by the engine's own kernels (not the array library's)

    @contextmanager
    def stage(self, name: str):
        if self.sync is None:
            yield
            return
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def shares(self) -> dict[str, float]:
        total = sum(self.seconds.values())
        return {k: round(v / total, 4) for k, v in self.seconds.items()} if total else {}


NO_CLOCK = StageClock()
