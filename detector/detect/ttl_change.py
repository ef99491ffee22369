"""Packets injected into a connection by another host (mitm / ttl_change).

Method: the IP TTL (hop limit) of one side of a connection starts at its operating system's
initial value (32, 64, 128 or 255) and is lowered by each router on the path, so within a TCP
connection the hop count (initial value minus TTL) is constant, give or take a route change.
Segments whose hop count differs by ``min_delta`` or more from the others of the same direction
were sent from somewhere else: TCP session hijacking and RST injection (the TTL heuristic of
Zeek's ``TTL_change`` weird and of Snort's stream preprocessor). Hop counts, not raw TTLs, are
compared so that a middlebox answering with another initial TTL on the same path does not
count. Medium per connection; high from ``high_delta`` hops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView

INITIAL_TTLS = np.array([32, 64, 128, 255])


def hops(ttl: np.ndarray) -> np.ndarray:
    """Routers passed: the smallest usual initial TTL at or above ``ttl``, minus ``ttl``."""
    initial = INITIAL_TTLS[np.minimum(np.searchsorted(INITIAL_TTLS, ttl), len(INITIAL_TTLS) - 1)]
    return initial - ttl


class TtlChange(Detector):
    name = "ttl_change"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_delta: int = 5
        high_delta: int = 16

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.found: dict[tuple, Alert] = {}

    def observe_flows(self, f: FlowView) -> None:
        proto = f["proto"]
        for side in ("orig", "resp"):
            lo = np.nan_to_num(f[f"{side}_ttl_min"].astype(float))
            hi = np.nan_to_num(f[f"{side}_ttl_max"].astype(float))
            delta = np.abs(hops(lo) - hops(hi))
            for j in np.flatnonzero((delta >= self.p.min_delta) & (proto == "tcp")).tolist():
                src = f["orig_h"][j] if side == "orig" else f["resp_h"][j]
                dst = f["resp_h"][j] if side == "orig" else f["orig_h"][j]
                sport = int(f["orig_p"][j] if side == "orig" else f["resp_p"][j])
                dport = int(f["resp_p"][j] if side == "orig" else f["orig_p"][j])
                key = (src, dst, sport, dport)
                d = int(delta[j])
                seen = self.found.get(key)
                if seen is not None:
                    seen.evidence["records"] += 1
                    seen.ts_end_ns = max(seen.ts_end_ns, int(f["ts"][j]))
                    continue
                high = d >= self.p.high_delta
                self.found[key] = Alert(
                    int(f["ts"][j]), int(f["ts"][j] + f["duration"][j] * 1e9), "mitm", "ttl_change",
                    "high" if high else "medium", 0.75 if high else 0.55,
                    f"Packets claiming to come from {src}:{sport} in its connection to {dst}:{dport} arrived with "
                    f"TTLs {int(lo[j])} and {int(hi[j])} ({d} hops apart): segments injected by another host "
                    "(session hijacking)",
                    self.label, self.host_for(dst, src), src, dst, sport, dport, "tcp",
                    {"ttl_min": int(lo[j]), "ttl_max": int(hi[j]), "hop_difference": d, "direction": side, "history": f["history"][j],
                     "uid": f["uid"][j], "records": 1}, f["community_id"][j])

    def finish(self) -> list[Alert]:
        return list(self.found.values())
