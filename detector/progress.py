"""A one-line progress bar on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total_bytes: int, enabled: bool | None = None, stream=None, interval: float = 0.2):
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total_bytes, 1)
        self.interval = interval
        self._t0 = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done_bytes: int, packets: int, label: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        frac = min(done_bytes / self.total, 1.0)
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        rate = packets / max(now - self._t0, 1e-9)
        text = f"\r[{bar}] {frac * 100:5.1f}%  {packets:,} pkts  {rate / 1e6:.2f} Mpkt/s  {label[-40:]}"
        self.stream.write(text.ljust(100)[:120])
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            self.stream.write("\r" + " " * 120 + "\r")
            self.stream.flush()
