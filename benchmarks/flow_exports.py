"""Flow-export ingest (issue 22's target: the collector takes >= 200k flow records/s per core
from softflowd).

softflowd exports a synth capture as NetFlow v5, v9 and IPFIX to a socket of ours; the
datagrams are then replayed ``--repeat`` times through what the daemon does with them, on one
core: the decoder (templates, bulk decode) and the flow records the detectors read, in batches
of ``--batch`` datagrams (what a poll drains). A second measure sends them over loopback to
the collector's receive thread, with a sender process beside it (the machine's second core).

    python benchmarks/flow_exports.py -o benchmarks/results/X.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def exported(pcap: Path, version: int) -> list[bytes]:
    import subprocess

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        s.bind(("127.0.0.1", 0))
        s.settimeout(1.0)
        subprocess.run(["softflowd", "-r", str(pcap), "-v", str(version), "-n", f"127.0.0.1:{s.getsockname()[1]}"],
                       capture_output=True, check=True, timeout=600)
        out = []
        try:
            while True:
                out.append(s.recv(65535))
        except TimeoutError:
            return out


def decode_rate(grams: list[bytes], repeat: int, batch: int) -> dict:
    from detector.exports.decode import Decoder
    from detector.exports.records import flow_batch

    d = Decoder()
    records, t_decode, t_records = 0, 0.0, 0.0
    stream = grams * repeat
    for k in range(0, len(stream), batch):
        t0 = time.perf_counter()
        for g in stream[k:k + batch]:
            d.feed(g, "127.0.0.1", 1_800_000_000 * 10**9)
        cols = d.take(1_800_000_000 * 10**9)
        t1 = time.perf_counter()
        if cols is not None:
            flow_batch(cols, d.exporters)
            records += len(cols)
        t_records += time.perf_counter() - t1
        t_decode += t1 - t0
    return {"records": records, "decode_per_s": round(records / t_decode), "records_per_s": round(records / t_records),
            "both_per_s": round(records / (t_decode + t_records))}


def _send(grams, repeat, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        for _ in range(repeat):
            for g in grams:
                u.sendto(g, ("127.0.0.1", port))


def loopback_rate(grams: list[bytes], repeat: int) -> dict:
    from detector.exports.collector import Collector

    stop = threading.Event()
    c = Collector(["udp://127.0.0.1:0"], max_queued_bytes=1 << 30)
    c.start(stop)
    sender = multiprocessing.Process(target=_send, args=(grams, repeat, c.addresses[0][1]))
    t0 = time.perf_counter()
    sender.start()
    sender.join()
    time.sleep(0.5)
    stop.set()
    c.close()
    got = c.counts["messages"]
    return {"sent": len(grams) * repeat, "received": got, "seconds": round(time.perf_counter() - t0, 3)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packets", type=int, default=400_000)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("-o", "--output")
    args = p.parse_args()
    from detector.cli import main as cli

    out = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": multiprocessing.cpu_count()},
           "packets": args.packets, "repeat": args.repeat, "batch_datagrams": args.batch, "versions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        assert cli(["synth", "hpc-mix", "-o", tmp, "--packets", str(args.packets), "--no-telemetry"]) == 0
        for version in (5, 9, 10):
            grams = exported(Path(tmp) / "hpc-mix.pcap", version)
            row = {"datagrams": len(grams), **decode_rate(grams, args.repeat, args.batch),
                   "loopback": loopback_rate(grams, args.repeat)}
            out["versions"][f"v{version}"] = row
            print(f"v{version}: {row}", file=sys.stderr)
    text = json.dumps(out, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
