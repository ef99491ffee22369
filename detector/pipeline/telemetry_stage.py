"""GPU telemetry in ``detector analyze``: read the logs and allocations given, judge them with
the telemetry detectors, and join their alerts with the network's."""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.config import Config
from detector.detect.gpu_theft import GpuInputs, join_network, judge_telemetry
from detector.errors import TelemetryError
from detector.telemetry.allocations import OPEN_END, read_map
from detector.telemetry.holdings import Holdings
from detector.telemetry.nvidia_smi import LogSpec, read_log
from detector.telemetry.record_log import is_record_log, read_record_log
from detector.telemetry.samples import Telemetry
from detector.telemetry.slurm import read_slurm


@dataclass(frozen=True)
class TelemetryArgs:
    """The telemetry an analysis was given: ``--gpu-log PATH[@HOST]`` and ``--slurm PATH``."""

    gpu_logs: tuple[str, ...] = ()
    slurm: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.gpu_logs or self.slurm)


def load(args: TelemetryArgs, cfg: Config, model=None) -> GpuInputs:
    """Everything given, read; a file that cannot be used raises
    :class:`~detector.errors.TelemetryError` (bad lines in a log are counted instead)."""
    telemetry = Telemetry()
    for spec in (s for text in args.gpu_logs for s in _specs(text)):
        if is_record_log(spec.path):
            read_record_log(spec.path, spec.host, telemetry)
        else:
            read_log(spec, telemetry, cfg.site.timezone)
    # a node given by its address is the node Slurm names
    telemetry.rename({addr: name for name, addr in cfg.site.addresses.items()})
    allocations, coverage = [], []
    for path in args.slurm:
        found, span = read_slurm(path)
        allocations += found
        coverage.append(span)
    if cfg.site.gpu_allocations:
        allocations += read_map(cfg.site.gpu_allocations, cfg.site.timezone)
        coverage.append((-OPEN_END, OPEN_END))
    holdings = Holdings(allocations, coverage) if coverage else None
    return GpuInputs(telemetry, holdings, cfg.site.addresses, model)


def _specs(text: str) -> list[LogSpec]:
    """One ``--gpu-log`` argument: a file, or a folder of logs named by node."""
    import os

    if not os.path.isdir(text):
        return [LogSpec.parse(text)]
    found = sorted(os.path.join(d, f) for d, _, files in os.walk(text) for f in files
                   if f.endswith((".csv", ".jsonl")))
    if not found:
        raise TelemetryError(text, None, "a folder without .csv or .jsonl GPU logs")
    return [LogSpec.parse(path) for path in found]


def judge(inputs: GpuInputs, alerts: list[Alert], cfg: Config) -> list[Alert]:
    """The network's alerts plus the telemetry detectors', joined (:func:`join_network`)."""
    return join_network(alerts + judge_telemetry(inputs, cfg.detect, cfg.disabled_detectors))


def unjudged(inputs: GpuInputs) -> list[str]:
    """What the telemetry holds that no detector can judge, for the run's warnings."""
    import numpy as np

    t = inputs.telemetry
    g = t.gpus
    out = []
    nameless = int((g.gpu < 0).sum())
    if nameless:
        out.append(f"GPU logs: {nameless:,} GPU sample(s) give no index (no index field, and a UUID no --query-gpu "
                   "log names): not judged")
    known = g.gpu >= 0
    if known.any():
        key = g.host[known].astype(np.int64) << 16 | g.gpu[known].astype(np.int64)
        read = np.isfinite(g.util[known])
        ids, inverse = np.unique(key, return_inverse=True)
        never = ids[np.bincount(inverse.ravel(), read, len(ids)) == 0]
        if len(never):
            gpus = ", ".join(f"{t.hosts[k >> 16]} GPU {k & 0xFFFF}" for k in never[:8].tolist())
            out.append(f"GPU logs: {len(never)} GPU(s) never reported their utilisation ({gpus}"
                       f"{', ...' if len(never) > 8 else ''}; MIG instances report none): not judged")
    return out


def summary(inputs: GpuInputs) -> dict:
    """For the run's summary: what was read, and what could not be judged."""
    t = inputs.telemetry
    gpus = t.gpus
    return {"hosts": len(t.hosts), "gpus": len(set(zip(gpus.host.tolist(), gpus.gpu.tolist()))),
            "gpu_samples": len(gpus.ts_ns), "process_samples": len(t.processes.ts_ns), "bad_lines": t.bad_lines,
            "allocations": None if inputs.holdings is None else len(inputs.holdings.allocations),
            "problems": t.problems[:20]}
