"""The ``detector analyze`` job: captures in, alerts out (and, optionally, flow records).

Per batch: flow accounting (CPU or GPU engine), then the L7 tap on the batch's packets, then
every detector sees the ended flows and the events. At the end, open flows and streams are
flushed and each detector reports its alerts, which are written one JSON object per line,
in time order.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from detector.alerts import SEVERITY_RANK, Alert
from detector.backend import CPU, Backend
from detector.config import Config
from detector.errors import OutputError
from detector.exports.files import read_flows
from detector.flows.engine import spare_core, walk_threads
from detector.output.flow_writers import open_flow_writer
from detector.pipeline import telemetry_stage
from detector.pipeline.flows_job import close_outputs, outcome
from detector.pipeline.ingest import Ingest
from detector.pipeline.stages import Stages, time_ordered
from detector.progress import Progress
from detector.sources.batch import RawBatch
from detector.sources.parallel_walk import WalkPlan

log = logging.getLogger("detector.analyze")


@dataclass
class AnalyzeResult:
    exit_code: int
    alerts: list[Alert]
    summary: dict
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    detectors: list = field(default_factory=list)  # as they ended (what they learned, for training)
    telemetry: object = None  # the GPU telemetry judged (GpuInputs), for the report


class AlertSink:
    """JSONL alerts to a file or stdout; written on close, in time order."""

    def __init__(self, path: str | None):
        self.path = path or "-"
        self._fh = None
        if self.path != "-":
            try:
                self._fh = open(self.path, "w", encoding="utf-8")
            except OSError as exc:
                raise OutputError(self.path, f"cannot create: {exc.strerror}") from None

    def write_all(self, alerts: list[Alert], min_severity: str = "low") -> None:
        fh = self._fh or sys.stdout
        floor = SEVERITY_RANK[min_severity]
        try:
            for a in (a for a in alerts if a.severity_rank >= floor):
                fh.write(a.to_json())
                fh.write("\n")
            fh.flush()
        except OSError as exc:
            raise OutputError(self.path, f"write failed: {exc.strerror}") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def _head(b: RawBatch, k: int) -> RawBatch:
    return RawBatch(b.buf, b.off[:k], b.caplen[:k], b.wirelen[:k], b.ts_ns[:k], b.link[:k], b.path, b.file_offset)


def run_analyze(inputs: list[str], cfg: Config, alerts_out: str | None = None, flows_out: str | None = None,
                flows_format: str = "parquet", backend: Backend = CPU, progress: bool | None = None,
                extra_detectors=(), min_severity: str = "low", until_ns: int | None = None,
                model=None, telemetry=None, flow_files: tuple[str, ...] = ()) -> AnalyzeResult:
    """Analyse ``inputs``; alerts of ``min_severity`` and above go to ``alerts_out`` ("-" for
    stdout, None for nowhere); the result holds them all. With ``until_ns``, reading stops at
    the first packet stamped later (what a live sensor would have seen by then). ``model`` is a
    learned :class:`~detector.baseline.site_model.SiteModel`; ``extra_detectors`` are factories
    called with the run's :class:`Site` (detectors beyond the configured ones). ``telemetry``
    (a :class:`~detector.pipeline.telemetry_stage.TelemetryArgs`) adds GPU logs and allocations,
    read before the captures (an unusable file stops the run before any work); ``flow_files`` are
    saved flow exports (IPFIX, nfcapd: :mod:`detector.exports.files`), whose records meet the
    detectors beside the captures' own."""
    t0 = time.perf_counter()
    gpu = telemetry_stage.load(telemetry, cfg, model) if telemetry else None
    ingest = Ingest(inputs, cfg.flows.batch_size)
    sink = AlertSink(alerts_out) if alerts_out is not None else None
    flow_writer = open_flow_writer(flows_out, flows_format) if flows_out else None
    stages = Stages(cfg, backend, model, extra_detectors, flow_writer)
    engine = stages.engine
    ingest.read_ahead = spare_core(engine)
    ingest.walk = WalkPlan(threads=walk_threads(engine, cfg.flows))
    bar = Progress(ingest.total_bytes(), enabled=progress)
    output_error = None
    interrupted = False
    alerts: list[Alert] = []
    flow_problems: list[str] = []
    try:
        for path in flow_files:
            for rb in read_flows(path, flow_problems):
                stages.feed_records(rb)
        try:
            for batch in ingest.batches():
                last = False
                if until_ns is not None:
                    late = np.flatnonzero(batch.ts_ns > until_ns)
                    if len(late):
                        batch, last = _head(batch, int(late[0])), True
                stages.process(batch)
                bar.update(ingest.done_bytes(), engine.counts.records, batch.path)
                if last:
                    break
        except KeyboardInterrupt:
            interrupted = True
        stages.flush()
        alerts = stages.report()
        if gpu is not None:
            alerts = time_ordered(telemetry_stage.judge(gpu, alerts, cfg))
        if sink is not None:
            sink.write_all(alerts, min_severity)
    except OutputError as exc:
        output_error = exc
    finally:
        bar.close()
        try:
            stages.close()
        finally:
            output_error = close_outputs((sink, flow_writer), output_error)
    result = analysis_result(ingest, engine.counts, stages, alerts, time.perf_counter() - t0, backend, model,
                             output_error, interrupted)
    if flow_files:
        result.summary["flow_files"] = len(flow_files)
    if flow_problems:  # part of a saved export could not be read: the rest was
        result.warnings += flow_problems
        result.exit_code = max(result.exit_code, 1)
    if gpu is not None:
        result.telemetry = gpu
        result.summary["gpu_telemetry"] = telemetry_stage.summary(gpu)
        result.warnings += gpu.telemetry.problems + telemetry_stage.unjudged(gpu)
        if gpu.telemetry.bad_lines > len(gpu.telemetry.problems):
            result.warnings.append(f"GPU logs: {gpu.telemetry.bad_lines} bad line(s) in all, skipped")
    return result


def analysis_result(inputs, counts, stages: Stages, alerts: list[Alert], elapsed: float, backend: Backend, model,
                    output_error, interrupted: bool, tap_stats: dict | None = None) -> AnalyzeResult:
    """The run's summary and exit status. ``inputs`` is an :class:`InputLog`; ``counts`` the
    decoder's :class:`PacketCounts` over the whole input."""
    c, site = counts, stages.site
    by_cat = Counter(a.category for a in alerts)
    by_sev = Counter(a.severity for a in alerts)
    hosts = Counter(a.host for a in alerts if a.severity_rank >= SEVERITY_RANK["medium"])
    summary = {
        "inputs": len(inputs.inputs), "packets": c.records, "ip_packets": c.ip, "flows": stages.flows_seen,
        "alerts": len(alerts), "alerts_by_category": dict(by_cat), "alerts_by_severity": dict(by_sev),
        "top_hosts": hosts.most_common(5), "seconds": round(elapsed, 6),
        "packets_per_s": round(c.records / elapsed, 1) if elapsed > 0 else 0.0, "backend": backend.name,
        "device": backend.device or "cpu", "bad_inputs": len(inputs.errors),
        "l7": tap_stats or {"streams_dropped": stages.tap.dropped_streams, "parse_errors": stages.tap.parse_errors},
        "detector_evictions": {d.name: d.evictions for d in stages.detectors if d.evictions},
        "site_inferred": site.inferred_local, "inferred_local_hosts": site.busiest,
        "model": None if model is None else {"windows_trained": model.windows_trained,
                                             "hosts": len(model.baseline.entities_), "frozen": model.frozen},
    }
    code, errors, warnings = outcome(inputs, c.records, output_error,
                                     "interrupted: alerts for the input read so far were written" if interrupted
                                     else None)
    return AnalyzeResult(code, alerts, summary, errors, warnings, stages.detectors)


def summary_text(s: dict, alerts: list[Alert]) -> str:
    exports = f" and {s['flow_files']} flow export file(s)" if s.get("flow_files") else ""
    lines = [f"{s['packets']:,} packets, {s['flows']:,} flows from {s['inputs']} input(s){exports} in {s['seconds']:.2f} s "
             f"({s['packets_per_s'] / 1e6:.2f} M packets/s, {s['backend']}): {s['alerts']} alert(s)"]
    if alerts:
        sev = s["alerts_by_severity"]
        lines.append("  by severity: " + ", ".join(f"{k} {sev[k]}" for k in ("critical", "high", "medium", "low")
                                                  if k in sev))
        lines.append("  by category: " + ", ".join(f"{k} {v}" for k, v in sorted(s["alerts_by_category"].items())))
        if s["top_hosts"]:
            lines.append("  top hosts (medium and above): " + ", ".join(f"{h or '?'} ({n})" for h, n in s["top_hosts"]))
        worst = sorted(alerts, key=lambda a: (-a.severity_rank, a.ts_ns))[:5]
        for a in worst:
            lines.append(f"  [{a.severity}] {a.category}/{a.technique}: {a.summary[:150]}")
    if s.get("cluster"):
        c = s["cluster"]
        share = c["shared_packets"] / max(s["packets"], 1)
        lines.append(f"  cluster: {c['workers']} worker(s), {c['partitions']} partition(s) ({c['reused_partitions']} "
                     f"reused), {share:.0%} of the packets in flows that cross files (stitched)")
    if s.get("gpu_telemetry"):
        g = s["gpu_telemetry"]
        held = ("no allocations given: gpu_unallocated and gpu_foreign_process judged nothing"
                if g["allocations"] is None else f"{g['allocations']:,} allocation(s)")
        lines.append(f"  GPU telemetry: {g['gpus']:,} GPU(s) of {g['hosts']:,} host(s), {g['gpu_samples']:,} GPU and "
                     f"{g['process_samples']:,} process sample(s), {g['bad_lines']:,} bad line(s); {held}")
    if s.get("model"):
        m = s["model"]
        lines.append(f"  site model: {m['windows_trained']:,} training windows of {m['hosts']:,} hosts")
    if s.get("detector_evictions"):
        lines.append("  note: state caps reached, some findings may be missed: " + ", ".join(
            f"{name} dropped {n:,}" for name, n in sorted(s["detector_evictions"].items())) + " (see [detect.*] max_*)")
    if s.get("site_inferred"):
        busiest = s.get("inferred_local_hosts") or []
        extra = f", and the busiest public host(s) {', '.join(busiest)}" if busiest else ""
        lines.append(f"  note: no site configuration: private address ranges{extra} were taken as local (see --config)")
    return "\n".join(lines)
