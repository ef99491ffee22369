"""The scapy peer, on a sample: scapy dissects the first 1 % of the capture's packets (at least
1,000) into a dict of bidirectional flows; the time is extrapolated to the whole capture (scapy
would take hours on a benchmark-sized file) and the row says so.

Usage: python -m detector.bench.peers.scapy_flows CAPTURE TOTAL_PACKETS   (prints JSON)
"""

from __future__ import annotations

import json
import sys
import time

from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapReader


def main(path: str, total: int) -> None:
    sample = max(1000, total // 100)
    flows: dict = {}
    n = 0
    t0 = time.perf_counter()
    with PcapReader(path) as reader:
        for pkt in reader:
            n += 1
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if ip is not None:
                l4 = ip.payload
                a, b = (ip.src, getattr(l4, "sport", 0)), (ip.dst, getattr(l4, "dport", 0))
                key = (a, b) if a <= b else (b, a)
                rec = flows.setdefault(key, [float(pkt.time), 0, 0])
                rec[1] += 1
                rec[2] += len(pkt)
            if n >= sample:
                break
    elapsed = time.perf_counter() - t0
    print(json.dumps({"seconds": elapsed * total / max(n, 1), "sample_packets": n, "sample_seconds": elapsed,
                      "flows": None}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
