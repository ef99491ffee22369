"""The ``detector train`` job: captures taken as normal in, a site model out.

The captures go through the same pipeline as ``analyze`` (readers, flow accounting, the site's
configuration and its inference of local hosts), with no detector but the window collector and the ones that pin what they see (ARP
bindings, SSH host keys, TLS certificates, peer hop counts);
then :class:`~detector.baseline.site_model.SiteModel` is fitted on the host windows and saved.
"""

from __future__ import annotations

import dataclasses
import time

from detector.backend import CPU, Backend
from detector.baseline.learn import WindowCollector
from detector.baseline.site_model import SiteModel
from detector.baseline.windows import FEATURES
from detector.config import Config
from detector.detect.registry import BY_NAME
from detector.errors import DetectorError
from detector.pipeline import telemetry_stage
from detector.pipeline.analyze_job import run_analyze
from detector.pipeline.flows_job import EXIT_PARTIAL, EXIT_UNUSABLE, JobResult

PINNING = ("arp_spoof", "key_pins", "ttl_change")


class TrainingError(DetectorError):
    pass


def run_train(inputs: list[str], cfg: Config, model_out: str, backend: Backend = CPU, progress: bool | None = None,
              window_s: float = 600.0, key: bytes | None = None, freeze: bool = False, gpu_logs: tuple[str, ...] = (),
              gpu_window_s: float = 3600.0) -> JobResult:
    """With ``gpu_logs`` (``--gpu-log`` arguments), the model also learns how the site's GPUs
    work, per window of ``gpu_window_s``."""
    t0 = time.perf_counter()
    telemetry = telemetry_stage.load(telemetry_stage.TelemetryArgs(tuple(gpu_logs)), cfg) if gpu_logs else None
    collectors: list[WindowCollector] = []

    def collector(site):
        c = WindowCollector(site=site, window_s=window_s)
        collectors.append(c)
        return c

    # only the detectors that pin what they see run, and their alerts are not kept
    quiet = dataclasses.replace(cfg, disabled_detectors=tuple(n for n in BY_NAME if n not in PINNING))
    result = run_analyze(inputs, quiet, None, backend=backend, progress=progress, extra_detectors=[collector])
    if result.exit_code == EXIT_UNUSABLE:
        return JobResult(result.exit_code, result.summary, result.errors, result.warnings)
    c = collectors[0]
    try:
        model = SiteModel(window_s=window_s).fit_flows(c.windows.flows())
        hosts, starts, X = c.windows.table(model.rare_flows)
        pins = {d.name: d.learned() for d in result.detectors if d.name in PINNING}
        roles = [c.site.role(h) for h in hosts]
        model.fit(hosts, starts, X, c.destinations(), pins, roles)
        model.frozen = freeze
        gpu_windows_n = _fit_gpu(model, telemetry, gpu_window_s) if telemetry is not None else None
    except ValueError as exc:
        raise TrainingError(f"{', '.join(inputs)}: {exc}") from None
    model.save(model_out, key)
    summary = {"packets": result.summary["packets"], "flows": result.summary["flows"], "windows": len(X),
               "rare_training_flows": int(X[:, FEATURES.index("rare_flows")].sum()),
               "hosts": len(set(hosts)), "trimmed_windows": model.baseline.trimmed_,
               "destinations": len(model.destinations), "window_s": window_s,
               "pins": {name: sum(len(v) for v in p.values()) for name, p in model.pins.items()}, "model": model_out,
               "seconds": round(time.perf_counter() - t0, 3), "site_inferred": result.summary["site_inferred"],
               "gpu_windows": gpu_windows_n}
    if telemetry is not None:
        result.warnings += telemetry.telemetry.problems
    code = EXIT_PARTIAL if result.errors or result.warnings else 0
    return JobResult(code, summary, result.errors, result.warnings)


def _fit_gpu(model: SiteModel, inputs, window_s: float) -> int:
    """The model's GPU profile, from the telemetry's windows; returns how many."""
    from detector.baseline.gpu_profile import GpuProfileModel
    from detector.telemetry.gpu_windows import gpu_windows

    nodes, _, _, X = gpu_windows(inputs.telemetry, int(window_s * 1e9))
    model.gpu = GpuProfileModel(window_s).fit(nodes, X)
    return len(X)
