"""Slurm's allocations, live: ``scontrol show job -d --json`` (which gives each node's GPU
indices), else ``squeue --json``, run every ``slurm_poll_s`` when Slurm's commands are on the
PATH. Each snapshot speaks for twice the polling interval after it (one poll may be late)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

from detector.errors import TelemetryError
from detector.telemetry.allocations import Allocation
from detector.telemetry.slurm import parse_doc

COMMANDS = (("scontrol", "show", "job", "-d", "--json"), ("squeue", "--json"))


def available() -> tuple[str, ...] | None:
    """The command that will be run, or None without Slurm here."""
    return next((c for c in COMMANDS if shutil.which(c[0])), None)


def poll(command: tuple[str, ...], poll_s: float, timeout_s: float = 20.0) -> tuple[list[Allocation], tuple[int, int]]:
    """One snapshot; TelemetryError when the command fails or writes something unreadable."""
    now = time.time_ns()
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TelemetryError(" ".join(command), None, f"failed: {exc}") from None
    if done.returncode != 0:
        raise TelemetryError(" ".join(command), None, f"exit status {done.returncode}: "
                                                      f"{done.stderr.decode('utf-8', 'replace').strip()[:200]}")
    try:
        doc = json.loads(done.stdout)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TelemetryError(" ".join(command), None, f"not JSON: {exc}") from None
    if isinstance(doc, dict):
        doc.pop("last_update", None)  # the controller's clock: the snapshot is now, as this host sees it
    return parse_doc(doc, now, " ".join(command), snapshot_s=2 * poll_s)
