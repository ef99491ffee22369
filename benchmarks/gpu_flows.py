"""Decode + flow accounting on the CPU (one core, all cores) and on the GPU, same file, same
run, for batch sizes from 1e4 to 1e7 packets, after start-up (kernels loaded by a warm-up).

The GPU rows also give the share of time spent copying capture bytes to the device. Without a
usable GPU the GPU rows say why. Results: benchmarks/results/<date>-gpu-flows-<host>.json.

    python benchmarks/gpu_flows.py [--input CAPTURE] [--packets 2000000] [--snaplen 128]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
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
from detector.pipeline.ingest import Ingest  # noqa: E402

BATCHES = (10_000, 100_000, 1_000_000, 10_000_000)


def run_engine(engine, path: str, batch: int) -> float:
    ingest = Ingest([path], batch)
    t0 = time.perf_counter()
    for b in ingest.batches():
        engine.process(b)
    engine.finish()
    return time.perf_counter() - t0


def make(backend, cfg, profile=False):
    if backend.is_gpu:
        from detector.flows.gpu_engine import GpuFlowEngine

        return GpuFlowEngine(cfg, backend, profile=profile)
    return FlowEngine(cfg)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input")
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--snaplen", type=int, default=128)
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    work = REPO / "benchmarks" / "work"
    work.mkdir(parents=True, exist_ok=True)
    path = Path(args.input) if args.input else work / f"hpc-mix-{args.packets}-snap{args.snaplen}.pcap"
    if not path.exists():
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([sys.executable, "-m", "detector", "synth", "hpc-mix", "-o", d, "--packets",
                            str(args.packets), "--snaplen", str(args.snaplen)], check=True,
                           env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
            Path(d, "hpc-mix.pcap").rename(path)
    backends = [("detector-cpu-1core", CPU, 1), ("detector-cpu-all", CPU, 0)]
    try:
        gpu = select_backend("gpu")
        backends.append(("detector-gpu", gpu, 1))
        gpu_note = gpu.device
    except BackendUnavailable as exc:
        gpu, gpu_note = None, str(exc)
    results = []
    for size in [int(x) for x in args.batches.split(",")]:
        for name, backend, threads in backends:
            cfg = dataclasses.replace(FlowConfig(), batch_size=max(256, min(size, 16_777_216)), threads=threads)
            run_engine(make(backend, cfg), str(path), cfg.batch_size)  # warm-up: load kernels
            best, h2d = None, None
            for _ in range(args.repeat):
                engine = make(backend, cfg, profile=backend.is_gpu)
                seconds = run_engine(engine, str(path), cfg.batch_size)
                if best is None or seconds < best:
                    best, packets = seconds, engine.counts.records
                    h2d = getattr(engine, "h2d_seconds", None)
            results.append({"tool": name, "batch": cfg.batch_size, "packets_per_s": round(packets / best),
                            "seconds": round(best, 4), "h2d_share": round(h2d / best, 3) if h2d is not None else None,
                            "device": backend.device or machine()["cpu"]})
            print(f"{name:20s} batch {cfg.batch_size:>9,}: {packets / best / 1e6:8.2f} M packets/s", file=sys.stderr)
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
        print(f"| {r['tool']} | {r['batch'] or '-'} | {pps} | {r.get('h2d_share') or '-'} | {r.get('notes', '')} |")
    print(f"results: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
