"""Do the CUDA kernels compile once? A small capture through ``detector flows --backend gpu``
twice, the CUDA kernel cache empty before the first run, and a third process that only loads
every kernel (``python -m kernels.cuda_warm``: a GPU process's start). Targets (issue 19): the
second run <= 3 s end to end, the kernel-loading process <= 2 s.

The CPU kernels are loaded once first (a ``--backend cpu`` run), so that the GPU runs' times
do not include compiling them. Wall times of whole processes, as a user sees them.

    python benchmarks/kernel_cache.py -o kernel-cache.json [--packets 20000] [--backend gpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"warm_s": 3.0, "load_s": 2.0}


def timed(argv: list[str], env: dict) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, cwd=REPO)
    row = {"seconds": round(time.perf_counter() - started, 2), "rc": done.returncode}
    if done.returncode != 0:
        row["stderr"] = done.stderr.strip()[-1500:]
    if done.stdout.strip().startswith("{"):
        row["stdout"] = done.stdout.strip().splitlines()[-1]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--packets", type=int, default=20_000)
    ap.add_argument("--backend", default="gpu", help="gpu (the measurement); cpu only tries the steps")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="detector-kernel-cache-") as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_ENABLE_CUDASIM", "NUMBA_DISABLE_JIT")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        env["DETECTOR_CUDA_CACHE"] = str(Path(tmp) / "cuda-cache")  # empty: the first run compiles
        synth = timed(["-m", "detector", "synth", "hpc-mix", "-o", tmp, "--packets", str(args.packets), "--seed", "2"],
                      env)
        capture = str(Path(tmp) / "hpc-mix.pcap")

        def flows(backend: str) -> dict:
            return timed(["-m", "detector", "flows", capture, "-o", str(Path(tmp) / "flows.parquet"), "--backend",
                          backend, "-q", "--no-progress"], env)

        cpu = flows("cpu")
        cold, warm = flows(args.backend), flows(args.backend)
        load = timed(["-m", "kernels.cuda_warm"], env)
        cached = sorted(p.name for p in Path(env["DETECTOR_CUDA_CACHE"]).glob("*")) \
            if Path(env["DETECTOR_CUDA_CACHE"]).is_dir() else []
    report = {"packets": args.packets, "backend": args.backend, "synth": synth, "cpu_first": cpu, "cold": cold,
              "warm": warm, "load": load, "cache_folders": cached, "targets": TARGETS,
              "met": {"warm_s": warm["rc"] == 0 and warm["seconds"] <= TARGETS["warm_s"],
                      "load_s": load["rc"] == 0 and load["seconds"] <= TARGETS["load_s"]}}
    Path(args.output).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("cold", "warm", "load", "met")}))
    return 0 if cold["rc"] == warm["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
