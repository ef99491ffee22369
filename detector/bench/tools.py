"""The rows of ``detector bench``: this project's runs and the peer tools, each a command to
run in its own process, or a sentence saying why it cannot run here (a missing peer or no
usable GPU never fails the benchmark).

Tool names are stable (the JSON's ``tool`` field): ``detector-cpu-1core``,
``detector-cpu-1thread`` (one flow thread, the default, with the reader thread on another core),
``detector-cpu-all``, ``detector-gpu`` (flow records after start-up: imports done, kernels loaded, timed in the
process; the rate a long capture sees), the same with ``-process`` (the whole process, start-up
included: the kernels compiled ahead when ``detector aot`` has built them, else Numba's warm JIT
cache), ``detector-cpu-1core-cold-jit`` (first run after an install, without a build),
``detector-analyze-cpu-1core`` (every detector on) and its ``-process`` twin, then ``dpkt``,
``scapy``, ``nfstream``, ``tshark``, ``nfpcapd``, ``softflowd``, ``suricata``, ``zeek``,
``argus``. Every row but the ``-1thread``, ``-all`` and GPU ones runs pinned to one core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from detector.bench.procs import pinned

PEERS = "detector.bench.peers"


@dataclass
class Tool:
    name: str
    cmd: list[str] | None
    notes: str
    env: dict = field(default_factory=dict)
    cwd: str | None = None
    once: bool = False  # measured once even with --repeat (compiling varies little and takes a minute)

    @property
    def runnable(self) -> bool:
        return self.cmd is not None


def gpu_status() -> tuple[bool, str]:
    """Whether the GPU backend can run here, asked of a child process (this one never imports
    a GPU library), and the device or the reason."""
    probe = "from detector.backend import select_backend; b = select_backend('gpu'); print(b.device)"
    try:
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"GPU check failed: {exc}"
    if out.returncode == 0:
        return True, out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "gpu"
    lines = [x for x in out.stderr.strip().splitlines() if x.strip()]
    reason = lines[-1].split(": ", 1)[-1] if lines else "unknown reason"
    return False, f"no usable GPU: {reason}"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


SNAPLEN = 128  # the GPU rows' workload: headers only, as DTN monitoring captures them
SNAP_SUFFIX = f"-snap{SNAPLEN}"


def tools(capture: Path, work: Path, packets: int, quick: bool, gpu: tuple[bool, str],
          snap: Path | None = None) -> list[Tool]:
    """The rows to measure. ``snap``: the same traffic cut to :data:`SNAPLEN` bytes a packet, for
    the GPU rows and a one-core row beside them (None: no such rows, as for a user's capture)."""
    from kernels import aot_load

    py = sys.executable
    env = {**os.environ}
    kernels = ("kernels compiled ahead (detector aot)" if aot_load.status()[0] and aot_load.enabled()
               else "warm JIT cache")
    one = {**env, "NUMBA_NUM_THREADS": "1"}
    out, alerts = str(work / "flows.parquet"), str(work / "alerts.jsonl")
    cap = str(capture)
    flows = [py, "-m", "detector", "flows", cap, "-o", out, "-q"]
    analyze = [py, "-m", "detector", "analyze", cap, "-o", alerts, "-q", "--backend", "cpu"]
    steady = [py, "-m", f"{PEERS}.detector_steady", cap]
    rows = [
        Tool("detector-cpu-1core", pinned([*steady, out, "1", "flows", "cpu"]),
             "flows after start-up (imports, kernels loaded): the per-core rate on long captures", one),
        Tool("detector-cpu-1thread", [*steady, out, "1", "flows", "cpu"],
             "flows after start-up, one flow thread (the default), reading on another core", env),
        Tool("detector-cpu-all", [*steady, out, "0", "flows", "cpu"], "flows after start-up, one thread per core",
             env),
        Tool("detector-cpu-1core-process", pinned([*flows, "--threads", "1", "--backend", "cpu"]),
             f"whole process: start-up included, {kernels}", one),
        Tool("detector-cpu-all-process", [*flows, "--threads", "0", "--backend", "cpu"],
             "whole process, one thread per core", env),
    ]
    if not quick:
        rows.append(Tool("detector-cpu-1core-cold-jit", pinned([*flows, "--threads", "1", "--backend", "cpu"]),
                         "whole process, JIT cache empty (the first run after an install compiles every kernel)",
                         {**one, "NUMBA_CACHE_DIR": str(work / "numba-cold-cache"), "DETECTOR_AOT": "0"}, once=True))
    usable, device = gpu
    gpu_rows = ["detector-gpu", "detector-gpu-process", "detector-analyze-gpu"]
    if snap is not None:
        snapped = [py, "-m", f"{PEERS}.detector_steady", str(snap), out, "1", "flows"]
        rows.append(Tool(f"detector-cpu-1core{SNAP_SUFFIX}", pinned([*snapped, "cpu"]),
                         f"flows after start-up, the same traffic captured with snaplen {SNAPLEN}", one))
        gpu_rows.append(f"detector-gpu{SNAP_SUFFIX}")
    if usable:
        rows += [Tool("detector-gpu", [*steady, out, "1", "flows", "gpu"], f"flows after start-up, {device}", env),
                 Tool("detector-gpu-process", [*flows, "--backend", "gpu"], f"whole process, {device}", env),
                 Tool("detector-analyze-gpu", [*steady, alerts, "1", "analyze", "gpu"],
                      f"detector analyze (every detector on) after start-up, {device}", env)]
        if snap is not None:
            rows.append(Tool(f"detector-gpu{SNAP_SUFFIX}", [*snapped, "gpu"],
                             f"flows after start-up, snaplen {SNAPLEN} (the GPU workload), {device}", env))
    else:
        rows += [Tool(name, None, device) for name in gpu_rows]
    rows += [
        Tool("detector-analyze-cpu-1core", pinned([*steady, alerts, "1", "analyze", "cpu"]),
             "detector analyze (every detector on) after start-up", one),
        Tool("detector-analyze-cpu-1core-process", pinned(analyze), "detector analyze, whole process", one),
    ]
    rows += _peers(capture, work, packets, env)
    return rows


def _peers(capture: Path, work: Path, packets: int, env: dict) -> list[Tool]:
    py, cap = sys.executable, str(capture)
    rows = []
    if _installed("dpkt"):
        rows.append(Tool("dpkt", pinned([py, "-m", f"{PEERS}.dpkt_flows", cap]),
                         "pcap.Reader + parse + dict of flows", env))
    else:
        rows.append(Tool("dpkt", None, "not installed (pip install dpkt)"))
    rows.append(Tool("scapy", pinned([py, "-m", f"{PEERS}.scapy_flows", cap, str(packets)]),
                     "1% sample (at least 1,000 packets) dissected into flows, time extrapolated", env))
    if _installed("nfstream"):
        rows.append(Tool("nfstream", pinned([py, "-m", f"{PEERS}.nfstream_flows", cap]),
                         "one meter, statistical_analysis=True", env))
    else:
        rows.append(Tool("nfstream", None, "not installed (pip install nfstream)"))
    nfdir, surdir, zdir = work / "nfpcapd", work / "suricata", work / "zeek"
    external = [  # name, program, command, what it measures, where to get it, working folder
        ("tshark", "tshark", ["tshark", "-r", cap, "-q", "-z", "conv,tcp", "-z", "conv,udp"],
         "conversation statistics", "Debian package tshark", None),
        ("nfpcapd", "nfpcapd", ["sh", "-c", f"rm -rf {nfdir} && mkdir -p {nfdir} && nfpcapd -r {cap} -w {nfdir}"],
         "nfdump's pcap flow exporter, writes nfcapd files", "Debian package nfdump", None),
        ("softflowd", "softflowd", ["softflowd", "-r", cap, "-n", "127.0.0.1:9995", "-v", "9", "-6", "-d", "-c",
                                    "none", "-p", str(work / "softflowd.pid")],
         "NetFlow v9 export to a closed local port", "Debian package softflowd", None),
        ("suricata", "suricata", ["suricata", "-r", cap, "-l", str(surdir), "-k", "none", "-S", "/dev/null",
                                  "--runmode", "single"], "flow logging (eve), no rules", "Debian package suricata",
         None),
        ("zeek", "zeek", ["zeek", "-C", "-r", cap], "default scripts, conn.log and the rest", "zeek.org packages",
         zdir),
        ("argus", "argus", ["argus", "-r", cap, "-w", str(work / "out.argus")], "flow records to an argus file",
         "Debian package argus-server", None),
    ]
    for name, program, cmd, notes, where, cwd in external:
        if not shutil.which(program):
            rows.append(Tool(name, None, f"not installed ({where})"))
            continue
        for folder in (surdir, zdir):
            folder.mkdir(parents=True, exist_ok=True)
        rows.append(Tool(name, pinned(cmd), notes, env, cwd=str(cwd) if cwd else None))
    return rows
