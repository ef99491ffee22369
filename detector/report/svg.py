"""A small chart library: inline SVG, no dependency, no script, so a report is one file that
renders anywhere without fetching anything. Horizontal bars, time series, a timeline of
events by lane, and a histogram; each returns an ``<svg>`` element as text."""

from __future__ import annotations

import datetime as dt
import html

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")
SEVERITY_COLOUR = {"critical": "#7b0000", "high": "#d62728", "medium": "#ff7f0e", "low": "#1f77b4"}
FONT = 'font-family="sans-serif" font-size="11"'


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def human(v: float) -> str:
    for unit, div in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.0f}" if v == int(v) else f"{v:.2f}"


def _time_label(ns: int, span_ns: int) -> str:
    t = dt.datetime.fromtimestamp(ns / 1e9, dt.timezone.utc)
    return t.strftime("%m-%d %H:%M" if span_ns > 86400e9 else "%H:%M:%S" if span_ns < 600e9 else "%H:%M")


def _frame(width: int, height: int, body: list[str], title: str) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{_e(title)}"><title>{_e(title)}</title>'
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>{"".join(body)}</svg>')


def bars(labels: list[str], values: list[float], title: str, width: int = 720) -> str:
    """Horizontal bars, largest first as given; labels on the left, values at the bar's end."""
    row, left, top = 20, 230, 26
    height = top + row * max(len(labels), 1) + 10
    vmax = max(values, default=0) or 1.0
    body = [f'<text x="8" y="16" {FONT} font-weight="bold">{_e(title)}</text>']
    span = width - left - 70
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + i * row
        w = max(1.0, span * v / vmax)
        body.append(f'<text x="{left - 6}" y="{y + 13}" {FONT} text-anchor="end">{_e(str(label)[:36])}</text>')
        body.append(f'<rect class="bar" x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{PALETTE[0]}">'
                    f'<title>{_e(label)}: {_e(human(v))}</title></rect>')
        body.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}" {FONT}>{_e(human(v))}</text>')
    if not labels:
        body.append(f'<text x="{left}" y="{top + 13}" {FONT}>nothing to show</text>')
    return _frame(width, height, body, title)


def lines(series: dict[str, tuple[list[int], list[float]]], title: str, width: int = 720, height: int = 260,
          unit: str = "bytes") -> str:
    """Time series (x: ns since the epoch), one line each, with a legend; ``unit`` names the
    y axis in the hover text."""
    left, right, top, bottom = 60, 150, 26, 30
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys)]
    body = [f'<text x="8" y="16" {FONT} font-weight="bold">{_e(title)}</text>']
    if not pts:
        body.append(f'<text x="{left}" y="{top + 20}" {FONT}>nothing to show</text>')
        return _frame(width, height, body, title)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) or 1.0
    x1 = x1 if x1 > x0 else x0 + 1
    pw, ph = width - left - right, height - top - bottom

    def sx(x):
        return left + pw * (x - x0) / (x1 - x0)

    def sy(y):
        return top + ph - ph * y / y1

    body.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#888"/>')
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#888"/>')
    for k in range(5):
        yv = y1 * k / 4
        body.append(f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" {FONT} text-anchor="end">{_e(human(yv))}</text>')
    for k in range(5):
        xv = x0 + (x1 - x0) * k / 4
        body.append(f'<text x="{sx(xv):.1f}" y="{top + ph + 16}" {FONT} text-anchor="middle">'
                    f'{_e(_time_label(int(xv), x1 - x0))}</text>')
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        order = sorted(zip(xs, ys))
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in order)
        body.append(f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="1.6">'
                    f'<title>{_e(name)} ({_e(unit)})</title></polyline>')
        if len(order) == 1:
            body.append(f'<circle cx="{sx(order[0][0]):.1f}" cy="{sy(order[0][1]):.1f}" r="3" fill="{colour}"/>')
        ly = top + 14 * i
        body.append(f'<rect x="{left + pw + 10}" y="{ly}" width="10" height="10" fill="{colour}"/>')
        body.append(f'<text x="{left + pw + 24}" y="{ly + 9}" {FONT}>{_e(name[:20])}</text>')
    return _frame(width, height, body, title)


def timeline(events: list[tuple[int, str, str, str]], lanes: list[str], title: str, width: int = 720) -> str:
    """Events as dots (x: time; lane: e.g. the alert's category; colour: severity); each dot
    says what it is on hover."""
    left, right, top, lane_h = 130, 20, 26, 26
    height = top + lane_h * max(len(lanes), 1) + 30
    body = [f'<text x="8" y="16" {FONT} font-weight="bold">{_e(title)}</text>']
    if not events:
        body.append(f'<text x="{left}" y="{top + 16}" {FONT}>no alerts</text>')
        return _frame(width, height, body, title)
    x0, x1 = min(e[0] for e in events), max(e[0] for e in events)
    x1 = x1 if x1 > x0 else x0 + 1
    pw = width - left - right
    for i, lane in enumerate(lanes):
        y = top + i * lane_h + lane_h / 2
        body.append(f'<line x1="{left}" y1="{y}" x2="{left + pw}" y2="{y}" stroke="#ddd"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4}" {FONT} text-anchor="end">{_e(lane)}</text>')
    for ts, lane, severity, label in events:
        x = left + pw * (ts - x0) / (x1 - x0)
        y = top + lanes.index(lane) * lane_h + lane_h / 2
        body.append(f'<circle class="event" cx="{x:.1f}" cy="{y}" r="5" fill="{SEVERITY_COLOUR.get(severity, "#555")}" '
                    f'fill-opacity="0.8"><title>{_e(label)}</title></circle>')
    base = top + lane_h * len(lanes) + 16
    for k in range(5):
        xv = x0 + (x1 - x0) * k / 4
        body.append(f'<text x="{left + pw * k / 4:.1f}" y="{base}" {FONT} text-anchor="middle">'
                    f'{_e(_time_label(int(xv), x1 - x0))}</text>')
    return _frame(width, height, body, title)


def histogram(values: list[float], title: str, bins: int = 30, width: int = 340, height: int = 150,
              unit: str = "s") -> str:
    left, top, bottom = 36, 22, 26
    body = [f'<text x="6" y="14" {FONT} font-weight="bold">{_e(title)}</text>']
    if not values:
        return _frame(width, height, body, title)
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + 1e-9
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int((v - lo) / (hi - lo) * bins))] += 1
    cmax = max(counts)
    pw, ph = width - left - 10, height - top - bottom
    bw = pw / bins
    for i, c in enumerate(counts):
        h = ph * c / cmax
        body.append(f'<rect class="bar" x="{left + i * bw:.1f}" y="{top + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                    f'height="{h:.1f}" fill="{PALETTE[0]}"><title>{c}</title></rect>')
    body.append(f'<text x="{left}" y="{height - 8}" {FONT}>{_e(human(lo))} {unit}</text>')
    body.append(f'<text x="{left + pw}" y="{height - 8}" {FONT} text-anchor="end">{_e(human(hi))} {unit}</text>')
    body.append(f'<text x="{left - 4}" y="{top + 8}" {FONT} text-anchor="end">{cmax}</text>')
    return _frame(width, height, body, title)



def lines_over_spans(series: dict[str, tuple[list[int], list[float]]], spans: list[tuple[str, int, int]], title: str,
                     width: int = 720, unit: str = "%", y_max: float = 100.0) -> str:
    """Time series on a fixed y scale (0..``y_max``), with labelled time spans drawn under them
    on the same time axis, one lane per label (a node's GPU utilisation, and the jobs that held
    its GPUs)."""
    left, right, top, plot_h, lane_h = 60, 150, 26, 150, 16
    labels = list(dict.fromkeys(label for label, _, _ in spans))
    height = top + plot_h + 24 + lane_h * max(len(labels), 1) + 24
    body = [f'<text x="8" y="16" {FONT} font-weight="bold">{_e(title)}</text>']
    xs_all = [x for xs, _ in series.values() for x in xs]
    if not xs_all:
        body.append(f'<text x="{left}" y="{top + 20}" {FONT}>nothing to show</text>')
        return _frame(width, height, body, title)
    x0, x1 = min(xs_all), max(xs_all)
    x1 = x1 if x1 > x0 else x0 + 1
    pw = width - left - right

    def sx(x):
        return left + pw * (min(max(x, x0), x1) - x0) / (x1 - x0)

    def sy(y):
        return top + plot_h - plot_h * min(max(y, 0.0), y_max) / y_max

    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + pw}" y2="{top + plot_h}" stroke="#888"/>')
    body.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>')
    for k in range(5):
        yv = y_max * k / 4
        body.append(f'<text x="{left - 4}" y="{sy(yv) + 4:.1f}" {FONT} text-anchor="end">{_e(human(yv))}{unit}</text>')
    for i, (name, (xs, ys)) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(zip(xs, ys)))
        body.append(f'<polyline class="series" points="{path}" fill="none" stroke="{colour}" stroke-width="1.4">'
                    f'<title>{_e(name)} ({_e(unit)})</title></polyline>')
        body.append(f'<rect x="{left + pw + 10}" y="{top + 14 * i}" width="10" height="10" fill="{colour}"/>')
        body.append(f'<text x="{left + pw + 24}" y="{top + 14 * i + 9}" {FONT}>{_e(name[:20])}</text>')
    lanes_top = top + plot_h + 24
    if not labels:
        body.append(f'<text x="{left}" y="{lanes_top + 12}" {FONT}>no job held a GPU here</text>')
    for i, label in enumerate(labels):
        y = lanes_top + i * lane_h
        body.append(f'<text x="{left - 4}" y="{y + 11}" {FONT} text-anchor="end">{_e(label[:12])}</text>')
    for label, start, end in spans:
        if end < x0 or start > x1:
            continue
        y = lanes_top + labels.index(label) * lane_h
        a, b = sx(start), sx(end)
        body.append(f'<rect class="span" x="{a:.1f}" y="{y + 2}" width="{max(b - a, 1.0):.1f}" height="{lane_h - 4}" '
                    f'fill="{PALETTE[2]}" fill-opacity="0.7"><title>{_e(label)}</title></rect>')
    base = lanes_top + lane_h * max(len(labels), 1) + 14
    for k in range(5):
        xv = x0 + (x1 - x0) * k / 4
        body.append(f'<text x="{sx(xv):.1f}" y="{base}" {FONT} text-anchor="middle">'
                    f'{_e(_time_label(int(xv), x1 - x0))}</text>')
    return _frame(width, height, body, title)
