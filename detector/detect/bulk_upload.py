"""Bulk or unusual uploads (exfiltration / bulk_upload).

Method: per local host and external destination, the bytes the host sent and its
producer-consumer ratio (PCR = (out - in) / (out + in), as in Zeek's conn analysis and RITA),
compared with the host's own baseline: the median of what it sends to its other destinations
(self-baselining over the analysed traffic; a trained model supplies history instead).

Normal transfers are left alone: destinations in ``site.partner_dtns``; from configured DTNs,
their ``site.transfer_ports`` (GridFTP 50000-51000 and 2811, Globus 443); and, from any host,
the GridFTP data/control ports and the measurement ports of perfSONAR (iperf3 5201, OWAMP and
TWAMP 861/862), which are scheduled bulk tests by design.

Thresholds: medium at ``min_bytes`` sent with a PCR of at least ``min_pcr`` and at least
``baseline_factor`` times the host's median; high at ``high_bytes``. The floor follows the host:
a host that is not a DTN, uploading to a destination no site host had talked to before, is
reported from ``new_destination_bytes`` (64 MiB) when that is still ``baseline_factor`` times
its own median, so a login or compute node that normally sends little is caught pushing 100 MB
out, while DTNs (``site.dtns``), whose job is bulk transfer, keep ``min_bytes``. How new the
destination is also raises the score: the first time any site host contacted it is tracked (for up to
``max_destinations`` destinations), and an upload to a destination nobody at the site had
talked to before it began (nor, with a site model, in the training traffic) says so in the
summary and the evidence. With a site model
(``analyze --model``), a pair the model saw carry at least 1/``baseline_factor`` of the upload's
busiest window in one window of normal traffic is a known transfer, not reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.detect.first_contact import FirstContacts

GRIDFTP_PORTS = ((50000, 51000), (2811, 2811))
MEASUREMENT_PORTS = (5201, 861, 862)


class _Out:
    __slots__ = ("out", "inb", "flows", "first", "last", "ports", "uid", "cid", "biggest", "per_window")

    def __init__(self):
        self.out = self.inb = self.flows = self.biggest = 0
        self.first = None
        self.last = 0
        self.ports: set[int] = set()
        self.uid = self.cid = None
        self.per_window: dict[int, int] = {}


class BulkUpload(Detector):
    name = "bulk_upload"
    version = "1"

    @dataclass(frozen=True)
    class Params:
        min_bytes: int = 200 * 2**20
        new_destination_bytes: int = 64 * 2**20
        high_bytes: int = 10 * 2**30
        min_pcr: float = 0.7
        baseline_factor: float = 10.0
        max_destinations: int = 1_000_000

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        self.pairs: dict[tuple[str, str], _Out] = {}
        self.first_contact = FirstContacts(self.p.max_destinations)  # when a site host first reached each one
        model = self.site.model
        self.window_ns = int((model.window_s if model is not None else 600.0) * 1e9)

    def observe_flows(self, f: FlowView) -> None:
        site, rp = self.site, f["resp_p"]
        normal_port = np.isin(rp, MEASUREMENT_PORTS)
        for lo, hi in GRIDFTP_PORTS:
            normal_port |= (rp >= lo) & (rp <= hi)
        if site.dtns:
            dtn_port = np.zeros(len(rp), bool)
            for lo, hi in site.transfer_ports:
                dtn_port |= (rp >= lo) & (rp <= hi)
            normal_port |= dtn_port & f.member("orig_h", site.dtns)
        outbound = f.member("orig_h", site.local) & ~f.member("resp_h", site.local) \
            & ~f.member("resp_h", site.multicast) & ~f.member("resp_h", site.partners)
        self.first_contact.note(f, np.flatnonzero(outbound))
        rows = np.flatnonzero((f["orig_bytes"] > 0) & outbound & ~normal_port)
        for src, dst, port, ob, rb, start, dur, uid, cid in zip(*(f.take(name, rows) for name in (
                "orig_h", "resp_h", "resp_p", "orig_bytes", "resp_bytes", "ts", "duration", "uid", "community_id"))):
            agg = self.pairs.get((src, dst))
            if agg is None:
                agg = self.pairs[(src, dst)] = _Out()
            agg.out += ob
            agg.inb += rb
            w = start // self.window_ns
            if w in agg.per_window or len(agg.per_window) < 4096:
                agg.per_window[w] = agg.per_window.get(w, 0) + ob
            agg.flows += 1
            agg.first = start if agg.first is None else min(agg.first, start)
            agg.last = max(agg.last, start + int(dur * 1e9))
            if len(agg.ports) < 16:
                agg.ports.add(port)
            if ob > agg.biggest:  # the evidence points at the largest upload
                agg.biggest = ob
                agg.uid, agg.cid = uid, cid

    def finish(self) -> list[Alert]:
        p = self.p
        by_host: dict[str, list[tuple[str, int]]] = {}
        for (src, dst), agg in self.pairs.items():
            by_host.setdefault(src, []).append((dst, agg.out))
        out = []
        model = self.site.model
        for (src, dst), agg in self.pairs.items():
            if agg.out < min(p.min_bytes, p.new_destination_bytes):
                continue
            contacted = self.first_contact.get(dst)
            new_dst = contacted is not None and contacted >= agg.first and not (
                model is not None and model.knows_destination(dst))
            floor = p.new_destination_bytes if new_dst and self.site.role(src) != "dtn" else p.min_bytes
            if agg.out < floor:
                continue
            pcr = (agg.out - agg.inb) / max(agg.out + agg.inb, 1)
            others = [v for d, v in by_host[src] if d != dst] or [0]
            baseline = float(np.median(others))
            if pcr < p.min_pcr or agg.out < p.baseline_factor * baseline:
                continue
            if model is not None and model.known_transfer(src, dst, max(agg.per_window.values()), p.baseline_factor):
                continue  # the site model saw this host send that much there in normal traffic
            high = agg.out >= p.high_bytes
            score = (0.85 if high else 0.6) + (0.1 if new_dst else 0.0)
            out.append(Alert(agg.first, agg.last, "exfiltration", "bulk_upload", "high" if high else "medium", score,
                             f"{src} ({self.site.role(src)}) sent {agg.out / 2**20:.0f} MiB to {dst} over "
                             f"{agg.flows} connection(s) and received {agg.inb / 2**20:.1f} MiB (PCR {pcr:.2f}), "
                             f"{agg.out / max(baseline, 1):.0f}x its median per destination"
                             + (", a destination no site host had contacted before" if new_dst else ""),
                             self.label, src, src, dst, None, min(agg.ports), "tcp",
                             {"bytes_out": agg.out, "bytes_in": agg.inb, "pcr": round(pcr, 3), "flows": agg.flows,
                              "ports": sorted(agg.ports), "host_median_bytes_out": baseline,
                              "new_destination": new_dst, "destination_first_contact_ns": contacted,
                              "floor_bytes": floor,
                              "uid": agg.uid},
                             agg.cid))
        return out
