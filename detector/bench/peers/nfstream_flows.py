"""The NFStream peer: one meter, statistical features on, flows iterated (no CSV round trip).

Usage: python -m detector.bench.peers.nfstream_flows CAPTURE   (prints the number of flows as JSON)
"""

from __future__ import annotations

import json
import sys

from nfstream import NFStreamer


def main(path: str) -> None:
    n = 0
    for _ in NFStreamer(source=path, statistical_analysis=True, n_meters=1):
        n += 1
    print(json.dumps({"flows": n}))


if __name__ == "__main__":
    main(sys.argv[1])
