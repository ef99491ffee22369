"""The HTML report of an ``analyze`` run: one file, styles and the table-sorting script inline,
charts as inline SVG (:mod:`detector.report.svg`), nothing fetched from the network.

Sections: summary (with the inputs that could not be read), alerts (a table sortable by any
column, each alert's evidence under it), a timeline of alerts by category, bytes in and out per
host over time, top talkers, DNS domains by unique names, beaconing candidates with their
inter-arrival histograms, MAC/IP binding changes, and with GPU telemetry each node's GPU
utilisation with the jobs that held its GPUs drawn under it.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os

from detector import __version__
from detector.alerts import CATEGORIES, SEVERITY_RANK, rfc3339
from detector.report import svg
from detector.report.collect import BUCKET_NS

TOP_HOSTS = 6
MAX_POINTS = 600  # per time series
TOP_ROWS = 15

STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:28px}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;
vertical-align:top}th{background:#f2f2f2;cursor:pointer;user-select:none}th.sorted-asc::after{content:" \\25B2"}
th.sorted-desc::after{content:" \\25BC"}.sev-critical{color:#7b0000;font-weight:bold}.sev-high{color:#d62728;
font-weight:bold}.sev-medium{color:#c65f00}.sev-low{color:#1f77b4}pre{white-space:pre-wrap;margin:2px 0;font-size:11px}
.kv td:first-child{font-weight:bold;width:220px}.charts{display:flex;flex-wrap:wrap;gap:12px}.note{color:#555;font-size:12px}
.problem{color:#a00}details summary{cursor:pointer}
"""

# sorts the table whose header was clicked, by that column (numbers as numbers); evidence rows
# travel with their alert
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function(th){
 th.addEventListener("click", function(){
  var col = th.cellIndex, table = th.closest("table"), body = table.tBodies[0];
  var asc = !th.classList.contains("sorted-asc");
  table.querySelectorAll("th").forEach(function(h){h.classList.remove("sorted-asc","sorted-desc");});
  th.classList.add(asc ? "sorted-asc" : "sorted-desc");
  var rows = Array.prototype.slice.call(body.querySelectorAll("tr.row"));
  function key(r){ var c = r.cells[col]; return c.getAttribute("data-key") || c.textContent.trim(); }
  function num(v){ return (v !== "" && isFinite(Number(v))) ? Number(v) : null; }
  rows.sort(function(a, b){
   var x = key(a), y = key(b), nx = num(x), ny = num(y);
   var c = (nx !== null && ny !== null) ? nx - ny : x.localeCompare(y, undefined, {numeric: true});
   return asc ? c : -c;
  });
  rows.forEach(function(r){ body.appendChild(r); var d = document.getElementById("ev-" + r.id);
   if (d) { body.appendChild(d); } });
 });
});
"""


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


def _when(ns: int | None) -> str:
    return rfc3339(ns) if ns else "-"


DETECTORS = ("beaconing", "arp_spoof")  # whose state the report shows (candidates, binding changes)


def build(result, collector, inputs: list[str], title: str | None = None) -> str:
    s = result.summary
    alerts = sorted(result.alerts, key=lambda a: (a.ts_ns, -a.severity_rank))
    detectors = {d.name: d for d in result.detectors}
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(title or 'detector report')}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>{_e(title or 'detector report')}</h1>",
             f"<p class=\"note\">detector {_e(__version__)}, written "
             f"{_e(dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds'))}. Self-contained: no network "
             "fetch; click a column header to sort.</p>"]
    parts.append(_summary(s, alerts, inputs, result))
    parts.append(_alert_table(alerts))
    lanes = [c for c in CATEGORIES if any(a.category == c for a in alerts)]
    parts.append('<h2 id="timeline">Timeline of alerts by category</h2>')
    parts.append(svg.timeline([(a.ts_ns, a.category, a.severity, f"{a.severity} {a.technique}: {a.summary[:120]}")
                               for a in alerts], lanes, "alerts over time (colour: severity)"))
    parts.append(_hosts_over_time(collector))
    parts.append(_talkers(collector))
    parts.append(_domains(collector))
    parts.append(_beacons(detectors.get("beaconing")))
    parts.append(_bindings(detectors.get("arp_spoof")))
    if getattr(result, "telemetry", None) is not None:
        parts.append(_gpu_nodes(result.telemetry, alerts))
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


def _summary(s: dict, alerts, inputs, result) -> str:
    by_sev = ", ".join(f"{k} {s['alerts_by_severity'][k]}" for k in ("critical", "high", "medium", "low")
                       if k in s["alerts_by_severity"]) or "none"
    by_cat = ", ".join(f"{k} {v}" for k, v in sorted(s["alerts_by_category"].items())) or "none"
    span = f"{_when(alerts[0].ts_ns)} to {_when(max(a.ts_end_ns for a in alerts))}" if alerts else "-"
    rows = [("inputs", f"{s['inputs']} ({', '.join(os.path.basename(p) for p in inputs[:5])}"
                       f"{', ...' if len(inputs) > 5 else ''})"),
            ("packets", f"{s['packets']:,}"), ("flows", f"{s['flows']:,}"),
            ("alerts", f"{s['alerts']:,}: {by_sev}"), ("by category", by_cat), ("alerts span", span),
            ("backend", f"{s['backend']} ({s['device']})"),
            ("top hosts (medium and above)", ", ".join(f"{h} ({n})" for h, n in s["top_hosts"]) or "-")]
    if s.get("model"):
        rows.append(("site model", f"{s['model']['windows_trained']:,} training windows"))
    if s.get("site_inferred"):
        rows.append(("site", "no configuration: private ranges taken as local"))
    out = ['<h2 id="summary">Summary</h2><table class="kv">']
    out += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    if result.errors or result.warnings:
        out.append('<h3 class="problem">Inputs with problems (the rest was analysed)</h3><ul>')
        out += [f'<li class="problem">{_e(m)}</li>' for m in result.errors + result.warnings]
        out.append("</ul>")
    return "".join(out)


def _alert_table(alerts) -> str:
    out = [f'<h2 id="alerts">Alerts ({len(alerts)})</h2>']
    if not alerts:
        return out[0] + "<p>No alerts.</p>"
    out.append('<table class="sortable" id="alert-table"><thead><tr><th>time</th><th>severity</th><th>category</th>'
               "<th>technique</th><th>host</th><th>source</th><th>destination</th><th>score</th><th>summary</th>"
               "</tr></thead><tbody>")
    for i, a in enumerate(alerts):
        dst = f"{a.dst_ip or '-'}{':' + str(a.dst_port) if a.dst_port is not None else ''}"
        out.append(f'<tr class="row" id="a{i}"><td data-key="{a.ts_ns}">{_e(_when(a.ts_ns))}</td>'
                   f'<td data-key="{SEVERITY_RANK[a.severity]}" class="sev-{a.severity}">{a.severity}</td>'
                   f"<td>{_e(a.category)}</td><td>{_e(a.technique)}</td><td>{_e(a.host)}</td><td>{_e(a.src_ip)}</td>"
                   f"<td>{_e(dst)}</td><td>{a.score:.2f}</td><td>{_e(a.summary)}</td></tr>")
        evidence = json.dumps(a.to_dict()["evidence"], indent=1, default=str)
        out.append(f'<tr class="evidence" id="ev-a{i}"><td colspan="9"><details><summary>evidence</summary>'
                   f"<pre>{_e(evidence)}</pre></details></td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _hosts_over_time(c) -> str:
    out = ['<h2 id="hosts">Bytes in and out per host over time</h2>']
    totals: dict[str, list[float]] = {}
    for (host, _), (rin, rout) in c.series.items():
        t = totals.setdefault(host, [0.0, 0.0])
        t[0] += rin
        t[1] += rout
    buckets = [b for (_, b) in c.series]
    charts = []
    if buckets:
        b0, b1 = min(buckets), max(buckets)
        step = max(1, -(-(b1 - b0 + 1) // MAX_POINTS))  # coarser buckets for long runs
        n = (b1 - b0) // step + 1
        xs = [(b0 + k * step) * BUCKET_NS for k in range(n)]
        for idx, label in ((1, "bytes out"), (0, "bytes in")):
            top = sorted(totals, key=lambda h: -totals[h][idx])[:TOP_HOSTS]  # the busiest in this direction
            series = {}
            for host in top:
                ys = [0.0] * n  # a quiet bucket is a zero, not a gap to draw across
                for (h, b), v in c.series.items():
                    if h == host:
                        ys[(b - b0) // step] += v[idx]
                series[host] = (xs, ys)
            charts.append(svg.lines(series, f"{label} of the {len(top)} busiest local hosts, per "
                                            f"{step * BUCKET_NS // 60_000_000_000} minutes", unit=label))
    else:
        charts.append("<p>No traffic of local hosts.</p>")
    out.append('<div class="charts">' + "".join(charts) + "</div>")
    if c.dropped_cells:
        out.append(f'<p class="note">{c.dropped_cells:,} host and time cells not kept (memory cap).</p>')
    return "".join(out)


def _talkers(c) -> str:
    top = sorted(c.talkers.items(), key=lambda kv: -(kv[1][0] + kv[1][1]))[:TOP_ROWS]
    chart = svg.bars([a for a, _ in top], [v[0] + v[1] for _, v in top], "bytes sent and received per address")
    rows = "".join(f"<tr class=\"row\"><td>{_e(a)}</td><td data-key=\"{v[1]}\">{_e(svg.human(v[1]))}</td>"
                   f"<td data-key=\"{v[0]}\">{_e(svg.human(v[0]))}</td></tr>" for a, v in top)
    return (f'<h2 id="talkers">Top talkers</h2>{chart}<table class="sortable"><thead><tr><th>address</th>'
            f"<th>bytes sent</th><th>bytes received</th></tr></thead><tbody>{rows}</tbody></table>")


def _domains(c) -> str:
    counts = {d: len(n) for d, n in c.domains.items()}
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:TOP_ROWS]
    chart = svg.bars([d for d, _ in top], [n for _, n in top], "distinct names asked per registered domain")
    examples = "".join(f"<tr class=\"row\"><td>{_e(d)}</td><td data-key=\"{n}\">{n}{'+' if d in c.capped else ''}"
                       f"</td><td>{_e(', '.join(sorted(c.domains[d])[:3]))}</td></tr>" for d, n in top)
    return (f'<h2 id="dns">DNS domains by unique names</h2><p class="note">Many distinct names under one domain is '
            f"how DNS tunnels and DGAs look (and CDNs).</p>{chart}<table class=\"sortable\"><thead><tr><th>domain</th>"
            f"<th>distinct names</th><th>examples</th></tr></thead><tbody>{examples}</tbody></table>")


def _beacons(det) -> str:
    out = ['<h2 id="beaconing">Beaconing candidates</h2>']
    cands = det.candidates() if det is not None else []
    if not cands:
        return out[0] + "<p>No host and destination with enough connections to judge.</p>"
    out.append('<p class="note">The most regular series of connections from a local host to one destination '
               "(alerted or not): a narrow histogram of the gaps between connections is a timer.</p>"
               '<div class="charts">')
    for cand in cands:
        name = cand["name"] or cand["dst"]
        out.append(svg.histogram(cand["gaps_s"], f"{cand['src']} -> {name}:{cand['port']}"))
    out.append("</div><table class=\"sortable\"><thead><tr><th>host</th><th>destination</th><th>connections</th>"
               "<th>median gap s</th><th>gap MAD s</th></tr></thead><tbody>")
    out += [f"<tr class=\"row\"><td>{_e(c['src'])}</td><td>{_e(c['name'] or c['dst'])}:{c['port']}</td>"
            f"<td>{c['connections']}</td><td>{c['median_s']:.1f}</td><td>{c['mad_s']:.2f}</td></tr>" for c in cands]
    out.append("</tbody></table>")
    return "".join(out)


def _bindings(det) -> str:
    rows = det.changes() if det is not None else []
    out = ['<h2 id="bindings">MAC/IP binding changes</h2>']
    if not rows:
        return out[0] + "<p>No address was claimed by a second MAC address.</p>"
    out.append('<table class="sortable"><thead><tr><th>IP address</th><th>bound to</th><th>claimed by</th>'
               "<th>first claim</th><th>last claim</th><th>claims</th></tr></thead><tbody>")
    out += [f"<tr class=\"row\"><td>{_e(r['ip'])}</td><td>{_e(r['bound_mac'])}</td><td>{_e(r['claimed_by'])}</td>"
            f"<td data-key=\"{r['first_ns']}\">{_e(_when(r['first_ns']))}</td>"
            f"<td data-key=\"{r['last_ns']}\">{_e(_when(r['last_ns']))}</td><td>{r['claims']}</td></tr>"
            for r in rows]
    out.append("</tbody></table>")
    return "".join(out)


def write(path: str, result, collector, inputs: list[str], title: str | None = None) -> None:
    """Writes the report (to a temporary file in the same folder, then renamed: never half a
    report; the temporary file is removed if writing fails)."""
    import tempfile

    text = build(result, collector, inputs, title)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html.tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


MAX_GPU_NODES = 12
MAX_JOB_LANES = 16


def _gpu_nodes(inputs, alerts) -> str:
    """Per node (those with GPU alerts first, then the busiest): each GPU's utilisation over
    time, and under it the jobs that held GPUs there."""
    import numpy as np

    t = inputs.telemetry
    g = t.gpus
    out = ['<h2 id="gpus">GPU utilisation per node, with the jobs holding its GPUs</h2>']
    if not len(g.ts_ns):
        return out[0] + "<p>No GPU samples.</p>"
    flagged = {a.evidence.get("node") for a in alerts if a.category == "compute_theft" and a.evidence.get("node")}
    busy = {h: float(np.nanmean(g.util[g.host == k])) if (g.host == k).any() else 0.0 for k, h in enumerate(t.hosts)}
    nodes = sorted(t.hosts, key=lambda h: (h not in flagged, -busy[h], h))[:MAX_GPU_NODES]
    if len(t.hosts) > MAX_GPU_NODES:
        out.append(f'<p class="note">{MAX_GPU_NODES} of {len(t.hosts)} nodes: those with GPU alerts, then the '
                   "busiest.</p>")
    by_host = {} if inputs.holdings is None else inputs.holdings.by_host
    charts = []
    for node in nodes:
        k = t.hosts.index(node)
        series = {}
        for gpu in sorted(set(g.gpu[g.host == k].tolist())):
            rows = np.flatnonzero((g.host == k) & (g.gpu == gpu))
            rows = rows[np.argsort(g.ts_ns[rows], kind="stable")]
            step = -(-len(rows) // MAX_POINTS)  # averaged in groups of step samples
            rows = rows[:len(rows) // step * step]
            util = np.nan_to_num(g.util[rows], nan=0.0).reshape(-1, step).mean(axis=1)
            ts = g.ts_ns[rows[::step]]
            series[f"GPU {gpu}" if gpu >= 0 else "GPU ?"] = (ts.tolist(), util.tolist())
        lo, hi = int(g.ts_ns[g.host == k].min()), int(g.ts_ns[g.host == k].max())
        spans = [(f"job {a.label or a.job}", a.start_ns, a.end_ns) for a in by_host.get(node, ())
                 if a.start_ns <= hi and a.end_ns >= lo]
        jobs = list(dict.fromkeys(label for label, _, _ in spans))
        if len(jobs) > MAX_JOB_LANES:  # a week of sacct: the jobs that held GPUs longest
            held = {j: sum(min(e, hi) - max(s, lo) for label, s, e in spans if label == j) for j in jobs}
            keep = set(sorted(jobs, key=lambda j: -held[j])[:MAX_JOB_LANES])
            spans = [x for x in spans if x[0] in keep]
        mark = " (alert)" if node in flagged else ""
        charts.append(svg.lines_over_spans(series, spans, f"{node}{mark}: SM utilisation"))
    if inputs.holdings is None:
        out.append('<p class="note">No allocations were given (--slurm, [site] gpu_allocations).</p>')
    out.append('<div class="charts">' + "".join(charts) + "</div>")
    return "".join(out)
