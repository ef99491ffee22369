"""A spoofed SYN flood against normal traffic of the same size (issue 21's target: ``analyze``
on a 3M-source flood at >= 0.5x its packets/s on normal traffic, in <= 2 GB).

Writes ``bench-syn-flood`` (N packets, 99 % SYNs from distinct spoofed sources) and ``hpc-mix``
(N packets of the benign mix) with the project's synth, then runs ``detector flows`` and
``detector analyze`` on each as whole processes, interleaved, ``--rounds`` times: wall time
(min), packets/s and peak RSS (max). The ratios compare runs of this one invocation.

    python benchmarks/syn_flood.py --packets 3000000 -o benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packets", type=int, default=3_000_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("-o", "--output")
    args = p.parse_args()

    from detector.bench.machine import machine
    from detector.bench.procs import run_timed

    me = [sys.executable, "-m", "detector"]
    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        subprocess.run([*me, "synth", "bench-syn-flood", "hpc-mix", "-o", str(d), "--packets", str(args.packets)],
                       check=True, cwd=ROOT)
        for _ in range(args.rounds):
            for capture in ("hpc-mix", "bench-syn-flood"):
                path = str(d / f"{capture}.pcap")
                for cmd, extra in (("flows", ["-o", str(d / "f.parquet")]), ("analyze", ["-o", str(d / "a.jsonl")])):
                    r = run_timed([*me, cmd, path, "-q", *extra], cwd=str(ROOT))
                    if r["rc"] != 0:
                        print(r["stderr"], file=sys.stderr)
                        return 1
                    runs.setdefault((capture, cmd), []).append(r)
        alerts = [json.loads(line)["technique"] for line in (d / "a.jsonl").read_text().splitlines()]
    rows = []
    for (capture, cmd), rs in runs.items():
        wall = min(r["wall"] for r in rs)
        rows.append({"capture": capture, "command": cmd, "seconds": round(wall, 3),
                     "packets_per_s": round(args.packets / wall), "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)})
    rate = {(r["capture"], r["command"]): r["packets_per_s"] for r in rows}
    doc = {"benchmark": "syn_flood", "packets": args.packets, "rounds": args.rounds, "machine": machine(),
           "rows": rows, "flood_alerts": alerts,
           "analyze_flood_vs_normal": round(rate[("bench-syn-flood", "analyze")] / rate[("hpc-mix", "analyze")], 3),
           "flows_flood_vs_normal": round(rate[("bench-syn-flood", "flows")] / rate[("hpc-mix", "flows")], 3)}
    for r in rows:
        print(f"{r['capture']:16} {r['command']:8} {r['seconds']:8.2f} s {r['packets_per_s'] / 1e6:6.2f} M/s "
              f"{r['peak_rss_mb']:8.0f} MB")
    print(f"analyze: flood at {doc['analyze_flood_vs_normal']:.2f}x normal traffic's packets/s; "
          f"flows: {doc['flows_flood_vs_normal']:.2f}x")
    if args.output:
        Path(args.output).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
