"""The ``detector flows`` job: captures in, flow records out, and a summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from detector.backend import CPU, Backend
from detector.config import FlowConfig
from detector.errors import DetectorError, OutputError
from detector.flows.engine import make_engine, spare_core, walk_threads
from detector.flows.records import RecordBuilder
from detector.flows.services import ServiceNames
from detector.output.flow_writers import open_flow_writer
from detector.pipeline.ingest import Ingest
from detector.pipeline.record_sink import RecordSink
from detector.pipeline.tap_input import tap_input
from detector.progress import Progress
from detector.sources.parallel_walk import WalkPlan

if TYPE_CHECKING:  # pyarrow.compute, which it needs, costs 0.08 s of start-up
    from detector.pipeline.flow_summary import FlowSummary

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_UNUSABLE = 2


@dataclass
class JobResult:
    """What a job (flows, train) ends with: its exit status, summary and problems."""

    exit_code: int
    summary: dict
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


FlowsResult = JobResult


def run_flows(inputs: list[str], out_path: str, fmt: str, cfg: FlowConfig,
              progress: bool | None = None, summary: FlowSummary | None = None,
              backend: Backend = CPU) -> FlowsResult:
    """Read ``inputs``, write their flow records to ``out_path``; ``summary`` (optional) sees
    every record batch too."""
    t0 = time.perf_counter()
    ingest = Ingest(inputs, cfg.batch_size)
    writer = open_flow_writer(out_path, fmt)
    engine = make_engine(cfg, backend)
    ingest.read_ahead = spare = spare_core(engine)
    ingest.walk = WalkPlan(threads=walk_threads(engine, cfg))
    services = ServiceNames()  # the service of each record, named from its first payload
    sink = RecordSink(RecordBuilder(cfg), writer, summary, background=engine.threads > 1 or spare, services=services)
    bar = Progress(ingest.total_bytes(), enabled=progress)
    output_error: OutputError | None = None
    interrupted = False
    try:
        try:
            for batch in ingest.batches():
                emitted = engine.process(batch)
                # on a GPU, only the packets the L7 tap could want come back: the early ones are
                tapped, cols = tap_input(engine, batch)
                services.observe(tapped.buf, tapped.off, cols, tapped.n)
                for em in emitted:
                    sink.put(em)
                bar.update(ingest.done_bytes(), engine.counts.records, batch.path)
        except KeyboardInterrupt:
            interrupted = True
        for em in engine.finish_groups():
            sink.put(em)
        sink.close()
    except OutputError as exc:
        output_error = exc
    finally:
        bar.close()
        output_error = close_outputs((sink, writer), output_error)
    elapsed = time.perf_counter() - t0
    c = engine.counts
    summary = {
        "inputs": len(ingest.inputs),
        "packets": c.records,
        "ip_packets": c.ip,
        "non_ip_packets": c.non_ip,
        "bad_packets": c.bad,
        "wire_bytes": c.wire_bytes,
        "flows": engine.flows_out,
        "flows_written": writer.rows_written,
        "evicted_flows": engine.evicted,
        "fragments": engine.fragment_stats,
        "threads": engine.threads,
        "backend": backend.name,
        "device": backend.device or "cpu",
        "seconds": round(elapsed, 6),
        "packets_per_s": round(c.records / elapsed, 1) if elapsed > 0 else 0.0,
        "bad_inputs": len(ingest.errors),
        "output": out_path,
        "format": fmt,
    }
    code, errors, warnings = outcome(ingest, c.records, output_error,
                                     "interrupted: flows seen so far were written" if interrupted else None)
    return FlowsResult(code, summary, errors, warnings)


def close_outputs(outputs, error: OutputError | None) -> OutputError | None:
    """Close every output (None ones skipped); the first error wins, none is lost silently."""
    for out in outputs:
        if out is None:
            continue
        try:
            out.close()
        except OutputError as exc:
            error = error or exc
    return error


def outcome(ingest, records: int, output_error, interrupted: str | None) -> tuple[int, list[str], list[str]]:
    """Exit status, errors and warnings of a job over ``ingest``: unusable when nothing could be
    read, partial when anything went wrong or the run was interrupted (``interrupted`` says what
    was kept), else done."""
    errors = [str(e) for e in ingest.errors]
    warnings = [w for s in ingest.inputs for w in s.warnings]
    if output_error is not None:
        errors.append(str(output_error))
    if interrupted:
        warnings.append(interrupted)
    if ingest.unusable and records == 0:
        return EXIT_UNUSABLE, errors, warnings
    return (EXIT_PARTIAL if errors or warnings else EXIT_OK), errors, warnings


def summary_line(s: dict) -> str:
    return (f"{s['packets']:,} packets ({s['ip_packets']:,} IP, {s['non_ip_packets']:,} other, "
            f"{s['bad_packets']:,} malformed) from {s['inputs']} input(s) -> {s['flows']:,} flows "
            f"in {s['seconds']:.2f} s ({s['packets_per_s'] / 1e6:.2f} M packets/s, {_where(s)}); "
            f"{s['evicted_flows']:,} evicted, {s['bad_inputs']} bad input(s)")


def _where(s: dict) -> str:
    if s.get("backend") == "gpu":
        return f"GPU: {s['device']}"
    return f"CPU, {s['threads']} thread(s)"


__all__ = ["run_flows", "summary_line", "FlowsResult", "DetectorError"]
