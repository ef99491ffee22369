"""GPU telemetry and Slurm accounting for the synthetic site, in the tools' own formats.

Every scenario gets the same GPU partition (4 GPUs a node, sampled every ``INTERVAL_S`` by
``nvidia-smi -l``, process lists every ``PROCESS_INTERVAL_S``, from ``BEFORE_S`` before the capture starts to ``AFTER_S`` after it):

- cn[0001-0002]: job 81230, a two-node training run on all 8 GPUs (it breathes: compute near
  full load, a dip every minute for the next batch, a checkpoint every 10 minutes);
- cn0003: job 81231 on 2 GPUs until 10 minutes into the capture, job 81232 on 2 more;
- cn0004 and cn0012: idle, no job.

The GPU attacks lay a miner over this (steady full load, little memory traffic, constant
power): on all GPUs of an idle node outside any job (``theft-gpu-unallocated``; and on cn0012,
under ``theft-stratum``'s pool connection), or beside job 81232's training on cn0003, started
from an SSH session and so in no job (``theft-gpu-foreign``).

Written under ``DIR/telemetry/SCENARIO/``: ``gpu/NODE.csv`` (``--query-gpu``, local time of
``ZONE``), ``apps/NODE.csv`` (``--query-compute-apps``), ``sacct.json`` (``sacct --json``,
Slurm 23.11, data_parser v0.0.40) and ``processes.jsonl`` (the daemon's process log, which adds
each process's cgroup).
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import numpy as np

from detector.telemetry.record_log import process_line

INTERVAL_S = 10
PROCESS_INTERVAL_S = 30  # process lists are sampled less often
BEFORE_S = 600
AFTER_S = 1500
GPUS = 4
ZONE = "Europe/Berlin"
NS = 10**9
GPU_HEADER = ("timestamp, index, uuid, utilization.gpu [%], utilization.memory [%], memory.used [MiB], "
              "power.draw [W], clocks.current.sm [MHz], clocks.current.memory [MHz]")
APPS_HEADER = "timestamp, gpu_uuid, pid, process_name, used_gpu_memory [MiB]"


@dataclass
class Work:
    """A process computing on some GPUs of a node from ``start`` to ``end`` (ns)."""

    node: str
    gpus: tuple[int, ...]
    start: int
    end: int
    kind: str  # "train" or "mine"
    pid: int
    command: str
    job: int | None  # Slurm job, None: in no job
    uid: int = 1000


@dataclass
class Job:
    job_id: int
    nodes: str
    gpus: int
    start: int
    end: int | None  # None: still running when sacct was asked
    name: str
    user: str
    steps: list = field(default_factory=list)


def partition(t0: int) -> tuple[list[Job], list[Work]]:
    """The benign jobs of the GPU partition, and their processes, around capture start ``t0``."""
    m = 60 * NS
    jobs = [Job(81230, "cn[0001-0002]", 8, t0 - 120 * m, None, "llm-pretrain", "alice"),
            Job(81231, "cn0003", 2, t0 - 60 * m, t0 + 10 * m, "finetune-vit", "bob"),
            Job(81232, "cn0003", 2, t0 - 20 * m, None, "protein-fold", "carol")]
    work = [Work("cn0001", (0, 1, 2, 3), t0 - 120 * m, 2**62, "train", 51200, "python3", 81230),
            Work("cn0002", (0, 1, 2, 3), t0 - 120 * m, 2**62, "train", 49310, "python3", 81230),
            Work("cn0003", (0, 1), t0 - 60 * m, t0 + 10 * m, "train", 40112, "python", 81231, 1001),
            Work("cn0003", (2, 3), t0 - 20 * m, 2**62, "train", 44781, "alphafold", 81232, 1002)]
    return jobs, work


NODES = ("cn0001", "cn0002", "cn0003", "cn0004", "cn0012")


def miners(scenario: str, t0: int, incident: dict | None) -> list[Work]:
    """The miners a GPU attack scenario adds (from its incident's time span)."""
    if not incident:
        return []
    start, end = incident["start_ns"], incident["end_ns"]
    cmd = "/dev/shm/.x/xmrig-cuda"
    if scenario == "theft-stratum":
        return [Work("cn0012", (0, 1, 2, 3), start, end, "mine", 77121, cmd, None, 1003)]
    if scenario == "theft-gpu-unallocated":
        return [Work("cn0004", (0, 1, 2, 3), start, end, "mine", 66410, cmd, None, 1001)]
    if scenario == "theft-gpu-foreign":
        return [Work("cn0003", (2,), start, end, "mine", 66877, cmd, None, 1002)]
    return []


def write(folder, scenario: str, t_start: int, t_end: int, incident: dict | None, seed: int,
          before_s: float = BEFORE_S, after_s: float = AFTER_S) -> None:
    """Write the scenario's telemetry under ``folder`` (a pathlib.Path, created), from
    ``before_s`` before its capture starts to ``after_s`` after it ends."""
    t0 = t_start - int(before_s * NS)
    times = np.arange(t0, t_end + int(after_s * NS), INTERVAL_S * NS, dtype=np.int64)
    jobs, work = partition(t_start)
    work += miners(scenario, t_start, incident)
    rng = np.random.default_rng([seed, zlib.crc32(scenario.encode())])
    (folder / "gpu").mkdir(parents=True, exist_ok=True)
    (folder / "apps").mkdir(exist_ok=True)
    records = []
    for node in NODES:
        mine = [w for w in work if w.node == node]
        (folder / "gpu" / f"{node}.csv").write_text(_gpu_log(node, times, mine, rng))
        apps, lines = _apps_log(node, times, mine)
        (folder / "apps" / f"{node}.csv").write_text(apps)
        records += lines
    (folder / "processes.jsonl").write_text("".join(line + "\n" for line in sorted(records)))
    (folder / "sacct.json").write_text(json.dumps(_sacct(jobs), indent=1))


def uuid(node: str, gpu: int) -> str:
    h = f"{zlib.crc32(f'{node}/{gpu}'.encode()):08x}"
    return f"GPU-{h}-{h[:4]}-{h[4:]}-a1b2-{h}{gpu:04x}"


def _local(ts_ns: np.ndarray) -> list[str]:
    tz = ZoneInfo(ZONE)
    return [dt.datetime.fromtimestamp(t // NS, tz).strftime("%Y/%m/%d %H:%M:%S") + f".{t % NS // 10**6:03d}"
            for t in ts_ns.tolist()]


def _gpu_log(node: str, times: np.ndarray, work: list[Work], rng) -> str:
    lines = [GPU_HEADER]
    n = len(times)
    for gpu in range(GPUS):
        util = np.zeros(n)  # idle
        mem_util = np.zeros(n)
        mem = rng.integers(0, 4, n).astype(float)
        power = rng.uniform(62, 71, n)
        sm = np.full(n, 345.0)
        for w in (w for w in work if gpu in w.gpus):
            on = (times >= w.start) & (times < w.end)
            k = int(on.sum())
            if w.kind == "train":
                phase = (times[on] - w.start) // NS
                dip = (phase % 60) < 6  # the next batch loads
                ckpt = (phase % 600) < 30  # a checkpoint is written
                u = np.where(ckpt, rng.uniform(0, 6, k), np.where(dip, rng.uniform(8, 35, k), rng.uniform(82, 100, k)))
                util[on] = np.maximum(util[on], u)
                mem_util[on] = np.maximum(mem_util[on], u * rng.uniform(0.35, 0.6, k))
                mem[on] += rng.normal(61000, 900, k)
                power[on] = 90 + 5.4 * u + rng.normal(0, 25, k)
                sm[on] = np.where(u > 50, rng.choice([1755.0, 1830.0, 1980.0], k), 1410.0)
            else:
                util[on] = 100.0
                mem_util[on] = np.maximum(mem_util[on], rng.uniform(4, 7, k))
                mem[on] += 2210 + rng.integers(0, 3, k)
                power[on] = np.maximum(power[on], 282 + rng.normal(0, 1.5, k))
                sm[on] = 1980.0
        stamps = _local(times + gpu * 2 * 10**6)  # nvidia-smi stamps each GPU's row as it reads it
        uid = uuid(node, gpu)
        lines += [f"{s}, {gpu}, {uid}, {u:.0f} %, {mu:.0f} %, {m:.0f} MiB, {p:.2f} W, {c:.0f} MHz, 2619 MHz"
                  for s, u, mu, m, p, c in zip(stamps, util, mem_util, mem, np.clip(power, 55, 700), sm)]
    # nvidia-smi writes one row per GPU per loop: interleave the GPUs, in time order
    head, rows = lines[0], lines[1:]
    order = np.argsort(np.tile(np.arange(n), GPUS) * GPUS + np.repeat(np.arange(GPUS), n), kind="stable")
    return "\n".join([head] + [rows[k] for k in order.tolist()]) + "\n"


def _apps_log(node: str, times: np.ndarray, work: list[Work]) -> tuple[str, list[str]]:
    lines, records = [APPS_HEADER], []
    times = times[::PROCESS_INTERVAL_S // INTERVAL_S]
    for t, stamp in zip(times.tolist(), _local(times)):
        for w in work:
            if w.start <= t < w.end:
                used = 61000 if w.kind == "train" else 2210
                for gpu in w.gpus:
                    lines.append(f"{stamp}, {uuid(node, gpu)}, {w.pid}, {w.command}, {used} MiB")
                    cgroup = (f"0::/system.slice/slurmstepd.scope/job_{w.job}/step_0/user/task_0" if w.job
                              else f"0::/user.slice/user-{w.uid}.slice/session-7.scope")
                    records.append(process_line(t, node, gpu, uuid(node, gpu), w.pid, w.command, float(used),
                                                w.job if w.job else -1, cgroup))
    return "\n".join(lines) + "\n", records


def _set(value: int | None) -> dict:
    return {"set": value is not None, "infinite": False, "number": value or 0}


def _sacct(jobs: list[Job]) -> dict:
    """An ``sacct --json`` document (Slurm 23.11: data_parser v0.0.40) of ``jobs``."""
    out = []
    for j in jobs:
        start, end = j.start // NS, (j.end // NS if j.end else 0)
        nodes = 2 if "[" in j.nodes else 1
        tres = [{"type": "cpu", "name": "", "id": 1, "count": 32 * nodes},
                {"type": "mem", "name": "", "id": 2, "count": 256000 * nodes},
                {"type": "node", "name": "", "id": 4, "count": nodes},
                {"type": "billing", "name": "", "id": 5, "count": 32 * nodes},
                {"type": "gres", "name": "gpu", "id": 1001, "count": j.gpus}]
        state = "COMPLETED" if j.end else "RUNNING"
        out.append({
            "account": "hpc-ai", "allocation_nodes": nodes, "array": {
                "job_id": 0, "limits": {"max": {"running": {"tasks": 0}}}, "task_id": _set(None), "task": ""},
            "cluster": "synth", "derived_exit_code": {"status": ["SUCCESS"], "return_code": _set(0)},
            "exit_code": {"status": ["SUCCESS"], "return_code": _set(0)},
            "het": {"job_id": 0, "job_offset": _set(None)}, "job_id": j.job_id, "name": j.name,
            "nodes": j.nodes, "partition": "gpu", "state": {"current": [state], "reason": "None"},
            "steps": [{"step": {"id": f"{j.job_id}.0", "name": j.name}, "nodes": {"count": nodes, "range": j.nodes},
                       "state": [state], "time": {"start": _set(start), "end": _set(end)},
                       "tres": {"allocated": tres}}],
            "time": {"elapsed": (end or start) - start, "eligible": start - 30, "end": end, "start": start,
                     "submission": start - 60, "suspended": 0, "limit": _set(1440)},
            "tres": {"allocated": tres, "requested": tres}, "user": j.user})
    return {"meta": {"plugin": {"type": "openapi/slurmctld", "name": "Slurm OpenAPI slurmctld",
                                "data_parser": "data_parser/v0.0.40", "accounting_storage": "accounting_storage/slurmdbd"},
                     "Slurm": {"version": {"major": "23", "micro": "10", "minor": "11"}, "release": "23.11.10",
                               "cluster": "synth"}},
            "jobs": out, "warnings": [], "errors": []}
