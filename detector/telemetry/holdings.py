"""Allocations asked about samples: was this GPU held at that time, and by which jobs.

The questions are asked of many samples at once (a node's GPUs sampled every second for
days): samples are sorted by (host, GPU, time) once, each allocation covers a slice of each of
its GPUs' series (two binary searches), and a difference array adds the slices up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from detector.telemetry.allocations import Allocation
from kernels.xp_ops import group_starts, lexsort


@dataclass
class Holdings:
    """The allocations of the hosts the telemetry names. ``coverage`` is the time the
    allocation sources speak for: a sample outside it is not judged (a ``squeue`` dump lists
    the jobs alive when it was taken, not those that ended before)."""

    allocations: list[Allocation]
    coverage: list[tuple[int, int]] = field(default_factory=list)
    by_host_job: dict = field(init=False)
    by_host: dict = field(init=False)

    def __post_init__(self):
        # the same job from sacct (a count) and from squeue (indices): the indices tell more, and
        # counting both would hold twice its GPUs
        indexed = {(a.host, a.job) for a in self.allocations if a.gpus is not None}
        self.allocations = [a for a in self.allocations
                            if not (a.gpus is None and a.count >= 0 and (a.host, a.job) in indexed)]
        self.by_host_job = defaultdict(list)
        self.by_host = defaultdict(list)
        for a in self.allocations:
            self.by_host_job[(a.host, a.job)].append(a)
            self.by_host[a.host].append(a)

    def covered(self, ts_ns: np.ndarray) -> np.ndarray:
        out = np.zeros(len(ts_ns), bool)
        for lo, hi in self.coverage:
            out |= (ts_ns >= lo) & (ts_ns < hi)
        return out

    def held(self, host: np.ndarray, gpu: np.ndarray, ts_ns: np.ndarray, hosts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """For samples (host id, GPU index, time): how many allocations name that GPU (by index,
        or every GPU of the host), and how many GPUs of unknown index are held on the host at
        that time (``sacct`` gives counts, not indices)."""
        if not len(ts_ns):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        order = lexsort(np, (ts_ns, gpu, host))
        h, g, t = host[order], gpu[order], ts_ns[order]
        starts = np.flatnonzero(group_starts(np, [h, g]))
        ends = np.r_[starts[1:], len(h)]
        series = {(hosts[h[s]], int(g[s])): (s, e) for s, e in zip(starts.tolist(), ends.tolist())}
        host_gpus = defaultdict(list)
        for name, index in series:
            host_gpus[name].append(index)
        # a host's samples in time order, for the GPUs of unknown index
        horder = lexsort(np, (ts_ns, host))
        hh, ht = host[horder], ts_ns[horder]
        hstarts = np.flatnonzero(group_starts(np, [hh]))
        hspan = {hosts[hh[s]]: (s, e) for s, e in zip(hstarts.tolist(), np.r_[hstarts[1:], len(hh)].tolist())}
        named = np.zeros(len(t) + 1, np.int64)
        counted = np.zeros(len(t) + 1, np.int64)
        for a in self.allocations:
            if a.gpus is None and a.count >= 0:
                span = hspan.get(a.host)
                if span:
                    s, e = span
                    lo, hi = s + np.searchsorted(ht[s:e], (a.start_ns, a.end_ns))
                    counted[lo] += a.count
                    counted[hi] -= a.count
                continue
            for index in (host_gpus.get(a.host, ()) if a.every_gpu else a.gpus):
                span = series.get((a.host, index))
                if span:
                    s, e = span
                    lo, hi = s + np.searchsorted(t[s:e], (a.start_ns, a.end_ns))
                    named[lo] += 1
                    named[hi] -= 1
        by_index = np.empty(len(t), np.int64)
        by_index[order] = np.cumsum(named[:-1])
        by_count = np.empty(len(t), np.int64)
        by_count[horder] = np.cumsum(counted[:-1])
        return by_index, by_count

    def job_holds(self, host: str, job: int, gpu: int, ts_ns: np.ndarray) -> np.ndarray:
        """Whether ``job`` held GPU ``gpu`` of ``host`` (or, for a GPU of unknown index, any
        GPU there) at each time."""
        out = np.zeros(len(ts_ns), bool)
        for a in self.by_host_job.get((host, job), ()):
            if gpu < 0 or a.gpus is None or gpu in a.gpus:
                out |= (ts_ns >= a.start_ns) & (ts_ns < a.end_ns)
        return out

    def jobs_at(self, host: str, lo_ns: int, hi_ns: int) -> list[str]:
        """The jobs holding GPUs on ``host`` at some time in [lo, hi] (for evidence)."""
        return sorted({a.label or str(a.job) for a in self.by_host.get(host, ())
                       if a.start_ns <= hi_ns and a.end_ns > lo_ns})
