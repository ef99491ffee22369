"""Detection quality: ``detector analyze`` over labelled captures, recall per category, false
alerts on benign captures, and time to detect.

Two sources of labels:

- the shared corpus (``../shared/pcaps``, or ``--corpus DIR``): its MANIFEST categories;
- synthetic scenarios written by ``detector synth`` (``--synth``), with their labels, analysed
  twice: with the synthetic site's configuration (``site.toml``: local networks, gateway,
  servers, node roles, partner DTNs) and with none;
- with ``--real``, also Zeek's test traces (``../shared/traces-zeek``, or ``--zeek DIR``): real
  traffic of many protocols, benign except the attack captures their README names
  (``ZEEK_ATTACKS``), analysed as a new user would (no site configuration).

A capture counts as detected when an alert of its expected category at medium severity or above
is raised (for ``mixed`` captures, any such alert); a benign capture is a false alarm when it
raises any alert at medium or above. Time to detect is how much capture time after the
incident's start (the first packet for corpus captures) the analysis needs before it raises
that alert: the capture is replayed up to 1, 2, 5, 10, 20, 30, 60, ... seconds after the start
and the first such cut-off that already gives the alert is reported.

    python benchmarks/quality.py [--corpus DIR] [--synth] [--real [--zeek DIR]] [-o results.json]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from detector.alerts import SEVERITY_RANK  # noqa: E402
from detector.config import Config, load_config  # noqa: E402
from detector.errors import DetectorError  # noqa: E402
from detector.pipeline.analyze_job import run_analyze  # noqa: E402

CORPUS_CATEGORY = {
    "benign": None, "bruteforce": "unauthorized_access", "dos": "dos", "exfil_dns_tunnel": "exfiltration",
    "exfil_other": "exfiltration", "mining": "compute_theft", "mitm_arp": "mitm", "mitm_other": "mitm",
    "scan": "scan", "mixed": "*",
}
MEDIUM = SEVERITY_RANK["medium"]

# traces-zeek files that show attacks: those its README names, and those judged so by reading them
# (tests/traces_zeek_judged.tsv, with the reasoning); all others are benign
ZEEK_ATTACKS = ("ssh~sshguess", "ftp~bruteforce", "scan~", "nmap-vsn", "rfb~vnc-scanner", "dhcp~dhcp_flood",
                "ssh~reverse-ssh", "websocket~wstunnel-ssh", "icmp~icmp6-redirect.pcap")
JUDGED = REPO / "tests" / "traces_zeek_judged.tsv"


def judged() -> dict[str, tuple[str, str]]:
    """file -> (verdict, reasoning) of the judged traces-zeek captures."""
    out = {}
    for line in JUDGED.read_text().splitlines():
        if line.startswith("#") or line.startswith("file\t") or not line.strip():
            continue
        name, verdict, why = line.split("\t", 2)
        out[name] = (verdict, why)
    return out


def first_packet_ns(path: str) -> int:
    from detector.sources import first_timestamp

    return first_timestamp(path) or 0


# seconds after an incident starts at which a live sensor is checked for the alert
LADDER_S = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


def _hit(alerts, expected: str):
    strong = [a for a in alerts if a.severity_rank >= MEDIUM]
    if expected == "*":
        return strong[0] if strong else None
    return next((a for a in strong if a.category == expected), None)


def time_to_detect(path: str, expected: str, cfg: Config, start: int) -> float | None:
    """The first step of LADDER_S after which the packets seen so far already raise the alert
    (binary search over the ladder; detection is monotone in what has been seen). None when
    only the whole capture does."""
    lo, hi = 0, len(LADDER_S) - 1
    if _hit(run_analyze([path], cfg, None, until_ns=start + LADDER_S[hi] * 10**9).alerts, expected) is None:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _hit(run_analyze([path], cfg, None, until_ns=start + LADDER_S[mid] * 10**9).alerts, expected):
            hi = mid
        else:
            lo = mid + 1
    return float(LADDER_S[lo])


def evaluate(path: str, expected: str | None, cfg: Config, start_ns: int | None = None,
             ladder: bool = True) -> dict:
    try:
        result = run_analyze([path], cfg, None)
    except DetectorError as e:
        return {"file": path, "expected": expected, "detected": False if expected else None,
                "false_alarm": None, "time_to_detect_s": None, "alerts": [], "error": str(e)}
    strong = [a for a in result.alerts if a.severity_rank >= MEDIUM]
    hit = _hit(result.alerts, expected) if expected else None
    start = start_ns if start_ns is not None else first_packet_ns(path)
    return {
        "file": path, "expected": expected, "detected": hit is not None if expected else None,
        "false_alarm": bool(strong) if expected is None else None,
        "time_to_detect_s": time_to_detect(path, expected, cfg, start) if hit is not None and ladder else None,
        "alerts": [f"{a.severity}:{a.category}/{a.technique}" for a in result.alerts],
        "medium_plus": [f"{a.severity}:{a.detector}: {a.summary}" for a in strong],
    }


def corpus_cases(corpus: Path):
    with open(corpus / "MANIFEST.tsv", newline="") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            yield row["category"], str(corpus / row["local_file"]), CORPUS_CATEGORY[row["category"]]


def zeek_cases(folder: Path):
    """(group, path, expected) per capture of Zeek's test traces."""
    verdicts = judged()
    for path in sorted(folder.iterdir()):
        if ".pcap" not in path.name and path.suffix not in (".cap", ".trace", ".dump", ".erf"):
            continue
        attack = any(path.name.startswith(a) for a in ZEEK_ATTACKS) or \
            verdicts.get(path.name, ("",))[0] == "attack"
        yield ("traces-zeek: attack" if attack else "traces-zeek: benign"), str(path), ("*" if attack else None)


def synth_cases(work: Path, packets: int, seed: int):
    """(name, path, expected category or None, incident start) per synthetic scenario."""
    from detector.synth.encode import encode
    from detector.synth.scenarios import SCENARIOS

    for name, make in SCENARIOS.items():
        sc = make(packets=packets, seed=seed)
        path = work / f"{name}.pcap"
        path.write_bytes(encode(sc.packets, sc.pool))
        incidents = sc.labels.get("incidents", [])
        if not incidents:
            yield name, str(path), None, None
        for inc in incidents:
            yield name, str(path), inc["category"], inc["start_ns"]


def synth_config(work: Path) -> Config:
    from detector.synth.site import Site

    path = work / "site.toml"
    path.write_text(Site().config_toml())
    return load_config(str(path))


def table(rows: list[dict]) -> str:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["group"]].append(r)
    lines = ["| captures | n | detected (medium+) | recall | false alarms on benign | median time to detect (at most) |",
             "|---|---:|---:|---:|---:|---:|"]
    for g in sorted(groups):
        rs = groups[g]
        attack = [r for r in rs if r["expected"]]
        benign = [r for r in rs if not r["expected"]]
        ttd = sorted(r["time_to_detect_s"] for r in attack if r["time_to_detect_s"] is not None)
        med = f"{ttd[len(ttd) // 2]:.1f} s" if ttd else "-"
        if attack:
            det = sum(r["detected"] for r in attack)
            lines.append(f"| {g} | {len(attack)} | {det} | {det / len(attack):.0%} | - | {med} |")
        if benign:
            fa = sum(bool(r["false_alarm"]) for r in benign)
            unread = sum("error" in r for r in benign)
            note = f" ({unread} unreadable)" if unread else ""
            lines.append(f"| {g} | {len(benign)} | - | - | {fa} of {len(benign)} ({fa / len(benign):.1%}){note} | - |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=str(REPO.parent / "shared" / "pcaps"))
    ap.add_argument("--synth", action="store_true", help="also evaluate the synthetic scenarios")
    ap.add_argument("--packets", type=int, default=60_000, help="background packets per synthetic scenario")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--real", action="store_true", help="also evaluate Zeek's test traces (real traffic)")
    ap.add_argument("--zeek", default=str(REPO.parent / "shared" / "traces-zeek"))
    ap.add_argument("--config", help="site configuration to analyse with")
    ap.add_argument("-o", "--output")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every capture's alerts")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    rows = []
    corpus = Path(args.corpus)
    if (corpus / "MANIFEST.tsv").is_file():
        for group, path, expected in corpus_cases(corpus):
            r = evaluate(path, expected, cfg)
            rows.append({"group": group, **r})
            if args.verbose or (expected and not r["detected"]) or r["false_alarm"]:
                print(f"{group:18s} {Path(path).name:45s} expected={expected} detected={r['detected']} "
                      f"false_alarm={r['false_alarm']} alerts={r['alerts'][:6]}", file=sys.stderr)
    else:
        print(f"no corpus at {corpus}: corpus rows skipped", file=sys.stderr)
    if args.real:
        zeek = Path(args.zeek)
        if not zeek.is_dir():
            print(f"no traces at {zeek}: traces-zeek rows skipped", file=sys.stderr)
        for group, path, expected in zeek_cases(zeek) if zeek.is_dir() else ():
            r = evaluate(path, expected, cfg, ladder=False)
            rows.append({"group": group, **r, "file": Path(path).name})
            if args.verbose or (expected and not r["detected"]) or r["false_alarm"]:
                print(f"{group:18s} {Path(path).name:45s} expected={expected} detected={r['detected']} "
                      f"medium+={r.get('medium_plus', [])[:4]} {r.get('error', '')}", file=sys.stderr)
    if args.synth:
        with tempfile.TemporaryDirectory() as d:
            site_cfg = synth_config(Path(d))
            for name, path, expected, start in synth_cases(Path(d), args.packets, args.seed):
                for label, c in (("synth", site_cfg), ("synth, no config", cfg)):
                    r = evaluate(path, expected, c, start)
                    group = f"{label}: {expected or 'benign'}"
                    rows.append({"group": group, "scenario": name, **r, "file": Path(path).name})
                    if args.verbose or (expected and not r["detected"]) or r["false_alarm"]:
                        print(f"{label:16s} {name:28s} expected={expected} detected={r['detected']} "
                              f"false_alarm={r['false_alarm']} alerts={r['alerts'][:8]}", file=sys.stderr)
    doc = {"benchmark": "quality", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "rows": rows}
    print(table(rows))
    if args.output:
        Path(args.output).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
