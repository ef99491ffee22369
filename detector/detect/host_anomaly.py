"""Hosts that behave unlike their learned baseline (anomaly / host_behaviour).

Method: with a site model (``detector analyze --model``), every local host's activity per
window (flows, bytes in and out, bytes to outside, distinct destinations and ports and their
entropy, failed connections, inbound sources, DNS questions: how many, how many distinct
names, how long; connections unlike any the site made in training) is scored by the model's Isolation Forest
(Liu et al. 2008) and explained by robust per-feature z-scores against the host's own
median/MAD baseline, as Morpheus DFP explains its autoencoder's loss. A window is anomalous when
both say so, or when it is very far from the host's own baseline (thresholds: see
:mod:`detector.baseline.site_model`). One
alert per host, summarising its anomalous windows; medium when judged against its own or its
role's baseline, low against the site-wide one. Without a model this detector is off.
"""

from __future__ import annotations

from detector.alerts import Alert
from detector.baseline.learn import WindowCollector
from detector.detect.base import Detector, FlowView


class HostAnomaly(Detector):
    name = "host_anomaly"
    version = "1"

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        model = self.site.model
        self.collector = WindowCollector(site=self.site, window_s=model.window_s, rare_flows=model.rare_flows) \
            if model is not None else None

    def observe_flows(self, f: FlowView) -> None:
        if self.collector is not None:
            self.collector.observe_flows(f)

    def observe_events(self, events) -> None:
        if self.collector is not None:
            self.collector.observe_events(events)

    def closed_windows(self):
        """Host windows to judge: all of them for a capture; for live input (the daemon sets
        the site's clock) those ended one window ago, since flows are counted in the window they
        started in and arrive when they end (a window still filling looks like a quiet host)."""
        model = self.site.model
        hosts, starts, X = self.collector.windows.table()
        if self.site.clock_ns is None:
            return hosts, starts, X
        window_ns = int(model.window_s * 1e9)
        keep = (starts + 2 * window_ns) <= self.site.clock_ns
        return [h for h, k in zip(hosts, keep.tolist()) if k], starts[keep], X[keep]

    def finish(self) -> list[Alert]:
        if self.collector is None:
            return []
        model = self.site.model
        hosts, starts, X = self.closed_windows()
        by_host: dict[str, list[dict]] = {}
        for w in model.judge(hosts, starts, X, [self.site.role(h) for h in hosts]):
            by_host.setdefault(w["host"], []).append(w)
        window_ns = int(model.window_s * 1e9)
        out = []
        for host, found in by_host.items():
            worst = min(found, key=lambda w: w["score"])
            known = worst["baseline"] != "site"
            dev = worst["deviations"]
            what = ", ".join(f"{d['feature']} {d['value']:,.0f} against a usual {d['baseline']:,.0f} (z {d['z']:+.1f})"
                             for d in dev[:3])
            hour = ""
            if worst["hour_share"] is not None and worst["hour_share"] == 0:
                hour = f"; it was never active at {worst['hour']:02d}h UTC in training"
            out.append(Alert(
                found[0]["start_ns"], max(w["start_ns"] for w in found) + window_ns, "anomaly", "host_behaviour",
                "medium" if known else "low", round(min(0.95, -worst["score"]), 3),
                f"{host} ({self.site.role(host)}) behaved unlike its {worst['baseline']} baseline in "
                f"{len(found)} window(s) of {model.window_s:.0f} s: {what}{hour}",
                self.label, host, host, None, None, None, None,
                {"windows": len(found), "worst_window_start_ns": worst["start_ns"],
                 "isolation_score": round(worst["score"], 4), "threshold": round(model.if_threshold, 4),
                 "rule": worst["rule"],
                 "deviations": dev, "baseline": worst["baseline"], "host_in_model": worst["known_host"],
                 "hour_utc": worst["hour"],
                 "hour_share_in_training": worst["hour_share"]}))
        return out
