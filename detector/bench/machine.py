"""What a benchmark ran on: CPU model, cores, memory, GPU (asked of ``nvidia-smi``, so that no
GPU library is imported on a CPU machine), and the versions of the libraries that matter."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
from pathlib import Path

PACKAGES = ("numpy", "numba", "pyarrow", "scikit-learn", "cupy-cuda12x", "numba-cuda", "dpkt", "nfstream", "scapy")


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [x.strip() for x in out.stdout.splitlines() if x.strip()]
    return "; ".join(lines) if out.returncode == 0 and lines else None


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        mem = None
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_mb": mem, "python": platform.python_version(),
            "platform": platform.platform(), "host": platform.node() or "host", "gpu": gpu_name(),
            "versions": versions}
