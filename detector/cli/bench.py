"""``detector bench [--quick] [--input FILE] [-o results.json] [--plot results.png]``"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="a 300k-packet capture, one round (about a minute)")
    p.add_argument("--input", metavar="FILE", help="capture to use (default: a generated HPC-site mix)")
    p.add_argument("--packets", type=int, help="packets of the generated capture (default 2M, 300k with --quick)")
    p.add_argument("--repeat", type=int, help="rounds; the best of each tool counts (default 3, 1 with --quick)")
    p.add_argument("--only", nargs="+", metavar="TOOL", help="measure only these rows (names as in the JSON)")
    p.add_argument("-o", "--output", metavar="JSON", help="results (default: benchmarks/results/<date>-bench-<host>.json "
                   "in a checkout, else ./bench-<date>.json)")
    p.add_argument("--plot", metavar="PNG", help="bar chart of packets/s per tool (needs matplotlib)")
    p.add_argument("--markdown", metavar="MD", help="also write the Markdown table to this file")
    p.add_argument("--work", metavar="DIR", default=None, help="scratch folder (default: benchmarks/work or ./bench-work)")
    p.add_argument("--from", dest="from_json", metavar="JSON", help="no measuring: print (and plot) a results file")
    p.add_argument("--update-readme", metavar="README", help="with --from: regenerate the README's performance table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _checkout() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "benchmarks").is_dir() and (root / "pyproject.toml").exists() else None


def run(args: argparse.Namespace) -> int:
    import datetime as dt

    from detector.bench import report
    from detector.cli.common import fail

    if args.from_json:
        try:
            doc = json.loads(Path(args.from_json).read_text())
        except (OSError, ValueError) as exc:
            return fail(f"{args.from_json}: cannot read results: {exc}", 2)
    else:
        from detector.bench.run import run_bench

        root = _checkout()
        work = Path(args.work) if args.work else (root / "benchmarks" / "work" if root else Path("bench-work"))
        if args.input and not Path(args.input).is_file():
            return fail(f"--input {args.input}: no such file", 2)
        from detector.errors import DetectorError

        try:
            doc = run_bench(work, args.input, args.packets, args.quick, args.repeat, args.only, not args.quiet)
        except DetectorError as exc:
            return fail(str(exc), 2)
        out = Path(args.output) if args.output else (
            root / "benchmarks" / "results" / f"{dt.date.today().isoformat()}-bench-{doc['machine']['host']}.json"
            if root else Path(f"bench-{dt.date.today().isoformat()}.json"))
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            return fail(f"{out}: cannot write results: {exc.strerror}", 1)
        print(f"detector bench: results in {out}", file=sys.stderr)
    table = report.markdown(doc)
    print(table)
    try:
        if args.markdown:
            Path(args.markdown).write_text(table + "\n")
        if args.plot:
            try:
                report.plot(doc, args.plot)
            except ImportError:
                return fail("--plot needs matplotlib (pip install 'detector[bench]')", 2)
        if args.update_readme and not report.update_readme(doc, Path(args.update_readme)):
            return fail(f"{args.update_readme}: no generated table block ({report.README_BEGIN})", 2)
    except OSError as exc:
        return fail(f"cannot write: {exc}", 1)
    return 0
