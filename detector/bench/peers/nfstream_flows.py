"""The NFStream peer: one meter, statistical features on, flows iterated (no CSV round trip).

Timed in the process after the imports, as detector's own rows are.

Usage: python -m detector.bench.peers.nfstream_flows CAPTURE   (prints flows and seconds as JSON)
"""

from __future__ import annotations

import json
import sys
import time

from nfstream import NFStreamer


def main(path: str) -> None:
    t0 = time.perf_counter()
    n = 0
    for _ in NFStreamer(source=path, statistical_analysis=True, n_meters=1):
        n += 1
    print(json.dumps({"flows": n, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main(sys.argv[1])
