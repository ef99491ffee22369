"""The benchmark run: one capture (generated, or ``--input``), page cache warmed, every tool in
its own process on that same file, back to back, the tools interleaved over ``repeat`` rounds;
the best run of each is reported (on a shared machine, noise only ever adds time). Then the
stage breakdown, ratios to each peer, and what detection costs (``analyze`` over ``flows``)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from detector.bench.machine import machine
from detector.bench.procs import pinned, run_timed
from detector.bench.scaling import measure_scaling
from detector.bench.startup import PACKETS as STARTUP_PACKETS
from detector.bench.startup import measure_startup
from detector.bench.tools import SNAP_SUFFIX, SNAPLEN, Tool, gpu_status, tools
from detector.errors import DetectorError

QUICK_PACKETS = 300_000
FULL_PACKETS = 2_000_000


class BenchError(DetectorError):
    pass


def _child(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        lines = [x for x in out.stderr.strip().splitlines() if x.strip()]
        raise BenchError(lines[-1] if lines else f"{' '.join(cmd[:4])} failed ({out.returncode})")


def generated_capture(work: Path, packets: int, snaplen: int = 0) -> Path:
    """The bench's hpc-mix capture (``snaplen``: packets cut to that many bytes, as a capture
    with ``tcpdump -s`` keeps them; the same traffic)."""
    path = snap_capture(work, packets, snaplen) if snaplen else work / f"hpc-mix-{packets}.pcap"
    if not path.exists():
        _child([sys.executable, "-m", "detector", "synth", "hpc-mix", "-o", str(work), "--packets", str(packets),
                "--seed", "1", *(["--snaplen", str(snaplen)] if snaplen else [])])
        (work / "hpc-mix.pcap").rename(path)
    return path


def snap_capture(work: Path, packets: int, snaplen: int = SNAPLEN) -> Path:
    return work / f"hpc-mix-{packets}-snap{snaplen}.pcap"


def capture_info(path: Path, work: Path) -> dict:
    """Packets, wire bytes and flows of the capture, from a ``detector flows`` run in a child
    process (so that this process stays small: its size would show in every child's peak RSS)."""
    stats = work / "capture-stats.json"
    _child([sys.executable, "-m", "detector", "flows", str(path), "-o", str(work / "info.parquet"), "-q",
            "--stats", str(stats), "--backend", "cpu"])
    s = json.loads(stats.read_text())
    return {"file": path.name, "bytes": path.stat().st_size, "packets": s["packets"], "wire_bytes": s["wire_bytes"],
            "flows": s["flows"], "generated": path.name.startswith("hpc-mix-")}


def warm_page_cache(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def warm_bytecode() -> None:
    """Write this project's compiled bytecode, as an install does: with PYTHONDONTWRITEBYTECODE
    set (as in some CI images) an editable checkout would otherwise compile its ~100 modules
    from source at every process start (0.1 s of the start-up measured)."""
    import compileall

    root = Path(__file__).resolve().parents[2]  # detector/bench/run.py -> the project
    for package in ("detector", "kernels", "models"):
        if (root / package / "__init__.py").exists():
            compileall.compile_dir(str(root / package), quiet=1)


class Progress:
    """One line per finished measurement, and the fraction done, on stderr."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled, self.t0 = total, 0, enabled, time.monotonic()

    def step(self, text: str) -> None:
        self.done += 1
        if self.enabled:
            pct = 100 * self.done / max(self.total, 1)
            print(f"[{pct:3.0f}% {time.monotonic() - self.t0:6.1f}s] {text}", file=sys.stderr, flush=True)


def run_bench(work: Path, input_path: str | None = None, packets: int | None = None, quick: bool = False,
              repeat: int | None = None, only: list[str] | None = None, progress: bool = True) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    packets = packets or (QUICK_PACKETS if quick else FULL_PACKETS)
    repeat = repeat or (1 if quick else 3)
    capture = Path(input_path) if input_path else generated_capture(work, packets)
    warm_page_cache(capture)
    warm_bytecode()
    info = capture_info(capture, work)
    snap = None if input_path else snap_capture(work, packets)
    rows = tools(capture, work, info["packets"], quick, gpu_status(), snap)
    if only:
        unknown = sorted(set(only) - {t.name for t in rows})
        if unknown:
            raise BenchError(f"--only: unknown tool(s) {', '.join(unknown)} (known: {', '.join(t.name for t in rows)})")
        rows = [t for t in rows if t.name in only]
    runnable = [t for t in rows if t.runnable]
    if any(t.name.endswith(SNAP_SUFFIX) for t in runnable):
        warm_page_cache(generated_capture(work, packets, SNAPLEN))
    bar = Progress(sum(1 if t.once else repeat for t in runnable) + 3, progress)
    runs: dict[str, list[dict]] = {}
    for rep in range(repeat):
        for t in runnable:
            if t.once and rep:
                continue
            if t.once:
                shutil.rmtree(work / "numba-cold-cache", ignore_errors=True)
            r = run_timed(t.cmd, t.env or None, cwd=t.cwd)
            runs.setdefault(t.name, []).append(r)
            bar.step(f"{t.name}: {r['wall']:.2f} s" + ("" if r["rc"] == 0 else f" (failed, exit {r['rc']})"))
    stages = run_timed(pinned([sys.executable, "-m", "detector.bench.stages", str(capture)]),
                       {**os.environ, "NUMBA_NUM_THREADS": "1"}).get("json")
    bar.step("stage breakdown")
    startup = None if only else measure_startup(work, generated_capture(work, STARTUP_PACKETS), repeat)
    bar.step("start-up")
    scaling = None if only else measure_scaling(capture, work, repeat if quick else max(repeat, 3))
    bar.step("two-core scaling")
    results = [_row(t, runs.get(t.name, []), info) for t in rows]
    by = {r["tool"]: r for r in results if r["packets_per_s"]}
    for r in results:
        if r["packets_per_s"]:
            r["ratio_to"] = {peer: round(r["packets_per_s"] / p["packets_per_s"], 2) for peer, p in by.items()
                             if not peer.startswith("detector")}
    cost = {}
    for mode in ("", "-process"):
        a, f = by.get(f"detector-analyze-cpu-1core{mode}"), by.get(f"detector-cpu-1core{mode}")
        if a and f:
            cost[f"analyze_vs_flows{mode.replace('-', '_')}"] = round(a["packets_per_s"] / f["packets_per_s"], 2)
    return {"benchmark": "detector bench", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "quick": quick, "repeat": repeat, "machine": machine(), "input": info, "results": results,
            "stages": stages, "analyze_vs_flows": cost, "startup": startup, "scaling": scaling}


def _row(t: Tool, runs: list[dict], info: dict) -> dict:
    empty = {"tool": t.name, "packets_per_s": None, "gbit_per_s": None, "flows": None, "peak_rss_mb": None}
    if not t.runnable:
        return {**empty, "notes": t.notes}
    ok = [r for r in runs if r["rc"] == 0]
    if not ok:
        err = runs[-1]["stderr"].strip().splitlines()[-1:] if runs else ["not run"]
        return {**empty, "notes": f"failed: {' '.join(err)[-300:]}"}

    def seconds(r: dict) -> float:
        """In-process time where the tool reports it (this project's rows after start-up, the
        Python peers after their imports), else the process's wall time (the C tools)."""
        j = r.get("json")
        return float(j["seconds"]) if isinstance(j, dict) and "seconds" in j else r["wall"]

    best = min(ok, key=seconds)
    s = seconds(best)
    flows = best["json"].get("flows") if isinstance(best.get("json"), dict) else None
    if t.name.startswith("detector") and flows is None:
        flows = info["flows"]
    return {"tool": t.name, "seconds": round(s, 4), "packets_per_s": round(info["packets"] / s),
            "gbit_per_s": round(info["wire_bytes"] * 8 / s / 1e9, 3), "flows": flows,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "notes": t.notes,
            "runs": [round(r["wall"], 4) for r in runs]}
