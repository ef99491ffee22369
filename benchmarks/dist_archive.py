"""Distributed analysis (``analyze --cluster``) against one process on the same archive.

Writes a synthetic site's capture (``hpc-mix`` background plus attacks), cuts it into a
rotating capture's files, and times ``run_analyze`` and ``run_distributed`` on local clusters
of 1 and N workers, side by side in one run, checking that alerts and flow counts agree. The
share of packets in flows that cross files (stitched by the client) is reported: it bounds
what the workers can take over.

    python benchmarks/dist_archive.py --packets 1000000 --files 8 --workers 2 -o benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packets", type=int, default=400_000)
    p.add_argument("--files", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("-o", "--output")
    args = p.parse_args()

    from detector.cli import main as cli
    from detector.config import load_config
    from detector.dist.job import run_distributed
    from detector.pipeline.analyze_job import run_analyze
    from tests.capture_files import split_pcap

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cli(["synth", "hpc-mix", "-o", str(d / "s"), "--packets", str(args.packets)])
        split_pcap(d / "s" / "hpc-mix.pcap", d / "arch", args.files, stem="dtn01")
        cfg = load_config(str(d / "s" / "site.toml"))
        rows = []
        t = time.perf_counter()
        single = run_analyze([str(d / "arch")], cfg, None, progress=False)
        rows.append({"mode": "single process", "seconds": round(time.perf_counter() - t, 3)})
        ref = [a.to_json() for a in single.alerts]
        for n in sorted({1, args.workers}):
            t = time.perf_counter()
            dist = run_distributed([str(d / "arch")], cfg, f"local:{n}", None, progress=False)
            info = dist.summary["cluster"]
            rows.append({"mode": f"--cluster local:{n}", "seconds": round(time.perf_counter() - t, 3),
                         "same_alerts": [a.to_json() for a in dist.alerts] == ref,
                         "same_flows": dist.summary["flows"] == single.summary["flows"],
                         "shared_packet_share": round(info["shared_packets"] / max(dist.summary["packets"], 1), 3),
                         "phase_seconds": info["seconds"]})
        packets = single.summary["packets"]
    for r in rows:
        r["packets_per_s"] = round(packets / r["seconds"])
        r["vs_single"] = round(rows[0]["seconds"] / r["seconds"], 2)
    from detector.bench.machine import machine

    out = {"machine": machine(),
           "packets": packets, "files": args.files, "rows": rows,
           "note": "wall time including cluster start-up (worker processes import and load the kernels); "
                   "phases: start (cluster), census (decode every file), partitions (flows and L7 of the "
                   "flows no other file has), stitch (the flows that cross files), detect (detector groups)"}
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
