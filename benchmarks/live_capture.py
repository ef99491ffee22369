"""Live capture: how each way of reading an interface keeps up, and what the daemon costs in
cores per million packets per second, side by side under the same offered load.

A veth pair joins a network namespace to this one; inside it a sender writes pre-built
Ethernet frames (a mix of TCP, UDP and DNS between a few hosts, 64-1400 bytes) to its end as
fast as it can, for ``--seconds``. On this end, one after the other:

- ``tpacket_v3``: the daemon's reader (:class:`detector.daemon.live.LiveCapture`), batches only;
- ``dumpcap_pipe``: a managed ``dumpcap`` child writing pcap to a pipe, read by the pcap reader;
- ``recv_loop``: a plain AF_PACKET socket, one ``recv_into`` per packet (the naive way);
- ``daemon``: ``detector run --iface`` itself (capture, flows, L7, detectors, reporting).

For each: packets the sender sent, packets read, kernel drops, and CPU seconds of the reading
process(es) per million packets read (= cores needed per Mpps). Needs root (namespaces, raw
sockets). Results: benchmarks/results/<date>-live-capture-<host>.json.

    sudo python benchmarks/live_capture.py [--seconds 10] [-o results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from detector.bench.machine import machine  # noqa: E402

NS, HERE_IF, PEER_IF = "detbench", "vdbh", "vdbp"

SENDER = r"""
import random, socket, struct, sys, time
iface, seconds = sys.argv[1], float(sys.argv[2])
from scapy.all import Ether, IP, TCP, UDP, DNS, DNSQR, raw
rnd = random.Random(1)
frames = []
for k in range(512):
    src, dst = f"10.251.0.{2 + k % 20}", f"10.251.1.{1 + k % 7}"
    e = Ether(src="52:54:00:00:00:02", dst="52:54:00:00:00:01")
    kind = k % 4
    if kind == 0:
        p = e / IP(src=src, dst=dst) / TCP(sport=40000 + k, dport=443, flags="PA") / (b"x" * rnd.randint(0, 1300))
    elif kind == 1:
        p = e / IP(src=src, dst=dst) / TCP(sport=40000 + k, dport=50000 + k % 100, flags="A")
    elif kind == 2:
        p = e / IP(src=src, dst=dst) / UDP(sport=30000 + k, dport=5201) / (b"y" * rnd.randint(20, 1400))
    else:
        p = e / IP(src=src, dst="10.251.1.53") / UDP(sport=30000 + k, dport=53) / DNS(qd=DNSQR(qname=f"h{k}.example.org"))
    frames.append(raw(p))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for f in frames:
        s.send(f)
    sent += len(frames)
print(sent)
"""


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def setup() -> None:
    teardown()
    ip("netns", "add", NS)
    ip("link", "add", HERE_IF, "type", "veth", "peer", "name", PEER_IF)
    ip("link", "set", PEER_IF, "netns", NS)
    ip("link", "set", HERE_IF, "up")
    ip("netns", "exec", NS, "ip", "link", "set", PEER_IF, "up")


def teardown() -> None:
    ip("link", "del", HERE_IF, check=False)
    ip("netns", "del", NS, check=False)


def send(seconds: float) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", SENDER, PEER_IF, str(seconds)],
                            stdout=subprocess.PIPE, text=True)


def cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_tpacket(seconds: float) -> dict:
    from detector.daemon.live import LiveCapture

    cap = LiveCapture(HERE_IF, promisc=True, batch_s=0.25)
    stop = threading.Event()
    got = 0
    sender = send(seconds)
    c0 = self_cpu()
    timer = threading.Timer(seconds + 2, stop.set)
    timer.start()
    for b in cap.batches(stop):
        got += b.n
    cpu = self_cpu() - c0
    cap.close()
    return {"sent": int(sender.communicate()[0]), "read": got, "kernel_drops": cap.kernel_drops, "cpu_s": cpu}


def run_dumpcap(seconds: float) -> dict:
    from detector.sources.bytesource import StreamSource
    from detector.sources.pcap import PcapReader

    if shutil.which("dumpcap") is None:
        return {"skipped": "dumpcap is not installed"}
    child = subprocess.Popen(["dumpcap", "-i", HERE_IF, "-s", "9216", "-P", "-q", "-w", "-"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    time.sleep(1.0)
    sender = send(seconds)
    c0, d0 = self_cpu(), cpu_of(child.pid)
    child_cpu = []

    def stop_child():
        child_cpu.append(cpu_of(child.pid) - d0)  # its own CPU (children's totals would add the sender's)
        child.send_signal(signal.SIGINT)

    threading.Timer(seconds + 2, stop_child).start()
    reader = PcapReader(StreamSource(child.stdout, "dumpcap"), 65536)
    got = sum(b.n for b in reader.batches())
    cpu = self_cpu() - c0
    err = child.stderr.read().decode(errors="replace")
    child.wait()
    drops = re.search(r"dropped on interface '[^']*': \d+/(\d+)", err) or re.search(r"dropped[^\d]*(\d+)", err)
    return {"sent": int(sender.communicate()[0]), "read": got, "kernel_drops": int(drops.group(1)) if drops else None,
            "cpu_s": cpu + child_cpu[0], "reader_cpu_s": cpu, "dumpcap_cpu_s": child_cpu[0],
            "dumpcap_stderr": err.strip()[-300:]}


def run_recv(seconds: float) -> dict:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((HERE_IF, 3))
    s.settimeout(0.5)
    buf = bytearray(9216)
    sender = send(seconds)
    c0 = self_cpu()
    got, end = 0, time.monotonic() + seconds + 2
    while time.monotonic() < end:
        try:
            s.recv_into(buf)
            got += 1
        except TimeoutError:
            continue
    cpu = self_cpu() - c0
    import struct

    _, drops = struct.unpack("II", s.getsockopt(263, 6, 8))  # tpacket_stats (no ring: two counters)
    s.close()
    return {"sent": int(sender.communicate()[0]), "read": got, "kernel_drops": drops, "cpu_s": cpu}


def run_daemon(seconds: float, tmp: Path) -> dict:
    port = 19321
    proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "--iface", HERE_IF, "--state",
                             str(tmp / "state.db"), "--metrics", f"127.0.0.1:{port}", "--backend", "cpu",
                             "--alerts", str(tmp / "alerts.jsonl")], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "started" in line:
            break
    c0 = cpu_of(proc.pid)
    sender = send(seconds)
    sent = int(sender.communicate()[0])
    time.sleep(3)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    cpu = cpu_of(proc.pid) - c0

    def value(name):
        m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", metrics, re.M)
        return float(m.group(1)) if m else None

    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    return {"sent": sent, "read": int(value("detector_packets_total") or 0),
            "kernel_drops": int(value('detector_drops_total{where="kernel"}') or 0), "cpu_s": cpu}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("live_capture: needs root (network namespaces, raw sockets)", file=sys.stderr)
        return 2
    import tempfile

    rows = {}
    setup()
    try:
        with tempfile.TemporaryDirectory() as d:
            for name, fn in (("tpacket_v3", run_tpacket), ("dumpcap_pipe", run_dumpcap), ("recv_loop", run_recv),
                             ("daemon", lambda s: run_daemon(s, Path(d)))):
                r = fn(args.seconds)
                if "read" in r and r["read"]:
                    r["cpu_s_per_mpkt"] = round(r["cpu_s"] / (r["read"] / 1e6), 3)
                    r["read_share"] = round(r["read"] / max(r["sent"], 1), 4)
                rows[name] = r
                print(name, json.dumps(r), flush=True)
    finally:
        teardown()
    if args.output:
        Path(args.output).write_text(json.dumps(
            {"benchmark": "live_capture", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "machine": machine(), "seconds": args.seconds, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
