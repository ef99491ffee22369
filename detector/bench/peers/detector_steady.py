"""``detector flows`` (or ``detector analyze``, all detectors on) measured after start-up:
imports done and kernels loaded by a warm-up run on the first packets, then the whole capture
timed in the same process.

Usage: python -m detector.bench.peers.detector_steady CAPTURE OUT THREADS [flows|analyze] [cpu|gpu]   (prints JSON)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time

from detector.bench.scaling import wait_at_barrier
from detector.config import Config, FlowConfig
from detector.pipeline.analyze_job import run_analyze
from detector.pipeline.flows_job import run_flows
from detector.sources import open_capture


def warm_up(path: str, job) -> None:
    """Run the whole pipeline once on a small prefix of the capture."""
    reader = open_capture(path, 4096)
    with tempfile.TemporaryDirectory() as d:
        head = f"{d}/head.pcap"
        try:
            size = int(next(reader.batches()).off[-1] + 2000)
        finally:
            reader.src.close()
        with open(path, "rb") as src, open(head, "wb") as dst:
            dst.write(src.read(size))  # the first ~4k packets (the last one may be cut: that is fine)
        job(head, f"{d}/w.out")


def main(path: str, out: str, threads: int, mode: str = "flows", backend_name: str = "cpu") -> None:
    from detector.backend import select_backend

    backend = select_backend(backend_name)
    flow_cfg = dataclasses.replace(FlowConfig(), threads=threads)
    if mode == "analyze":
        cfg = dataclasses.replace(Config(), flows=flow_cfg)

        def job(capture, dest):
            return run_analyze([capture], cfg, alerts_out=dest, progress=False, backend=backend)
    else:
        def job(capture, dest):
            return run_flows([capture], dest, "parquet", flow_cfg, progress=False, backend=backend)
    warm_up(path, job)
    together = wait_at_barrier()  # runs measured side by side start their timed parts together
    t0 = time.perf_counter()
    result = job(path, out)
    elapsed = time.perf_counter() - t0
    doc = {"seconds": elapsed, "packets": result.summary["packets"], "flows": result.summary["flows"],
           "alerts": result.summary.get("alerts")}
    if together is not None:
        doc["together"] = together
    print(json.dumps(doc))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:6])
