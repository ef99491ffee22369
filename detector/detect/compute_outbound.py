"""Compute nodes talking to the Internet directly (compute_theft / compute_outbound).

Method: site policy. Compute nodes (``site.compute_nets``) reach outside only through the
proxies in ``site.proxies``, if at all; any session they open to an external address bypasses
that, which is how the 2020 HPC intrusions fetched tools and reached mining pools. One alert per
compute node, medium, high from ``high_destinations`` distinct destinations. Does nothing when
no compute network is configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView, widen
from detector.detect.sample import DistinctSample


class ComputeOutbound(Detector):
    name = "compute_outbound"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        high_destinations: int = 10

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.hosts: dict[str, dict] = {}

    def observe_flows(self, f: FlowView) -> None:
        if not self.site.compute:
            return
        oh, rh, rp = f["orig_h"], f["resp_h"], f["resp_p"]
        for j in range(len(f)):
            src, dst = oh[j], rh[j]
            if src not in self.site.compute or not self.site.is_external(dst) or dst in self.site.proxies:
                continue
            t = int(f["ts"][j])
            h = self.hosts.get(src)
            if h is None:
                h = self.hosts[src] = {"first": t, "last": 0, "dsts": DistinctSample(256), "ports": set(),
                                       "bytes": 0, "example": (t, f["uid"][j], f["community_id"][j])}
            widen(h, t)
            # the earliest session names the alert, whatever order flows come in
            h["example"] = min(h["example"], (t, f["uid"][j], f["community_id"][j]))
            h["dsts"].add(f"{dst}:{int(rp[j])}")
            h["ports"].add(int(rp[j]))
            h["bytes"] += int(f["orig_bytes"][j]) + int(f["resp_bytes"][j])

    def finish(self) -> list[Alert]:
        out = []
        for src, h in self.hosts.items():
            high = len(h["dsts"]) >= self.p.high_destinations
            dsts = sorted(h["dsts"].items())
            first_dst, _, first_port = dsts[0].rpartition(":")
            out.append(Alert(h["first"], h["last"], "compute_theft", "compute_outbound", "high" if high else "medium",
                             0.8 if high else 0.6,
                             f"Compute node {src} opened sessions to {'' if h['dsts'].exact else 'about '}{len(h['dsts'])} "
                             "Internet destination(s) "
                             f"({', '.join(dsts[:3])}) without the proxy", self.label, src, src, first_dst, None,
                             int(first_port), None,
                             {"destinations": dsts[:32], "ports": sorted(h["ports"])[:32], "bytes": h["bytes"],
                              "uid": h["example"][1]}, h["example"][2]))
        return out

