"""Decode + flow accounting on the CPU (one core, all cores), the data-parallel engine on NumPy
(one core: the GPU's array program, run by the CPU) and on the GPU, same file, same run, for
batch sizes from 1e4 to 1e7 packets, after start-up (kernels loaded by a warm-up).

Rows of the data-parallel engine also give, from one more run with a wait around each step,
the share of time in each step: read (the record walk included), copy, decode, sort, scans,
merge, walk (the fallback), records (finishing ended flows into Arrow columns), and the host
reads and kernel launches per batch. Without a usable GPU the GPU rows say why.
Results: benchmarks/results/<date>-gpu-flows-<host>.json.

    python benchmarks/gpu_flows.py [--input CAPTURE] [--packets 2000000] [--snaplen 128] [--tools a,b]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from detector.backend import CPU, BackendUnavailable, select_backend  # noqa: E402
from detector.bench.machine import machine  # noqa: E402
from detector.config import FlowConfig  # noqa: E402
from detector.flows.engine import FlowEngine  # noqa: E402
from detector.flows.records import RecordBuilder  # noqa: E402
from detector.flows.scan_engine import ScanFlowEngine  # noqa: E402
from detector.pipeline.ingest import Ingest  # noqa: E402

BATCHES = (10_000, 100_000, 1_000_000, 10_000_000)


class Run:
    def __init__(self, seconds: float, read: float, records: float, batches: int):
        self.seconds, self.read, self.records, self.batches = seconds, read, records, batches


def run_engine(engine, path: str, batch: int, builder=None) -> Run:
    """Every batch through ``engine``; with ``builder``, ended flows also become Arrow records."""
    batches = iter(Ingest([path], batch).batches())
    read = records = 0.0
    count = 0
    t0 = time.perf_counter()
    while True:
        r0 = time.perf_counter()
        b = next(batches, None)
        read += time.perf_counter() - r0
        if b is None:
            break
        count += 1
        out = engine.process(b)
        records += _build(builder, out)
    records += _build(builder, engine.finish())
    if hasattr(getattr(engine, "xp", None), "cuda"):  # ended flows stay on the device: wait for them
        engine.xp.cuda.get_current_stream().synchronize()
    return Run(time.perf_counter() - t0, read, records, count)


def _build(builder, emitted) -> float:
    if builder is None:
        return 0.0
    t0 = time.perf_counter()
    for em in emitted:
        builder.build(em)
    return time.perf_counter() - t0


def make(kind: str, backend, cfg, profile=False):
    if kind == "gpu":
        from detector.flows.gpu_engine import GpuFlowEngine

        return GpuFlowEngine(cfg, backend, profile=profile)
    if kind == "scan":
        return ScanFlowEngine(cfg, profile=profile)
    return FlowEngine(cfg)


def profiled(kind: str, backend, cfg, path: str) -> dict:
    """Shares of each step (waits around every step), host reads and launches per batch."""
    engine = make(kind, backend, cfg, profile=True)
    run = run_engine(engine, path, cfg.batch_size, RecordBuilder(cfg))
    seconds = {"read": run.read, **engine.clock.seconds}
    # records: the builder's whole time (its device steps, records and copy_out, are inside it)
    timed = sum(engine.clock.seconds.get(k, 0.0) for k in ("records", "copy_out"))
    seconds["records"] = seconds.get("records", 0.0) + max(0.0, run.records - timed)
    total = sum(seconds.values())
    stats = engine.table.stats
    return {"shares": {k: round(v / total, 4) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
            "syncs_per_batch": round(engine.syncs / max(run.batches, 1), 2),
            "launches_per_batch": round(engine.clock.launches / max(run.batches, 1), 2),
            "walked_packets": stats.walked_packets, "rounds": stats.rounds, "ranges": stats.ranges}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input")
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--snaplen", type=int, default=128)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--tools", help="comma-separated rows to measure (default: all)")
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    work = REPO / "benchmarks" / "work"
    work.mkdir(parents=True, exist_ok=True)
    path = Path(args.input) if args.input else work / f"hpc-mix-{args.packets}-snap{args.snaplen}.pcap"
    if not path.exists():
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([sys.executable, "-m", "detector", "synth", "hpc-mix", "-o", d, "--packets",
                            str(args.packets), "--snaplen", str(args.snaplen)], check=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
            Path(d, "hpc-mix.pcap").rename(path)
    backends = [("detector-cpu-1core", "cpu", CPU, 1), ("detector-cpu-all", "cpu", CPU, 0),
                ("detector-scan-numpy-1core", "scan", CPU, 1)]
    try:
        gpu = select_backend("gpu")
        backends.append(("detector-gpu", "gpu", gpu, 1))
        gpu_note = gpu.device
    except BackendUnavailable as exc:
        gpu, gpu_note = None, str(exc)
    if args.tools:
        wanted = set(args.tools.split(","))
        unknown = wanted - {b[0] for b in backends} - {"detector-gpu"}
        if unknown:
            ap.error(f"--tools: unknown {', '.join(sorted(unknown))}")
        backends = [b for b in backends if b[0] in wanted]
    results = []
    for size in [int(x) for x in args.batches.split(",")]:
        for name, kind, backend, threads in backends:
            cfg = dataclasses.replace(FlowConfig(), batch_size=max(256, min(size, 16_777_216)), threads=threads)
            run_engine(make(kind, backend, cfg), str(path), cfg.batch_size, RecordBuilder(cfg))  # warm-up: load kernels
            best = None
            for _ in range(args.repeat):
                engine = make(kind, backend, cfg)
                seconds = run_engine(engine, str(path), cfg.batch_size).seconds
                if best is None or seconds < best:
                    best, packets = seconds, engine.counts.records
            row = {"tool": name, "batch": cfg.batch_size, "packets_per_s": round(packets / best),
                   "seconds": round(best, 4), "device": backend.device or machine()["cpu"]}
            if kind != "cpu":
                row.update(profiled(kind, backend, cfg, str(path)))
            results.append(row)
            print(f"{name:26s} batch {cfg.batch_size:>9,}: {packets / best / 1e6:8.2f} M packets/s", file=sys.stderr)
    if gpu is None:
        results.append({"tool": "detector-gpu", "batch": None, "packets_per_s": None, "notes": gpu_note})
    doc = {"benchmark": "gpu-flows", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": {**machine(), "gpu": gpu_note if gpu else None}, "input": {"file": path.name,
                                                                            "snaplen": args.snaplen},
           "results": results}
    out = Path(args.output) if args.output else REPO / "benchmarks" / "results" / (
        f"{dt.date.today().isoformat()}-gpu-flows-{platform.node() or 'host'}.json")
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for r in results:
        pps = f"{r['packets_per_s'] / 1e6:.2f} M" if r["packets_per_s"] else "-"
        top = ", ".join(f"{k} {v:.0%}" for k, v in list(r.get("shares", {}).items())[:3]) or "-"
        print(f"| {r['tool']} | {r['batch'] or '-'} | {pps} | {top} | {r.get('syncs_per_batch', '-')} | "
              f"{r.get('notes', '')} |")
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
