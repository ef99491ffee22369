"""The record walk alone, and ``detector flows`` end to end, with the walk on one thread and on
several (:mod:`detector.sources.parallel_walk`), side by side on the same captures.

Walk alone: a reader's batches, nothing decoded, from a fresh mapping of a file already in the
page cache (as a run of the tool sees it), in records per second. Variants, interleaved round
after round (their order rotating), best and median reported:

- ``sequential``: today's walk (one kernel call per batch);
- ``staged-1``: the threaded walk on one thread (walk into its own rows, then copy): its overhead;
- ``parallel-N``: the threaded walk on N threads.

End to end: ``detector flows`` in a fresh process per run, with ``flows.threads`` and
``flows.walk_threads`` set, in packets per second of the job (start-up excluded) and of the
whole process. Results: benchmarks/results/<date>-record-walk-<host>.json.

    python benchmarks/record_walk.py [--input CAPTURE ...] [--packets 4000000] [--rounds 7] [-o results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from detector.bench.machine import machine  # noqa: E402
from detector.sources import open_capture, parallel_walk  # noqa: E402
from detector.sources.parallel_walk import ParallelWalk, SequentialWalk, WalkPlan  # noqa: E402

BATCH = 262144  # the flow job's default batch


def synth(out: Path, packets: int, *extra: str) -> Path:
    """An hpc-mix capture from the project's generator, made once."""
    name = "-".join(["hpc-mix", str(packets), *[e.lstrip("-") for e in extra]]) or "hpc-mix"
    folder = out / name
    found = sorted(folder.glob("hpc-mix.pcap*")) if folder.exists() else []
    if found:
        return found[0]
    subprocess.run([sys.executable, "-m", "detector", "synth", "hpc-mix", "-o", str(folder), "--packets",
                    str(packets), "--seed", "1", *extra], check=True, cwd=REPO)
    return sorted(folder.glob("hpc-mix.pcap*"))[0]


def walk_once(path: Path, variant: str) -> tuple[int, float]:
    """Records walked and seconds taken, batches of :data:`BATCH` rows."""
    if variant == "sequential":
        walk = None
    else:
        threads = 1 if variant == "staged-1" else int(variant.split("-")[1])
        walk = WalkPlan(threads=threads)
    reader = open_capture(str(path), BATCH, walk=walk)
    if variant == "staged-1":  # the plan's threads=1 is the sequential walk: force the staged one
        def forced(src, plan):
            return ParallelWalk(plan)

        module = parallel_walk
        saved, module.make_walk = module.make_walk, forced
    try:
        t0 = time.perf_counter()
        n = sum(b.n for b in reader.batches())
        seconds = time.perf_counter() - t0
    finally:
        if variant == "staged-1":
            module.make_walk = saved
        reader.src.close()
    kind = SequentialWalk if variant == "sequential" else ParallelWalk
    assert reader.walk_stats is None if kind is SequentialWalk else reader.walk_stats is not None, variant
    return n, seconds


def flows_once(path: Path, threads: int, walk_threads: int, work: Path) -> dict:
    cfg = work / f"cfg-{threads}-{walk_threads}.toml"
    cfg.write_text(f"[flows]\nthreads = {threads}\nwalk_threads = {walk_threads}\n")
    stats = work / "stats.json"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "detector", "flows", str(path), "-o", str(work / "flows.parquet"),
                    "--config", str(cfg), "--stats", str(stats), "-q", "--no-progress"], check=True, cwd=REPO)
    wall = time.perf_counter() - t0
    summary = json.loads(stats.read_text())
    return {"packets": summary["packets"], "job_s": summary["seconds"], "process_s": wall}


def rates(records: int, seconds: list[float]) -> dict:
    return {"best_per_s": round(records / min(seconds)), "median_per_s": round(records / statistics.median(seconds)),
            "runs_s": [round(s, 4) for s in seconds]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", action="append", help="capture(s) to walk (default: hpc-mix, made here)")
    ap.add_argument("--packets", type=int, default=4_000_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--flows-rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="walk threads of the parallel variant")
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    work = REPO / "benchmarks" / "work"
    work.mkdir(parents=True, exist_ok=True)
    inputs = [Path(p) for p in args.input] if args.input else [
        synth(work, args.packets), synth(work, args.packets, "--snaplen", "128"),
        synth(work, args.packets, "--format", "pcapng")]
    variants = ["sequential", "staged-1", f"parallel-{args.threads}"]
    flow_cases = [(1, 1), (1, args.threads), (2, 1), (2, args.threads)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in inputs:
            path.read_bytes()  # into the page cache: every variant then maps a cached file
            walks: dict[str, list[float]] = {v: [] for v in variants}
            records = walk_once(path, "sequential")[0]  # also loads the kernels
            for r in range(args.rounds):
                for v in variants[r % len(variants):] + variants[:r % len(variants)]:
                    n, seconds = walk_once(path, v)
                    assert n == records, (v, n, records)
                    walks[v].append(seconds)
            flows: dict[str, list[dict]] = {f"threads={t},walk_threads={w}": [] for t, w in flow_cases}
            for r in range(args.flows_rounds):
                for t, w in flow_cases[r % len(flow_cases):] + flow_cases[:r % len(flow_cases)]:
                    flows[f"threads={t},walk_threads={w}"].append(flows_once(path, t, w, Path(tmp)))
            row = {"input": path.name, "bytes": path.stat().st_size, "records": records,
                   "walk": {v: rates(records, s) for v, s in walks.items()},
                   "flows": {k: {"job": rates(records, [x["job_s"] for x in runs]),
                                 "process": rates(records, [x["process_s"] for x in runs])}
                             for k, runs in flows.items()}}
            results.append(row)
            print(json.dumps(row, indent=1), file=sys.stderr)
    doc = {"benchmark": "record_walk", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "batch": BATCH, "rounds": args.rounds, "flows_rounds": args.flows_rounds,
           "rows": results}
    text = json.dumps(doc, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
