"""Flow exports in the daemon: the collector's messages decoded in bulk at every poll, their
records fed to the detectors as flow records, and what was dropped exported as metrics."""

from __future__ import annotations

import re
import time
from collections import Counter

from detector.errors import ConfigError
from detector.exports.collector import Collector
from detector.exports.decode import Decoder
from detector.exports.records import flow_batch


class ExportInput:
    def __init__(self, d, metrics):
        try:
            self.collector = Collector(list(d.flow_listen), d.flow_queue_mb << 20)
        except OSError as exc:
            raise ConfigError(str(exc), None, "daemon.flow_listen") from None
        self.decoder = Decoder()
        self.metrics = metrics
        self._reported: Counter = Counter()

    def poll(self, stages) -> int:
        """Decode what arrived; returns the flow records fed."""
        now = time.time_ns()
        for data, peer, arrived in self.collector.drain():
            self.decoder.feed(data, peer, arrived)
        cols = self.decoder.take(now)
        n = 0
        if cols is not None and len(cols):
            rb = flow_batch(cols, self.decoder.exporters)
            stages.feed_records(rb)
            n = rb.num_rows
            self.metrics.export_records.inc(len(cols))
        self._count()
        return n

    def _count(self) -> None:
        drops = Counter({k: v for k, v in self.decoder.counts.items() if k.startswith("dropped")})
        drops.update({k: v for k, v in self.collector.counts.items() if k.startswith("dropped")})
        for why, total in drops.items():
            new = total - self._reported[why]
            if new > 0:
                # "version 7", "set id 4": one label for each kind, not one per number seen
                self.metrics.export_drops.labels(re.sub(r"\d+", "N", why.removeprefix("dropped: "))).inc(new)
                self._reported[why] = total
