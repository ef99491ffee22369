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

State is columnar and mergeable (issue 21): per (host, destination) the sums and time span
(:class:`KeyedSums`), the largest upload, up to 16 destination ports and, with a model, the
bytes per window, as rows of 64-bit address ids; at most ``max_pairs`` pairs, past which those
that sent least are evicted and counted. Reports look only at the pairs past the byte floor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.alerts import Alert
from detector.detect.base import Detector, FlowView
from detector.detect.first_contact import FirstContacts
from detector.detect.keyed_table import KeyedSums, KeyedTable, Led, Names, key_rows

GRIDFTP_PORTS = ((50000, 51000), (2811, 2811))
MEASUREMENT_PORTS = (5201, 861, 862)
MAX_PORTS = 16  # destination ports named per pair
PAIR = ("src", "dst")


def _least_sent_out(cols: dict) -> np.ndarray:
    """Past the cap, the pairs (windows) that sent least go first: they are furthest from an alert."""
    return cols["out"]


class BulkUpload(Detector):
    name = "bulk_upload"
    version = "2"

    @dataclass(frozen=True)
    class Params:
        min_bytes: int = 200 * 2**20
        new_destination_bytes: int = 64 * 2**20
        high_bytes: int = 10 * 2**30
        min_pcr: float = 0.7
        baseline_factor: float = 10.0
        max_destinations: int = 1_000_000
        max_pairs: int = 1_000_000  # (host, destination) pairs held, with their largest upload and ports

    def __init__(self, params=None, site=None):
        super().__init__(params, site)
        cap = self.p.max_pairs
        self.pairs = KeyedSums(("src", "dst"), {"out": "sum", "inb": "sum", "flows": "sum", "first": "min",
                                                "last": "max"}, cap, _least_sent_out)
        self.biggest = KeyedTable(PAIR, ("less", "uid"), 1)
        self.ports = KeyedTable(PAIR, ("port",), MAX_PORTS, unique=True)
        self.windows = KeyedSums((*PAIR, "w"), {"out": "sum"}, 4 * cap, _least_sent_out)
        self.led = Led(self.pairs, self.biggest, self.ports, self.windows)  # what is kept of a pair leaves with it
        self.names = Names()  # the text of the addresses, uids and community ids held
        self.first_contact = FirstContacts(self.p.max_destinations)  # when a site host first reached each one
        model = self.site.model
        self.window_ns = int((model.window_s if model is not None else 600.0) * 1e9)

    @property
    def evictions(self) -> int:
        """Pairs dropped at ``max_pairs`` (the smallest windows past four per pair held), and
        destinations at ``max_destinations``."""
        return self.pairs.evicted + self.windows.evicted + self.first_contact.evicted

    def merge(self, other: BulkUpload) -> None:
        """Take in what ``other`` saw (other batches, partitions or threads of the same input)."""
        for mine, theirs in ((self.pairs, other.pairs), (self.biggest, other.biggest), (self.ports, other.ports),
                             (self.windows, other.windows)):
            mine.merge(theirs)
        self.led.reconcile()
        self.names.merge(other.names)
        self.first_contact.merge(other.first_contact)

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
        ob_all = np.nan_to_num(f["orig_bytes"].astype(float))
        rows = np.flatnonzero((ob_all > 0) & outbound & ~normal_port)
        if not len(rows):
            return
        src, dst = f.ids("orig_h")[rows], f.ids("resp_h")[rows]
        ob = ob_all[rows].astype(np.int64)
        start = f["ts"][rows].astype(np.int64)
        end = start + (np.nan_to_num(f["duration"][rows].astype(float)) * 1e9).astype(np.int64)
        self.led.add({"src": src, "dst": dst, "out": ob, "flows": np.ones(len(rows), np.int64),
                      "inb": np.nan_to_num(f["resp_bytes"][rows].astype(float)).astype(np.int64),
                      "first": start, "last": end},
                     {"src": src, "dst": dst, "less": -ob, "uid": f.ids_at("uid", rows),
                      "cid": f.ids_at("community_id", rows)},
                     {"src": src, "dst": dst, "port": rp[rows].astype(np.int64)},
                     {"src": src, "dst": dst, "w": start // self.window_ns, "out": ob}
                     if self.site.model is not None else None)
        for name in ("orig_h", "resp_h", "uid", "community_id"):
            self.names.add(*f.named(name, rows))
        self.names.prune(self._held_ids)

    def _held_ids(self) -> list[np.ndarray]:
        P, B = self.pairs.rows(), self.biggest.rows()
        return ([P["src"], P["dst"]] if P else []) + ([B["uid"], B["cid"]] if B else [])

    def finish(self) -> list[Alert]:
        p = self.p
        P = self.led.rows()
        if not P:
            return []
        cand = np.flatnonzero(P["out"] >= min(p.min_bytes, p.new_destination_bytes))
        if not len(cand):
            return []
        src_text, dst_text = self.names.text(P["src"][cand]), self.names.text(P["dst"][cand])
        B, ports, windows = self.biggest.rows(), self.ports.rows(), self.windows.rows()
        out = []
        model = self.site.model
        for c, src, dst in zip(cand.tolist(), src_text, dst_text):
            s, d = P["src"][c], P["dst"][c]
            sent, got, first = int(P["out"][c]), int(P["inb"][c]), int(P["first"][c])
            contacted = self.first_contact.get(dst)
            new_dst = contacted is not None and contacted >= first and not (
                model is not None and model.knows_destination(dst))
            floor = p.new_destination_bytes if new_dst and self.site.role(src) != "dtn" else p.min_bytes
            if sent < floor:
                continue
            pcr = (sent - got) / max(sent + got, 1)
            a, z = np.searchsorted(P["src"], s, "left"), np.searchsorted(P["src"], s, "right")
            others = np.delete(P["out"][a:z], c - a)  # what src sent to each of its other destinations
            baseline = float(np.median(others)) if len(others) else 0.0
            if pcr < p.min_pcr or sent < p.baseline_factor * baseline:
                continue
            # the busiest window (past the cap on windows, the pair's total, which is no less)
            busiest = windows["out"][key_rows(windows, PAIR, (s, d))] if windows else np.zeros(0, np.int64)
            if model is not None and model.known_transfer(src, dst, int(busiest.max()) if len(busiest) else sent,
                                                          p.baseline_factor):
                continue  # the site model saw this host send that much there in normal traffic
            pair_ports = sorted(ports["port"][key_rows(ports, PAIR, (s, d))].tolist()) if ports else []
            b = key_rows(B, PAIR, (s, d)) if B else slice(0, 0)
            uid, cid = self.names.text(np.array([B["uid"][b.start], B["cid"][b.start]], np.uint64)) \
                if b.stop > b.start else (None, None)
            high = sent >= p.high_bytes
            score = (0.85 if high else 0.6) + (0.1 if new_dst else 0.0)
            flows = int(P["flows"][c])
            out.append(Alert(first, int(P["last"][c]), "exfiltration", "bulk_upload", "high" if high else "medium",
                             score,
                             f"{src} ({self.site.role(src)}) sent {sent / 2**20:.0f} MiB to {dst} over "
                             f"{flows} connection(s) and received {got / 2**20:.1f} MiB (PCR {pcr:.2f}), "
                             f"{sent / max(baseline, 1):.0f}x its median per destination"
                             + (", a destination no site host had contacted before" if new_dst else ""),
                             self.label, src, src, dst, None, pair_ports[0] if pair_ports else None, "tcp",
                             {"bytes_out": sent, "bytes_in": got, "pcr": round(pcr, 3), "flows": flows,
                              "ports": pair_ports, "host_median_bytes_out": baseline,
                              "new_destination": new_dst, "destination_first_contact_ns": contacted,
                              "floor_bytes": floor,
                              "uid": uid},
                             cid))
        return out
