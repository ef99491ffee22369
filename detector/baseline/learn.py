"""What the analysis pipeline feeds the site model: host windows and the bytes each host sends
to each external destination per window. One detector-shaped collector serves both training
(``detector train``) and scoring (the ``host_anomaly`` detector of ``analyze --model``)."""

from __future__ import annotations

import numpy as np

from detector.baseline.windows import HostWindows
from detector.detect.base import Detector, FlowView

MAX_PAIR_WINDOWS = 1_000_000


class WindowCollector(Detector):
    """Collects host windows and per-window outbound bytes per (host, external destination);
    raises nothing."""

    name = "window_collector"
    version = "1"

    def __init__(self, params=None, site=None, window_s: float = 600.0, rare_flows=None):
        super().__init__(params, site)
        self.window_ns = int(window_s * 1e9)
        self.windows = HostWindows(self.site, window_s, rare_flows=rare_flows)
        self.pair_bytes: dict[tuple[str, str, int], float] = {}

    def observe_flows(self, f: FlowView) -> None:
        self.windows.observe(f)
        site = self.site
        rows = np.flatnonzero(f.member("orig_h", site.local) & ~f.member("resp_h", site.local)
                              & ~f.member("resp_h", site.multicast) & (f["orig_bytes"] > 0))
        if not len(rows):
            return
        pairs = self.pair_bytes
        window = (f["ts"][rows] // self.window_ns).tolist()
        for src, dst, w, b in zip(f.take("orig_h", rows), f.take("resp_h", rows), window,
                                  f.take("orig_bytes", rows)):
            key = (src, dst, w)
            if key in pairs or len(pairs) < MAX_PAIR_WINDOWS:
                pairs[key] = pairs.get(key, 0.0) + b

    def observe_events(self, events) -> None:
        self.windows.observe_dns(events.dns)

    def destinations(self) -> dict[tuple[str, str], float]:
        """The most bytes each host sent each external destination in one window."""
        out: dict[tuple[str, str], float] = {}
        for (src, dst, _), b in self.pair_bytes.items():
            if b > out.get((src, dst), 0.0):
                out[(src, dst)] = b
        return out
