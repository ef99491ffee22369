"""GPU time taken outside the scheduler (compute_theft), from telemetry and allocations.

- ``gpu_unallocated``: a GPU busy (SM utilisation >= ``busy_util``) for ``busy_min_s`` or more
  while no job holds it. Method: site policy, as in Slurm's own accounting: on a scheduled
  cluster every GPU-second belongs to a job (NVIDIA's DCGM job statistics and Slurm's
  ``gres/gpu`` accounting rest on the same rule). Each sample stands for its sampling
  interval; a run of busy samples breaks at a gap of more than ``max_gap_s`` or 2.5 sampling
  intervals, whichever is longer (the telemetry stopped: nothing is said of the time not seen).
  The GPUs of one host busy at overlapping times are one incident. High.
- ``gpu_foreign_process``: a compute process on a GPU some job holds, whose cgroup is in no
  job or in another job (the process list of NVML or ``nvidia-smi --query-compute-apps``, and
  ``/proc/PID/cgroup``, whose layout is Slurm's own). On a GPU no job holds, any process is out
  of place: ``gpu_unallocated`` tells that, naming the processes. One alert per process. High.

- ``gpu_profile``: a node's GPU windows that the site model's GPU profile finds unlike the
  training (:mod:`detector.baseline.gpu_profile`: Isolation Forest and robust baselines,
  explained feature by feature). Medium. Needs a model trained with ``--gpu-log``.

The first two judge only samples in the time the allocation sources speak for
(``Holdings.coverage``), and nothing without an allocation source: a node without a scheduler
has no "unallocated".

When the host of a GPU alert also raised a network sign of theft (``stratum``,
``mining_pool_domain``, ``beaconing``, ``compute_outbound``) within ``JOIN_WINDOW_S`` of it,
:func:`join_network` makes both critical and has each name the other in its evidence.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector
from detector.detect.corroboration import settle
from detector.telemetry.holdings import Holdings
from detector.telemetry.samples import NO_JOB, UNKNOWN_JOB, Telemetry, take
from kernels.xp_ops import group_starts, lexsort

NETWORK_SIGNS = ("stratum", "mining_pool_domain", "beaconing", "compute_outbound")
GPU_TECHNIQUES = ("gpu_unallocated", "gpu_foreign_process", "gpu_profile")
JOIN_WINDOW_S = 900
NS = 10**9


class GpuInputs(NamedTuple):
    """What the telemetry detectors judge: the samples, the allocations (None: no source was
    given), the site's node names -> addresses (to name the host as the network does), the site
    model (its GPU profile) and, live, the time now and that of the oldest sample kept (GPU
    windows are judged once ended, and only while all their samples are kept)."""

    telemetry: Telemetry
    holdings: Holdings | None
    addresses: dict[str, str]
    model: object = None  # a SiteModel
    now_ns: int | None = None
    kept_from_ns: int | None = None  # live: samples older than this were let go


class TelemetryDetector(Detector):
    """A detector of telemetry rather than traffic: judged once over all samples."""

    def judge(self, inputs: GpuInputs) -> list[Alert]:
        raise NotImplementedError

    def _alert(self, inputs: GpuInputs, node: str, span: tuple[int, int], technique: str, summary: str,
               evidence: dict) -> Alert:
        address = inputs.addresses.get(node)
        return Alert(span[0], span[1], "compute_theft", technique, "high", 0.85, summary, self.label,
                     address or node, src_ip=address, evidence={"node": node, **evidence})


class GpuUnallocated(TelemetryDetector):
    name = "gpu_unallocated"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        busy_util: float = 50.0  # percent SM utilisation
        busy_min_s: float = 300.0
        max_gap_s: float = 30.0  # samples further apart break a run

    def judge(self, inputs: GpuInputs) -> list[Alert]:
        t, holdings = inputs.telemetry, inputs.holdings
        g = t.gpus
        if holdings is None or not len(g.ts_ns):
            return []
        g = take(g, np.flatnonzero(g.gpu >= 0))
        free = busy_unheld(g, t.hosts, holdings, self.p.busy_util)
        runs = _runs(g, free, int(self.p.max_gap_s * NS))
        runs = runs[(runs["last"] - runs["first"]) >= int(self.p.busy_min_s * NS)]
        out = []
        procs = t.processes
        for incident in _overlapping(runs, int(self.p.max_gap_s * NS)):
            node = t.hosts[int(incident["host"][0])]
            lo, hi = int(incident["first"].min()), int(incident["last"].max())
            gpus = sorted(set(incident["gpu"].tolist()))
            busy = int((incident["last"] - incident["first"]).max() // NS)
            util = float(np.average(incident["util"], weights=incident["n"]))
            out.append(self._alert(inputs, node, (lo, hi), self.name,
                                   f"{_gpus_text(gpus)} of {node} busy ({util:.0f} % SM) "
                                   f"for {busy // 60} min {busy % 60} s while no job held "
                                   f"{'them' if len(gpus) > 1 else 'it'}",
                                   {"gpus": gpus, "busy_s": busy, "mean_util_pct": util,
                                    "mean_power_w": _mean(incident["power"], incident["n"]),
                                    "mean_memory_used_mib": _mean(incident["mem"], incident["n"]),
                                    "samples": int(incident["n"].sum()),
                                    "jobs_on_node": holdings.jobs_at(node, lo, hi),
                                    "processes": _processes(t, procs, node, gpus, (lo, hi)),
                                    "busy_util_pct": self.p.busy_util, "busy_min_s": self.p.busy_min_s}))
        return out


class GpuForeignProcess(TelemetryDetector):
    name = "gpu_foreign_process"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        ignore_commands: tuple[str, ...] = ("nv-hostengine", "dcgmi", "nvidia-smi")  # monitoring, not work

    def judge(self, inputs: GpuInputs) -> list[Alert]:
        t, holdings = inputs.telemetry, inputs.holdings
        p = t.processes
        if holdings is None or not len(p.ts_ns):
            return []
        base = np.array([str(n or "").rsplit("/", 1)[-1] for n in p.name], object)
        judged = (p.job != UNKNOWN_JOB) & holdings.covered(p.ts_ns) & ~np.isin(base, list(self.p.ignore_commands))
        p = take(p, np.flatnonzero(judged))
        # on a GPU no job holds, any process is out of place: gpu_unallocated tells that (naming it)
        by_index, by_count = holdings.held(p.host, p.gpu, p.ts_ns, t.hosts)
        p = take(p, np.flatnonzero((by_index > 0) | (by_count > 0)))
        foreign = np.ones(len(p.ts_ns), bool)
        order = lexsort(np, (p.job, p.gpu, p.host))
        starts = np.flatnonzero(group_starts(np, [p.host[order], p.gpu[order], p.job[order]]))
        for s, e in zip(starts.tolist(), np.r_[starts[1:], len(order)].tolist()):
            rows = order[s:e]
            job = int(p.job[rows[0]])
            if job != NO_JOB:
                foreign[rows] = ~holdings.job_holds(t.hosts[p.host[rows[0]]], job, int(p.gpu[rows[0]]),
                                                   p.ts_ns[rows])
        p = take(p, np.flatnonzero(foreign))
        order = lexsort(np, (p.ts_ns, p.pid, p.host))
        starts = np.flatnonzero(group_starts(np, [p.host[order], p.pid[order]]))
        out = []
        for s, e in zip(starts.tolist(), np.r_[starts[1:], len(order)].tolist()):
            rows = order[s:e]
            node, pid, job = t.hosts[p.host[rows[0]]], int(p.pid[rows[0]]), int(p.job[rows[0]])
            lo, hi = int(p.ts_ns[rows[0]]), int(p.ts_ns[rows[-1]])
            gpus = sorted(set(p.gpu[rows].tolist()))
            command = p.name[rows[0]] or "?"
            holders = holdings.jobs_at(node, lo, hi)
            whose = "in no job" if job == NO_JOB else f"of job {job}"
            out.append(self._alert(inputs, node, (lo, hi), self.name,
                                   f"process {pid} ({command}) {whose} computes on {_gpus_text(gpus)} of {node}, "
                                   f"held by job{'s' if len(holders) > 1 else ''} {', '.join(holders)}",
                                   {"incident": f"pid {pid}", "pid": pid, "command": command, "process_job": None if job == NO_JOB else job,
                                    "gpus": gpus, "jobs_holding": holders,
                                    "max_memory_used_mib": float(np.nanmax(p.used_mib[rows]))
                                    if np.isfinite(p.used_mib[rows]).any() else None,
                                    "samples": len(rows)}))
        return out


class GpuProfile(TelemetryDetector):
    name = "gpu_profile"
    version = "1"

    def judge(self, inputs: GpuInputs) -> list[Alert]:
        from detector.telemetry.gpu_windows import gpu_windows

        model = getattr(inputs.model, "gpu", None)
        if model is None:
            return []
        window_ns = int(model.window_s * NS)
        nodes, gpus, starts, X = gpu_windows(inputs.telemetry, window_ns)
        if inputs.now_ns is not None:  # live: windows that ended, and whose samples are all still kept
            ended = (starts + window_ns <= inputs.now_ns) & (starts >= (inputs.kept_from_ns or 0))
            nodes, gpus, starts, X = [n for n, k in zip(nodes, ended.tolist()) if k], gpus[ended], starts[ended], X[ended]
        found: dict[str, list] = {}
        for i, verdict in enumerate(model.judge(X)):
            if verdict is not None:
                found.setdefault(nodes[i], []).append((int(starts[i]), int(gpus[i]), verdict))
        out = []
        for node, windows in found.items():
            worst = min(windows, key=lambda w: w[2]["score"])[2]
            lo, hi = min(w[0] for w in windows), max(w[0] for w in windows) + window_ns
            gpu_list = sorted({w[1] for w in windows})
            what = ", ".join(f"{d['feature']} {d['value']:g} against a usual {d['baseline']:g} (z {d['z']:+.1f})"
                             for d in worst["deviations"][:3])
            alert = self._alert(inputs, node, (lo, hi), self.name,
                                f"{_gpus_text(gpu_list)} of {node} worked unlike the site's {worst['kind']} GPUs in "
                                f"{len(windows)} window(s) of {model.window_s:.0f} s: {what}",
                                {"gpus": gpu_list, "windows": len(windows), "kind": worst["kind"],
                                 "isolation_score": round(worst["score"], 4),
                                 "threshold": round(model.if_threshold, 4), "deviations": worst["deviations"],
                                 "node_in_training": node in model.nodes})
            alert.severity, alert.score = "medium", 0.6
            out.append(alert)
        return out


TELEMETRY_DETECTORS: tuple[type[TelemetryDetector], ...] = (GpuUnallocated, GpuForeignProcess, GpuProfile)


def judge_telemetry(inputs: GpuInputs, params: dict, disabled: tuple[str, ...] = ()) -> list[Alert]:
    """Every enabled telemetry detector's alerts (``params``: name -> Params), with the
    corroboration rule applied among them (a GPU profile unlike the training, on a node whose
    GPU is busy outside any job, is one incident: see ``corroboration.RULES``)."""
    return settle([a for cls in TELEMETRY_DETECTORS if cls.name not in disabled
                   for a in cls(params.get(cls.name)).judge(inputs)])


def busy_unheld(g, hosts: list[str], holdings: Holdings, busy_util: float) -> np.ndarray:
    """Which samples (of GPUs of known index) are busy, judged, and of a GPU no job holds."""
    by_index, by_count = holdings.held(g.host, g.gpu, g.ts_ns, hosts)
    free = (g.util >= busy_util) & holdings.covered(g.ts_ns) & (by_index == 0)
    _unknown_indices_hold(free, g, by_count)
    return free


def sample_interval(g) -> int:
    """The telemetry's sampling interval (ns): the median time between two samples of one GPU."""
    order = lexsort(np, (g.ts_ns, g.gpu, g.host))
    same = ~group_starts(np, [g.host[order], g.gpu[order]])
    steps = np.diff(g.ts_ns[order])[same[1:]]
    steps = steps[steps > 0]
    return int(np.median(steps)) if len(steps) else NS


def _unknown_indices_hold(free: np.ndarray, g, by_count: np.ndarray) -> None:
    """Where jobs hold K GPUs of unknown index on a host (sacct), the first K (by index) of the
    host's otherwise free busy GPUs in each sampling round are theirs: clear them in ``free``.
    A round is the samples of a host closer together than half the sampling interval (one loop
    of nvidia-smi stamps its GPUs milliseconds apart)."""
    rows = np.flatnonzero(free & (by_count > 0))
    if not len(rows):
        return
    order = lexsort(np, (g.ts_ns, g.host))
    ts = g.ts_ns[order]
    new_round = group_starts(np, [g.host[order]]) | np.r_[True, np.diff(ts) > sample_interval(g) // 2]
    round_of = np.empty(len(order), np.int64)
    round_of[order] = np.cumsum(new_round)
    r = round_of[rows]
    by = lexsort(np, (g.gpu[rows], r))
    starts = group_starts(np, [r[by]])
    first = np.maximum.accumulate(np.where(starts, np.arange(len(by)), 0))
    rank = np.arange(len(by)) - first
    free[rows[by][rank < by_count[rows][by]]] = False


def _runs(g, free: np.ndarray, max_gap_ns: int) -> np.ndarray:
    """Runs of free busy samples per GPU: host, gpu, first, last (the end of the last sample's
    interval), n and the sums to average. Samples further apart than ``max_gap_ns``, or than
    2.5 sampling intervals, break a run."""
    interval = sample_interval(g)
    max_gap_ns = max(max_gap_ns, int(2.5 * interval))
    order = lexsort(np, (g.ts_ns, g.gpu, g.host))
    f, ts = free[order], g.ts_ns[order]
    new_gpu = group_starts(np, [g.host[order], g.gpu[order]])
    gap = np.r_[True, np.diff(ts) > max_gap_ns]
    prev_free = np.r_[False, f[:-1]]
    start = f & (new_gpu | gap | ~prev_free)
    rows = order[f]
    run = np.cumsum(start)[f] - 1
    n_runs = int(start.sum())
    out = np.zeros(n_runs, [("host", np.int32), ("gpu", np.int16), ("first", np.int64), ("last", np.int64),
                            ("n", np.int64), ("util", float), ("power", float), ("mem", float)])
    if not n_runs:
        return out
    firsts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
    out["host"], out["gpu"] = g.host[rows[firsts]], g.gpu[rows[firsts]]
    out["first"] = g.ts_ns[rows[firsts]]
    out["last"] = g.ts_ns[rows[np.r_[firsts[1:], len(rows)] - 1]] + interval  # each sample stands for its interval
    out["n"] = np.bincount(run, minlength=n_runs)
    for col, src in (("util", g.util), ("power", g.power_w), ("mem", g.mem_used_mib)):
        v = src[rows]
        known = np.isfinite(v)
        sums = np.bincount(run[known], v[known], minlength=n_runs)
        counts = np.bincount(run[known], minlength=n_runs)
        out[col] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return out


def _overlapping(runs: np.ndarray, slack_ns: int):
    """Groups of one host's runs that overlap in time (within ``slack_ns``): one incident each."""
    runs = np.sort(runs, order=("host", "first"))
    k = 0
    while k < len(runs):
        j, end = k + 1, runs["last"][k]
        while j < len(runs) and runs["host"][j] == runs["host"][k] and runs["first"][j] <= end + slack_ns:
            end = max(end, runs["last"][j])
            j += 1
        yield runs[k:j]
        k = j


def _gpus_text(gpus: list[int]) -> str:
    return f"GPU{'s' if len(gpus) > 1 else ''} {', '.join(map(str, gpus))}"


def _mean(values: np.ndarray, weights: np.ndarray) -> float | None:
    known = np.isfinite(values)
    return float(np.average(values[known], weights=weights[known])) if known.any() else None


def _processes(t: Telemetry, p, node: str, gpus: list[int], span: tuple[int, int], limit: int = 8) -> list[dict]:
    """The compute processes (``p``, of ``t``) seen on ``gpus`` of ``node`` during ``span``
    (the evidence of what ran)."""
    if not len(p.ts_ns) or node not in t.hosts:
        return []
    rows = np.flatnonzero((p.host == t.hosts.index(node)) & (p.ts_ns >= span[0]) & (p.ts_ns <= span[1])
                          & (np.isin(p.gpu, gpus) | (p.gpu < 0)))
    seen: dict[tuple, dict] = {}
    for r in rows.tolist():
        key = (int(p.pid[r]), p.name[r])
        item = seen.setdefault(key, {"pid": key[0], "command": key[1], "gpus": [],
                                     "max_memory_used_mib": None, "job": _job_text(int(p.job[r]))})
        if int(p.gpu[r]) not in item["gpus"]:
            item["gpus"].append(int(p.gpu[r]))
        if item["job"] is None:  # a log that read the cgroup tells more than nvidia-smi's
            item["job"] = _job_text(int(p.job[r]))
        if np.isfinite(p.used_mib[r]):
            item["max_memory_used_mib"] = max(item["max_memory_used_mib"] or 0.0, float(p.used_mib[r]))
    return list(seen.values())[:limit]


def _job_text(job: int) -> str | None:
    return None if job == UNKNOWN_JOB else "none" if job == NO_JOB else str(job)


def join_network(alerts: list[Alert]) -> list[Alert]:
    """``alerts`` with each GPU alert and each network sign of theft on the same host within
    ``JOIN_WINDOW_S`` of each other raised to critical, each naming the others
    (``evidence.joined_with``). The alerts handed in are not changed."""
    gpu = [a for a in alerts if a.technique in GPU_TECHNIQUES]
    net = [a for a in alerts if a.technique in NETWORK_SIGNS]
    window = JOIN_WINDOW_S * NS
    pairs: dict[int, list[Alert]] = {}
    for a in gpu:
        names = {x for x in (a.host, a.src_ip, a.evidence.get("node")) if x}
        for b in net:
            if ({b.src_ip, b.host} & names and a.ts_ns - window <= b.ts_end_ns
                    and b.ts_ns - window <= a.ts_end_ns):
                pairs.setdefault(id(a), []).append(b)
                pairs.setdefault(id(b), []).append(a)
    if not pairs:
        return alerts
    out = []
    for a in alerts:
        others = pairs.get(id(a))
        if others:
            a = dataclasses.replace(a, severity="critical", score=max(a.score, 0.95), evidence={
                **a.evidence, "joined_with": [{"technique": o.technique, "severity": o.severity, "summary": o.summary,
                                               "ts_ns": o.ts_ns} for o in sorted(others, key=lambda o: o.ts_ns)]})
        out.append(a)
    return out
