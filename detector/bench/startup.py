"""Process start-up, measured apart from throughput: ``detector flows`` on a 1,000-packet capture
(one core, whole process, so nearly all of it is imports and loading the kernels), with the
kernels compiled ahead of time (``detector aot``, when built) and from Numba's JIT cache, and the
bare interpreter for reference; interleaved, best of the rounds."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from detector.bench.procs import pinned, run_timed

PACKETS = 1000


def measure_startup(work: Path, capture: Path, rounds: int) -> dict:
    """``capture``: a small one (:data:`PACKETS`), so that the run is nearly all start-up."""
    from kernels import aot_load

    flows = pinned([sys.executable, "-m", "detector", "flows", str(capture), "-o", str(work / "startup-flows.parquet"),
                    "-q", "--threads", "1", "--backend", "cpu"])
    probe = run_timed([sys.executable, "-c", "import sys; from kernels import _jit; import json; "
                       "print(json.dumps({'aot': _jit.aot_in_use() and 'numba' not in sys.modules}))"],
                      {**os.environ, "DETECTOR_AOT": "1"})
    built = aot_load.status()[0] and bool((probe.get("json") or {}).get("aot"))  # in use, Numba not imported
    modes = {"interpreter": (pinned([sys.executable, "-c", "pass"]), {})}
    if built:
        modes["aot"] = (flows, {"DETECTOR_AOT": "1"})
    modes["jit"] = (flows, {"DETECTOR_AOT": "0"})
    best: dict[str, float] = {}
    for _ in range(max(rounds, 5)):
        for name, (cmd, extra) in modes.items():
            r = run_timed(cmd, {**os.environ, "NUMBA_NUM_THREADS": "1", **extra})
            if r["rc"] == 0:
                best[name] = min(best.get(name, float("inf")), r["wall"])
    return {"packets": PACKETS, "rounds": max(rounds, 5), "aot_built": built,
            "seconds": {k: round(v, 4) for k, v in best.items()}}
