"""``detector train INPUT... -o MODEL [--config FILE] [--window SECONDS]``"""

from __future__ import annotations

import argparse
import sys

from detector.cli.common import add_backend_argument, fail, print_problems, resolve_backend


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="captures of traffic taken as normal: pcap, pcapng, compressed, a folder or -")
    p.add_argument("-o", "--output", metavar="MODEL", required=True, help="the site model file to write")
    p.add_argument("--config", metavar="FILE", help="TOML configuration (the same [site] as analyze)")
    p.add_argument("--window", type=float, default=600.0, metavar="SECONDS",
                   help="host window length (default 600)")
    p.add_argument("--gpu-log", action="append", default=[], metavar="PATH[@HOST]",
                   help="GPU telemetry taken as normal (as for analyze --gpu-log): the model also learns how the "
                        "site's GPUs work (gpu_profile); repeatable")
    p.add_argument("--gpu-window", type=float, default=3600.0, metavar="SECONDS",
                   help="GPU window length (default 3600)")
    p.add_argument("--freeze", action="store_true", help="mark the model frozen: online updates never change it")
    add_backend_argument(p)
    p.add_argument("--progress", dest="progress", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")


def run(args: argparse.Namespace) -> int:
    from detector.config import load_config
    from detector.errors import ConfigError, DetectorError

    if not 10 <= args.window <= 86400:
        return fail("--window: between 10 and 86400 seconds", 2)
    if not 60 <= args.gpu_window <= 86400:
        return fail("--gpu-window: between 60 and 86400 seconds", 2)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc), 2)
    backend = resolve_backend(args.backend)
    if backend is None:
        return 2
    from detector.pipeline.train_job import run_train

    try:
        result = run_train(args.inputs, cfg, args.output, backend, args.progress, args.window, freeze=args.freeze,
                           gpu_logs=tuple(args.gpu_log), gpu_window_s=args.gpu_window)
    except DetectorError as exc:
        return fail(str(exc), 2)
    print_problems(result)
    if not args.quiet and result.exit_code != 2:
        s = result.summary
        gpu = "" if s.get("gpu_windows") is None else f", {s['gpu_windows']:,} GPU windows"
        print(f"detector train: {s['packets']:,} packets, {s['flows']:,} flows: {s['windows']:,} windows of "
              f"{s['hosts']:,} hosts ({s['trimmed_windows']} trimmed as outliers), {s['destinations']:,} "
              f"destinations{gpu}; model written to {s['model']} in {s['seconds']:.2f} s", file=sys.stderr)
    return result.exit_code
