"""A stand-in for the ``pynvml`` module (nvidia-ml-py), with the calls, constants, units and
error class of the real one, over GPUs whose state a test sets."""

from __future__ import annotations

import types
from types import SimpleNamespace


class NVMLError(Exception):
    def __init__(self, value: int = 3):
        self.value = value
        super().__init__("Not Supported" if value == 3 else f"NVML error {value}")


def fake_nvml(gpus: int = 2, no_driver: bool = False) -> types.ModuleType:
    """A module; its ``state`` is a list, per GPU, of ``util`` (percent), ``power_mw`` and
    ``procs`` ((pid, used bytes or None, name as bytes))."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM = 1, 2
    m.NVML_PCIE_UTIL_TX_BYTES, m.NVML_PCIE_UTIL_RX_BYTES = 0, 1
    m.state = [{"util": 0, "power_mw": 61000, "procs": []} for _ in range(gpus)]
    m.calls = {"init": 0, "shutdown": 0}

    def init():
        if no_driver:
            raise NVMLError(9)
        m.calls["init"] += 1

    def shutdown():
        m.calls["shutdown"] += 1

    def names():
        return {pid: name for g in m.state for pid, _, name in g["procs"]}

    def no_such_process(pid):
        if pid not in names():
            raise NVMLError(13)
        return names()[pid]

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlDeviceGetCount = lambda: len(m.state)
    m.nvmlDeviceGetHandleByIndex = lambda i: ("handle", i)
    m.nvmlDeviceGetUUID = lambda h: f"GPU-0000000{h[1]}-aaaa-bbbb-cccc-dddddddddddd".encode()  # old forks: bytes
    m.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=m.state[h[1]]["util"],
                                                                memory=m.state[h[1]]["util"] // 10)
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=80 << 30, free=0, used=(2210 << 20) if m.state[h[1]]["procs"] else 0)
    m.nvmlDeviceGetPowerUsage = lambda h: m.state[h[1]]["power_mw"]
    m.nvmlDeviceGetClockInfo = lambda h, kind: 1980 if kind == m.NVML_CLOCK_SM else 2619

    def pcie(h, counter):
        raise NVMLError(3)  # a vGPU: not supported

    m.nvmlDeviceGetPcieThroughput = pcie
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: [SimpleNamespace(pid=pid, usedGpuMemory=used)
                                                        for pid, used, _ in m.state[h[1]]["procs"]]
    m.nvmlSystemGetProcessName = no_such_process
    return m
