"""Slurm's JSON as GPU allocations: ``sacct --json``, ``squeue --json`` and
``scontrol show job -d --json``, as Slurm 23.02 to 24.11 write them (data_parser v0.0.39 to
v0.0.42; field names from Slurm's ``src/plugins/data_parser/*/parsers.c``).

- **sacct** lists every job of the period asked for (``sacct -S ... -E ... --json``): nodes as a
  host list (``nodes``), ``time.start``/``time.end`` (0: not started / still running), and the
  GPUs as a count (``tres.allocated``, ``type`` "gres", ``name`` "gpu"). sacct gives no GPU
  indices: a job of K GPUs on N nodes holds ceil(K/N) GPUs of unknown index on each. The dump
  speaks for all time up to when it was written (the file's modification time): give sacct the
  period the telemetry covers.
- **squeue / scontrol** list the jobs alive when the dump was taken (``last_update``, else the
  file's time), with ``gres_detail`` giving each node's GPU indices (``gpu:a100:2(IDX:0-1)``,
  one entry per node of ``nodes``; ``scontrol -d`` fills it, ``squeue`` only in newer
  releases), else ``tres_alloc_str``'s ``gres/gpu=K`` count. A snapshot speaks for the
  ``SNAPSHOT_S`` after it, and its jobs hold their GPUs from their start to the end of that
  time: dumps taken that often (the daemon polls) cover a period, and a job gone from the
  next one no longer holds anything.

Times are Unix seconds, plain integers or ``{"set": true, "number": T}`` objects; states are
strings (v0.0.39) or lists of a base state and flags (v0.0.40+).
"""

from __future__ import annotations

import json
import math
import os
import re

from detector.errors import TelemetryError
from detector.telemetry.allocations import OPEN_END, Allocation, parse_indices
from detector.telemetry.hostlist import expand

SNAPSHOT_S = 120
HOLDING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING", "STOPPED", "SIGNALING", "STAGE_OUT"}
_GRES = re.compile(r"^(?P<name>[^:(]+)(?::(?P<type>[^:(]+))?(?::(?P<count>\d+))?"
                   r"(?:\((?:IDX:(?P<idx>[^)]*)|CNT:(?P<cnt>\d+))\))?$")
_TRES_GPU = re.compile(r"(?:^|,)gres/gpu=(\d+)")  # the untyped total (typed ones repeat it)


def read_slurm(path: str) -> tuple[list[Allocation], tuple[int, int]]:
    """The allocations in one dump, and the time it speaks for (ns, [start, end))."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        written = int(os.path.getmtime(path) * 1e9)
    except OSError as exc:
        raise TelemetryError(path, None, f"cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TelemetryError(path, getattr(exc, "lineno", None), f"not JSON: {exc}") from None
    return parse_doc(doc, written, path)


def parse_doc(doc, written_ns: int, source: str, snapshot_s: float = SNAPSHOT_S) -> tuple[list[Allocation],
                                                                                         tuple[int, int]]:
    """A parsed dump (``source`` names it in errors) written at ``written_ns``; a snapshot
    speaks for ``snapshot_s`` after it was taken."""
    path, written = source, written_ns
    jobs = doc.get("jobs") if isinstance(doc, dict) else None
    if not isinstance(jobs, list):
        raise TelemetryError(path, None, "not Slurm JSON: no 'jobs' list (expected sacct/squeue/scontrol --json)")
    accounting = any(isinstance(j, dict) and isinstance(j.get("time"), dict) for j in jobs)
    out: list[Allocation] = []
    for k, job in enumerate(jobs):
        if not isinstance(job, dict):
            raise TelemetryError(path, None, f"jobs[{k}] is not an object")
        try:
            out.extend(_accounted(job) if accounting else _alive(job))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise TelemetryError(path, None, f"jobs[{k}] (job {job.get('job_id')}): {exc}") from None
    if accounting:
        latest = max([written] + [max(a.start_ns, a.end_ns if a.end_ns < OPEN_END else 0) for a in out])
        return out, (-OPEN_END, latest)
    taken = _number(doc.get("last_update"))
    snap = taken * 10**9 if taken else written
    span = (snap, snap + int(snapshot_s * 10**9))
    # a job alive at the snapshot held its GPUs from its start to the snapshot, and is taken to
    # hold them for the time the snapshot speaks for; the next snapshot says whether it still does
    return [a._replace(end_ns=span[1]) for a in out], span


def _number(value) -> int | None:
    """A Slurm time or count: an int, or ``{"set", "infinite", "number"}`` (None when unset)."""
    if isinstance(value, dict):
        return int(value.get("number", 0)) if value.get("set") and not value.get("infinite") else None
    if isinstance(value, bool) or value is None:
        return None
    return int(value)


def _states(value) -> set[str]:
    if isinstance(value, dict):  # sacct: {"current": ..., "reason": ...}
        value = value.get("current")
    if isinstance(value, str):
        return {value.upper()}
    return {str(v).upper() for v in value or ()}


def _label(job: dict) -> str:
    array, het = job.get("array") or {}, job.get("het") or {}
    parent = _number(array.get("job_id", job.get("array_job_id")))
    task = _number(array.get("task_id", job.get("array_task_id")))
    if parent and task is not None:
        return f"{parent}_{task}"
    het_id = _number(het.get("job_id", job.get("het_job_id")))
    if het_id:
        return f"{het_id}+{_number(het.get('job_offset', job.get('het_job_offset'))) or 0}"
    return str(job["job_id"])


def _nodes(job: dict) -> list[str]:
    text = job.get("nodes") or ""
    return [] if not text or text.lower() == "none assigned" else expand(text)


def _accounted(job: dict) -> list[Allocation]:
    """A sacct job: every node holds ceil(K/N) GPUs of unknown index from start to end."""
    t = job["time"]
    start, end = _number(t.get("start")), _number(t.get("end"))
    nodes = _nodes(job)
    if not start or not nodes:
        return []  # never ran
    gpus = sum(int(x.get("count", 0)) for x in (job.get("tres") or {}).get("allocated") or ()
               if x.get("type") == "gres" and x.get("name") == "gpu")
    per_node = math.ceil(gpus / len(nodes))
    end_ns = end * 10**9 if end else OPEN_END
    return [Allocation(n, None, per_node, start * 10**9, end_ns, int(job["job_id"]), _label(job)) for n in nodes]


def _alive(job: dict) -> list[Allocation]:
    """A squeue/scontrol job alive at the snapshot: per node, the GPU indices ``gres_detail``
    names, else the count of ``tres_alloc_str`` spread over the nodes."""
    if not _states(job.get("job_state")) & HOLDING_STATES:
        return []
    start = _number(job.get("start_time"))
    nodes = _nodes(job)
    if not start or not nodes:
        return []
    detail = job.get("gres_detail") or []
    if isinstance(detail, str):
        detail = [detail]
    out = []
    counted = _TRES_GPU.findall(job.get("tres_alloc_str") or "")
    per_node = math.ceil(sum(int(c) for c in counted) / len(nodes)) if counted else 0
    for k, node in enumerate(nodes):
        indices, count = (gpu_detail(detail[k]) if k < len(detail) else (None, per_node))
        out.append(Allocation(node, indices, count if indices is None else len(indices), start * 10**9, OPEN_END,
                              int(job["job_id"]), _label(job)))
    return out


def gpu_detail(text: str) -> tuple[tuple[int, ...] | None, int]:
    """One node's ``gres_detail`` entry: the GPU indices (``gpu:a100:2(IDX:0-1)``), or None and
    a count (``gpu(CNT:2)``); other GRES (shards, NICs) are not GPUs held."""
    indices: list[int] = []
    count = 0
    for part in _outside_parentheses(text):
        m = _GRES.match(part.strip())
        if not m or m.group("name") != "gpu":
            continue
        if m.group("idx") is not None:
            indices.extend(parse_indices(m.group("idx")) if m.group("idx") not in ("", "N/A") else ())
        else:
            count += int(m.group("cnt") or m.group("count") or 0)
    if indices or not count:
        return tuple(sorted(set(indices))), 0
    return None, count


def _outside_parentheses(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(text[start:k])
            start = k + 1
    parts.append(text[start:])
    return parts
