"""``detector run [--config FILE] [--iface IFACE | --pcap-dir DIR | --zeek-log FILE ...]``: the daemon."""

from __future__ import annotations

import argparse
import os
import sys

from detector.cli.common import add_backend_argument, fail, resolve_backend


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration ([daemon], [site], [detect.*], [flows])")
    p.add_argument("--iface", metavar="IFACE", help="capture live from this interface (needs CAP_NET_RAW)")
    p.add_argument("--bpf", metavar="FILTER", help="capture filter, tcpdump syntax")
    p.add_argument("--pcap-dir", metavar="DIR", help="process the rotating captures written to this folder")
    p.add_argument("--zeek-log", metavar="FILE", action="append", default=[],
                   help="follow a Zeek conn.log or dns.log (TSV or JSON; repeatable)")
    p.add_argument("--flow-listen", metavar="URL", action="append", default=[],
                   help="collect flow exports: udp://HOST:PORT (NetFlow v5/v9, IPFIX) or tcp://HOST:PORT (IPFIX); "
                        "repeatable")
    p.add_argument("--gpu-telemetry", action="store_true", default=None,
                   help="sample this node's GPUs through NVML and judge them against Slurm's allocations")
    p.add_argument("--alerts", metavar="FILE", help="append alerts to this JSONL file")
    p.add_argument("--stdout", action="store_true", default=None, help="also write alerts to stdout")
    p.add_argument("--metrics", metavar="ADDR:PORT", help="prometheus endpoint (default 127.0.0.1:9108; '' for none)")
    p.add_argument("--state", metavar="FILE", help="state database (default: $STATE_DIRECTORY/state.db)")
    p.add_argument("--model", metavar="MODEL", help="a site model from detector train to start from")
    add_backend_argument(p)


def overrides_from(args: argparse.Namespace) -> dict:
    """The flags given, as ``[daemon]`` keys."""
    out = {}
    for flag, key in (("iface", "iface"), ("bpf", "bpf"), ("pcap_dir", "pcap_dir"), ("alerts", "alerts"),
                      ("stdout", "stdout"), ("metrics", "metrics"), ("state", "state"), ("model", "model"),
                      ("gpu_telemetry", "gpu_telemetry")):
        value = getattr(args, flag)
        if value is not None:
            out[key] = value
    if args.flow_listen:
        out["flow_listen"] = tuple(args.flow_listen)
    for path in args.zeek_log:
        name = os.path.basename(path).lower()
        if "conn" in name:
            out["zeek_conn"] = path
        elif "dns" in name:
            out["zeek_dns"] = path
        else:
            raise ValueError(f"--zeek-log {path}: name it conn*.log or dns*.log, or use daemon.zeek_conn / "
                             "daemon.zeek_dns in the configuration")
    return out


def run(args: argparse.Namespace) -> int:
    from detector.config import load_config
    from detector.daemon.service import Daemon, apply_overrides
    from detector.errors import ConfigError, DetectorError

    try:
        overrides = overrides_from(args)
        cfg = apply_overrides(load_config(args.config), overrides)
    except (ConfigError, ValueError) as exc:
        return fail(str(exc), 2)
    backend = resolve_backend(args.backend)
    if backend is None:
        return 2
    try:
        daemon = Daemon(cfg, backend, args.config, overrides)
        daemon.install_signals()
        daemon.start()
    except DetectorError as exc:
        return fail(str(exc), 2)
    print(f"detector run: started ({', '.join(cfg.daemon.sources)}); pid {os.getpid()}", file=sys.stderr, flush=True)
    _notify_systemd()
    return daemon.run()


def _notify_systemd() -> None:
    """``Type=notify`` units: tell systemd the daemon is ready (signal handlers in place)."""
    import socket

    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.send(b"READY=1")
    except OSError:
        pass
