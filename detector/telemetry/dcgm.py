"""GPU telemetry scraped from NVIDIA's DCGM exporter (``dcgm-exporter``, Prometheus text on
``:9400/metrics`` by default).

The fields read and their units (dcgm-exporter's counters files): ``DCGM_FI_DEV_GPU_UTIL`` %,
``DCGM_FI_DEV_MEM_COPY_UTIL`` %, ``DCGM_FI_DEV_FB_USED`` MiB, ``DCGM_FI_DEV_POWER_USAGE`` W,
``DCGM_FI_DEV_SM_CLOCK`` and ``DCGM_FI_DEV_MEM_CLOCK`` MHz, ``DCGM_FI_PROF_PCIE_TX_BYTES`` and
``_RX_BYTES`` bytes/s. Each series names its GPU (``gpu``, ``UUID``) and, where the exporter
was told, its host (``Hostname``) and the HPC job holding the GPU (``hpc_job``, from
``--hpc-job-mapping-dir``): the job labels are allocations of their own.
"""

from __future__ import annotations

import math
import re
import urllib.request

from detector.telemetry.allocations import Allocation

FIELDS = {"DCGM_FI_DEV_GPU_UTIL": ("util", 1.0), "DCGM_FI_DEV_MEM_COPY_UTIL": ("mem_util", 1.0),
          "DCGM_FI_DEV_FB_USED": ("mem_used_mib", 1.0), "DCGM_FI_DEV_POWER_USAGE": ("power_w", 1.0),
          "DCGM_FI_DEV_SM_CLOCK": ("sm_mhz", 1.0), "DCGM_FI_DEV_MEM_CLOCK": ("mem_mhz", 1.0),
          "DCGM_FI_PROF_PCIE_TX_BYTES": ("pcie_tx_kbs", 1000.0), "DCGM_FI_PROF_PCIE_RX_BYTES": ("pcie_rx_kbs", 1000.0)}
_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\d+)?\s*$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
UNNAMED_JOB = -3  # an hpc_job label that is not a job id


def parse_exposition(text: str, default_host: str) -> tuple[list[dict], list[tuple[str, int, int]], int]:
    """GPU readings (one dict per host and GPU: ``host``, ``gpu``, ``uuid`` and readings), the
    (host, GPU, job) the ``hpc_job`` labels name, and the count of lines that did not parse."""
    gpus: dict[tuple[str, int], dict] = {}
    jobs: set[tuple[str, int, int]] = set()
    bad = 0
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            bad += 1
            continue
        field = FIELDS.get(m.group("name"))
        if field is None:
            continue
        labels = dict(_LABEL.findall(m.group("labels") or ""))
        try:
            value, gpu = float(m.group("value")), int(labels.get("gpu", ""))
        except ValueError:
            bad += 1
            continue
        host = labels.get("Hostname") or default_host
        row = gpus.setdefault((host, gpu), {"host": host, "gpu": gpu, "uuid": labels.get("UUID") or labels.get("uuid")})
        name, scale = field
        row[name] = value / scale if math.isfinite(value) else math.nan
        job = labels.get("hpc_job", "").strip()
        if job:  # the id cgroups name (SLURM_JOB_ID); any other label still holds the GPU
            jobs.add((host, gpu, int(job) if job.isdigit() else UNNAMED_JOB))
    return list(gpus.values()), sorted(jobs), bad


def job_allocations(jobs: list[tuple[str, int, int]], start_ns: int, end_ns: int) -> list[Allocation]:
    """What the exporter's ``hpc_job`` labels say: each GPU held by its job over [start, end)."""
    return [Allocation(host, (gpu,), 1, start_ns, end_ns, job, str(job)) for host, gpu, job in jobs]


class DcgmScraper:
    def __init__(self, url: str, default_host: str, timeout_s: float = 2.0):
        self.url, self.default_host, self.timeout_s = url, default_host, timeout_s

    def scrape(self) -> tuple[list[dict], list[tuple[str, int, int]], int]:
        """One scrape; OSError when the exporter cannot be reached."""
        with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
            text = resp.read(16 << 20).decode("utf-8", "replace")
        return parse_exposition(text, self.default_host)
