"""``detector synth SCENARIO... -o DIR`` writes ``DIR/SCENARIO.pcap`` and ``DIR/labels.json``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from detector.cli.common import fail

SCENARIO_NAMES = ("hpc-mix",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", choices=SCENARIO_NAMES,
                   help=f"scenario(s) to write: {', '.join(SCENARIO_NAMES)}")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write into (created)")
    p.add_argument("--packets", type=int, default=200_000, help="about how many packets (default 200000)")
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same bytes")
    p.add_argument("--format", choices=("pcap", "pcapng"), default="pcap")
    p.add_argument("--nanosecond", action="store_true", help="nanosecond timestamps")
    p.add_argument("--snaplen", type=int, default=262144, help="cut records to this many bytes (default 262144)")


def run(args: argparse.Namespace) -> int:
    if args.packets < 1:
        return fail("--packets must be positive", 2)
    if not 96 <= args.snaplen <= 262144:
        return fail("--snaplen must be between 96 and 262144", 2)
    from detector.synth.encode import encode
    from detector.synth.scenarios import SCENARIOS

    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as exc:
        return fail(f"{args.output}: cannot create folder: {exc.strerror}", 2)
    labels = {}
    for name in args.scenarios:
        t0 = time.perf_counter()
        sc = SCENARIOS[name](packets=args.packets, seed=args.seed)
        data = encode(sc.packets, sc.pool, fmt=args.format, nanosecond=args.nanosecond, snaplen=args.snaplen)
        path = os.path.join(args.output, f"{name}.{args.format}")
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            return fail(f"{path}: cannot write: {exc.strerror}", 2)
        sc.labels.update({"file": os.path.basename(path), "packets": len(sc.packets)})
        labels[name] = sc.labels
        print(f"detector synth: {path}: {len(sc.packets):,} packets, {len(data) / 1e6:.1f} MB "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    label_path = os.path.join(args.output, "labels.json")
    try:
        with open(label_path, "w", encoding="utf-8") as fh:
            json.dump(labels, fh, indent=2)
    except OSError as exc:
        return fail(f"{label_path}: cannot write: {exc.strerror}", 2)
    return 0
