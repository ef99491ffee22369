"""The dpkt peer: pcap.Reader, parse every packet, and a dict of bidirectional flows.

Timed in the process after the imports, as detector's own rows are.

Usage: python -m detector.bench.peers.dpkt_flows CAPTURE   (prints packets, flows and seconds as JSON)
"""

from __future__ import annotations

import json
import sys
import time

import dpkt


def main(path: str) -> None:
    t0 = time.perf_counter()
    flows: dict = {}
    packets = 0
    with open(path, "rb") as fh:
        for ts, buf in dpkt.pcap.Reader(fh):
            packets += 1
            try:
                eth = dpkt.ethernet.Ethernet(buf)
            except (dpkt.UnpackError, IndexError):
                continue
            ip = eth.data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            l4 = ip.data
            sport = getattr(l4, "sport", 0)
            dport = getattr(l4, "dport", 0)
            proto = ip.p if isinstance(ip, dpkt.ip.IP) else ip.nxt
            a, b = (ip.src, sport), (ip.dst, dport)
            key = (a, b, proto) if a <= b else (b, a, proto)
            rec = flows.get(key)
            size = len(buf)
            if rec is None:
                flows[key] = [ts, ts, 1, size]
            else:
                rec[1] = ts
                rec[2] += 1
                rec[3] += size
    print(json.dumps({"packets": packets, "flows": len(flows), "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(sys.argv[1])
