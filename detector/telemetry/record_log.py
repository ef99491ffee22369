"""The telemetry log ``detector`` writes: JSON lines, one GPU or process reading each.

nvidia-smi's process list does not say which job a process belongs to; the daemon's NVML
source reads it from ``/proc/PID/cgroup`` at the moment it samples, and writes it here, so that
``detector analyze --gpu-log`` can judge foreign processes later. ::

    {"ts": "2026-11-02T08:00:01.000000Z", "host": "cn0020", "kind": "gpu", "gpu": 0,
     "uuid": "GPU-...", "util": 97.0, "mem_util": 3.0, "mem_used_mib": 2210.0, "power_w": 251.2,
     "sm_mhz": 1980.0, "mem_mhz": 2619.0}
    {"ts": "...", "host": "cn0020", "kind": "process", "gpu": 0, "uuid": "GPU-...", "pid": 4242,
     "command": "/tmp/.x/xmrig", "used_mib": 2210.0, "job": null,
     "cgroup": "0::/user.slice/user-1000.slice/session-4.scope"}

``job`` is the Slurm job id, ``null`` for a process in no job; a line without ``job`` (its
cgroup was not read) is judged by no process rule. Readings not taken are ``null``.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np

from detector.alerts import rfc3339
from detector.errors import TelemetryError
from detector.telemetry.samples import (
    MAX_GPU,
    MAX_PID,
    NO_JOB,
    READINGS,
    UNKNOWN_JOB,
    GpuSamples,
    ProcessSamples,
    Telemetry,
    epoch_ns,
)

MAX_NAMED = 5


def gpu_line(ts_ns: int, host: str, gpu: int, uuid: str | None, readings: dict) -> str:
    return json.dumps({"ts": rfc3339(ts_ns), "host": host, "kind": "gpu", "gpu": gpu, "uuid": uuid,
                       **{k: _json(readings.get(k)) for k in READINGS}}, separators=(",", ":"))


def _json(value):
    """A reading as JSON has it: NaN (not taken) is null, as the format says."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def process_line(ts_ns: int, host: str, gpu: int, uuid: str | None, pid: int, command: str | None,
                 used_mib: float | None, job: int | None, cgroup: str | None) -> str:
    """``job``: the Slurm job id, NO_JOB or UNKNOWN_JOB (cgroup not read: the key is left out)."""
    record = {"ts": rfc3339(ts_ns), "host": host, "kind": "process", "gpu": gpu, "uuid": uuid, "pid": pid,
              "command": command, "used_mib": _json(used_mib)}
    if job != UNKNOWN_JOB:
        record["job"] = None if job == NO_JOB else job
        record["cgroup"] = cgroup
    return json.dumps(record, separators=(",", ":"))


def is_record_log(path: str) -> bool:
    """Whether ``path`` starts like this log (a JSON object), not like an nvidia-smi CSV."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError as exc:
        raise TelemetryError(path, None, f"cannot read: {exc.strerror}") from None
    return head.startswith(b"{")


def read_record_log(path: str, default_host: str, telemetry: Telemetry) -> None:
    """Read one log into ``telemetry``; lines that do not parse are counted and named."""
    gpu: dict[str, list] = {k: [] for k in ("host", "gpu", "uuid", "ts", *READINGS)}
    proc: dict[str, list] = {k: [] for k in ("host", "gpu", "uuid", "ts", "pid", "command", "used_mib", "job")}
    bad = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                    index = int(r.get("gpu", -1))
                    if not -1 <= index <= MAX_GPU:
                        raise ValueError(f"GPU index {index} out of range")
                    common = (telemetry.host_id(str(r.get("host") or default_host)), index, r.get("uuid"),
                              _ns(r["ts"]))
                    if r["kind"] == "gpu":
                        values = [_number(r.get(k)) for k in READINGS]
                        for key, v in zip(gpu, (*common, *values)):
                            gpu[key].append(v)
                    elif r["kind"] == "process":
                        job = UNKNOWN_JOB if "job" not in r else NO_JOB if r["job"] is None else int(r["job"])
                        pid = int(r["pid"])
                        if not 0 <= pid <= MAX_PID or not NO_JOB <= job < 2**62 and job != UNKNOWN_JOB:
                            raise ValueError(f"pid {pid} or job {job} out of range")
                        values = [pid, r.get("command"), _number(r.get("used_mib")), job]
                        for key, v in zip(proc, (*common, *values)):
                            proc[key].append(v)
                    else:
                        raise ValueError(f"unknown kind {r['kind']!r}")
                except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as exc:
                    bad += 1
                    if bad <= MAX_NAMED:
                        why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                        telemetry.problems.append(f"{path}: line {number}: {why}")
    except OSError as exc:
        raise TelemetryError(path, None, f"cannot read: {exc.strerror}") from None
    telemetry.bad_lines += bad
    if gpu["ts"]:
        telemetry.gpu_parts.append(GpuSamples.of(gpu["host"], gpu["gpu"], gpu["uuid"], gpu["ts"],
                                                 {k: gpu[k] for k in READINGS}))
    if proc["ts"]:
        telemetry.process_parts.append(ProcessSamples(
            np.array(proc["host"], np.int32), np.array(proc["gpu"], np.int16), np.array(proc["uuid"], object),
            np.array(proc["ts"], np.int64), np.array(proc["pid"], np.int64), np.array(proc["command"], object),
            np.array(proc["used_mib"], float), np.array(proc["job"], np.int64)))


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _ns(text: str) -> int:
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"time without a zone: {text!r}")
    ns = epoch_ns(t)
    if not 0 <= ns < 2**62:
        raise ValueError(f"time out of range: {text!r}")
    return ns
