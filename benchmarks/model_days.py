"""False alerts on benign days, with and without a site model trained on another benign day.

``detector synth benign`` writes several days of the same synthetic site (one seed per day);
``detector train`` learns a model from the first day (with the site's configuration, and
without any); every benign capture of the other days is analysed with and without that model.
Alerts of medium severity or above on benign traffic are false alerts; low ones are counted too.

    python benchmarks/model_days.py [--days 4] [--packets 60000] [-o results.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from detector.alerts import SEVERITY_RANK  # noqa: E402
from detector.baseline.site_model import SiteModel  # noqa: E402
from detector.cli import main as cli  # noqa: E402
from detector.config import load_config  # noqa: E402
from detector.pipeline.analyze_job import run_analyze  # noqa: E402

MEDIUM = SEVERITY_RANK["medium"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=4, help="days written; the first one trains")
    ap.add_argument("--packets", type=int, default=60_000, help="background packets per capture")
    ap.add_argument("--seed", type=int, default=100)
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        days = []
        for k in range(args.days):
            day = Path(d) / f"day{k}"
            assert cli(["synth", "benign", "-o", str(day), "--packets", str(args.packets),
                        "--seed", str(args.seed + k)]) == 0
            days.append(day)
        captures = sorted(days[0].glob("*.pcap"))
        models = {}
        for label, extra in (("site config", ["--config", str(days[0] / "site.toml")]), ("no config", [])):
            path = str(Path(d) / f"{label.replace(' ', '-')}.model")
            assert cli(["train", *map(str, captures), "-o", path, "-q", *extra]) == 0
            models[label] = SiteModel.load(path)
        for day in days[1:]:
            for capture in sorted(day.glob("*.pcap")):
                for label, config in (("site config", str(day / "site.toml")), ("no config", None)):
                    for with_model in (False, True):
                        alerts = run_analyze([str(capture)], load_config(config), None, progress=False,
                                             model=models[label] if with_model else None).alerts
                        rows.append({"day": day.name, "capture": capture.name, "config": label, "model": with_model,
                                     "medium_or_above": [f"{a.severity}:{a.technique}" for a in alerts
                                                         if a.severity_rank >= MEDIUM],
                                     "low": sum(a.severity_rank < MEDIUM for a in alerts)})
    print(table(rows, args.days - 1))
    if args.output:
        Path(args.output).write_text(json.dumps(
            {"benchmark": "model_days", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "days": args.days, "packets": args.packets, "seed": args.seed, "rows": rows}, indent=2) + "\n")
    return 0


def table(rows: list[dict], days: int) -> str:
    lines = [f"Benign captures of {days} day(s) after the training day:", "",
             "| configuration | model | captures | with medium+ alerts | medium+ alerts | low alerts |",
             "|---|---|---:|---:|---:|---:|"]
    for config in ("site config", "no config"):
        for model in (False, True):
            mine = [r for r in rows if r["config"] == config and r["model"] == model]
            lines.append(f"| {config} | {'trained on day 0' if model else 'none'} | {len(mine)} | "
                         f"{sum(bool(r['medium_or_above']) for r in mine)} | "
                         f"{sum(len(r['medium_or_above']) for r in mine)} | {sum(r['low'] for r in mine)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
