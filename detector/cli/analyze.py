"""``detector analyze INPUT... [-o alerts.jsonl] [--flows-out flows.parquet] [--config FILE]``"""

from __future__ import annotations

import argparse
import json
import sys

from detector.cli.common import add_backend_argument, fail, print_problems, resolve_backend


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="pcap, pcapng, a .gz/.bz2/.xz of either, a folder (recursed, in time order) or - (stdin)")
    p.add_argument("--flows", action="append", default=[], metavar="FILE",
                   help="saved flow exports: an IPFIX file (RFC 5655) or an nfcapd file (read with nfdump); their "
                        "records meet the same detectors; repeatable")
    p.add_argument("-o", "--output", metavar="ALERTS", default="-",
                   help="alerts, one JSON object per line (default: stdout)")
    p.add_argument("--flows-out", metavar="FILE", help="also write the flow records (Parquet, CSV or Zeek by suffix)")
    p.add_argument("--report", metavar="HTML", help="also write a self-contained HTML report (charts, sortable "
                   "alert table)")
    p.add_argument("--cluster", metavar="SPEC", help="run on Dask distributed: local, local:N (N worker processes), "
                   "tcp://HOST:PORT or a scheduler file (needs the 'dist' extra); same alerts as one process")
    p.add_argument("--work-dir", metavar="DIR", help="with --cluster: where partitions write their results (shared "
                   "by every worker; kept, and reused by a run given the same folder); default: ALERTS.work, "
                   "removed when the run completes")
    p.add_argument("--model", metavar="MODEL", help="a site model from detector train (baselines, anomaly scores)")
    add_backend_argument(p)
    p.add_argument("--config", metavar="FILE", help="TOML configuration ([flows], [site], [detect.*])")
    p.add_argument("--gpu-log", action="append", default=[], metavar="PATH[@HOST]",
                   help="an nvidia-smi CSV log (--query-gpu or --query-compute-apps, --format=csv) of node HOST "
                        "(default: the file name's stem), or detector's own telemetry log (JSON lines); a folder: "
                        "every .csv and .jsonl in it, each named by its stem; repeatable")
    p.add_argument("--slurm", action="append", default=[], metavar="PATH",
                   help="Slurm's allocations: an sacct --json, squeue --json or scontrol show job -d --json dump; "
                        "repeatable")
    p.add_argument("--min-severity", choices=("low", "medium", "high", "critical"), default="low",
                   help="write only alerts of this severity or above (default: all)")
    p.add_argument("--stats", metavar="FILE", help="also write the run's summary as JSON")
    p.add_argument("--progress", dest="progress", action="store_true", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")


def run(args: argparse.Namespace) -> int:
    from detector.config import load_config
    from detector.errors import ConfigError, DetectorError

    if not args.inputs and not args.flows:
        return fail("nothing to analyse: give captures (INPUT) or saved flow exports (--flows)", 2)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return fail(str(exc), 2)
    model = None
    if args.model:
        from detector.baseline.site_model import SiteModel

        try:
            model = SiteModel.load(args.model)
        except DetectorError as exc:
            return fail(str(exc), 2)
    backend = resolve_backend(args.backend)
    if backend is None:
        return 2
    from detector.cli.flows import FORMAT_BY_SUFFIX
    from detector.pipeline.analyze_job import run_analyze, summary_text

    flows_fmt = "parquet"
    if args.flows_out and "." in args.flows_out:
        flows_fmt = FORMAT_BY_SUFFIX.get("." + args.flows_out.rsplit(".", 1)[-1].lower(), "parquet")
    collectors = []
    extra = []
    if args.report:
        import os

        folder = os.path.dirname(os.path.abspath(args.report))
        if not os.path.isdir(folder):
            return fail(f"--report {args.report}: folder {folder} does not exist", 2)
        if os.path.isdir(args.report):
            return fail(f"--report {args.report}: is a folder; name the HTML file", 2)
        from detector.report.collect import ReportCollector

        def collector(site):
            c = ReportCollector(site=site)
            collectors.append(c)
            return c

        extra.append(collector)
    if args.work_dir and not args.cluster:
        return fail("--work-dir is used with --cluster only", 2)
    from detector.pipeline.telemetry_stage import TelemetryArgs

    telemetry = TelemetryArgs(tuple(args.gpu_log), tuple(args.slurm))
    if (telemetry or args.flows) and args.cluster:
        return fail("--gpu-log, --slurm and --flows are not yet read with --cluster: analyse them in one process", 2)
    try:
        if args.cluster:
            from detector.dist.job import run_distributed
            from detector.report.page import DETECTORS

            result = run_distributed(args.inputs, cfg, args.cluster, args.output, args.flows_out, flows_fmt, backend,
                                     args.progress, extra, args.min_severity, model, args.work_dir,
                                     DETECTORS if args.report else ())
        else:
            result = run_analyze(args.inputs, cfg, args.output, args.flows_out, flows_fmt, backend, args.progress,
                                 min_severity=args.min_severity, model=model, extra_detectors=extra,
                                 telemetry=telemetry, flow_files=tuple(args.flows))
    except DetectorError as exc:
        return fail(str(exc), 2)
    print_problems(result)
    if args.report and collectors:
        from detector.report.page import write

        try:
            write(args.report, result, collectors[0], args.inputs)
        except OSError as exc:
            print(f"detector: error: {args.report}: cannot write the report: {exc.strerror}", file=sys.stderr)
            return max(result.exit_code, 1)
    if not args.quiet:
        print(f"detector analyze: {summary_text(result.summary, result.alerts)}", file=sys.stderr)
    if args.stats:
        try:
            with open(args.stats, "w", encoding="utf-8") as fh:
                json.dump({**result.summary, "errors": result.errors, "warnings": result.warnings}, fh, indent=2,
                          default=str)
        except OSError as exc:
            print(f"detector: error: {args.stats}: cannot write stats: {exc.strerror}", file=sys.stderr)
            return max(result.exit_code, 1)
    return result.exit_code
