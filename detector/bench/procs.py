"""Running one measured process: wall time, exit status and peak RSS (``wait4``), its last
stdout line parsed as JSON when it is JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time


def run_timed(cmd: list[str], env: dict | None = None, timeout: float = 1800, cwd: str | None = None) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True, cwd=cwd)
        except OSError as exc:
            return {"wall": 0.0, "rc": 127, "peak_rss_mb": None, "stderr": str(exc)}
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {"wall": wall, "rc": rc, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr": stderr[-2000:]}
    try:
        result["json"] = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pass
    return result


def pinned(cmd: list[str]) -> list[str]:
    """Run on one core (taskset), so that per-core rates are per core even for tools that start
    helper threads (nfpcapd has three)."""
    return ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd] if shutil.which("taskset") else cmd
