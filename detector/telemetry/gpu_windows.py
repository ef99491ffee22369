"""GPU telemetry as windows: per (node, GPU, window of ``window_s``), the features a GPU
profile is learned on and judged by.

Mining and training both keep a GPU busy; they differ in how. A miner holds utilisation near
100 % without a dip, moves little memory (low, flat memory-controller load) and draws constant
power at fixed clocks; training breathes (batches load, checkpoints are written, evaluation
runs) and its memory and power move with it. So the features are levels *and* variability:
SM utilisation (mean, standard deviation, 10th percentile), memory-controller utilisation
(mean, standard deviation), memory used (mean, standard deviation), power (mean, standard
deviation), SM clock (mean, standard deviation), the share of busy samples, and the most
compute processes seen at once. A window needs ``MIN_SAMPLES`` samples.
"""

from __future__ import annotations

import numpy as np

from detector.telemetry.samples import Telemetry, take
from kernels.xp_ops import group_starts, lexsort

GPU_FEATURES = ("util_mean", "util_std", "util_p10", "mem_util_mean", "mem_util_std", "mem_used_mean_mib",
                "mem_used_std_mib", "power_mean_w", "power_std_w", "sm_clock_mean_mhz", "sm_clock_std_mhz",
                "busy_share", "processes")
BUSY_UTIL = 50.0
MIN_SAMPLES = 10


def gpu_windows(t: Telemetry, window_ns: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(nodes, gpus, starts, X)``: one row per window with enough samples; X is
    ``GPU_FEATURES`` (a reading never taken counts as 0: an unsupported power sensor is flat)."""
    g = t.gpus
    g = take(g, np.flatnonzero(g.gpu >= 0))
    if not len(g.ts_ns):
        return [], np.zeros(0, np.int16), np.zeros(0, np.int64), np.zeros((0, len(GPU_FEATURES)))
    start = g.ts_ns // window_ns * window_ns
    order = lexsort(np, (g.util, start, g.gpu, g.host))  # by util within a window: its percentile
    first = group_starts(np, [g.host[order], g.gpu[order], start[order]])
    wid = np.cumsum(first) - 1
    n_w = int(wid[-1]) + 1
    count = np.bincount(wid, minlength=n_w)
    heads = np.flatnonzero(first)
    cols = {}
    for name, values in (("util", g.util), ("mem_util", g.mem_util), ("mem_used", g.mem_used_mib),
                         ("power", g.power_w), ("sm_clock", g.sm_mhz)):
        v = np.nan_to_num(values[order], nan=0.0)
        mean = np.bincount(wid, v, n_w) / count
        var = np.maximum(np.bincount(wid, v * v, n_w) / count - mean * mean, 0.0)
        cols[name] = (mean, np.sqrt(var))
    util_sorted = np.nan_to_num(g.util[order], nan=0.0)
    p10 = util_sorted[heads + ((count - 1) * 0.1).astype(np.int64)]
    busy = np.bincount(wid, util_sorted >= BUSY_UTIL, n_w) / count
    procs = _processes(t, g.host[order][heads], g.gpu[order][heads], start[order][heads], window_ns)
    X = np.column_stack([cols["util"][0], cols["util"][1], p10, cols["mem_util"][0], cols["mem_util"][1],
                         cols["mem_used"][0], cols["mem_used"][1], cols["power"][0], cols["power"][1],
                         cols["sm_clock"][0], cols["sm_clock"][1], busy, procs])
    keep = count >= MIN_SAMPLES
    hosts = g.host[order][heads][keep]
    return [t.hosts[h] for h in hosts.tolist()], g.gpu[order][heads][keep], start[order][heads][keep], X[keep]


def _processes(t: Telemetry, hosts: np.ndarray, gpus: np.ndarray, starts: np.ndarray, window_ns: int) -> np.ndarray:
    """Per window, the most distinct compute processes seen on its GPU in one sample."""
    p = t.processes
    out = np.zeros(len(hosts))
    if not len(p.ts_ns):
        return out
    order = lexsort(np, (p.pid, p.ts_ns, p.gpu, p.host))
    h, g, ts, pid = p.host[order], p.gpu[order], p.ts_ns[order], p.pid[order]
    distinct = group_starts(np, [h, g, ts, pid])
    h, g, ts = h[distinct], g[distinct], ts[distinct]
    sample = group_starts(np, [h, g, ts])
    sid = np.cumsum(sample) - 1
    per_sample = np.bincount(sid)
    sh, sg, sw = h[sample], g[sample], ts[sample] // window_ns * window_ns
    index = {key: k for k, key in enumerate(zip(hosts.tolist(), gpus.tolist(), starts.tolist()))}
    for key, n in zip(zip(sh.tolist(), sg.tolist(), sw.tolist()), per_sample.tolist()):
        k = index.get(key)
        if k is not None and n > out[k]:
            out[k] = n
    return out
