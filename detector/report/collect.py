"""What the report shows beyond the alerts, gathered as the analysis runs (a detector that
raises nothing): bytes in and out of each local host per time bucket, bytes per address (top
talkers), and DNS names per registered domain. Memory is capped (counted when reached)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from detector.detect.base import Detector, FlowView, registered_domain

BUCKET_NS = 300 * 10**9
MAX_SERIES = 500_000  # (host, bucket) cells
MAX_DOMAINS = 100_000
MAX_NAMES = 5_000  # distinct names kept per domain (the report says "5000+" beyond)
MAX_TALKERS = 200_000


class ReportCollector(Detector):
    name = "report_collector"
    version = "1"

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.series: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])  # (host, bucket) -> in, out
        self.talkers: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # address -> in, out
        self.domains: dict[str, set[str]] = {}
        self.capped: set[str] = set()  # domains with more distinct names than MAX_NAMES
        self.dropped_cells = 0
        self.dropped_talkers = 0
        self.dropped_domains = 0

    def observe_flows(self, f: FlowView) -> None:
        if not len(f):
            return
        bucket = (f["ts"] // BUCKET_NS).astype(np.int64)
        ob, rb = f["orig_bytes"].astype(np.float64), f["resp_bytes"].astype(np.float64)
        for side, sent, received in (("orig_h", ob, rb), ("resp_h", rb, ob)):
            names, codes = f.distinct(side)
            local = np.array([self.site.is_local(n) for n in names], bool)
            self.dropped_talkers += _add(self.talkers, names, codes, None, received, sent, MAX_TALKERS)
            keep = local[codes]
            if keep.any():
                self.dropped_cells += _add(self.series, names, codes[keep], bucket[keep], received[keep], sent[keep],
                                           MAX_SERIES)

    def observe_events(self, events) -> None:
        for ev in events.dns:
            m = ev.msg
            if m.response or not m.qname:
                continue
            name = m.qname.lower().strip(".")
            dom = registered_domain(name)
            names = self.domains.get(dom)
            if names is None:
                if len(self.domains) >= MAX_DOMAINS:
                    self.dropped_domains += 1
                    continue
                names = self.domains[dom] = set()
            if len(names) < MAX_NAMES:
                names.add(name)
            elif name not in names:
                self.capped.add(dom)

    def finish(self):
        return []


def _add(table, names, codes, bucket, received, sent, cap: int) -> int:
    """Sums ``received``/``sent`` per address, or per (address, bucket); new keys beyond
    ``cap`` are not kept. Returns how many were not."""
    key = codes.astype(np.int64) if bucket is None else codes.astype(np.int64) << 32 | (bucket & 0xFFFFFFFF)
    uniq, inv = np.unique(key, return_inverse=True)
    rin = np.bincount(inv, received, len(uniq))
    rout = np.bincount(inv, sent, len(uniq))
    dropped = 0
    for k, a, b in zip(uniq.tolist(), rin.tolist(), rout.tolist()):
        cell_key = names[k] if bucket is None else (names[k >> 32], k & 0xFFFFFFFF)
        if cell_key not in table and len(table) >= cap:
            dropped += 1
            continue
        cell = table[cell_key]
        cell[0] += a
        cell[1] += b
    return dropped
