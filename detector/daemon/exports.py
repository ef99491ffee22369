"""Flow exports in the daemon: the collector's messages decoded in bulk at every poll, their
records fed to the detectors as flow records, and what was dropped exported as metrics."""

from __future__ import annotations

import logging
import re
import time
from collections import Counter

from detector.errors import ConfigError
from detector.exports.collector import Collector
from detector.exports.decode import Decoder
from detector.exports.records import flow_batch

log = logging.getLogger("detector.exports")


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
        """Decode what arrived; returns the flow records fed. Whatever an exporter sends, the
        daemon goes on: a failure here is counted and logged, never raised."""
        try:
            return self._poll(stages)
        except Exception as exc:  # noqa: BLE001 (one odd datagram must not stop the daemon)
            self.decoder = Decoder()  # its state may be what failed: start afresh (templates come again)
            self._reported = Counter({k: v for k, v in self._reported.items() if k[0] != "decoder"})
            self.metrics.export_drops.labels("decoder failure").inc()
            log.error("flow exports: %s: %s (the decoder starts afresh)", type(exc).__name__, exc)
            return 0

    def _poll(self, stages) -> int:
        now = time.time_ns()
        for data, session, arrived, stream in self.collector.drain():
            self.decoder.feed(data, session, arrived, stream)
        cols = self.decoder.take(now)
        n = 0
        if cols is not None and len(cols):
            rb = flow_batch(cols, self.decoder.exporters, self.decoder.run)
            # seen by the detectors, not sent on as IPFIX again (they came as exports)
            stages.flows_seen += rb.num_rows
            stages.feed_flow_batch(rb)
            n = rb.num_rows
            self.metrics.export_records.inc(len(cols))
        self._count()
        return n

    def _count(self) -> None:
        for origin, counts in (("decoder", self.decoder.counts), ("collector", self.collector.counted())):
            for why, total in counts.items():
                new = total - self._reported[(origin, why)]
                if why.startswith("dropped") and new > 0:
                    # "version 7", "set id 4": one label for each kind, not one per number seen
                    self.metrics.export_drops.labels(re.sub(r"\d+", "N", why.removeprefix("dropped: "))).inc(new)
                    self._reported[(origin, why)] = total
