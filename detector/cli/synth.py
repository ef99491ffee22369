"""``detector synth SCENARIO... -o DIR`` writes ``DIR/SCENARIO.pcap``, ``DIR/labels.json`` (each
scenario's incidents: category, technique, hosts, time span), ``DIR/site.toml`` (the synthetic
site's configuration, for ``detector analyze --config``) and ``DIR/telemetry/SCENARIO/`` (its
GPU partition's nvidia-smi logs and sacct dump, for ``--gpu-log`` and ``--slurm``; see
:mod:`detector.synth.telemetry`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from detector.cli.common import fail

# kept here so that parsing arguments needs no NumPy; a test checks them against SCENARIOS
BENIGN_NAMES = ("hpc-mix", "benign-dtn", "benign-login", "benign-p2p", "benign-happy-eyeballs", "benign-two-resolvers",
                "benign-route-change")
ATTACK_NAMES = (
    "exfil-dns-tunnel", "exfil-icmp-tunnel", "exfil-bulk-upload", "exfil-reverse-ssh", "exfil-login-upload",
    "mitm-arp-spoof", "mitm-arp-request", "mitm-icmp-redirect", "mitm-rogue-dhcp", "mitm-dns-spoof", "mitm-ssh-hostkey", "mitm-tls-cert",
    "mitm-tcp-hijack", "mitm-tls-name",
    "theft-stratum", "theft-beaconing", "theft-compute-outbound", "theft-gpu-unallocated", "theft-gpu-foreign",
    "access-ssh-bruteforce", "access-distributed-guessing", "access-remote-shell", "access-c2-port80",
    "scan-ports", "scan-sweep", "scan-arp-sweep",
    "dos-syn-flood", "dos-reflection", "dos-dhcp-starvation",
)
BENCH_NAMES = ("bench-syn-flood",)  # large, for benchmarks: in no group
SCENARIO_NAMES = BENIGN_NAMES + ATTACK_NAMES + BENCH_NAMES
GROUPS = {"all": BENIGN_NAMES + ATTACK_NAMES, "benign": BENIGN_NAMES, "attacks": ATTACK_NAMES}


DEFAULT_PACKETS = {"hpc-mix": 200_000, "bench-syn-flood": 3_000_000}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenarios", nargs="+", metavar="SCENARIO", choices=SCENARIO_NAMES + tuple(GROUPS),
                   help=f"scenario(s) to write: {', '.join(SCENARIO_NAMES)}; or all, benign, attacks")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write into (created)")
    p.add_argument("--packets", type=int, default=None,
                   help="packets of background traffic (default 200000 for hpc-mix, 60000 under the others; "
                        "bench-syn-flood: all its packets, default 3000000)")
    p.add_argument("--seed", type=int, default=1, help="random seed; the same seed gives the same bytes")
    p.add_argument("--format", choices=("pcap", "pcapng"), default="pcap")
    p.add_argument("--nanosecond", action="store_true", help="nanosecond timestamps")
    p.add_argument("--snaplen", type=int, default=262144, help="cut records to this many bytes (default 262144)")
    p.add_argument("--no-telemetry", dest="telemetry", action="store_false",
                   help="write no GPU telemetry (DIR/telemetry/SCENARIO/)")


def run(args: argparse.Namespace) -> int:
    if args.packets is not None and args.packets < 1:
        return fail("--packets must be positive", 2)
    if not 96 <= args.snaplen <= 262144:
        return fail("--snaplen must be between 96 and 262144", 2)
    from detector.synth.encode import encode
    from detector.synth.scenarios import SCENARIOS
    from detector.synth.site import Site

    try:
        os.makedirs(args.output, exist_ok=True)
    except OSError as exc:
        return fail(f"{args.output}: cannot create folder: {exc.strerror}", 2)
    names = list(dict.fromkeys(n for x in args.scenarios for n in GROUPS.get(x, (x,))))
    labels = {}
    for name in names:
        t0 = time.perf_counter()
        packets = args.packets or DEFAULT_PACKETS.get(name, 60_000)
        sc = SCENARIOS[name](packets=packets, seed=args.seed)
        data = encode(sc.packets, sc.pool, fmt=args.format, nanosecond=args.nanosecond, snaplen=args.snaplen)
        path = os.path.join(args.output, f"{name}.{args.format}")
        try:
            with open(path, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            return fail(f"{path}: cannot write: {exc.strerror}", 2)
        sc.labels.update({"file": os.path.basename(path), "packets": len(sc.packets)})
        if args.telemetry and name not in BENCH_NAMES:
            failed = _write_telemetry(args.output, sc, args.seed)
            if failed:
                return failed
        labels[name] = sc.labels
        print(f"detector synth: {path}: {len(sc.packets):,} packets, {len(data) / 1e6:.1f} MB "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    label_path = os.path.join(args.output, "labels.json")
    site_path = os.path.join(args.output, "site.toml")
    for path, text in ((label_path, json.dumps(labels, indent=2)), (site_path, Site().config_toml())):
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            return fail(f"{path}: cannot write: {exc.strerror}", 2)
    return 0


def _write_telemetry(folder: str, sc, seed: int) -> int:
    import pathlib

    from detector.synth import telemetry

    target = pathlib.Path(folder) / "telemetry" / sc.name
    incident = next((i for i in sc.labels["incidents"] if i["category"] == "compute_theft"), None)
    ts = sc.packets.ts_ns
    try:
        telemetry.write(target, sc.name, int(ts.min()), int(ts.max()), incident, seed)
    except OSError as exc:
        return fail(f"{target}: cannot write telemetry: {exc.strerror}", 2)
    return 0
