"""Live GPU telemetry through NVML (``nvidia-ml-py``, the ``telemetry`` extra).

Each :meth:`NvmlSampler.sample` reads, for every GPU: SM and memory utilisation, memory used,
power, SM and memory clocks and PCIe throughput; and for every compute process: its pid, GPU
memory, command, and the Slurm job of its cgroup (``/proc/PID/cgroup``). A reading the GPU
does not support (``NVMLError``) is NaN; a process whose cgroup cannot be read (it ended, or
the daemon may not look) has no job known and is judged by no process rule.
"""

from __future__ import annotations

import math

from detector.errors import ConfigError
from detector.telemetry.cgroup import process_job
from detector.telemetry.samples import UNKNOWN_JOB

MIB = 2**20


class NvmlSampler:
    """NVML opened once; ``nvml`` is the ``pynvml`` module (given by tests)."""

    def __init__(self, nvml=None, proc: str = "/proc"):
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                raise ConfigError("GPU telemetry needs nvidia-ml-py: pip install 'detector[telemetry]'", None,
                                  "daemon.gpu_telemetry") from None
        self.nvml, self.proc = nvml, proc
        try:
            nvml.nvmlInit()
            self.gpus = []
            for i in range(nvml.nvmlDeviceGetCount()):
                h = nvml.nvmlDeviceGetHandleByIndex(i)
                self.gpus.append((i, _text(nvml.nvmlDeviceGetUUID(h)), h))
        except nvml.NVMLError as exc:
            raise ConfigError(f"NVML: {exc}: no NVIDIA driver or GPU here?", None, "daemon.gpu_telemetry") from None

    def sample(self) -> tuple[list[dict], list[dict]]:
        """One reading of every GPU (dicts of ``gpu``, ``uuid`` and the readings) and of every
        compute process (``gpu``, ``uuid``, ``pid``, ``command``, ``used_mib``, ``job``)."""
        n = self.nvml
        gpus, procs = [], []
        for index, uuid, h in self.gpus:
            util = self._read(n.nvmlDeviceGetUtilizationRates, h)
            mem = self._read(n.nvmlDeviceGetMemoryInfo, h)
            gpus.append({
                "gpu": index, "uuid": uuid,
                "util": _num(getattr(util, "gpu", None)), "mem_util": _num(getattr(util, "memory", None)),
                "mem_used_mib": _num(getattr(mem, "used", None), MIB),
                "power_w": _num(self._read(n.nvmlDeviceGetPowerUsage, h), 1000),
                "sm_mhz": _num(self._read(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_SM)),
                "mem_mhz": _num(self._read(n.nvmlDeviceGetClockInfo, h, n.NVML_CLOCK_MEM)),
                "pcie_tx_kbs": _num(self._read(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_TX_BYTES)),
                "pcie_rx_kbs": _num(self._read(n.nvmlDeviceGetPcieThroughput, h, n.NVML_PCIE_UTIL_RX_BYTES)),
            })
            for p in self._read(n.nvmlDeviceGetComputeRunningProcesses, h) or ():
                job = process_job(p.pid, self.proc)
                procs.append({"gpu": index, "uuid": uuid, "pid": int(p.pid),
                              "command": _text(self._read(n.nvmlSystemGetProcessName, p.pid)),
                              "used_mib": _num(getattr(p, "usedGpuMemory", None), MIB),
                              "job": UNKNOWN_JOB if job is None else job})
        return gpus, procs

    def _read(self, fn, *args):
        try:
            return fn(*args)
        except self.nvml.NVMLError:
            return None

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def _num(value, scale: float = 1.0) -> float:
    return math.nan if value is None else float(value) / scale


def _text(value) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
