"""How far two cores take ``detector flows``, next to how far this machine lets any work go.

Three runs, each timed after start-up (:mod:`detector.bench.peers.detector_steady`), interleaved
over the rounds, best of them:

- ``one_core``: one flow thread, the process pinned to one core;
- ``two_threads``: the same on two cores, with two flow threads (``--threads 2``, what ``0``,
  one per core, gives there);
- ``two_independent``: two one-core runs at once, each in its own process pinned to its own
  core, timed from a common start (a barrier after their warm-ups); the slower one counts.

The third shares nothing (no flow table, no decoded packet, no cache line), so its speed-up is
the most any split of one capture over two threads could reach on this machine: the ceiling
that ``two_threads`` is to be read against. Where the two cores share a memory path that
saturates (virtual machines, neighbours on the host), it falls well short of 2x. The speed-up
of plain memory copies on two threads over one is reported too, as the machine's own figure.
The two cores are distinct physical cores where the topology says so (not two hardware threads
of one core), and every run is pinned (``taskset``); without it the section says why it is empty.

Usage: python -m detector.bench.scaling memcopy   (prints JSON: the memory copy speed-up)
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from detector.bench.procs import run_timed

BARRIER_ENV = "DETECTOR_BENCH_BARRIER"  # "FOLDER:COUNT": wait after the warm-up until COUNT are ready
BARRIER_TIMEOUT = 120.0


def wait_at_barrier() -> bool | None:
    """Called by a measured process after its warm-up: mark it ready, then wait until every
    process of the group is. Returns whether the group formed (None outside a group): after the
    timeout it goes on alone, so that a failed sibling stalls nothing, and its round is dropped."""
    spec = os.environ.get(BARRIER_ENV)
    if not spec:
        return None
    folder, count = spec.rsplit(":", 1)
    Path(folder, f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + BARRIER_TIMEOUT
    while len(list(Path(folder).glob("ready-*"))) < int(count):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)
    return True


def two_cores() -> list[int]:
    """Two CPUs of this process's affinity on distinct physical cores where sysfs tells the
    topology (else simply the first two)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    chosen, seen = [], set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            core = (topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()
        except OSError:
            core = ("?", str(cpu))
        if core not in seen:
            seen.add(core)
            chosen.append(cpu)
    return chosen[:2] if len(chosen) >= 2 else cpus[:2]


def _on(cores: list[int], cmd: list[str]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, cores)), *cmd]


def _seconds(r: dict) -> float | None:
    j = r.get("json")
    return float(j["seconds"]) if r.get("rc") == 0 and isinstance(j, dict) and "seconds" in j else None


def _together(cmds: list[list[str]], env: dict) -> float | None:
    """Run ``cmds`` at once, their timed parts started together; the slowest one's seconds
    (None when one failed, or went on alone after the barrier's timeout)."""
    with tempfile.TemporaryDirectory() as folder:
        env = {**env, BARRIER_ENV: f"{folder}:{len(cmds)}"}
        results: list[dict] = [{} for _ in cmds]

        def run(k: int) -> None:
            results[k] = run_timed(cmds[k], env)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(len(cmds))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    seconds = [_seconds(r) for r in results]
    if None in seconds or any(r["json"].get("together") is False for r in results):
        return None
    return max(seconds)


def measure_scaling(capture: Path, work: Path, rounds: int) -> dict:
    cores = two_cores()
    if len(cores) < 2:
        return {"cores": cores, "note": "fewer than two cores to run on"}
    if not shutil.which("taskset"):
        return {"cores": cores, "note": "taskset is not installed (util-linux): the runs cannot be pinned"}
    steady = [sys.executable, "-m", "detector.bench.peers.detector_steady", str(capture)]
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    best: dict[str, float] = {}

    def keep(name: str, s: float | None) -> None:
        if s is not None:
            best[name] = min(best.get(name, float("inf")), s)

    for _ in range(rounds):
        keep("one_core", _seconds(run_timed(_on(cores[:1], [*steady, str(work / "scale-1.parquet"), "1"]), env)))
        keep("two_threads", _seconds(run_timed(_on(cores, [*steady, str(work / "scale-2.parquet"), "2"]), env)))
        keep("two_independent", _together([_on([c], [*steady, str(work / f"scale-i{c}.parquet"), "1"])
                                           for c in cores], env))
    copy = run_timed(_on(cores, [sys.executable, "-m", "detector.bench.scaling", "memcopy"]), env).get("json") or {}
    best = {k: round(v, 4) for k, v in best.items()}  # the speed-ups below follow from these as written
    out = {"cores": cores, "rounds": rounds, "seconds": best, "memory_copy_speedup": copy.get("speedup")}
    one = best.get("one_core")
    if one:
        out["speedup"] = {"two_threads": round(one / best["two_threads"], 2) if "two_threads" in best else None,
                          "two_independent": round(2 * one / best["two_independent"], 2)
                          if "two_independent" in best else None}
    return out


def memory_copy_speedup(mib: int = 64, copies: int = 8, rounds: int = 3) -> float:
    """Bytes copied per second by two threads (each its own arrays; NumPy copies without the
    GIL) over one thread, best of ``rounds``: how much the memory path lets two cores add."""
    import numpy as np

    n = mib << 17  # float64 elements
    pairs = [(np.ones(n), np.empty(n)) for _ in range(2)]

    def copy(k: int) -> None:
        src, dst = pairs[k]
        for _ in range(copies):
            np.copyto(dst, src)

    def timed(ks: list[int]) -> float:
        threads = [threading.Thread(target=copy, args=(k,)) for k in ks]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    copy(0), copy(1)  # pages touched before timing
    one = min(timed([0]) for _ in range(rounds))
    two = min(timed([0, 1]) for _ in range(rounds))
    return round(2 * one / two, 2)


if __name__ == "__main__":
    if sys.argv[1:] != ["memcopy"]:
        sys.exit(__doc__)
    print(json.dumps({"speedup": memory_copy_speedup()}))
