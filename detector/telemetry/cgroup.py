"""The Slurm job of a process, from its ``/proc/PID/cgroup``.

Slurm's cgroup plugins put every step's processes under a job directory:

- cgroup v1 (``proctrack/cgroup``, ``task/cgroup``): one line per controller, e.g.
  ``4:devices:/slurm/uid_1000/job_1234/step_0/task_0``; with several slurmd on one host the
  root is ``/slurm_<nodename>/``;
- cgroup v2 (``cgroup/v2``, Slurm 22.05+): one line, ``0::/system.slice/slurmstepd.scope/
  job_1234/step_0/user/task_0``; steps are also ``step_batch``, ``step_extern`` and
  ``step_interactive``; with several slurmd the scope is ``<nodename>_slurmstepd.scope``, and
  in a container the whole path sits under the container's own cgroup.

A process whose lines name no job under a Slurm root is in no job: a user's own process on a
node, or a daemon.
"""

from __future__ import annotations

import re

from detector.telemetry.samples import NO_JOB

_JOB = re.compile(r"/(?:slurm(?:_[^/]+)?|(?:[^/]+_)?slurmstepd\.scope)/(?:[^/]+/)*?job_(\d+)(?:/|$)")


def slurm_job(cgroup_text: str) -> int:
    """The job id named by the cgroup lines of one process, or ``NO_JOB``."""
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1].strip()
        m = _JOB.search(path)
        if m:
            return int(m.group(1))
    return NO_JOB


def process_job(pid: int, proc: str = "/proc") -> int | None:
    """The Slurm job of a running process; None when its cgroup cannot be read (it ended, or
    the daemon may not look)."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
            return slurm_job(fh.read())
    except OSError:
        return None
