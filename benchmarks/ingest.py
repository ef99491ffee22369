"""Ingest benchmark: pcap -> flow records, ``detector flows`` beside the peer tools, on one file,
in one run.

Every tool reads the same capture (page cache warm) in its own process, several times, the tools
interleaved; the best run of each is reported (on a shared machine, noise only ever adds time).
``detector`` is measured four ways: the whole process with a cold JIT cache (first run after an
install), the whole process with a warm cache, and after start-up (imports and kernels loaded),
each on one core and on all cores. ``detector analyze`` (every L7 inspector and detector on) is
measured the same way on one core, and its packets/s over those of ``detector flows`` is reported:
what detection costs. Peers that are not installed get a row saying so.

    python benchmarks/ingest.py [--input CAPTURE] [--packets 2000000] [--repeat 3] [-o results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        mem = None
    versions = {}
    for mod in ("numpy", "numba", "pyarrow", "dpkt", "nfstream"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "memory_mb": mem, "python": platform.python_version(),
            "platform": platform.platform(), "gpu": None, "versions": versions}


def run_timed(cmd: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Wall time and peak RSS of one process; its stdout parsed as JSON when it is JSON."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {"wall": wall, "rc": proc.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
              "stderr": stderr[-2000:]}
    try:
        result["json"] = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        pass
    return result


def pinned(cmd: list[str]) -> list[str]:
    """Run on one core (taskset), so that per-core rates are per core even for tools that start
    helper threads (nfpcapd has three)."""
    return ["taskset", "-c", str(min(os.sched_getaffinity(0))), *cmd] if shutil.which("taskset") else cmd


def tool_cmds(capture: Path, work: Path) -> dict:
    """name -> (command, env, note) for every tool, or a string saying why it cannot run.
    Every tool but the ``-all`` rows runs pinned to one core."""
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    one = {**env, "NUMBA_NUM_THREADS": "1"}
    out = str(work / "flows.parquet")
    alerts = str(work / "alerts.jsonl")
    cold_cache = str(work / "numba-cold-cache")
    tools = {
        "detector-cpu-1core-cold-jit": ([py, "-m", "detector", "flows", str(capture), "-o", out, "--threads", "1",
                                         "-q"], {**one, "NUMBA_CACHE_DIR": cold_cache},
                                        "whole process, JIT cache empty (compiles every kernel)"),
        "detector-cpu-1core": ([py, "-m", "detector", "flows", str(capture), "-o", out, "--threads", "1", "-q"], one,
                               "whole process, warm JIT cache"),
        "detector-cpu-all": ([py, "-m", "detector", "flows", str(capture), "-o", out, "--threads", "0", "-q"], env,
                             "whole process, warm JIT cache, one thread per core"),
        "detector-cpu-1core-steady": ([py, str(HERE / "peers" / "detector_steady.py"), str(capture), out, "1"], one,
                                      "after start-up (imports and kernels loaded)"),
        "detector-cpu-all-steady": ([py, str(HERE / "peers" / "detector_steady.py"), str(capture), out, "0"], env,
                                    "after start-up, one thread per core"),
        # what detection costs: the whole analyze job (L7 inspectors, every detector, alerts)
        "detector-analyze-cpu-1core": ([py, "-m", "detector", "analyze", str(capture), "-o", alerts, "-q"], one,
                                       "detector analyze, all detectors, whole process, warm JIT cache"),
        "detector-analyze-cpu-1core-steady": ([py, str(HERE / "peers" / "detector_steady.py"), str(capture), alerts,
                                               "1", "analyze"], one, "detector analyze after start-up"),
    }
    try:
        import dpkt  # noqa: F401

        tools["dpkt"] = ([py, str(HERE / "peers" / "dpkt_flows.py"), str(capture)], env,
                         "pcap.Reader + parse + dict of flows")
    except ImportError:
        tools["dpkt"] = "not installed (pip install dpkt)"
    try:
        import nfstream  # noqa: F401

        tools["nfstream"] = ([py, str(HERE / "peers" / "nfstream_flows.py"), str(capture)], env,
                             "one meter, statistical_analysis=True")
    except ImportError:
        tools["nfstream"] = "not installed (pip install nfstream)"
    if shutil.which("nfpcapd"):
        nfdir = work / "nfpcapd"
        tools["nfpcapd"] = (["sh", "-c", f"rm -rf {nfdir} && mkdir -p {nfdir} && nfpcapd -r {capture} -w {nfdir}"],
                            env, "nfdump's pcap flow exporter, writes nfcapd files")
    else:
        tools["nfpcapd"] = "not installed (Debian package nfdump)"
    if shutil.which("softflowd"):
        tools["softflowd"] = (["softflowd", "-r", str(capture), "-n", "127.0.0.1:9995", "-v", "9", "-6", "-d",
                               "-c", "none", "-p", str(work / "softflowd.pid")], env,
                              "NetFlow v9 export to a closed local port")
    else:
        tools["softflowd"] = "not installed (Debian package softflowd)"
    if shutil.which("tshark"):
        tools["tshark"] = (["tshark", "-r", str(capture), "-q", "-z", "conv,tcp", "-z", "conv,udp"], env,
                           "conversation statistics")
    else:
        tools["tshark"] = "not installed (Debian package tshark)"
    return {name: (pinned(spec[0]), *spec[1:]) if not isinstance(spec, str) and "-all" not in name else spec
            for name, spec in tools.items()}


def capture_for(args, work: Path) -> Path:
    if args.input:
        return Path(args.input)
    path = work / f"hpc-mix-{args.packets}.pcap"
    if not path.exists():
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-m", "detector", "synth", "hpc-mix", "-o", str(work), "--packets",
                        str(args.packets), "--seed", "1"], check=True, env=env)
        (work / "hpc-mix.pcap").rename(path)
    return path


def capture_info(path: Path, work: Path) -> dict:
    """Packets, bytes and flows of the capture (from a ``detector flows`` run in a child process,
    so that this process stays small: its size would show in every child's peak RSS)."""
    stats = work / "capture-stats.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "detector", "flows", str(path), "-o", str(work / "info.parquet"), "-q",
                    "--stats", str(stats)], check=True, env=env)
    s = json.loads(stats.read_text())
    return {"file": path.name, "bytes": path.stat().st_size, "packets": s["packets"], "wire_bytes": s["wire_bytes"],
            "flows": s["flows"], "ip_packets": s["ip_packets"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", help="capture to use (default: a generated hpc-mix capture)")
    ap.add_argument("--packets", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", nargs="*", help="run only these tools")
    ap.add_argument("-o", "--output", default=None, help="results JSON (default benchmarks/results/<date>-ingest.json)")
    args = ap.parse_args(argv)
    work = REPO / "benchmarks" / "work"
    work.mkdir(parents=True, exist_ok=True)
    capture = capture_for(args, work)
    with open(capture, "rb") as fh:  # warm the page cache
        while fh.read(1 << 24):
            pass
    info = capture_info(capture, work)
    tools = tool_cmds(capture, work)
    if args.only:
        tools = {k: v for k, v in tools.items() if k in args.only}
    runs: dict[str, list[dict]] = {}
    for rep in range(args.repeat):
        for name, spec in tools.items():
            if isinstance(spec, str):
                continue
            if name.endswith("cold-jit"):
                if rep:  # compiling takes a minute and varies little: once is enough
                    continue
                shutil.rmtree(work / "numba-cold-cache", ignore_errors=True)
            cmd, env, _ = spec
            r = run_timed(cmd, env)
            runs.setdefault(name, []).append(r)
            print(f"[{rep + 1}/{args.repeat}] {name:30s} {r['wall']:8.3f} s  rc={r['rc']}", file=sys.stderr)
    results = []
    for name, spec in tools.items():
        if isinstance(spec, str):
            results.append({"tool": name, "packets_per_s": None, "gbit_per_s": None, "flows": None,
                            "peak_rss_mb": None, "notes": spec})
            continue
        ok = [r for r in runs[name] if r["rc"] == 0]
        if not ok:
            results.append({"tool": name, "packets_per_s": None, "gbit_per_s": None, "flows": None,
                            "peak_rss_mb": None, "notes": f"failed: {runs[name][-1]['stderr'][-300:]}"})
            continue
        best = min(ok, key=lambda r: r["json"]["seconds"] if "seconds" in r.get("json", {}) else r["wall"])
        seconds = best["json"]["seconds"] if "seconds" in best.get("json", {}) else best["wall"]
        flows = best.get("json", {}).get("flows")
        if name.startswith("detector") and flows is None:
            flows = info["flows"]
        results.append({"tool": name, "seconds": round(seconds, 4),
                        "packets_per_s": round(info["packets"] / seconds), "gbit_per_s":
                        round(info["wire_bytes"] * 8 / seconds / 1e9, 3), "flows": flows,
                        "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "notes": spec[2],
                        "runs": [round(r["wall"], 4) for r in runs[name]]})
    by = {r["tool"]: r for r in results if r["packets_per_s"]}
    for r in results:
        if r["packets_per_s"]:
            r["ratio_to"] = {peer: round(r["packets_per_s"] / p["packets_per_s"], 2) for peer, p in by.items()
                             if not peer.startswith("detector")}
    analyze_cost = {}
    for mode in ("", "-steady"):
        a, f = by.get(f"detector-analyze-cpu-1core{mode}"), by.get(f"detector-cpu-1core{mode}")
        if a and f:
            analyze_cost[f"analyze_vs_flows{mode.replace('-', '_')}"] = round(a["packets_per_s"] / f["packets_per_s"], 2)
    doc = {"benchmark": "ingest", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "input": info, "repeat": args.repeat, "results": results,
           "analyze_vs_flows": analyze_cost}
    out = Path(args.output) if args.output else REPO / "benchmarks" / "results" / (
        f"{dt.date.today().isoformat()}-ingest-{platform.node() or 'host'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(doc))
    print(f"results: {out}", file=sys.stderr)
    return 0


def markdown(doc: dict) -> str:
    m, i = doc["machine"], doc["input"]
    lines = [f"Input: {i['file']}, {i['packets']:,} packets, {i['flows']:,} flows, {i['bytes'] / 1e6:.0f} MB; "
             f"{m['cpu']}, {m['cores']} cores, best of {doc['repeat']} runs.", "",
             "| tool | packets/s | Gbit/s | flows | peak RSS MB | vs dpkt | vs nfpcapd | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in doc["results"]:
        if r["packets_per_s"] is None:
            lines.append(f"| {r['tool']} | - | - | - | - | - | - | {r['notes']} |")
            continue
        ratio = r.get("ratio_to", {})
        lines.append(f"| {r['tool']} | {r['packets_per_s'] / 1e6:.2f} M | {r['gbit_per_s']:.2f} | {r['flows'] or '-'} | "
                     f"{r['peak_rss_mb']:.0f} | {ratio.get('dpkt', '-')} | {ratio.get('nfpcapd', '-')} | {r['notes']} |")
    for key, value in doc.get("analyze_vs_flows", {}).items():
        lines.append(f"\n{key}: {value} (packets/s of detector analyze over detector flows, 1 core)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
