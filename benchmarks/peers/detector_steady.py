"""``detector flows`` measured after start-up: imports done and kernels loaded by a warm-up
run on the first packets, then the whole capture timed in the same process.

Usage: python detector_steady.py CAPTURE OUT.parquet THREADS   (prints JSON)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time

from detector.config import FlowConfig
from detector.pipeline.flows_job import run_flows
from detector.sources import open_capture


def warm_up(path: str, cfg: FlowConfig) -> None:
    """Run the whole pipeline once on a small prefix of the capture."""
    reader = open_capture(path, 4096)
    with tempfile.TemporaryDirectory() as d:
        import shutil

        head = f"{d}/head.pcap"
        try:
            size = next(reader.batches()).off[-1] + 2000
        finally:
            reader.src.close()
        with open(path, "rb") as src, open(head, "wb") as dst:
            shutil.copyfileobj(src, dst, length=int(size))
        run_flows([head], f"{d}/w.parquet", "parquet", cfg, progress=False)


def main(path: str, out: str, threads: int) -> None:
    cfg = dataclasses.replace(FlowConfig(), threads=threads)
    warm_up(path, cfg)
    t0 = time.perf_counter()
    result = run_flows([path], out, "parquet", cfg, progress=False)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"seconds": elapsed, "packets": result.summary["packets"], "flows": result.summary["flows"]}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
