"""``detector flows INPUT... -o OUT [--format parquet|csv|zeek]``"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from detector.cli.common import add_backend_argument, fail, print_problems, resolve_backend

FORMAT_BY_SUFFIX = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".log": "zeek", ".tsv": "zeek"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="pcap, pcapng, a .gz/.bz2/.xz of either, a folder (recursed, in time order) or - (stdin)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="flow records file to write")
    p.add_argument("--format", choices=("parquet", "csv", "zeek"),
                   help="output format (default: from OUT's suffix, else parquet)")
    add_backend_argument(p)
    p.add_argument("--config", metavar="FILE", help="TOML configuration ([flows] section)")
    p.add_argument("--threads", type=int, metavar="N", help="flow threads (0: one per core; default from config, 1); reading and record writing get threads of their own when a core is left over")
    p.add_argument("--stats", metavar="FILE", help="also write the run's summary as JSON to FILE")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="show a progress bar (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--top", type=int, default=0, metavar="N",
                   help="after the summary line, print flows per protocol and state and the N top talkers")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def run(args: argparse.Namespace) -> int:
    from detector.config import load_config
    from detector.errors import ConfigError, DetectorError

    try:
        cfg = load_config(args.config).flows
        if args.threads is not None:
            cfg = dataclasses.replace(cfg, threads=args.threads).validate()
    except ConfigError as exc:
        return fail(str(exc), 2)
    backend = resolve_backend(args.backend)
    if backend is None:
        return 2
    fmt = args.format
    if fmt is None:
        suffix = "." + args.output.rsplit(".", 1)[-1].lower() if "." in args.output else ""
        fmt = FORMAT_BY_SUFFIX.get(suffix, "parquet")

    from detector.pipeline.flows_job import run_flows, summary_line

    report = None
    if args.top > 0:  # imported only then: it needs pyarrow.compute (0.08 s of start-up)
        from detector.pipeline.flow_summary import FlowSummary

        report = FlowSummary()
    try:
        result = run_flows(args.inputs, args.output, fmt, cfg, progress=args.progress, summary=report,
                           backend=backend)
    except DetectorError as exc:
        return fail(str(exc), 2)
    print_problems(result)
    if not args.quiet:
        print(f"detector flows: {summary_line(result.summary)}", file=sys.stderr)
        if report is not None:
            print(report.render(args.top), file=sys.stderr)
    if args.stats:
        try:
            with open(args.stats, "w", encoding="utf-8") as fh:
                json.dump({**result.summary, "errors": result.errors, "warnings": result.warnings}, fh, indent=2)
        except OSError as exc:
            print(f"detector: error: {args.stats}: cannot write stats: {exc.strerror}", file=sys.stderr)
            return max(result.exit_code, 1)
    return result.exit_code
